// The kernels module (lmrt._core.kernels): each CPU op of csrc/kernels/cpu/ops.h for the tests and the
// benchmarks, with its arguments checked and the GIL released. Marshalling only: the ops hold the logic.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/sampling.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/cpu/tiles.h"
#ifdef LMRT_HAVE_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace py = pybind11;

// ---- kernels: thin wrappers over csrc/kernels/cpu/ops.h, used by tests/test_kernels.py ----
namespace kern {
namespace cpu = lmrt::cpu;
using F32In = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32In = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using I64In = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// std::invalid_argument becomes ValueError through pybind11's own translator.
[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

cpu::DType parse_dtype(const std::string& s) {
  if (s == "f32" || s == "float32") return cpu::DType::F32;
  if (s == "bf16" || s == "bfloat16") return cpu::DType::BF16;
  bad("dtype must be 'f32' or 'bf16', got '" + s + "'");
}

// A tensor of dtype dt as numpy holds it: float32, or uint16 bit patterns for bf16.
void check_storage(const py::array& a, cpu::DType dt, const char* what, bool writable) {
  const bool ok =
      dt == cpu::DType::F32 ? py::isinstance<py::array_t<float>>(a) : py::isinstance<py::array_t<uint16_t>>(a);
  if (!ok)
    bad(std::string(what) + " must be a " + (dt == cpu::DType::F32 ? "float32" : "uint16 (bf16 bits)") +
        " array, got dtype " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) bad(std::string(what) + " must be C-contiguous");
  if (writable && !a.writeable()) bad(std::string(what) + " must be writable");
}

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

// The binding keeps one pool, rebuilt when a call asks for another thread count;
// the mutex serialises callers because parallel_for has a single caller.
std::mutex g_pool_mu;
cpu::ThreadPool& pool_for(int n) {
  static std::unique_ptr<cpu::ThreadPool> pool;
  if (!pool || pool->num_threads() != n) pool = std::make_unique<cpu::ThreadPool>(n);
  return *pool;
}
void check_threads(int n) {
  if (n < 1 || n > 1024) bad("num_threads must be in [1, 1024], got " + std::to_string(n));
}

cpu::Isa isa_arg(const std::string& name) { return cpu::parse_isa(name.c_str()); }

// Checks y = x w^T (+ bias) arguments: x [M, K], w [N, K] stored as dt, bias [N]; returns {M, K, N}.
std::array<int64_t, 3> check_linear_args(const F32In& x, const py::array& w, const std::optional<F32In>& bias,
                                         cpu::DType dt) {
  check_storage(w, dt, "w", false);
  if (x.ndim() != 2) bad("x must be 2-D [M, K], got shape " + shape_str(x));
  if (w.ndim() != 2) bad("w must be 2-D [N, K], got shape " + shape_str(w));
  const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
  if (w.shape(1) != K) bad("w must be [N, K] with K = x.shape[1] = " + std::to_string(K) + ", got " + shape_str(w));
  if (bias && (bias->ndim() != 1 || bias->shape(0) != N))
    bad("bias must be [N] = [" + std::to_string(N) + "], got " + shape_str(*bias));
  return {M, K, N};
}

// Checks the arguments of y = x w^T (+ bias), then calls run(pool, x, w, bias, y, M, K, N, dt)
// without the GIL, on the shared kernel pool.
template <typename Run>
py::array_t<float> run_linear(F32In x, py::array w, std::optional<F32In> bias, const std::string& wdtype,
                              int num_threads, const Run& run) {
  const cpu::DType dt = parse_dtype(wdtype);
  check_threads(num_threads);
  const auto [M, K, N] = check_linear_args(x, w, bias, dt);
  py::array_t<float> y({M, N});
  const float* xp = x.data();
  const void* wp = w.data();
  const float* bp = bias ? bias->data() : nullptr;
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lk(g_pool_mu);
    run(pool_for(num_threads), xp, wp, bp, yp, M, K, N, dt);
  }
  return y;
}

bool on_cuda(const std::string& device);

py::array_t<float> linear(F32In x, py::array w, std::optional<F32In> bias, const std::string& wdtype, int num_threads,
                          const std::string& device, bool tensor_cores) {
  [[maybe_unused]] const bool gpu = on_cuda(device);
  if (tensor_cores && !gpu) bad("tensor_cores=True runs on device='cuda'");
  return run_linear(x, w, bias, wdtype, num_threads,
                    [gpu, tensor_cores](cpu::ThreadPool& pool, const float* xp, const void* wp, const float* bp,
                                        float* yp, int64_t M, int64_t K, int64_t N, cpu::DType dt) {
#ifdef LMRT_HAVE_CUDA
                      if (gpu) {
                        lmrt::cuda::linear_host(xp, M, K, wp, dt, N, bp, yp, tensor_cores);
                        return;
                      }
#endif
                      cpu::linear(pool, xp, M, K, K, wp, dt, N, bp, yp, N);
                    });
}

// A kernel call's tile_unit: "amx", "avx512bf16" or "model", checked available here (the error names the
// way out); None where the op also has an exact path, which it then takes.
std::optional<cpu::TileUnit> tile_unit_arg(const std::optional<std::string>& name, bool none_ok) {
  if (!name) {
    if (!none_ok) bad("tile_unit must be 'amx', 'avx512bf16' or 'model', got None");
    return std::nullopt;
  }
  cpu::TileUnit t;
  if (*name == "model")
    t = cpu::TileUnit::Model;
  else if (*name == "amx")
    t = cpu::TileUnit::Amx;
  else if (*name == "avx512bf16")
    t = cpu::TileUnit::Avx512Bf16;
  else
    bad("tile_unit must be 'amx', 'avx512bf16', 'model'" + std::string(none_ok ? " or None" : "") + ", got '" + *name +
        "'");
  if (!cpu::tile_unit_available(t))
    bad("this CPU (or OS, or build) has no " + std::string(*name == "amx" ? "AMX-BF16" : "AVX512-BF16") +
        ": pass tile_unit='model' (the software model) or another unit");
  return t;
}

// The bf16 tile GEMM on dense w. mode: "store" (y = x w^T + bias), "add" (y0 + x w^T + bias), "silu_mul"
// (silu(c[:, :N/2]) * c[:, N/2:] as bf16 bits, uint16 [M, N/2], with c = x w^T + bias).
py::array linear_bf16_tiles(F32In x, py::array w, std::optional<F32In> bias, const std::string& wdtype, int num_threads,
                            const std::optional<std::string>& tile_unit, const std::string& mode,
                            std::optional<F32In> y0) {
  const cpu::TileUnit unit = *tile_unit_arg(tile_unit, false);
  if (mode != "store" && mode != "add" && mode != "silu_mul")
    bad("mode must be 'store', 'add' or 'silu_mul', got '" + mode + "'");
  const cpu::TileOut out = mode == "add"        ? cpu::TileOut::Add
                           : mode == "silu_mul" ? cpu::TileOut::SiluMul
                                                : cpu::TileOut::Store;
  if (out == cpu::TileOut::Add && (!y0 || y0->ndim() != 2 || y0->shape(0) != x.shape(0) || y0->shape(1) != w.shape(0)))
    bad("mode='add' needs y0 of shape [M, N]");
  if (out == cpu::TileOut::SiluMul && w.ndim() == 2 && w.shape(0) % 64)
    bad("mode='silu_mul' needs N (gate rows, then as many up rows) a multiple of 64, got " +
        std::to_string(w.shape(0)));
  const cpu::DType dt = parse_dtype(wdtype);
  check_threads(num_threads);
  const auto [M, K, N] = check_linear_args(x, w, bias, dt);
  cpu::TileWeights tw;
  tw.dense = w.data();
  tw.dense_dtype = dt;
  tw.pair_halves = out == cpu::TileOut::SiluMul;
  // silu_mul writes bf16 rows up to the next multiple of 32 (the next product's padded input).
  py::array y = out == cpu::TileOut::SiluMul ? py::array(py::array_t<uint16_t>({(M + 31) / 32 * 32, N / 2}))
                                             : py::array(py::array_t<float>({M, N}));
  if (y0) std::memcpy(y.mutable_data(), y0->data(), static_cast<size_t>(M * N) * sizeof(float));
  const float* xp = x.data();
  const float* bp = bias ? bias->data() : nullptr;
  void* yp = y.mutable_data();
  const int64_t ldo = out == cpu::TileOut::SiluMul ? N / 2 : N;
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lk(g_pool_mu);
    lmrt::Buffer scratch;
    cpu::linear_bf16_tiles(pool_for(num_threads), xp, M, K, K, tw, N, bp, out, yp, ldo, unit, scratch);
  }
  if (out == cpu::TileOut::SiluMul) return y[py::slice(0, M, 1)];
  return y;
}

// A 2-D C-contiguous array of exactly type T (no silent casts: a wider integer array
// would wrap when cast to 4-bit codes or int8).
template <typename T>
py::array_t<T> exact_2d(const py::array& a, const char* what, const char* tname) {
  if (!py::isinstance<py::array_t<T>>(a))
    bad(std::string(what) + " must be a " + tname + " array, got dtype " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) bad(std::string(what) + " must be C-contiguous");
  if (a.ndim() != 2) bad(std::string(what) + " must be 2-D, got shape " + shape_str(a));
  return py::reinterpret_borrow<py::array_t<T>>(a);
}

void check_bias(const std::optional<F32In>& bias, int64_t N) {
  if (bias && (bias->ndim() != 1 || bias->shape(0) != N))
    bad("bias must be [N] = [" + std::to_string(N) + "], got " + shape_str(*bias));
}

// device "cpu" or "cuda" (the CUDA op on copies of the arrays; RuntimeError without a device or a CUDA build).
// A CUDA 4-bit GEMV shape by name: its place in cuda::W4Gemv (Default, Narrow, Streamed).
int gemv_code(const std::string& s) {
  if (s == "default") return 0;
  if (s == "narrow") return 1;
  if (s == "streamed") return 2;
  bad("gemv must be 'default', 'narrow' or 'streamed', got '" + s + "'");
}

bool on_cuda(const std::string& device) {
  if (device == "cpu") return false;
  if (device != "cuda") bad("device must be 'cpu' or 'cuda', got '" + device + "'");
#ifdef LMRT_HAVE_CUDA
  return true;
#else
  throw std::runtime_error("this build has no CUDA backend (nvcc was not found when it was built)");
#endif
}

// The unit of the interleaved int8 products: amx None: as the engine (AMX-INT8 from kAmxMinRows rows, kAmxI8MinRows
// for the int8 matrix, where present),
// True: AMX at every row count, False: the vector path; vnni False: AVX-512 without VNNI (never AMX).
cpu::Int8Unit int8_unit_arg(bool vnni, std::optional<bool> amx) {
  if (amx && *amx) {
    if (!vnni) bad("amx=True runs AMX-INT8; vnni=False names the maddubs path: pass one of them");
    if (!cpu::amx_int8_available()) bad("amx=True: this CPU (or OS, or build) has no AMX-INT8");
    return cpu::Int8Unit::Amx;
  }
  if (!vnni) return cpu::Int8Unit::Maddubs;
  return amx ? cpu::Int8Unit::Vector : cpu::Int8Unit::Auto;
}

// codes [N, K/2] uint8 (W4Matrix nibble layout), scales/mins [N, K/group_size] float32 (interleaved: w4_interleave's
// float16).
py::array_t<float> linear_w4(F32In x, py::array codes, py::array scales_in, py::array mins_in, int group_size,
                             std::optional<F32In> bias, int num_threads, const std::optional<std::string>& tile_unit,
                             const std::string& activations, bool vnni, std::optional<bool> amx, bool interleaved,
                             bool silu_mul, const std::string& device, bool tensor_cores, const std::string& gemv) {
  check_threads(num_threads);
  const std::optional<cpu::TileUnit> unit = tile_unit_arg(tile_unit, true);
  [[maybe_unused]] const bool gpu = on_cuda(device);
  if (tensor_cores && !gpu) bad("tensor_cores=True runs on device='cuda' (the CPU's bf16 tiles: tile_unit=)");
  if (gemv_code(gemv) != 0 && !gpu) bad("gemv= chooses the CUDA GEMV's shape: pass device='cuda'");
  if (gpu && (unit || activations != "fp32")) bad("device='cuda' takes neither tile_unit nor activations='int8'");
  if (activations != "fp32" && activations != "int8")
    bad("activations must be 'fp32' or 'int8', got '" + activations + "'");
  if (interleaved && activations != "int8" && !unit)
    bad("interleaved=True takes activations='int8' (or a tile_unit: the bf16 tiles packed from that layout)");
  if (silu_mul && unit) bad("silu_mul=True runs with int8 activations: pass no tile_unit");
  if (silu_mul && !interleaved) bad("silu_mul=True takes interleaved=True (linear_w4a8_il_silu)");
  if (silu_mul && bias) bad("silu_mul=True takes no bias");
  if (amx && !interleaved) bad("amx= chooses the unit of the interleaved products: pass interleaved=True");
  const cpu::Int8Unit int8_unit = int8_unit_arg(vnni, amx);
  if (activations == "int8" && unit) bad("activations='int8' runs on the vector units: pass no tile_unit");
  if (group_size != 32 && group_size != 64 && group_size != 128)
    bad("group_size must be 32, 64 or 128, got " + std::to_string(group_size));
  if (x.ndim() != 2) bad("x must be 2-D [M, K], got shape " + shape_str(x));
  const int64_t M = x.shape(0), K = x.shape(1);
  if (K <= 0 || K % group_size != 0)
    bad("K = x.shape[1] = " + std::to_string(K) + " must be a positive multiple of group_size " +
        std::to_string(group_size));
  auto c = exact_2d<uint8_t>(codes, "codes", "uint8");
  const int64_t N = c.shape(0), G = K / group_size;
  if (c.shape(1) != K / 2) bad("codes must be [N, K/2] with K/2 = " + std::to_string(K / 2) + ", got " + shape_str(c));
  // Interleaved: the scales and mins w4_interleave gave (float16); else float32 (other float types converted).
  py::array sa = scales_in, ma = mins_in;
  if (interleaved) {
    for (const py::array* a : {&sa, &ma})
      if (a->dtype().kind() != 'f' || a->dtype().itemsize() != 2 || !(a->flags() & py::array::c_style))
        bad(std::string(a == &sa ? "scales" : "mins") +
            " must be w4_interleave's (C-contiguous float16) when interleaved=True, got dtype " +
            std::string(py::str(a->dtype())));
  } else {
    sa = F32In::ensure(scales_in);
    ma = F32In::ensure(mins_in);
    if (!sa || !ma) bad("scales and mins must be float arrays");
  }
  for (const py::array* a : {&sa, &ma})
    if (a->ndim() != 2 || a->shape(0) != N || a->shape(1) != G)
      bad(std::string(a == &sa ? "scales" : "mins") + " must be [N, K/group_size] = [" + std::to_string(N) + ", " +
          std::to_string(G) + "], got " + shape_str(*a));
  check_bias(bias, N);
  if (interleaved && N % 16 != 0) bad("interleaved weights need N a multiple of 16, got " + std::to_string(N));
  if (silu_mul && N % 32 != 0)
    bad("silu_mul=True needs N (gates, then ups) a multiple of 32, got " + std::to_string(N));
  py::array_t<float> y({M, silu_mul ? N / 2 : N});
  const float* xp = x.data();
  const cpu::W4Matrix w{c.data(), interleaved ? nullptr : static_cast<const float*>(sa.data()),
                        interleaved ? nullptr : static_cast<const float*>(ma.data()), group_size};
  const float* bp = bias ? bias->data() : nullptr;
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lk(g_pool_mu);
    cpu::ThreadPool& pool = pool_for(num_threads);
#ifdef LMRT_HAVE_CUDA
    if (gpu) {
      lmrt::cuda::linear_w4_host(xp, M, K, w, N, bp, yp, tensor_cores,
                                 static_cast<lmrt::cuda::W4Gemv>(gemv_code(gemv)));
      return y;
    }
#endif
    if (interleaved && unit) {
      cpu::TileWeights tw;
      tw.w4il = cpu::W4Interleaved{c.data(), static_cast<const uint16_t*>(sa.data()),
                                   static_cast<const uint16_t*>(ma.data()), group_size};
      lmrt::Buffer scratch;
      cpu::linear_bf16_tiles(pool, xp, M, K, K, tw, N, bp, cpu::TileOut::Store, yp, N, *unit, scratch);
    } else if (interleaved) {
      lmrt::Buffer scratch;
      const cpu::W4Interleaved il{c.data(), static_cast<const uint16_t*>(sa.data()),
                                  static_cast<const uint16_t*>(ma.data()), group_size};
      if (silu_mul) {
        cpu::linear_w4a8_il_silu(pool, xp, M, K, K, il, N, yp, N / 2, scratch, int8_unit);
      } else {
        cpu::linear_w4a8_il(pool, xp, M, K, K, il, N, bp, yp, N, scratch, int8_unit);
      }
    } else if (activations == "int8") {
      lmrt::Buffer scratch;
      cpu::linear_w4a8(pool, xp, M, K, K, w, N, bp, yp, N, scratch, vnni);
    } else if (!unit) {
      cpu::linear_w4(pool, xp, M, K, K, w, N, bp, yp, N);
    } else {
      cpu::TileWeights tw;
      tw.w4 = w;
      lmrt::Buffer scratch;
      cpu::linear_bf16_tiles(pool, xp, M, K, K, tw, N, bp, cpu::TileOut::Store, yp, N, *unit, scratch);
    }
  }
  return y;
}

// (codes, scales, mins) of a W4Matrix -> the same values in W4Interleaved's layout (same shapes; scales and mins as
// float16, rounded to nearest where not exact).
py::tuple w4_interleave(py::array codes, F32In scales, F32In mins, int group_size) {
  auto c = exact_2d<uint8_t>(codes, "codes", "uint8");
  const int64_t N = c.shape(0), K = c.shape(1) * 2;
  if (group_size <= 0 || K % group_size != 0) bad("group_size must divide K = " + std::to_string(K));
  for (auto* a : {&scales, &mins})
    if (a->ndim() != 2 || a->shape(0) != N || a->shape(1) != K / group_size)
      bad("scales and mins must be [N, K/group_size], got " + shape_str(*a));
  py::array_t<uint8_t> ci({N, K / 2});
  py::array_t<uint16_t> si({N, K / group_size}), mi({N, K / group_size});
  cpu::w4_interleave(cpu::W4Matrix{c.data(), scales.data(), mins.data(), group_size}, N, K, ci.mutable_data(),
                     si.mutable_data(), mi.mutable_data());
  return py::make_tuple(ci, si.view("float16"), mi.view("float16"));  // the halves' bits, as NumPy's float16
}

// q [N, K] int8 -> (q in I8Interleaved's layout, same shape; offsets [N * K / 32] int32).
py::tuple i8_interleave(py::array q) {
  auto qa = exact_2d<int8_t>(q, "q", "int8");
  const int64_t N = qa.shape(0), K = qa.shape(1);
  py::array_t<int8_t> qi({N, K});
  py::array_t<int32_t> off(N * (K / 32 > 0 ? K / 32 : 0));
  cpu::i8_interleave(cpu::I8Matrix{qa.data(), nullptr}, N, K, qi.mutable_data(), off.mutable_data());
  return py::make_tuple(qi, off);
}

py::tuple quantize_q8(F32In x) {
  if (x.ndim() != 2) bad("x must be 2-D [M, K], got shape " + shape_str(x));
  const int64_t M = x.shape(0), K = x.shape(1);
  if (K <= 0 || K % 32 != 0) bad("K = x.shape[1] = " + std::to_string(K) + " must be a positive multiple of 32");
  py::array_t<int8_t> q({M, K});
  py::array_t<float> d({M, K / 32});
  const float* xp = x.data();
  int8_t* qp = q.mutable_data();
  float* dp = d.mutable_data();
  {
    py::gil_scoped_release nogil;
    cpu::quantize_q8(xp, M, K, K, qp, dp);
  }
  return py::make_tuple(q, d);
}

// x [M, K] float32 -> (hi, lo, alpha): linear_i8's activations='int16' (A16Rows).
py::tuple quantize_a16(F32In x) {
  if (x.ndim() != 2) bad("x must be 2-D [M, K], got shape " + shape_str(x));
  const int64_t M = x.shape(0), K = x.shape(1);
  if (K <= 0) bad("K = x.shape[1] must be positive");
  py::array_t<uint8_t> hi({M, K}), lo({M, K});
  py::array_t<float> alpha(M);
  const float* xp = x.data();
  uint8_t* hp = hi.mutable_data();
  uint8_t* lp = lo.mutable_data();
  float* ap = alpha.mutable_data();
  {
    py::gil_scoped_release nogil;
    cpu::quantize_a16(xp, M, K, K, hp, lp, ap);
  }
  return py::make_tuple(hi, lo, alpha);
}

lmrt::I8Activations i8_activations_arg(const std::string& a) {
  if (a == "int8") return lmrt::I8Activations::Int8Runs;
  if (a == "int16") return lmrt::I8Activations::Int16Rows;
  bad("activations must be 'int8' (a scale per run of 32 inputs) or 'int16' (one scale per row), got '" + a + "'");
}

// q [N, K] int8, scales [N] float32.
py::array_t<float> linear_i8(F32In x, py::array q, F32In scales, std::optional<F32In> bias, int num_threads,
                             const std::optional<std::string>& tile_unit,
                             const std::optional<py::array_t<int32_t, py::array::c_style>>& offsets,
                             std::optional<bool> amx, const std::string& activations) {
  check_threads(num_threads);
  if (amx && !offsets) bad("amx= chooses the unit of the interleaved product: pass offsets (i8_interleave's)");
  const lmrt::I8Activations acts = i8_activations_arg(activations);
  if (acts == lmrt::I8Activations::Int16Rows && !offsets)
    bad("activations='int16' runs over interleaved weights: pass offsets (i8_interleave's)");
  const cpu::Int8Unit int8_unit = int8_unit_arg(true, amx);
  const std::optional<cpu::TileUnit> unit = tile_unit_arg(tile_unit, true);
  if (unit && bias) bad("linear_i8 on tiles takes no bias (the output matrix has none)");
  if (unit && offsets) bad("interleaved weights (offsets given) run with int8 activations: pass no tile_unit");
  if (x.ndim() != 2) bad("x must be 2-D [M, K], got shape " + shape_str(x));
  const int64_t M = x.shape(0), K = x.shape(1);
  auto qa = exact_2d<int8_t>(q, "q", "int8");
  const int64_t N = qa.shape(0);
  if (qa.shape(1) != K) bad("q must be [N, K] with K = x.shape[1] = " + std::to_string(K) + ", got " + shape_str(qa));
  if (scales.ndim() != 1 || scales.shape(0) != N)
    bad("scales must be [N] = [" + std::to_string(N) + "], got " + shape_str(scales));
  check_bias(bias, N);
  if (offsets && (N % 16 != 0 || K % 32 != 0 || offsets->size() != N * (K / 32)))
    bad("offsets must hold N * K / 32 int32 (i8_interleave's), N a multiple of 16 and K of 32");
  py::array_t<float> y({M, N});
  const float* xp = x.data();
  const cpu::I8Matrix w{qa.data(), scales.data()};
  const float* bp = bias ? bias->data() : nullptr;
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lk(g_pool_mu);
    cpu::ThreadPool& pool = pool_for(num_threads);
    if (offsets) {
      lmrt::Buffer scratch;
      const cpu::I8Interleaved il{qa.data(), offsets->data(), scales.data()};
      cpu::linear_i8a8_il(pool, xp, M, K, K, il, N, bp, yp, N, scratch, int8_unit, acts);
    } else if (!unit) {
      cpu::linear_i8(pool, xp, M, K, K, w, N, bp, yp, N);
    } else {
      cpu::TileWeights tw;
      tw.i8 = w;
      lmrt::Buffer scratch;
      cpu::linear_bf16_tiles(pool, xp, M, K, K, tw, N, nullptr, cpu::TileOut::Store, yp, N, *unit, scratch);
    }
  }
  return y;
}

// Each row's token under its sampling (common/sampling.h's sample_row): the rule the CPU op set runs, or the CUDA op.
// One entry a row in each parameter array; penalized / banned: a list of token ids a row. The logits are copied.
py::array_t<int32_t> sample(F32In logits, F32In temperature, I32In top_k, F32In top_p, F32In min_p,
                            F32In repetition_penalty, py::array_t<double, py::array::c_style | py::array::forcecast> u,
                            const std::vector<std::vector<int32_t>>& penalized,
                            const std::vector<std::vector<int32_t>>& banned, const std::string& device) {
  [[maybe_unused]] const bool gpu = on_cuda(device);
  if (logits.ndim() != 2 || logits.shape(1) < 1) bad("logits must be 2-D [R, V] with V >= 1, got " + shape_str(logits));
  const int64_t R = logits.shape(0), V = logits.shape(1);
  const auto per_row = [R](const py::array& a, const char* name) {
    if (a.ndim() != 1 || a.shape(0) != R)
      bad(std::string(name) + " must be 1-D with one entry a logits row (" + std::to_string(R) + "), got " +
          shape_str(a));
  };
  per_row(temperature, "temperature");
  per_row(top_k, "top_k");
  per_row(top_p, "top_p");
  per_row(min_p, "min_p");
  per_row(repetition_penalty, "repetition_penalty");
  per_row(u, "u");
  if (static_cast<int64_t>(penalized.size()) != R || static_cast<int64_t>(banned.size()) != R)
    bad("penalized and banned need one list of token ids a logits row");
  std::vector<lmrt::RowSampling> rows(R);
  std::vector<int32_t> ids;
  for (int64_t r = 0; r < R; ++r) {
    lmrt::RowSampling& p = rows[r];
    p.temperature = temperature.data()[r];
    p.top_k = top_k.data()[r];
    p.top_p = top_p.data()[r];
    p.min_p = min_p.data()[r];
    p.repetition_penalty = repetition_penalty.data()[r];
    p.u = u.data()[r];
    p.penalized_begin = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), penalized[r].begin(), penalized[r].end());
    p.penalized_end = p.banned_begin = static_cast<int64_t>(ids.size());
    ids.insert(ids.end(), banned[r].begin(), banned[r].end());
    p.banned_end = static_cast<int64_t>(ids.size());
  }
  std::vector<float> rowsf(logits.data(), logits.data() + R * V);
  py::array_t<int32_t> out(R);
  int32_t* op = out.mutable_data();
  py::gil_scoped_release nogil;
#ifdef LMRT_HAVE_CUDA
  if (gpu) {
    lmrt::cuda::sample_host(rowsf.data(), R, V, rows.data(), ids.data(), static_cast<int64_t>(ids.size()), op);
    return out;
  }
#endif
  lmrt::TokenPicker picker;
  for (int64_t r = 0; r < R; ++r) op[r] = lmrt::sample_row(rowsf.data() + r * V, V, rows[r], ids.data(), picker);
  return out;
}

py::tuple cuda_available() {
#ifdef LMRT_HAVE_CUDA
  std::string why;
  const bool ok = lmrt::cuda::available(&why);
  return py::make_tuple(ok, ok ? lmrt::cuda::device_name() : why);
#else
  return py::make_tuple(false, "this build has no CUDA backend (nvcc was not found when it was built)");
#endif
}

// (free, total) bytes of the first CUDA device's memory (RuntimeError without a device or a CUDA build).
py::tuple cuda_memory() {
  on_cuda("cuda");
#ifdef LMRT_HAVE_CUDA
  size_t free_bytes = 0, total_bytes = 0;
  lmrt::cuda::memory_info(&free_bytes, &total_bytes);
  return py::make_tuple(free_bytes, total_bytes);
#else
  return py::make_tuple(0, 0);
#endif
}

// Device-side timings for benchmarks/bench_cuda.py (RuntimeError without a device or a CUDA build).
py::tuple cuda_copy_bandwidth(size_t bytes, int reps) {
  on_cuda("cuda");
  if (reps < 1) bad("reps must be >= 1");
#ifdef LMRT_HAVE_CUDA
  std::string why;
  if (!lmrt::cuda::available(&why)) throw std::runtime_error("no CUDA device: " + why);
  lmrt::cuda::CopyBandwidth b;
  {
    py::gil_scoped_release nogil;
    b = lmrt::cuda::copy_bandwidth_gbs(bytes, reps);
  }
  return py::make_tuple(b.memcpy, b.kernel);
#else
  return py::make_tuple(0.0, 0.0);
#endif
}

py::tuple cuda_time_linear_w4(int64_t M, int64_t K, int64_t N, int group_size, int reps, size_t min_bytes,
                              const std::string& gemv, bool tensor_cores) {
  on_cuda("cuda");
  gemv_code(gemv);
  if (group_size != 32 && group_size != 64 && group_size != 128)
    bad("group_size must be 32, 64 or 128, got " + std::to_string(group_size));
  if (M < 1 || N < 1 || K < 32 || K % group_size != 0 || K % 32 != 0 || reps < 1)
    bad("need M, N, reps >= 1 and K a positive multiple of 32 and of group_size");
#ifdef LMRT_HAVE_CUDA
  std::string why;
  if (!lmrt::cuda::available(&why)) throw std::runtime_error("no CUDA device: " + why);
  lmrt::cuda::LinearTiming t;
  {
    py::gil_scoped_release nogil;
    t = lmrt::cuda::time_linear_w4(M, K, N, group_size, reps, min_bytes,
                                   static_cast<lmrt::cuda::W4Gemv>(gemv_code(gemv)), tensor_cores);
  }
  return py::make_tuple(t.us, t.bytes);
#else
  return py::make_tuple(0.0, 0.0);
#endif
}

// residual: the fused residual add (x + residual, then the norm), returning (y, x + residual).
py::object rmsnorm(F32In x, F32In w, float eps, const std::string& device, std::optional<F32In> residual) {
  if (x.ndim() != 2) bad("x must be 2-D [M, H], got shape " + shape_str(x));
  const int64_t M = x.shape(0), H = x.shape(1);
  if (w.ndim() != 1 || w.shape(0) != H) bad("w must be [H] = [" + std::to_string(H) + "], got " + shape_str(w));
  if (residual && (residual->ndim() != 2 || residual->shape(0) != M || residual->shape(1) != H))
    bad("residual must be x's shape [M, H], got " + shape_str(*residual));
  py::array_t<float> y({M, H}), sum({M, H});
  const float *xp = x.data(), *wp = w.data(), *rp = residual ? residual->data() : nullptr;
  float *yp = y.mutable_data(), *sp = sum.mutable_data();
  [[maybe_unused]] const bool gpu = on_cuda(device);
  {
    py::gil_scoped_release nogil;
    if (rp) {
      std::memcpy(sp, xp, static_cast<size_t>(M * H) * sizeof(float));
#ifdef LMRT_HAVE_CUDA
      if (gpu) lmrt::cuda::add_rmsnorm_host(sp, rp, M, H, wp, eps, yp);
#endif
      if (!gpu) {
        for (int64_t i = 0; i < M * H; ++i) sp[i] += rp[i];
        cpu::rmsnorm(sp, M, H, H, wp, eps, yp, H);
      }
    } else {
#ifdef LMRT_HAVE_CUDA
      if (gpu) lmrt::cuda::rmsnorm_host(xp, M, H, wp, eps, yp);
#endif
      if (!gpu) cpu::rmsnorm(xp, M, H, H, wp, eps, yp, H);
    }
  }
  if (rp) return py::make_tuple(y, sum);
  return std::move(y);
}

py::array_t<float> rope(F32In x, I32In pos, F32In inv_freq, int n_heads, int head_dim, float attn_scale,
                        const std::string& device) {
  if (x.ndim() != 2) bad("x must be 2-D [M, n_heads * head_dim], got shape " + shape_str(x));
  if (n_heads < 1 || head_dim < 2 || head_dim % 2) bad("need n_heads >= 1 and an even head_dim >= 2");
  const int64_t M = x.shape(0);
  if (x.shape(1) != static_cast<int64_t>(n_heads) * head_dim)
    bad("x must be [M, n_heads * head_dim] = [M, " + std::to_string(n_heads * head_dim) + "], got " + shape_str(x));
  if (pos.ndim() != 1 || pos.shape(0) != M) bad("pos must be [M] = [" + std::to_string(M) + "], got " + shape_str(pos));
  if (inv_freq.ndim() != 1 || inv_freq.shape(0) != head_dim / 2)
    bad("inv_freq must be [head_dim / 2] = [" + std::to_string(head_dim / 2) + "], got " + shape_str(inv_freq));
  py::array_t<float> y({M, x.shape(1)});
  std::copy(x.data(), x.data() + x.size(), y.mutable_data());
  float* yp = y.mutable_data();
  const int32_t* pp = pos.data();
  const float* fp = inv_freq.data();
  [[maybe_unused]] const bool gpu = on_cuda(device);
  {
    py::gil_scoped_release nogil;
#ifdef LMRT_HAVE_CUDA
    if (gpu) {
      lmrt::cuda::rope_host(yp, M, n_heads, head_dim, pp, fp, attn_scale);
      return y;
    }
#endif
    cpu::rope(yp, M, n_heads * head_dim, n_heads, head_dim, pp, fp, attn_scale);
  }
  return y;
}

py::array_t<float> hadamard_heads(F32In x, int n_heads, int head_dim, const std::string& device) {
  if (x.ndim() != 2) bad("x must be 2-D [M, n_heads * head_dim], got shape " + shape_str(x));
  if (n_heads < 1 || head_dim < 1) bad("need n_heads >= 1 and head_dim >= 1");
  const int64_t M = x.shape(0);
  if (x.shape(1) != static_cast<int64_t>(n_heads) * head_dim)
    bad("x must be [M, n_heads * head_dim] = [M, " + std::to_string(n_heads * head_dim) + "], got " + shape_str(x));
  py::array_t<float> y({M, x.shape(1)});
  std::copy(x.data(), x.data() + x.size(), y.mutable_data());
  float* yp = y.mutable_data();
  [[maybe_unused]] const bool gpu = on_cuda(device);
  py::gil_scoped_release nogil;
#ifdef LMRT_HAVE_CUDA
  if (gpu) {
    lmrt::cuda::hadamard_heads_host(yp, M, n_heads, head_dim);
    return y;
  }
#endif
  cpu::hadamard_heads(yp, M, x.shape(1), n_heads, head_dim);
  return y;
}

py::array_t<float> silu_mul(F32In gu, const std::string& device) {
  if (gu.ndim() != 2 || gu.shape(1) % 2) bad("gu must be 2-D [M, 2I], got shape " + shape_str(gu));
  const int64_t M = gu.shape(0), I = gu.shape(1) / 2;
  py::array_t<float> out({M, I});
  const float* gp = gu.data();
  float* op = out.mutable_data();
  [[maybe_unused]] const bool gpu = on_cuda(device);
  {
    py::gil_scoped_release nogil;
#ifdef LMRT_HAVE_CUDA
    if (gpu) {
      lmrt::cuda::silu_mul_host(gp, M, I, op);
      return out;
    }
#endif
    cpu::silu_mul(gp, M, I, 2 * I, op, I);
  }
  return out;
}

cpu::KVDType kv_dtype_arg(const std::string& s) {
  if (s == "f32" || s == "float32") return cpu::KVDType::F32;
  if (s == "bf16" || s == "bfloat16") return cpu::KVDType::BF16;
  if (s == "i8" || s == "int8") return cpu::KVDType::I8;
  if (s == "i4" || s == "int4") return cpu::KVDType::I4;
  if (s == "i4c" || s == "int4_channel") return cpu::KVDType::I4Channel;
  bad("dtype must be 'f32', 'bf16', 'i8', 'i4' or 'i4c' (K only), got '" + s + "'");
}

// One cache (k or v) of a KVLayer: the array holds whole blocks of n_kv_heads * block_size rows of
// kv_row_bytes(dt, head_dim) bytes (float32 for f32, uint16 for bf16, uint8 codes for i8 / i4 / i4c); i8 / i4 also
// take scales (uint16 fp16 bits) and zeros (uint8), one per row; i4c one per block, kv head and channel. Returns the
// number of blocks.
int64_t check_kv(const py::array& c, cpu::KVDType dt, const char* what, int n_kv_heads, int head_dim, int block_size,
                 const std::optional<py::array>& scales, const std::optional<py::array>& zeros) {
  if (n_kv_heads < 1 || head_dim < 1 || block_size < 1) bad("n_kv_heads, head_dim and block_size must be >= 1");
  if ((dt == cpu::KVDType::I4 || dt == cpu::KVDType::I4Channel) && head_dim % 32)
    bad("i4 rows need head_dim a multiple of 32");
  const bool ok = dt == cpu::KVDType::F32    ? py::isinstance<py::array_t<float>>(c)
                  : dt == cpu::KVDType::BF16 ? py::isinstance<py::array_t<uint16_t>>(c)
                                             : py::isinstance<py::array_t<uint8_t>>(c);
  if (!ok) bad(std::string(what) + " must be float32 (f32), uint16 (bf16) or uint8 (i8 / i4 codes) as its dtype says");
  if (!(c.flags() & py::array::c_style) || !c.writeable())
    bad(std::string(what) + " must be C-contiguous and writable");
  const int64_t per_block = static_cast<int64_t>(n_kv_heads) * block_size * cpu::kv_row_bytes(dt, head_dim);
  if (c.nbytes() % per_block) bad(std::string(what) + " must hold whole blocks, got shape " + shape_str(c));
  const int64_t rows = c.nbytes() / per_block * n_kv_heads * (dt == cpu::KVDType::I4Channel ? head_dim : block_size);
  const bool quantized = dt == cpu::KVDType::I8 || dt == cpu::KVDType::I4 || dt == cpu::KVDType::I4Channel;
  if (quantized != (scales.has_value() && zeros.has_value()))
    bad(std::string(what) +
        (quantized ? ": i8 / i4 / i4c need its scales and zeros" : ": scales and zeros are for i8 / i4"));
  if (quantized && !(py::isinstance<py::array_t<uint16_t>>(*scales) && py::isinstance<py::array_t<uint8_t>>(*zeros) &&
                     scales->size() == rows && zeros->size() == rows && scales->writeable() && zeros->writeable() &&
                     (scales->flags() & py::array::c_style) && (zeros->flags() & py::array::c_style)))
    bad(std::string(what) +
        ": scales must be uint16 and zeros uint8, C-contiguous and writable, one per row (i4c: per "
        "block, kv head and channel): " +
        std::to_string(rows));
  return c.nbytes() / per_block;
}

// The KVLayer of the kernel calls: k and v caches of dtype (v_dtype: the same, unless given), checked.
struct KVArgs {
  cpu::KVLayer kv;
  int64_t num_blocks;
  int64_t num_stage_slots = 0;  // i4c K
};
KVArgs kv_args(py::array& k_cache, py::array& v_cache, const std::string& dtype,
               const std::optional<std::string>& v_dtype, int n_kv_heads, int head_dim, int block_size,
               std::optional<py::array>& k_scales, std::optional<py::array>& k_zeros,
               std::optional<py::array>& v_scales, std::optional<py::array>& v_zeros,
               const std::optional<py::tuple>& stage) {
  const cpu::KVDType kd = kv_dtype_arg(dtype),
                     vd = v_dtype ? kv_dtype_arg(*v_dtype) : (kd == cpu::KVDType::I4Channel ? cpu::KVDType::I4 : kd);
  if (kd != vd && !(kd == cpu::KVDType::I8 && vd == cpu::KVDType::I4) &&
      !(kd == cpu::KVDType::I4Channel && vd == cpu::KVDType::I4))
    bad("K and V share a dtype, or K is i8 and V i4, or K is i4c and V i4");
  const int64_t nb = check_kv(k_cache, kd, "k_cache", n_kv_heads, head_dim, block_size, k_scales, k_zeros);
  if (check_kv(v_cache, vd, "v_cache", n_kv_heads, head_dim, block_size, v_scales, v_zeros) != nb)
    bad("k_cache and v_cache must have the same number of blocks");
  auto ptr16 = [](std::optional<py::array>& a) { return a ? static_cast<uint16_t*>(a->mutable_data()) : nullptr; };
  auto ptr8 = [](std::optional<py::array>& a) { return a ? static_cast<uint8_t*>(a->mutable_data()) : nullptr; };
  cpu::KVLayer kv;
  kv.k = k_cache.mutable_data();
  kv.v = v_cache.mutable_data();
  kv.k_scales = ptr16(k_scales);
  kv.k_zeros = ptr8(k_zeros);
  kv.v_scales = ptr16(v_scales);
  kv.v_zeros = ptr8(v_zeros);
  kv.k_dtype = kd;
  kv.v_dtype = vd;
  kv.n_kv_heads = n_kv_heads;
  kv.head_dim = head_dim;
  kv.block_size = block_size;
  if ((kd == cpu::KVDType::I4Channel) != stage.has_value())
    bad(kd == cpu::KVDType::I4Channel ? "i4c K needs stage=(codes, scales, zeros, stage_of_block)"
                                      : "stage is for i4c K only");
  if (stage) {
    if (stage->size() != 4) bad("stage must be (codes, scales, zeros, stage_of_block)");
    py::array codes = (*stage)[0], sc = (*stage)[1], ze = (*stage)[2], of = (*stage)[3];
    auto ok = [](const py::array& a) { return (a.flags() & py::array::c_style) && a.writeable(); };
    const int64_t slot_rows = static_cast<int64_t>(n_kv_heads) * block_size;
    if (!(py::isinstance<py::array_t<uint8_t>>(codes) && py::isinstance<py::array_t<uint16_t>>(sc) &&
          py::isinstance<py::array_t<uint8_t>>(ze) && py::isinstance<py::array_t<int32_t>>(of) && ok(codes) && ok(sc) &&
          ok(ze) && ok(of)))
      bad("stage: codes uint8, scales uint16, zeros uint8, stage_of_block int32, all C-contiguous and writable");
    if (sc.size() % slot_rows || ze.size() != sc.size() || codes.size() != sc.size() * head_dim)
      bad("stage: scales and zeros [slots * n_kv_heads * block_size], codes [that many rows, head_dim]");
    if (of.size() != nb) bad("stage: stage_of_block must have one entry per block (" + std::to_string(nb) + ")");
    const int64_t slots = sc.size() / slot_rows;
    kv.k_stage = static_cast<uint8_t*>(codes.mutable_data());
    kv.k_stage_scales = static_cast<uint16_t*>(sc.mutable_data());
    kv.k_stage_zeros = static_cast<uint8_t*>(ze.mutable_data());
    kv.stage_of_block = static_cast<const int32_t*>(of.data());
    for (int64_t b = 0; b < nb; ++b)
      if (kv.stage_of_block[b] != -1 && (kv.stage_of_block[b] < 0 || kv.stage_of_block[b] >= slots))
        bad("stage_of_block[" + std::to_string(b) + "] outside -1 and the " + std::to_string(slots) + " slots");
    return {kv, nb, slots};
  }
  return {kv, nb};
}

void kv_store(py::array k_cache, py::array v_cache, F32In k, F32In v, I64In slots, int n_kv_heads, int head_dim,
              int block_size, const std::string& dtype, std::optional<std::string> v_dtype,
              std::optional<py::array> k_scales, std::optional<py::array> k_zeros, std::optional<py::array> v_scales,
              std::optional<py::array> v_zeros, std::optional<py::tuple> stage, const std::string& device) {
  const KVArgs a = kv_args(k_cache, v_cache, dtype, v_dtype, n_kv_heads, head_dim, block_size, k_scales, k_zeros,
                           v_scales, v_zeros, stage);
  [[maybe_unused]] const bool gpu = on_cuda(device);
  const int64_t nb = a.num_blocks;
  const int64_t row = static_cast<int64_t>(n_kv_heads) * head_dim;
  if (k.ndim() != 2 || k.shape(1) != row) bad("k must be [M, n_kv_heads * head_dim], got " + shape_str(k));
  const int64_t M = k.shape(0);
  if (v.ndim() != 2 || v.shape(0) != M || v.shape(1) != row) bad("v must have the shape of k, got " + shape_str(v));
  if (slots.ndim() != 1 || slots.shape(0) != M)
    bad("slots must be [M] = [" + std::to_string(M) + "], got " + shape_str(slots));
  const int64_t* sp = slots.data();
  for (int64_t m = 0; m < M; ++m)
    if (sp[m] < 0 || sp[m] >= nb * block_size)
      bad("slots[" + std::to_string(m) + "] = " + std::to_string(sp[m]) + " is outside the cache's " +
          std::to_string(nb * block_size) + " slots");
    else if (a.kv.stage_of_block && a.kv.stage_of_block[sp[m] / block_size] < 0)
      bad("slots[" + std::to_string(m) + "]: block " + std::to_string(sp[m] / block_size) + " has no staging slot");
  const cpu::KVLayer kv = a.kv;
  const float *kp = k.data(), *vp = v.data();
  {
    py::gil_scoped_release nogil;
#ifdef LMRT_HAVE_CUDA
    if (gpu) {
      lmrt::cuda::kv_store_host(kv, nb, a.num_stage_slots, kp, vp, M, sp);
      return;
    }
#endif
    cpu::kv_store(kv, kp, row, vp, row, M, sp);
  }
}

void kv_seal(py::array k_cache, py::array v_cache, I32In blocks, int n_kv_heads, int head_dim, int block_size,
             const std::string& dtype, std::optional<std::string> v_dtype, std::optional<py::array> k_scales,
             std::optional<py::array> k_zeros, std::optional<py::array> v_scales, std::optional<py::array> v_zeros,
             std::optional<py::tuple> stage, const std::string& device) {
  const KVArgs a = kv_args(k_cache, v_cache, dtype, v_dtype, n_kv_heads, head_dim, block_size, k_scales, k_zeros,
                           v_scales, v_zeros, stage);
  [[maybe_unused]] const bool gpu = on_cuda(device);
  if (blocks.ndim() != 1) bad("blocks must be 1-D");
  const int64_t n = blocks.shape(0);
  const int32_t* bp = blocks.data();
  for (int64_t i = 0; i < n; ++i)
    if (bp[i] < 0 || bp[i] >= a.num_blocks || !a.kv.stage_of_block || a.kv.stage_of_block[bp[i]] < 0)
      bad("blocks[" + std::to_string(i) + "] = " + std::to_string(bp[i]) + " is not a staged block of an i4c cache");
  const cpu::KVLayer kv = a.kv;
  {
    py::gil_scoped_release nogil;
#ifdef LMRT_HAVE_CUDA
    if (gpu) {
      lmrt::cuda::kv_seal_host(kv, a.num_blocks, a.num_stage_slots, bp, n);
      return;
    }
#endif
    cpu::kv_seal(kv, bp, n);
  }
}

// q: one [M_i, n_heads * head_dim] array per sequence.
py::list paged_attention(std::vector<F32In> qs, py::array k_cache, py::array v_cache, std::vector<I32In> block_tables,
                         std::vector<I32In> positions, int n_heads, int n_kv_heads, int head_dim, int block_size,
                         float scale, const std::string& dtype, int num_threads,
                         const std::optional<std::string>& tile_unit, int64_t min_rows,
                         std::optional<std::string> v_dtype, std::optional<py::array> k_scales,
                         std::optional<py::array> k_zeros, std::optional<py::array> v_scales,
                         std::optional<py::array> v_zeros, std::optional<py::tuple> stage, bool int8_q,
                         const std::string& device, bool bf16_out) {
  const std::optional<cpu::TileUnit> unit = tile_unit_arg(tile_unit, true);
  if (bf16_out && !unit) bad("bf16_out=True takes a tile_unit (AttnSeq::out_bf16 is the tile path's)");
  check_threads(num_threads);
  [[maybe_unused]] const bool gpu = on_cuda(device);
  if (gpu && unit) bad("device='cuda' takes no tile_unit");
  const KVArgs a = kv_args(k_cache, v_cache, dtype, v_dtype, n_kv_heads, head_dim, block_size, k_scales, k_zeros,
                           v_scales, v_zeros, stage);
  const int64_t nb = a.num_blocks;
  if (n_heads < 1 || n_heads % n_kv_heads)
    bad("n_heads must be a positive multiple of n_kv_heads (GQA), got " + std::to_string(n_heads) + " and " +
        std::to_string(n_kv_heads));
  const size_t S = positions.size();
  if (block_tables.size() != S || qs.size() != S) bad("q, block_tables and positions must have one entry per sequence");
  const int64_t row = static_cast<int64_t>(n_heads) * head_dim;
  py::list outs;
  std::vector<py::array_t<float>> out_arrays;
  std::vector<py::array_t<uint16_t>> bf16_arrays;  // bf16_out: the outputs as bf16 bits
  std::vector<cpu::AttnSeq> seqs(S);
  for (size_t s = 0; s < S; ++s) {
    const std::string tag = "sequence " + std::to_string(s) + ": ";
    const F32In& qa = qs[s];
    if (!qa || qa.ndim() != 2 || qa.shape(1) != row)
      bad(tag + "q must be [M, n_heads * head_dim] = [M, " + std::to_string(row) + "]");
    const int64_t M = qa.shape(0);
    const I32In& pa = positions[s];
    const I32In& ta = block_tables[s];
    if (pa.ndim() != 1 || pa.shape(0) != M) bad(tag + "positions must be [M] = [" + std::to_string(M) + "]");
    if (ta.ndim() != 1) bad(tag + "block_table must be 1-D");
    for (int64_t m = 0; m < M; ++m) {
      const int32_t p = pa.data()[m];
      if (p < 0) bad(tag + "negative position");
      if (p / block_size >= ta.shape(0))
        bad(tag + "position " + std::to_string(p) + " needs " + std::to_string(p / block_size + 1) +
            " blocks, block_table has " + std::to_string(ta.shape(0)));
    }
    for (int64_t b = 0; b < ta.shape(0); ++b)
      if (ta.data()[b] < 0 || ta.data()[b] >= nb)
        bad(tag + "block id " + std::to_string(ta.data()[b]) + " outside the cache's " + std::to_string(nb) +
            " blocks");
    if (a.kv.stage_of_block)  // i4c: a block some query sees in part is read from its staged rows
      for (int64_t m = 0; m < M; ++m) {
        const int32_t p = pa.data()[m];
        if (p % block_size != block_size - 1 && a.kv.stage_of_block[ta.data()[p / block_size]] < 0)
          bad(tag + "position " + std::to_string(p) + " sees block " + std::to_string(ta.data()[p / block_size]) +
              " in part, which has no staging slot");
      }
    out_arrays.emplace_back(std::vector<py::ssize_t>{M, row});
    seqs[s] = cpu::AttnSeq{qa.data(), row, out_arrays.back().mutable_data(), row, ta.data(), pa.data(), M};
    if (bf16_out) {
      bf16_arrays.emplace_back(std::vector<py::ssize_t>{M, row});
      seqs[s].out_bf16 = bf16_arrays.back().mutable_data();
      seqs[s].ldo_bf16 = row;
    }
  }
  const cpu::KVLayer kv = a.kv;
#ifdef LMRT_HAVE_CUDA
  if (gpu) {  // every sequence's rows end to end, each row naming where its block table starts
    std::vector<float> q_all, out_all;
    std::vector<int32_t> pos_all, tables;
    std::vector<int64_t> table_start;
    for (size_t s = 0; s < S; ++s) {
      q_all.insert(q_all.end(), qs[s].data(), qs[s].data() + qs[s].size());
      pos_all.insert(pos_all.end(), positions[s].data(), positions[s].data() + seqs[s].M);
      table_start.insert(table_start.end(), seqs[s].M, static_cast<int64_t>(tables.size()));
      tables.insert(tables.end(), block_tables[s].data(), block_tables[s].data() + block_tables[s].shape(0));
    }
    const int64_t T = static_cast<int64_t>(pos_all.size());
    out_all.resize(static_cast<size_t>(T * row));
    {
      py::gil_scoped_release nogil;
      lmrt::cuda::paged_attention_host(kv, nb, a.num_stage_slots, q_all.data(), pos_all.data(), tables.data(),
                                       static_cast<int64_t>(tables.size()), table_start.data(), T, n_heads, scale,
                                       out_all.data());
    }
    int64_t t0 = 0;
    for (size_t s = 0; s < S; ++s) {
      std::copy(out_all.begin() + t0 * row, out_all.begin() + (t0 + seqs[s].M) * row, out_arrays[s].mutable_data());
      t0 += seqs[s].M;
    }
    for (auto& o : out_arrays) outs.append(o);
    return outs;
  }
#endif
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lk(g_pool_mu);
    if (!unit) {
      cpu::paged_attention(pool_for(num_threads), kv, seqs.data(), static_cast<int64_t>(S), n_heads, scale, int8_q);
    } else {
      lmrt::Buffer scratch;
      cpu::paged_attention_tiles(pool_for(num_threads), kv, seqs.data(), static_cast<int64_t>(S), n_heads, scale,
                                 min_rows, *unit, scratch, int8_q);
    }
  }
  if (bf16_out)
    for (auto& a : bf16_arrays) outs.append(a);
  else
    for (auto& a : out_arrays) outs.append(a);
  return outs;
}

py::array_t<float> embedding(py::array table, I32In ids, const std::string& dtype, const std::string& device) {
  const cpu::DType dt = parse_dtype(dtype);
  check_storage(table, dt, "table", false);
  if (table.ndim() != 2) bad("table must be 2-D [V, H], got shape " + shape_str(table));
  const int64_t V = table.shape(0), H = table.shape(1);
  if (ids.ndim() != 1) bad("ids must be 1-D, got shape " + shape_str(ids));
  const int64_t M = ids.shape(0);
  const int32_t* ip = ids.data();
  for (int64_t m = 0; m < M; ++m)
    if (ip[m] < 0 || ip[m] >= V)
      bad("ids[" + std::to_string(m) + "] = " + std::to_string(ip[m]) + " outside [0, " + std::to_string(V) + ")");
  py::array_t<float> out({M, H});
  const void* tp = table.data();
  float* op = out.mutable_data();
  [[maybe_unused]] const bool gpu = on_cuda(device);
  {
    py::gil_scoped_release nogil;
#ifdef LMRT_HAVE_CUDA
    if (gpu) {
      lmrt::cuda::embedding_host(tp, dt, V, H, ip, M, op);
      return out;
    }
#endif
    cpu::embedding(tp, dt, H, ip, M, op, H);
  }
  return out;
}

py::array_t<uint16_t> to_bf16(F32In a, const std::optional<std::string>& tile_unit) {
  py::array_t<uint16_t> out(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
  const float* src = a.data();
  uint16_t* dst = out.mutable_data();
  if (!tile_unit) {
    for (py::ssize_t i = 0; i < a.size(); ++i) dst[i] = cpu::f32_to_bf16(src[i]);
    return out;
  }
  const cpu::TileUnit unit = *tile_unit_arg(tile_unit, false);
  cpu::to_bf16_fn(unit)(src, a.size(), dst);
  return out;
}

py::array_t<uint16_t> rmsnorm_bf16_tiles(F32In x, F32In w, float eps, int num_threads) {
  if (x.ndim() != 2) bad("x must be 2-D [M, K], got shape " + shape_str(x));
  const int64_t M = x.shape(0), K = x.shape(1);
  if (w.ndim() != 1 || w.shape(0) != K) bad("w must be [K] = [" + std::to_string(K) + "], got " + shape_str(w));
  const int64_t Mp = (M + 31) / 32 * 32, Kp = (K + 31) / 32 * 32;  // bf16_tiles_input's padded shape
  py::array_t<uint16_t> out({Mp, Kp});
  const float *xp = x.data(), *wp = w.data();
  uint16_t* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    cpu::rmsnorm_bf16_tiles(pool_for(num_threads), xp, M, K, K, wp, eps, op);
  }
  return out;
}

py::array_t<float> from_bf16(py::array_t<uint16_t, py::array::c_style> a) {
  py::array_t<float> out(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
  const uint16_t* src = a.data();
  float* dst = out.mutable_data();
  for (py::ssize_t i = 0; i < a.size(); ++i) dst[i] = cpu::bf16_to_f32(src[i]);
  return out;
}

}  // namespace kern

void bind_kernels(py::module_& m) {
  using namespace py::literals;
  namespace cpu = lmrt::cpu;
  m.def(
      "set_isa",
      [](const std::string& name) {
        const cpu::Isa isa = kern::isa_arg(name);
        if (!cpu::isa_supported(isa)) kern::bad("ISA '" + name + "' is not supported by this CPU/OS or build");
        cpu::set_isa(isa);
      },
      "name"_a, "Force the kernel path: 'scalar' | 'avx2' | 'avx512'.");
  m.def("active_isa", [] { return std::string(cpu::isa_name(cpu::active_isa())); });
  m.def("best_isa", [] { return std::string(cpu::isa_name(cpu::best_isa())); });
  m.def("isa_supported", [](const std::string& name) { return cpu::isa_supported(kern::isa_arg(name)); }, "name"_a);
  m.def("physical_cores", &cpu::physical_cores);
  m.def(
      "check_pool",
      [](int num_threads, int num_jobs, int slow_every, int slow_us, bool tiny, int spinners) {
        cpu::PoolCheck c;
        {
          py::gil_scoped_release nogil;
          c = cpu::check_pool(num_threads, num_jobs, slow_every, slow_us, tiny, spinners);
        }
        py::dict d;
        d["num_jobs"] = c.num_jobs;
        d["bad_indices"] = c.bad_indices;
        d["late_workers"] = c.late_workers;
        d["narrow_jobs"] = c.narrow_jobs;
        d["held_jobs"] = c.held_jobs;
        d["stalled_jobs"] = c.stalled_jobs;
        return d;
      },
      "num_threads"_a, "num_jobs"_a, "slow_every"_a = 0, "slow_us"_a = 0, "tiny"_a = false, "spinners"_a = 0,
      "Self-check of the thread pool (tests): indices not visited exactly once, and contention counters.");
  m.def(
      "stall_debt",
      [](const std::vector<std::pair<int64_t, int64_t>>& waits, bool probation) {
        cpu::StallDebt d;
        const int64_t burst = probation ? cpu::StallDebt::kProbationBurstNs : cpu::StallDebt::kStallBurstNs;
        std::vector<bool> out;
        for (const auto& [now_us, waited_us] : waits) out.push_back(d.late(now_us * 1000, waited_us * 1000, burst));
        return out;
      },
      "waits"_a, "probation"_a = false,
      "The pool's narrowing rule (StallDebt) over late waits [(end time us, length us)] in order: for each, whether "
      "the pool narrows there (tests). probation: every wait comes soon after a backoff (the smaller burst).");
  m.def("amx_available", &cpu::amx_available, "AMX-TILE and AMX-BF16 present and granted to this process.");
  m.def("avx512bf16_available", &cpu::avx512bf16_available, "AVX-512 with AVX512-BF16 present (and built).");
  m.def(
      "best_tile_unit",
      []() -> py::object {
        cpu::TileUnit t;
        if (!cpu::best_tile_unit(&t)) return py::none();
        return py::str(cpu::tile_unit_name(t));
      },
      "The fastest tile unit for bf16 prefill here: 'amx', 'avx512bf16', or None when the CPU has neither.");
  m.def("bf16_tiles_row_groups", &cpu::bf16_tiles_row_groups, "M"_a, "num_threads"_a,
        "How linear_bf16_tiles splits M rows among num_threads threads: groups of whole 32-row blocks, 0 where it "
        "splits the strips instead (the engine runs a group's row-local ops on one thread then).");
  m.def("linear_bf16_tiles", &kern::linear_bf16_tiles, "x"_a, "w"_a, "bias"_a = py::none(), "wdtype"_a = "f32",
        "num_threads"_a = 1, "tile_unit"_a = py::none(), "mode"_a = "store", "y0"_a = py::none(),
        "y = x @ w.T (+ bias) on a bf16 tile unit, x and w rounded to bf16, fp32 accumulation. tile_unit: 'amx', "
        "'avx512bf16' (VDPBF16PS), or 'model' (the software model of AMX's instruction, any CPU). mode='add': "
        "y0 + that; mode='silu_mul': silu(c[:, :N/2]) * c[:, N/2:] as bf16 bits (uint16), for c = x @ w.T (+ bias).");
  m.def("linear", &kern::linear, "x"_a, "w"_a, "bias"_a = py::none(), "wdtype"_a = "f32", "num_threads"_a = 1,
        "device"_a = "cpu", "tensor_cores"_a = false,
        "y = x @ w.T (+ bias). x [M, K] float32; w [N, K] float32, or uint16 bf16 bits with wdtype='bf16'. "
        "device='cuda': the CUDA op on copies of the arrays; tensor_cores=True (cuda): x and w rounded to bf16, "
        "fp32 sums on the tensor cores (cuda::linear_tc).");
  m.def("linear_w4", &kern::linear_w4, "x"_a, "codes"_a, "scales"_a, "mins"_a, "group_size"_a, "bias"_a = py::none(),
        "num_threads"_a = 1, "tile_unit"_a = py::none(), "activations"_a = "fp32", "vnni"_a = true,
        "amx"_a = py::none(), "interleaved"_a = false, "silu_mul"_a = false, "device"_a = "cpu",
        "tensor_cores"_a = false, "gemv"_a = "default",
        "y = x @ w.T (+ bias) for 4-bit w[n, k] = code * scales[n, k // g] + mins[n, k // g]. codes [N, K/2] "
        "uint8: in each run of 32 inputs byte j holds input j (low nibble) and j + 16 (high nibble). "
        "tile_unit='amx' or 'avx512bf16' runs it on that bf16 tile unit (x and the dequantised w rounded to "
        "bf16), 'model' on the software model. activations='int8': x quantized per run of 32 inputs "
        "(quantize_q8) and int8 dot products (linear_w4a8); with interleaved=True, codes, scales and mins are "
        "w4_interleave's (linear_w4a8_il); vnni=False keeps AVX-512 off VNNI (and AMX). amx (interleaved): None "
        "as the engine (AMX-INT8 from kAmxMinRows rows where present), True AMX-INT8 at every row count, False "
        "never; the same bits whichever runs. interleaved=True with a tile_unit: the bf16 tiles packed from that "
        "layout (the row layout's bits where its scales and mins are halves). silu_mul=True (interleaved): "
        "w's first N/2 rows are gates, the next N/2 their ups, and y [M, N/2] = silu(gate) * up in one pass "
        "(linear_w4a8_il_silu). device='cuda': the CUDA op on copies of the arrays; tensor_cores=True (cuda): x "
        "and the dequantised w rounded to bf16, fp32 sums on the tensor cores (cuda::linear_w4_tc); gemv (cuda): the "
        "GEMV's shape, 'default', 'narrow' or 'streamed' (cuda::W4Gemv).");
  m.def("quantize_q8", &kern::quantize_q8, "x"_a,
        "(q [M, K] int8, d [M, K/32] float32): x's runs of 32 inputs as linear_w4 with activations='int8' "
        "quantizes them, d = max|x| / 127, q = round_half_even(x * (1 / d)) in float32.");
  m.def("w4_interleave", &kern::w4_interleave, "codes"_a, "scales"_a, "mins"_a, "group_size"_a,
        "(codes, scales, mins) rearranged for linear_w4(..., activations='int8', interleaved=True): 4 code bytes of "
        "16 outputs per 64-byte vector (W4Interleaved, csrc/kernels/ops.h); same shapes. N a multiple of 16.");
  m.def("vnni_available", &cpu::vnni_available, "AVX-512 VNNI present (and built).");
  m.def("amx_int8_available", &cpu::amx_int8_available, "AMX-INT8 present, granted to this process (and built).");
  m.attr("amx_min_rows") = cpu::kAmxMinRows;
  m.attr("amx_i8_min_rows") = cpu::kAmxI8MinRows;
  m.def("i8_interleave", &kern::i8_interleave, "q"_a,
        "(q, offsets): int8 weights rearranged for linear_i8(..., offsets=offsets): 4 inputs of 16 outputs per 64-byte "
        "vector (I8Interleaved, csrc/kernels/ops.h), and 128 * each run's sum. N a multiple of 16, K of 32.");
  m.def("linear_i8", &kern::linear_i8, "x"_a, "q"_a, "scales"_a, "bias"_a = py::none(), "num_threads"_a = 1,
        "tile_unit"_a = py::none(), "offsets"_a = py::none(), "amx"_a = py::none(), "activations"_a = "int8",
        "y = x @ w.T (+ bias) for int8 w[n, k] = q[n, k] * scales[n]. q [N, K] int8, scales [N] float32. "
        "tile_unit='amx' or 'avx512bf16' runs it on that bf16 tile unit (x rounded to bf16; q is exact in bf16; "
        "each raw dot times its row scale), 'model' on the software model; no bias there. offsets given: q is "
        "i8_interleave's and x takes integer activations (linear_i8a8_il): activations='int8' a scale per run of 32 "
        "(quantize_q8), 'int16' one scale per row, split into high and low bytes (quantize_a16); amx as linear_w4's.");
  m.def("quantize_a16", &kern::quantize_a16, "x"_a,
        "(hi, lo, alpha): x [M, K] float32 as linear_i8(..., activations='int16') quantizes it: alpha = max|x| / "
        "32767 per row, c = round_half_even(x * (1 / alpha)) (0 for a zero row), hi = (c >> 8) + 128 and lo = c & "
        "255 as uint8.");
  m.def("rmsnorm", &kern::rmsnorm, "x"_a, "w"_a, "eps"_a, "device"_a = "cpu", "residual"_a = py::none(),
        "y = x / sqrt(mean(x^2) + eps) * w per row; with residual, x + residual first, and (y, x + residual) back "
        "(the residual add fused into the norm, as the op-set model runs it).");
  m.def("rmsnorm_bf16_tiles", &kern::rmsnorm_bf16_tiles, "x"_a, "w"_a, "eps"_a, "num_threads"_a = 1,
        "rmsnorm(x, w, eps) as the bf16 tiles' input in one pass: [round_up(M, 32), round_up(K, 32)] uint16 bf16 "
        "bits, zero padded (the prefill's norms, LlamaModel::layer_tiles).");
  m.def("rope", &kern::rope, "x"_a, "pos"_a, "inv_freq"_a, "n_heads"_a, "head_dim"_a, "attn_scale"_a = 1.0f,
        "device"_a = "cpu", "HF rotate_half rotary embedding; returns a new array.");
  m.def("hadamard_heads", &kern::hadamard_heads, "x"_a, "n_heads"_a, "head_dim"_a, "device"_a = "cpu",
        "Each head of x [M, n_heads * head_dim] rotated by the orthonormal Walsh-Hadamard matrix (Sylvester order), "
        "in blocks of hadamard_block(head_dim), the largest power of two dividing it; returns a new array.");
  m.def("hadamard_block", &cpu::hadamard_block, "head_dim"_a);
  m.def("silu_mul", &kern::silu_mul, "gu"_a, "device"_a = "cpu", "silu(gu[:, :I]) * gu[:, I:].");
  m.def("cuda_available", &kern::cuda_available,
        "(True, the device's name) where this build has the CUDA backend and the runtime finds a device; else "
        "(False, what is missing).");
  m.def("cuda_memory", &kern::cuda_memory, "(free, total) bytes of the first CUDA device's memory.");
  m.def("cuda_copy_bandwidth", &kern::cuda_copy_bandwidth, "bytes"_a, "reps"_a = 20,
        "(cudaMemcpyAsync, a copy kernel): the device-to-device copy's bandwidth in GB/s (bytes read plus "
        "written), medians of reps.");
  m.def("sample", &kern::sample, "logits"_a, "temperature"_a, "top_k"_a, "top_p"_a, "min_p"_a, "repetition_penalty"_a,
        "u"_a, "penalized"_a, "banned"_a, "device"_a = "cpu",
        "int32 [R]: each logits row's token under its own parameters (arrays of one entry a row; penalized / "
        "banned: a row's token ids, penalized distinct) and draw u in [0, 1): -1 where a logit is NaN or +inf, "
        "greedy at temperature 0: the rule the engine samples by (common/sampling.h); device='cuda': the CUDA op "
        "(sampling on the device).");
  m.def("cuda_time_linear_w4", &kern::cuda_time_linear_w4, "M"_a, "K"_a, "N"_a, "group_size"_a, "reps"_a = 20,
        "min_bytes"_a = size_t(1) << 29, "gemv"_a = "default", "tensor_cores"_a = false,
        "(microseconds per call, bytes per call) of linear_w4 on the GPU at [M, K] x [N, K], on device inputs from "
        "a hash, cycling weight sets of min_bytes in all (past the L2), in a CUDA graph; median of reps. gemv: the "
        "GEMV's shape, 'default', 'narrow' (the first measured: 4 outputs a block) or 'streamed' (a warp per 8 "
        "outputs over all of K; 1-4 rows); tensor_cores: linear_w4_tc instead (prompt chunks, large batches).");
  m.def("kv_store", &kern::kv_store, "k_cache"_a, "v_cache"_a, "k"_a, "v"_a, "slots"_a, "n_kv_heads"_a, "head_dim"_a,
        "block_size"_a, "dtype"_a = "f32", "v_dtype"_a = py::none(), "k_scales"_a = py::none(),
        "k_zeros"_a = py::none(), "v_scales"_a = py::none(), "v_zeros"_a = py::none(), "stage"_a = py::none(),
        "device"_a = "cpu",
        "Writes k/v rows into the caches in place: dtype 'f32' | 'bf16' | 'i8' | 'i4' | 'i4c' (v_dtype: V's, when it "
        "differs: i8 K with i4 V; i4c K always has i4 V); i8 / i4 caches are uint8 codes with uint16 (fp16) scales and "
        "uint8 zeros, one per row; i4c K one per block, kv head and channel, and its rows go to the staging slot "
        "stage=(codes, scales, zeros, stage_of_block) names (I8 rows).");
  m.def("kv_seal", &kern::kv_seal, "k_cache"_a, "v_cache"_a, "blocks"_a, "n_kv_heads"_a, "head_dim"_a, "block_size"_a,
        "dtype"_a = "i4c", "v_dtype"_a = py::none(), "k_scales"_a = py::none(), "k_zeros"_a = py::none(),
        "v_scales"_a = py::none(), "v_zeros"_a = py::none(), "stage"_a = py::none(), "device"_a = "cpu",
        "i4c K: quantizes the given full blocks from their staged rows (per channel); arguments as kv_store's; "
        "device='cuda': the CUDA op.");
  m.def("paged_attention", &kern::paged_attention, "q"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "positions"_a,
        "n_heads"_a, "n_kv_heads"_a, "head_dim"_a, "block_size"_a, "scale"_a, "dtype"_a = "f32", "num_threads"_a = 1,
        "tile_unit"_a = py::none(), "min_rows"_a = 32, "v_dtype"_a = py::none(), "k_scales"_a = py::none(),
        "k_zeros"_a = py::none(), "v_scales"_a = py::none(), "v_zeros"_a = py::none(), "stage"_a = py::none(),
        "int8_q"_a = false, "device"_a = "cpu", "bf16_out"_a = false,
        "Causal paged attention; q is one [M_i, n_heads * head_dim] array per sequence, and so is the result. "
        "tile_unit='amx' or 'avx512bf16' runs the sequences of at least min_rows rows on that bf16 tile unit "
        "(prefill precision 'bf16'), 'model' on the software model. The cache arguments as kv_store's. device='cuda': "
        "the CUDA op on copies of the arrays (no tile_unit, no i4c cache). int8_q=True: the int8 linear precision's "
        "scores where int8_q_scores() (i8 K, head_dim a multiple of 64, AVX-512 VNNI): each head's q as int8. "
        "bf16_out=True (with a tile_unit): the results as bf16 bits (uint16), written by the attention itself "
        "(AttnSeq::out_bf16).");
  m.def(
      "int8_q_scores",
      [](const std::string& dtype, int head_dim) {
        cpu::KVLayer kv{};
        kv.k_dtype = kern::kv_dtype_arg(dtype);
        kv.head_dim = head_dim;
        return cpu::int8_q_scores(kv);
      },
      "dtype"_a, "head_dim"_a,
      "Whether paged_attention(int8_q=True) scores int8 q here for this K dtype and head_dim.");
  m.def("embedding", &kern::embedding, "table"_a, "ids"_a, "dtype"_a = "f32", "device"_a = "cpu");
  m.def("f32_to_bf16", &kern::to_bf16, "a"_a, "tile_unit"_a = py::none(),
        "float32 -> bf16 bits (uint16), round to nearest even. tile_unit: the rounding of that unit's inputs on the "
        "active ISA (to_bf16_fn(unit): a hardware unit's makes a denormal zero).");
  m.def("bf16_to_f32", &kern::from_bf16, "a"_a);
}
