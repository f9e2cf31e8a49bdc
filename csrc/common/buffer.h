// Owned, 64-byte aligned memory for weights, KV pools and workspaces.
#pragma once

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
  ~Buffer() { std::free(data_); }
  Buffer(Buffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  // Discards the contents; the new memory is zeroed.
  void reset(size_t bytes) {
    std::free(data_);
    data_ = nullptr;
    bytes_ = 0;
    if (bytes == 0) return;
    size_t rounded = (bytes + 63) / 64 * 64;
    data_ = std::aligned_alloc(64, rounded);
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, rounded);
    bytes_ = bytes;
  }
  // Grows (never shrinks) to at least `bytes`; contents are not kept.
  void reserve(size_t bytes) {
    if (bytes > bytes_) reset(bytes);
  }

  template <class T = void>
  T* data() { return static_cast<T*>(data_); }
  template <class T = void>
  const T* data() const { return static_cast<const T*>(data_); }
  size_t bytes() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace lmrt
