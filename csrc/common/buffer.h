// Owned, 64-byte aligned memory for weights, KV pools and workspaces.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace lmrt {

class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes) { reset(bytes); }
  ~Buffer() { release(); }
  Buffer(Buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        bytes_(std::exchange(o.bytes_, 0)),
        mapped_(std::exchange(o.mapped_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    std::swap(mapped_, o.mapped_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // Discards the contents; the new memory is zeroed. Large buffers (the KV pools above all) are fresh
  // anonymous mappings: the kernel hands out zero pages as they are first touched, so a pool of
  // gigabytes costs nothing until it is used (no start-up memset, no resident memory for empty blocks).
  void reset(size_t bytes) {
    release();
    if (bytes == 0) return;
    const size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded >= kMapBytes) {
      void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      data_ = p;
      mapped_ = rounded;
    } else {
      data_ = std::aligned_alloc(64, rounded);
      if (!data_) throw std::bad_alloc();
      std::memset(data_, 0, rounded);
    }
    bytes_ = bytes;
  }
  // Grows (never shrinks) to at least `bytes`; contents are not kept.
  void reserve(size_t bytes) {
    if (bytes > bytes_) reset(bytes);
  }

  template <class T = void>
  T* data() {
    return static_cast<T*>(data_);
  }
  template <class T = void>
  const T* data() const {
    return static_cast<const T*>(data_);
  }
  size_t bytes() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }

 private:
  static constexpr size_t kMapBytes = size_t{1} << 20;  // mappings are page aligned, so 64-byte aligned too

  void release() {
    if (mapped_)
      munmap(data_, mapped_);
    else
      std::free(data_);
    data_ = nullptr;
    bytes_ = 0;
    mapped_ = 0;
  }

  void* data_ = nullptr;
  size_t bytes_ = 0;
  size_t mapped_ = 0;  // length of the mapping when data_ came from mmap, else 0
};

}  // namespace lmrt
