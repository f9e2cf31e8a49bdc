// The engine module, lmrt._core: the engine's typed classes (EngineOptions, ModelSpec, RequestParams with
// its SamplingParams, StreamChunk, EngineStats) bound field by field under their C++ names, enums by name, and the
// bookkeeping classes (BlockManager, Scheduler, Request) for their own tests. Marshalling only: no
// defaults are chosen here (lmrt/resolve.py does that) and no logic lives here. The kernels module for
// tests is bindings_kernels.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "engine/block_manager.h"
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace py = pybind11;
using namespace pybind11::literals;

void bind_kernels(py::module_& m);  // bindings_kernels.cpp

namespace lmrt {
namespace {

// The weights by name (the core layout, lmrt/loader.py) as borrowed views for load_weights to copy;
// `keep` holds the arrays alive meanwhile.
std::map<std::string, RawTensor> raw_tensors(const py::dict& weights, std::vector<py::array>& keep) {
  std::map<std::string, RawTensor> raw;
  for (auto item : weights) {
    const std::string name = item.first.cast<std::string>();
    py::array a = py::array::ensure(item.second, py::array::c_style);
    if (!a) throw std::invalid_argument("weights: '" + name + "' is not an array");
    RawTensor t;
    if (a.dtype().equal(py::dtype::of<float>()))
      t.type = RawType::F32;
    else if (a.dtype().equal(py::dtype::of<uint16_t>()))
      t.type = RawType::BF16;
    else if (a.dtype().equal(py::dtype::of<uint8_t>()))
      t.type = RawType::U8;
    else if (a.dtype().equal(py::dtype::of<int8_t>()))
      t.type = RawType::I8;
    else
      throw std::invalid_argument("weights: '" + name +
                                  "' must be float32, uint16 (bfloat16 bits), uint8 (4-bit codes) or int8");
    t.data = a.data();
    t.shape.assign(a.shape(), a.shape() + a.ndim());
    raw[name] = t;
    keep.push_back(a);
  }
  return raw;
}

template <class T>
py::object array_or_none(const std::vector<T>& v, py::ssize_t cols) {
  if (v.empty()) return py::none();
  py::array_t<T> a(cols ? std::vector<py::ssize_t>{static_cast<py::ssize_t>(v.size()) / cols, cols}
                        : std::vector<py::ssize_t>{static_cast<py::ssize_t>(v.size())});
  std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return std::move(a);
}

void bind_types(py::module_& m) {
  py::enum_<DType>(m, "DType").value("float32", DType::F32).value("bfloat16", DType::BF16);
  py::enum_<KVDType>(m, "KVDType")
      .value("float32", KVDType::F32)
      .value("bfloat16", KVDType::BF16)
      .value("int8", KVDType::I8)
      .value("int4", KVDType::I4)
      .value("int4_channel", KVDType::I4Channel);
  py::enum_<TileUnit>(m, "TileUnit")
      .value("model", TileUnit::Model)
      .value("amx", TileUnit::Amx)
      .value("avx512bf16", TileUnit::Avx512Bf16);
  py::enum_<PrefillPrecision>(m, "PrefillPrecision")
      .value("fp32", PrefillPrecision::FP32)
      .value("bf16", PrefillPrecision::BF16);
  py::enum_<Device>(m, "Device").value("cpu", Device::Cpu).value("cuda", Device::Cuda);
  py::enum_<LinearPrecision>(m, "LinearPrecision")
      .value("fp32", LinearPrecision::FP32)
      .value("int8", LinearPrecision::Int8);

  py::class_<EngineOptions>(m, "EngineOptions")
      .def(py::init<>())
      .def_readwrite("num_blocks", &EngineOptions::num_blocks)
      .def_readwrite("block_size", &EngineOptions::block_size)
      .def_readwrite("k_dtype", &EngineOptions::k_dtype)
      .def_readwrite("v_dtype", &EngineOptions::v_dtype)
      .def_readwrite("max_batch_size", &EngineOptions::max_batch_size)
      .def_readwrite("max_num_batched_tokens", &EngineOptions::max_num_batched_tokens)
      .def_readwrite("num_threads", &EngineOptions::num_threads)
      .def_readwrite("session_len", &EngineOptions::session_len)
      .def_readwrite("enable_prefix_caching", &EngineOptions::enable_prefix_caching)
      .def_readwrite("prefill_precision", &EngineOptions::prefill_precision)
      .def_readwrite("tile_unit", &EngineOptions::tile_unit)
      .def_readwrite("linear_precision", &EngineOptions::linear_precision)
      .def_readwrite("device", &EngineOptions::device)
      .def_readwrite("ops_model", &EngineOptions::ops_model)
      .def_readwrite("step_graphs", &EngineOptions::step_graphs);

  py::class_<ModelSpec>(m, "ModelSpec")
      .def(py::init<>())
      .def_readwrite("vocab_size", &ModelSpec::vocab_size)
      .def_readwrite("hidden_size", &ModelSpec::hidden_size)
      .def_readwrite("intermediate_size", &ModelSpec::intermediate_size)
      .def_readwrite("num_layers", &ModelSpec::num_layers)
      .def_readwrite("num_heads", &ModelSpec::num_heads)
      .def_readwrite("num_kv_heads", &ModelSpec::num_kv_heads)
      .def_readwrite("head_dim", &ModelSpec::head_dim)
      .def_readwrite("rms_norm_eps", &ModelSpec::rms_norm_eps)
      .def_readwrite("inv_freq", &ModelSpec::inv_freq)
      .def_readwrite("attention_scaling", &ModelSpec::attention_scaling)
      .def_readwrite("tie_word_embeddings", &ModelSpec::tie_word_embeddings)
      .def_readwrite("qkv_bias", &ModelSpec::qkv_bias)
      .def_readwrite("weight_dtype", &ModelSpec::weight_dtype);

  py::class_<SamplingParams>(m, "SamplingParams")
      .def(py::init<>())
      .def_readwrite("temperature", &SamplingParams::temperature)
      .def_readwrite("top_k", &SamplingParams::top_k)
      .def_readwrite("top_p", &SamplingParams::top_p)
      .def_readwrite("min_p", &SamplingParams::min_p)
      .def_readwrite("repetition_penalty", &SamplingParams::repetition_penalty)
      .def_readwrite("seed", &SamplingParams::seed)
      .def_readwrite("has_seed", &SamplingParams::has_seed);

  py::class_<RequestParams>(m, "RequestParams")
      .def(py::init<>())
      .def_readwrite("max_new_tokens", &RequestParams::max_new_tokens)
      .def_readwrite("min_new_tokens", &RequestParams::min_new_tokens)
      .def_readwrite("sampling", &RequestParams::sampling)
      .def_readwrite("eos_token_ids", &RequestParams::eos_token_ids)
      .def_readwrite("stop_token_ids", &RequestParams::stop_token_ids)
      .def_readwrite("ignore_eos", &RequestParams::ignore_eos)
      .def_readwrite("prompt_logprobs", &RequestParams::prompt_logprobs)
      .def_readwrite("prompt_logits", &RequestParams::prompt_logits);

  py::class_<StreamChunk>(m, "StreamChunk")
      .def_readonly("token_ids", &StreamChunk::token_ids)
      .def_property_readonly("finish_reason",
                             [](const StreamChunk& c) {
                               return c.finish_reason == FinishReason::None
                                          ? py::object(py::none())
                                          : py::object(py::str(finish_reason_name(c.finish_reason)));
                             })
      .def_readonly("error", &StreamChunk::error)
      .def_readonly("num_prompt_tokens", &StreamChunk::num_prompt_tokens)
      .def_readonly("num_prefilled_tokens", &StreamChunk::num_prefilled_tokens)
      .def_readonly("num_cached_tokens", &StreamChunk::num_cached_tokens)
      .def_readonly("num_preemptions", &StreamChunk::num_preemptions)
      .def_property_readonly("prompt_logprobs",
                             [](const StreamChunk& c) { return array_or_none(c.prompt_logprobs, 0); })
      .def_property_readonly("prompt_logits", [](const StreamChunk& c) {  // [num_prompt_tokens, V]
        return array_or_none(
            c.prompt_logits,
            c.num_prompt_tokens ? static_cast<py::ssize_t>(c.prompt_logits.size()) / c.num_prompt_tokens : 0);
      });

  py::class_<EngineStats>(m, "EngineStats")
      .def_readonly("num_running", &EngineStats::num_running)
      .def_readonly("num_waiting", &EngineStats::num_waiting)
      .def_readonly("num_free_blocks", &EngineStats::num_free_blocks)
      .def_readonly("num_blocks", &EngineStats::num_blocks)
      .def_readonly("block_size", &EngineStats::block_size)
      .def_readonly("num_steps", &EngineStats::num_steps)
      .def_readonly("num_preemptions", &EngineStats::num_preemptions)
      .def_readonly("prefix_cache_hit_tokens", &EngineStats::prefix_cache_hit_tokens)
      .def_readonly("prefix_cache_query_tokens", &EngineStats::prefix_cache_query_tokens)
      .def_readonly("num_prefill_tokens", &EngineStats::num_prefill_tokens)
      .def_readonly("num_decode_tokens", &EngineStats::num_decode_tokens)
      .def_readonly("kv_cache_bytes", &EngineStats::kv_cache_bytes)
      .def_readonly("weights_bytes", &EngineStats::weights_bytes)
      .def_readonly("num_staged_blocks", &EngineStats::num_staged_blocks)
      .def_property_readonly("schedule_seconds", [](const EngineStats& s) { return s.step_time.schedule_ns * 1e-9; })
      .def_property_readonly("forward_seconds", [](const EngineStats& s) { return s.step_time.forward_ns * 1e-9; })
      .def_property_readonly("postprocess_seconds",
                             [](const EngineStats& s) { return s.step_time.postprocess_ns * 1e-9; })
      .def_readonly("pool_late_workers", &EngineStats::pool_late_workers)
      .def_readonly("pool_narrow_jobs", &EngineStats::pool_narrow_jobs)
      .def_readonly("num_device_sampled_steps", &EngineStats::num_device_sampled_steps)
      .def_readonly("num_row_group_steps", &EngineStats::num_row_group_steps);
}

void bind_engine(py::module_& m) {
  py::register_exception<UnknownRequestError>(m, "UnknownRequestError", PyExc_KeyError);
  py::class_<Engine>(m, "Engine")
      .def(py::init([](ModelSpec spec, const py::dict& weights, const EngineOptions& options) {
             Engine::check(options);  // before the weights are copied
             std::vector<py::array> keep;
             const std::map<std::string, RawTensor> raw = raw_tensors(weights, keep);
             py::gil_scoped_release nogil;
             Weights w = load_weights(spec, raw);
             return std::make_unique<Engine>(std::move(spec), std::move(w), options);
           }),
           "spec"_a, "weights"_a, "options"_a)
      .def("submit", &Engine::submit, "prompt"_a, "params"_a, "Queues a request; returns its id.")
      .def("get", &Engine::get, "id"_a, "timeout"_a = -1.0, py::call_guard<py::gil_scoped_release>(),
           "Waits for news of a request: new token ids, and a finish_reason on the last chunk.")
      .def("abort", &Engine::abort, "id"_a)
      .def("detach", &Engine::detach, "id"_a, "Abort if running and drop the output: the caller reads no more.")
      .def("pause", &Engine::pause, "Holds the loop between steps (the step in flight finishes) until resume().")
      .def("resume", &Engine::resume, "steps"_a = -1,
           "Lets the loop run again; steps >= 0: that many more steps that do work, then it holds again.")
      .def("num_streams", &Engine::num_streams)
      .def("stats", &Engine::stats)
      .def("capacity_tokens", &Engine::capacity_tokens)
      .def("int8_weight_layout", &Engine::int8_weight_layout)
      .def("shutdown", &Engine::shutdown, py::call_guard<py::gil_scoped_release>());
  m.def("kv_bytes_per_block", &KVCache::bytes_per_block, "num_layers"_a, "block_size"_a, "num_kv_heads"_a, "head_dim"_a,
        "k_dtype"_a, "v_dtype"_a);
  m.def("kv_stage_slots", &KVCache::stage_slots, "max_batch_size"_a, "max_num_batched_tokens"_a, "block_size"_a);
  m.def("kv_bytes_per_stage_slot", &KVCache::bytes_per_stage_slot, "num_layers"_a, "block_size"_a, "num_kv_heads"_a,
        "head_dim"_a);
}

// The bookkeeping on its own, for tests of csrc/engine/README.md's invariants. Tables cross as lists:
// each call that grows or shrinks one returns the new table.
void bind_bookkeeping(py::module_& m) {
  m.def(
      "sample_counts",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> logits, const SamplingParams& p,
         const std::vector<int32_t>& context, const std::vector<int32_t>& banned, uint64_t seed, int draws) {
        if (logits.ndim() != 1 || logits.size() < 1) throw std::invalid_argument("logits must be 1-D and not empty");
        const int V = static_cast<int>(logits.size());
        py::array_t<int64_t> counts(V);
        int64_t* c = counts.mutable_data();
        std::fill(c, c + V, int64_t{0});
        const float* src = logits.data();
        {
          py::gil_scoped_release nogil;
          Sampler sampler;
          std::mt19937_64 rng(seed);
          std::vector<float> row(V);
          for (int d = 0; d < draws; ++d) {
            std::copy(src, src + V, row.begin());
            ++c[sampler.sample(row.data(), V, p, context, banned, rng)];
          }
        }
        return counts;
      },
      "logits"_a, "params"_a, "context"_a, "banned"_a, "seed"_a, "draws"_a,
      "How often Sampler::sample picks each token in `draws` draws from one rng seeded `seed` (tests).");
  m.def(
      "logits_finite",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> logits) {
        return Sampler::all_finite(logits.data(), static_cast<int>(logits.size()));
      },
      "logits"_a, "Sampler::all_finite: no NaN and no +inf in the row (-inf allowed), the engine's check (tests).");
  using Table = std::vector<int32_t>;
  py::class_<BlockManager>(m, "BlockManager")
      .def(py::init<int, int, bool>(), "num_blocks"_a, "block_size"_a, "enable_prefix_caching"_a)
      .def("num_free_blocks", &BlockManager::num_free_blocks)
      .def("num_cached_blocks", &BlockManager::num_cached_blocks)
      .def("ref_count", &BlockManager::ref_count, "block"_a)
      .def("blocks_for", &BlockManager::blocks_for, "num_tokens"_a)
      .def(
          "match_prefix",
          [](BlockManager& b, const Table& tokens, int max_tokens) {
            Table table;
            uint64_t hash = 0;
            const int n = b.match_prefix(tokens, max_tokens, table, hash);
            return std::make_tuple(n, table, hash);
          },
          "tokens"_a, "max_tokens"_a, "(tokens matched, table, hash of its last block)")
      .def("can_allocate", &BlockManager::can_allocate, "table"_a, "num_tokens"_a)
      .def(
          "allocate",
          [](BlockManager& b, Table table, int n) {
            b.allocate(table, n);
            return table;
          },
          "table"_a, "num_tokens"_a)
      .def(
          "deallocate",
          [](BlockManager& b, Table table) {
            b.deallocate(table);
            return table;
          },
          "table"_a)
      .def(
          "register_full_blocks",
          [](BlockManager& b, const Table& tokens, int num_computed, const Table& table, int num_hashed,
             uint64_t last_hash) {
            b.register_full_blocks(tokens, num_computed, table, num_hashed, last_hash);
            return std::make_tuple(num_hashed, last_hash);
          },
          "tokens"_a, "num_computed_tokens"_a, "table"_a, "num_hashed_blocks"_a, "last_hash"_a);

  py::class_<Request>(m, "Request")
      .def(py::init([](Table prompt, int max_new_tokens) {
             auto r = std::make_unique<Request>();
             r->num_prompt_tokens = static_cast<int>(prompt.size());
             r->tokens = std::move(prompt);
             r->params.max_new_tokens = max_new_tokens;
             r->max_total_tokens = r->num_prompt_tokens + max_new_tokens;
             return r;
           }),
           "prompt"_a, "max_new_tokens"_a)
      .def_readwrite("id", &Request::id)
      .def_readwrite("tokens", &Request::tokens)
      .def_readonly("num_prompt_tokens", &Request::num_prompt_tokens)
      .def_readwrite("num_computed_tokens", &Request::num_computed_tokens)
      .def_readonly("block_table", &Request::block_table)
      .def_readwrite("num_hashed_blocks", &Request::num_hashed_blocks)
      .def_readwrite("last_block_hash", &Request::last_block_hash)
      .def_readonly("num_cached_tokens", &Request::num_cached_tokens)
      .def_readonly("num_preemptions", &Request::num_preemptions);

  py::class_<Scheduler>(m, "Scheduler")
      .def(py::init([](BlockManager& blocks, int max_batch_size, int max_num_batched_tokens) {
             return std::make_unique<Scheduler>(SchedulerConfig{max_batch_size, max_num_batched_tokens}, blocks);
           }),
           "blocks"_a, "max_batch_size"_a, "max_num_batched_tokens"_a, py::keep_alive<1, 2>())
      .def("add", &Scheduler::add, "request"_a, py::keep_alive<1, 2>())
      .def(
          "schedule",
          [](Scheduler& s) {
            std::vector<std::pair<Request*, int>> out;
            for (const ScheduledSeq& q : s.schedule()) out.emplace_back(q.req, q.num_tokens);
            return out;
          },
          py::return_value_policy::reference)
      .def("remove", &Scheduler::remove, "request"_a)
      .def(
          "waiting", [](const Scheduler& s) { return std::vector<Request*>(s.waiting().begin(), s.waiting().end()); },
          py::return_value_policy::reference)
      .def("running", &Scheduler::running, py::return_value_policy::reference)
      .def("num_preemptions", &Scheduler::num_preemptions);
}

}  // namespace
}  // namespace lmrt

PYBIND11_MODULE(_core, m) {
  m.doc() = "lmrt C++ core";
  lmrt::bind_types(m);
  lmrt::bind_engine(m);
  py::module_ bookkeeping = m.def_submodule("bookkeeping", "the engine's block manager and scheduler (tests)");
  lmrt::bind_bookkeeping(bookkeeping);
  py::module_ kernels = m.def_submodule("kernels", "CPU kernels (tests and benchmarks)");
  bind_kernels(kernels);
}
