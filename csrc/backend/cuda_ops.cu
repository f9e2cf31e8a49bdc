#include <cuda_runtime.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda_ops.h"
#include "kernels/cuda/ops.h"

namespace lmrt {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

class CudaOps final : public DeviceOps {
 public:
  CudaOps() {
    std::string why;
    if (!cuda::available(&why))
      throw std::invalid_argument("device 'cuda': no CUDA device (" + why + "): use device 'cpu'");
    bind();
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~CudaOps() override {
    cudaStreamSynchronize(stream_);
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    for (void* p : matrices_) cudaFree(p);
    cudaStreamDestroy(stream_);
  }

  void* alloc(size_t bytes) override {
    bind();
    void* p = nullptr;
    check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    check(cudaMemsetAsync(p, 0, bytes, stream_), "cudaMemset");
    return p;
  }
  void free(void* p) override {
    bind();
    cudaStreamSynchronize(stream_);  // no op still running may read it
    check(cudaFree(p), "cudaFree");
  }
  void to_device(void* dst, const void* host_src, size_t bytes) override {
    bind();  // a step's first op: the engine's loop thread works on the op set's device
    if (bytes) check(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_), "copy to the device");
  }
  void to_host(void* host_dst, const void* src, size_t bytes) override {
    if (bytes) check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to the host");
    check(cudaStreamSynchronize(stream_), "the step's ops");
  }

  DeviceMatrix upload_matrix(const Matrix& w) override {
    if (w.interleaved || w.format == WeightFormat::I8)
      throw std::invalid_argument(
          "device 'cuda' has no int8 or interleaved matrices yet: use a dense output matrix (lm_head_dtype 'dense') "
          "and linear_precision 'fp32'");
    if (w.format == WeightFormat::Dense && w.dtype != DType::F32 && w.dtype != DType::BF16)
      throw std::invalid_argument("device 'cuda' takes dense matrices of float32 or bfloat16");
    bind();
    DeviceMatrix d = describe(w);
    d.data = copy(w.data.data<void>(), w.data.bytes());
    if (w.format == WeightFormat::W4) {
      d.scales = static_cast<const float*>(copy(w.scales.data<void>(), w.scales.bytes()));
      d.mins = static_cast<const float*>(copy(w.mins.data<void>(), w.mins.bytes()));
    }
    return d;
  }

  void embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out) override {
    cuda::embedding(table, dt, H, ids, M, out, H, stream_);
    launched("embedding");
  }
  void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y,
               int64_t ldy) override {
    cuda::rmsnorm(x, M, H, ldx, w, eps, y, ldy, stream_);
    launched("rmsnorm");
  }
  void add_rmsnorm(float* x, const float* h, int64_t M, int64_t H, const float* w, float eps, float* y) override {
    cuda::add_rmsnorm(x, h, M, H, w, eps, y, stream_);
    launched("add_rmsnorm");
  }
  void linear(const DeviceMatrix& w, const float* x, int64_t M, int64_t ldx, const float* bias, float* y, int64_t ldy,
              bool bf16) override {
    if (w.format == WeightFormat::W4) {
      const W4Matrix w4{static_cast<const uint8_t*>(w.data), w.scales, w.mins, w.group_size};
      if (bf16)
        cuda::linear_w4_tc(x, M, w.cols, ldx, w4, w.rows, bias, y, ldy, stream_);
      else
        cuda::linear_w4(x, M, w.cols, ldx, w4, w.rows, bias, y, ldy, stream_);
    } else if (bf16) {
      cuda::linear_tc(x, M, w.cols, ldx, w.data, w.dtype, w.rows, bias, y, ldy, stream_);
    } else {
      cuda::linear(x, M, w.cols, ldx, w.data, w.dtype, w.rows, bias, y, ldy, stream_);
    }
    launched("linear");
  }
  const char* bf16_unit() const override { return "tensor cores"; }
  size_t attention_scratch_bytes(int64_t T, int n_heads, int head_dim) const override {
    return static_cast<size_t>(cuda::paged_attention_scratch(T, n_heads, head_dim)) * sizeof(float);
  }

  bool capture(int64_t key) override {
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin a graph capture");
    capture_key_ = key;
    return true;
  }
  bool end_capture() override {
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess && graph) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess || !exec) {
      cudaGetLastError();  // the refusal is not the next op's error
      return false;
    }
    auto it = graphs_.find(capture_key_);
    if (it != graphs_.end()) {
      check(cudaStreamSynchronize(stream_), "a step before a graph is replaced");
      cudaGraphExecDestroy(it->second);
    }
    graphs_[capture_key_] = exec;
    replay(capture_key_);
    return true;
  }
  void abandon_capture() override {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
  }
  void replay(int64_t key) override { check(cudaGraphLaunch(graphs_.at(key), stream_), "a step graph's launch"); }
  void sample(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids, int32_t* out) override {
    cuda::sample(logits, R, V, rows, ids, out, stream_);
    launched("sample");
  }
  void rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
            float attn_scale) override {
    cuda::rope(x, M, ldx, n_heads, head_dim, pos, inv_freq, attn_scale, stream_);
    launched("rope");
  }
  void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim) override {
    cuda::hadamard_heads(x, M, ldx, n_heads, head_dim, stream_);
    launched("hadamard_heads");
  }
  void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
                const int64_t* slot) override {
    cuda::kv_store(kv, k, ldk, v, ldv, M, slot, stream_);
    launched("kv_store");
  }
  void kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num) override {
    cuda::kv_seal(kv, blocks, num, stream_);
    launched("kv_seal");
  }
  void paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                       const int32_t* tables, const int64_t* table_start, const int64_t* host_table_start, int64_t T,
                       int n_heads, float scale, void* scratch) override {
    cuda::paged_attention(kv, q, ldq, out, ldo, pos, tables, table_start, host_table_start, T, n_heads, scale,
                          static_cast<float*>(scratch), stream_);
    launched("paged_attention");
  }
  void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo) override {
    cuda::silu_mul(gu, M, I, ldg, out, ldo, stream_);
    launched("silu_mul");
  }
  void add(float* x, const float* h, int64_t n) override {
    cuda::add(x, h, n, stream_);
    launched("add");
  }

 private:
  // A launch's error (a bad configuration) at once; a fault inside a kernel shows at the step's to_host.
  static void launched(const char* op) { check(cudaGetLastError(), op); }
  // The op set runs on the first GPU (device 0) from whichever thread calls it (the engine's loop thread, the
  // constructing thread): made current there, whatever device another library left current.
  static void bind() { check(cudaSetDevice(0), "cudaSetDevice"); }
  void* copy(const void* host, size_t bytes) {
    void* p = nullptr;
    check(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc");
    matrices_.push_back(p);
    // On the ops' stream: ordered before the kernels that read it (a plain cudaMemcpy from pageable memory may
    // return before its DMA lands, and the non-blocking stream does not wait for the legacy one); the host buffer is
    // staged before the call returns.
    if (bytes) check(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, stream_), "copy a matrix to the device");
    return p;
  }

  cudaStream_t stream_ = nullptr;
  std::vector<void*> matrices_;                // upload_matrix's copies, freed with the op set
  std::map<int64_t, cudaGraphExec_t> graphs_;  // step graphs by key (the model's: a decode step's row count)
  int64_t capture_key_ = 0;
};

}  // namespace

std::unique_ptr<DeviceOps> make_cuda_ops() { return std::make_unique<CudaOps>(); }

}  // namespace lmrt
