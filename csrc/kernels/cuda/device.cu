// The CUDA runtime's view of the machine, and the host-array test plumbing of the ops (ops.h).
#include <cuda_runtime.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

void need_device() {
  std::string why;
  if (!available(&why)) throw std::runtime_error("no CUDA device: " + why);
}

// A device copy of n elements of host (floats left null: NaN-filled, the poison), freed on scope exit.
template <typename T>
struct DeviceArray {
  T* p = nullptr;
  size_t n;
  DeviceArray(const T* host, size_t n_) : n(n_) {
    check(cudaMalloc(&p, (n ? n : 1) * sizeof(T)), "cudaMalloc");
    if (host) {
      check(cudaMemcpy(p, host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
    } else {
      // NaN, or an integer type's least value (INT32_MIN: never a token id nor -1)
      const std::vector<T> poison(
          n, std::is_floating_point<T>::value ? static_cast<T>(std::nanf("")) : std::numeric_limits<T>::lowest());
      check(cudaMemcpy(p, poison.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to device");
    }
  }
  ~DeviceArray() { cudaFree(p); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void to_host(T* host) const {
    check(cudaMemcpy(host, p, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
  }
};

void finish(const char* what) {
  check(cudaGetLastError(), what);
  check(cudaDeviceSynchronize(), what);
}

}  // namespace

bool available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    cudaGetLastError();  // clear it
    return false;
  }
  if (n == 0) {
    if (why) *why = "the CUDA runtime found no device";
    return false;
  }
  return true;
}

std::string device_name() {
  if (!available(nullptr)) return "";
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
  return p.name;
}

void memory_info(size_t* free_bytes, size_t* total_bytes) {
  need_device();
  check(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

void rmsnorm_host(const float* x, int64_t M, int64_t H, const float* w, float eps, float* y) {
  need_device();
  DeviceArray<float> dx(x, M * H), dw(w, H), dy(nullptr, M * H);
  rmsnorm(dx.p, M, H, H, dw.p, eps, dy.p, H, nullptr);
  finish("rmsnorm");
  dy.to_host(y);
}

void add_rmsnorm_host(float* x, const float* add, int64_t M, int64_t H, const float* w, float eps, float* y) {
  need_device();
  DeviceArray<float> dx(x, M * H), da(add, M * H), dw(w, H), dy(nullptr, M * H);
  add_rmsnorm(dx.p, da.p, M, H, dw.p, eps, dy.p, nullptr);
  finish("add_rmsnorm");
  dy.to_host(y);
  dx.to_host(x);
}

void silu_mul_host(const float* gu, int64_t M, int64_t I, float* out) {
  need_device();
  DeviceArray<float> dg(gu, M * 2 * I), dout(nullptr, M * I);
  silu_mul(dg.p, M, I, 2 * I, dout.p, I, nullptr);
  finish("silu_mul");
  dout.to_host(out);
}

void rope_host(float* x, int64_t M, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
               float attn_scale) {
  need_device();
  const int64_t ld = static_cast<int64_t>(n_heads) * head_dim;
  DeviceArray<float> dx(x, M * ld), df(inv_freq, head_dim / 2);
  DeviceArray<int32_t> dp(pos, M);
  rope(dx.p, M, ld, n_heads, head_dim, dp.p, df.p, attn_scale, nullptr);
  finish("rope");
  dx.to_host(x);
}

void embedding_host(const void* table, DType dt, int64_t V, int64_t H, const int32_t* ids, int64_t M, float* out) {
  need_device();
  const size_t bytes = static_cast<size_t>(V * H) * (dt == DType::BF16 ? 2 : 4);
  DeviceArray<uint8_t> dt_(static_cast<const uint8_t*>(table), bytes);
  DeviceArray<int32_t> di(ids, M);
  DeviceArray<float> dout(nullptr, M * H);
  embedding(dt_.p, dt, H, di.p, M, dout.p, H, nullptr);
  finish("embedding");
  dout.to_host(out);
}

void linear_host(const float* x, int64_t M, int64_t K, const void* w, DType wdt, int64_t N, const float* bias, float* y,
                 bool tensor_cores) {
  need_device();
  DeviceArray<float> dx(x, M * K), dy(nullptr, M * N), db(bias, bias ? N : 0);
  DeviceArray<uint8_t> dw(static_cast<const uint8_t*>(w), static_cast<size_t>(N * K) * (wdt == DType::BF16 ? 2 : 4));
  if (tensor_cores) {
    linear_tc(dx.p, M, K, K, dw.p, wdt, N, bias ? db.p : nullptr, dy.p, N, nullptr);
  } else {
    linear(dx.p, M, K, K, dw.p, wdt, N, bias ? db.p : nullptr, dy.p, N, nullptr);
  }
  finish(tensor_cores ? "linear_tc" : "linear");
  dy.to_host(y);
}

void linear_w4_host(const float* x, int64_t M, int64_t K, const W4Matrix& w, int64_t N, const float* bias, float* y,
                    bool tensor_cores, W4Gemv shape) {
  need_device();
  const int64_t G = K / w.group_size;
  DeviceArray<float> dx(x, M * K), ds(w.scales, N * G), dm(w.mins, N * G), dy(nullptr, M * N);
  DeviceArray<uint8_t> dc(w.codes, N * K / 2);
  DeviceArray<float> db(bias, bias ? N : 0);
  const W4Matrix dw{dc.p, ds.p, dm.p, w.group_size};
  if (tensor_cores) {
    linear_w4_tc(dx.p, M, K, K, dw, N, bias ? db.p : nullptr, dy.p, N, nullptr);
  } else {
    linear_w4(dx.p, M, K, K, dw, N, bias ? db.p : nullptr, dy.p, N, nullptr, shape);
  }
  finish(tensor_cores ? "linear_w4_tc" : "linear_w4");
  dy.to_host(y);
}

namespace {

// A KVLayer's arrays copied to the device (num_blocks blocks; I4Channel K: its per-channel parameters, and
// num_stage_slots staging slots with the block -> slot table), and back.
struct DeviceKV {
  int64_t rows, k_params, stage_rows;
  DeviceArray<uint8_t> k, v, ks, vs, kz, vz, st, sts, stz;
  DeviceArray<int32_t> of;
  static bool quant(KVDType dt) { return dt == KVDType::I8 || dt == KVDType::I4; }
  static bool channel(KVDType dt) { return dt == KVDType::I4Channel; }
  DeviceKV(const KVLayer& h, int64_t num_blocks, int64_t num_stage_slots)
      : rows(num_blocks * h.n_kv_heads * h.block_size),
        k_params(channel(h.k_dtype) ? num_blocks * h.n_kv_heads * h.head_dim
                 : quant(h.k_dtype) ? rows
                                    : 0),
        stage_rows(channel(h.k_dtype) ? num_stage_slots * h.n_kv_heads * h.block_size : 0),
        k(static_cast<const uint8_t*>(h.k), rows * kv_row_bytes(h.k_dtype, h.head_dim)),
        v(static_cast<const uint8_t*>(h.v), rows * kv_row_bytes(h.v_dtype, h.head_dim)),
        ks(reinterpret_cast<const uint8_t*>(h.k_scales), k_params * 2),
        vs(reinterpret_cast<const uint8_t*>(h.v_scales), quant(h.v_dtype) ? rows * 2 : 0),
        kz(h.k_zeros, k_params),
        vz(h.v_zeros, quant(h.v_dtype) ? rows : 0),
        st(h.k_stage, stage_rows * h.head_dim),
        sts(reinterpret_cast<const uint8_t*>(h.k_stage_scales), stage_rows * 2),
        stz(h.k_stage_zeros, stage_rows),
        of(h.stage_of_block, channel(h.k_dtype) ? num_blocks : 0) {}
  KVLayer layer(const KVLayer& h) const {
    KVLayer d = h;
    d.k = k.p;
    d.v = v.p;
    d.k_scales = k_params ? reinterpret_cast<uint16_t*>(ks.p) : nullptr;
    d.v_scales = quant(h.v_dtype) ? reinterpret_cast<uint16_t*>(vs.p) : nullptr;
    d.k_zeros = k_params ? kz.p : nullptr;
    d.v_zeros = quant(h.v_dtype) ? vz.p : nullptr;
    if (channel(h.k_dtype)) {
      d.k_stage = st.p;
      d.k_stage_scales = reinterpret_cast<uint16_t*>(sts.p);
      d.k_stage_zeros = stz.p;
      d.stage_of_block = of.p;
    }
    return d;
  }
  void to_host(const KVLayer& h) const {
    k.to_host(static_cast<uint8_t*>(h.k));
    v.to_host(static_cast<uint8_t*>(h.v));
    if (k_params) {
      ks.to_host(reinterpret_cast<uint8_t*>(h.k_scales));
      kz.to_host(h.k_zeros);
    }
    if (channel(h.k_dtype)) {
      st.to_host(h.k_stage);
      sts.to_host(reinterpret_cast<uint8_t*>(h.k_stage_scales));
      stz.to_host(h.k_stage_zeros);
    }
    if (quant(h.v_dtype)) {
      vs.to_host(reinterpret_cast<uint8_t*>(h.v_scales));
      vz.to_host(h.v_zeros);
    }
  }
};

}  // namespace

void kv_store_host(const KVLayer& kv, int64_t num_blocks, int64_t num_stage_slots, const float* k, const float* v,
                   int64_t M, const int64_t* slot) {
  need_device();
  const int64_t row = static_cast<int64_t>(kv.n_kv_heads) * kv.head_dim;
  DeviceKV d(kv, num_blocks, num_stage_slots);
  DeviceArray<float> dk(k, M * row), dv(v, M * row);
  DeviceArray<int64_t> ds(slot, M);
  kv_store(d.layer(kv), dk.p, row, dv.p, row, M, ds.p, nullptr);
  finish("kv_store");
  d.to_host(kv);
}

void kv_seal_host(const KVLayer& kv, int64_t num_blocks, int64_t num_stage_slots, const int32_t* blocks, int64_t num) {
  need_device();
  DeviceKV d(kv, num_blocks, num_stage_slots);
  DeviceArray<int32_t> db(blocks, num);
  kv_seal(d.layer(kv), db.p, num, nullptr);
  finish("kv_seal");
  d.to_host(kv);
}

void paged_attention_host(const KVLayer& kv, int64_t num_blocks, int64_t num_stage_slots, const float* q,
                          const int32_t* pos, const int32_t* tables, int64_t n_table, const int64_t* table_start,
                          int64_t T, int n_heads, float scale, float* out) {
  need_device();
  const int64_t row = static_cast<int64_t>(n_heads) * kv.head_dim;
  DeviceKV d(kv, num_blocks, num_stage_slots);
  DeviceArray<float> dq(q, T * row), dout(nullptr, T * row);
  DeviceArray<int32_t> dp(pos, T), dt(tables, n_table);
  DeviceArray<int64_t> dts(table_start, T);
  DeviceArray<float> scratch(nullptr, paged_attention_scratch(T, n_heads, kv.head_dim));
  paged_attention(d.layer(kv), dq.p, row, dout.p, row, dp.p, dt.p, dts.p, table_start, T, n_heads, scale, scratch.p,
                  nullptr);
  finish("paged_attention");
  dout.to_host(out);
}

void hadamard_heads_host(float* x, int64_t M, int n_heads, int head_dim) {
  need_device();
  const int64_t ld = static_cast<int64_t>(n_heads) * head_dim;
  DeviceArray<float> dx(x, M * ld);
  hadamard_heads(dx.p, M, ld, n_heads, head_dim, nullptr);
  finish("hadamard_heads");
  dx.to_host(x);
}

void sample_host(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids, int64_t n_ids,
                 int32_t* out) {
  need_device();
  DeviceArray<float> dl(logits, R * V);
  DeviceArray<uint8_t> drows(reinterpret_cast<const uint8_t*>(rows), R * sizeof(RowSampling));
  std::vector<int32_t> no_ids(1, 0);
  DeviceArray<int32_t> dids(n_ids ? ids : no_ids.data(), n_ids ? n_ids : 1);
  DeviceArray<int32_t> dout(nullptr, R);
  sample(dl.p, R, V, reinterpret_cast<const RowSampling*>(drows.p), dids.p, dout.p, nullptr);
  finish("sample");
  dout.to_host(out);
  dl.to_host(logits);
}

}  // namespace lmrt::cuda
