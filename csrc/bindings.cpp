// The only pybind11 file: C++ meets Python here and nowhere else. No logic lives here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/ops.h"
#include "model/weights.h"

namespace py = pybind11;

// ---- kernels: thin wrappers over csrc/kernels/cpu/ops.h, used by tests/test_kernels.py ----
static void bind_kernels(py::module_& m) {
  // (kernel bindings go here)
}

// ---- engine: model, KV cache, scheduler, sampler behind one Engine object ----
static void bind_engine(py::module_& m) {
  using namespace lmrt;
  py::register_exception<UnknownRequestError>(m, "UnknownRequestError", PyExc_KeyError);

  py::class_<Engine>(m, "Engine")
      .def(py::init([](const py::dict& spec_d, const py::dict& weights_d, const py::dict& opt_d) {
             ModelSpec spec;
             spec.vocab_size = spec_d["vocab_size"].cast<int>();
             spec.hidden_size = spec_d["hidden_size"].cast<int>();
             spec.intermediate_size = spec_d["intermediate_size"].cast<int>();
             spec.num_layers = spec_d["num_layers"].cast<int>();
             spec.num_heads = spec_d["num_heads"].cast<int>();
             spec.num_kv_heads = spec_d["num_kv_heads"].cast<int>();
             spec.head_dim = spec_d["head_dim"].cast<int>();
             spec.rms_norm_eps = spec_d["rms_norm_eps"].cast<float>();
             spec.inv_freq = spec_d["inv_freq"].cast<std::vector<float>>();
             spec.attention_scaling = spec_d["attention_scaling"].cast<float>();
             spec.tie_word_embeddings = spec_d["tie_word_embeddings"].cast<bool>();
             spec.qkv_bias = spec_d["qkv_bias"].cast<bool>();
             spec.weight_dtype = opt_d["weight_dtype"].cast<std::string>() == "bfloat16" ? cpu::DType::BF16 : cpu::DType::F32;

             std::vector<py::array> keep;  // holds the arrays alive while they are copied
             std::map<std::string, RawTensor> raw;
             for (auto item : weights_d) {
               py::array a = py::array::ensure(item.second, py::array::c_style);
               if (!a) throw std::invalid_argument("weights: '" + item.first.cast<std::string>() + "' is not an array");
               RawTensor t;
               if (a.dtype().is(py::dtype::of<float>())) t.dtype = cpu::DType::F32;
               else if (a.dtype().is(py::dtype::of<uint16_t>())) t.dtype = cpu::DType::BF16;
               else throw std::invalid_argument("weights: '" + item.first.cast<std::string>() +
                                                "' must be float32, or uint16 holding bfloat16");
               t.data = a.data();
               t.shape.assign(a.shape(), a.shape() + a.ndim());
               raw[item.first.cast<std::string>()] = t;
               keep.push_back(a);
             }
             EngineOptions o;
             o.num_blocks = opt_d["num_blocks"].cast<int>();
             o.block_size = opt_d["block_size"].cast<int>();
             o.kv_dtype = opt_d["kv_dtype"].cast<std::string>() == "bfloat16" ? cpu::DType::BF16 : cpu::DType::F32;
             o.max_batch_size = opt_d["max_batch_size"].cast<int>();
             o.max_num_batched_tokens = opt_d["max_num_batched_tokens"].cast<int>();
             o.num_threads = opt_d["num_threads"].cast<int>();
             o.session_len = opt_d["session_len"].cast<int>();
             o.enable_prefix_caching = opt_d["enable_prefix_caching"].cast<bool>();
             py::gil_scoped_release nogil;
             Weights w = load_weights(spec, raw);
             return std::make_unique<Engine>(std::move(spec), std::move(w), o);
           }),
           py::arg("spec"), py::arg("weights"), py::arg("options"))
      .def(
          "submit",
          [](Engine& e, std::vector<int32_t> prompt, const py::dict& p) {
            RequestParams rp;
            rp.max_new_tokens = p["max_new_tokens"].cast<int>();
            rp.min_new_tokens = p["min_new_tokens"].cast<int>();
            rp.sampling.temperature = p["temperature"].cast<float>();
            rp.sampling.top_k = p["top_k"].cast<int>();
            rp.sampling.top_p = p["top_p"].cast<float>();
            rp.sampling.min_p = p["min_p"].cast<float>();
            rp.sampling.repetition_penalty = p["repetition_penalty"].cast<float>();
            if (!p["seed"].is_none()) {
              rp.sampling.seed = p["seed"].cast<uint64_t>();
              rp.sampling.has_seed = true;
            }
            rp.eos_token_ids = p["eos_token_ids"].cast<std::vector<int32_t>>();
            rp.stop_token_ids = p["stop_token_ids"].cast<std::vector<int32_t>>();
            rp.ignore_eos = p["ignore_eos"].cast<bool>();
            rp.prompt_logprobs = p["prompt_logprobs"].cast<bool>();
            rp.prompt_logits = p["prompt_logits"].cast<bool>();
            return e.submit(std::move(prompt), std::move(rp));
          },
          py::arg("prompt"), py::arg("params"), "Queues a request; returns its id.")
      .def(
          "get",
          [](Engine& e, int64_t id, double timeout) {
            StreamChunk c;
            {
              py::gil_scoped_release nogil;
              c = e.get(id, timeout);
            }
            py::dict d;
            d["token_ids"] = c.token_ids;
            d["finish_reason"] = c.finish_reason == FinishReason::None ? py::object(py::none())
                                                                      : py::object(py::str(finish_reason_name(c.finish_reason)));
            d["error"] = c.error;
            d["num_prompt_tokens"] = c.num_prompt_tokens;
            d["num_cached_tokens"] = c.num_cached_tokens;
            d["num_preemptions"] = c.num_preemptions;
            d["prompt_logprobs"] = c.prompt_logprobs.empty() ? py::object(py::none()) : py::object(py::array_t<float>(c.prompt_logprobs.size(), c.prompt_logprobs.data()));
            if (c.prompt_logits.empty()) {
              d["prompt_logits"] = py::none();
            } else {
              const py::ssize_t V = e.spec().vocab_size;
              py::array_t<float> a({static_cast<py::ssize_t>(c.prompt_logits.size()) / V, V});
              std::memcpy(a.mutable_data(), c.prompt_logits.data(), c.prompt_logits.size() * sizeof(float));
              d["prompt_logits"] = a;
            }
            return d;
          },
          py::arg("id"), py::arg("timeout") = -1.0,
          "Waits for news of a request: new token ids, and a finish_reason on the last chunk.")
      .def("abort", &Engine::abort, py::arg("id"))
      .def("stats",
           [](Engine& e) {
             EngineStats s = e.stats();
             py::dict d;
             d["num_running"] = s.num_running;
             d["num_waiting"] = s.num_waiting;
             d["num_free_blocks"] = s.num_free_blocks;
             d["num_blocks"] = s.num_blocks;
             d["block_size"] = s.block_size;
             d["num_steps"] = s.num_steps;
             d["num_preemptions"] = s.num_preemptions;
             d["prefix_cache_hit_tokens"] = s.prefix_hit_tokens;
             d["prefix_cache_query_tokens"] = s.prefix_query_tokens;
             d["num_prefill_tokens"] = s.num_prefill_tokens;
             d["num_decode_tokens"] = s.num_decode_tokens;
             d["kv_cache_bytes"] = s.kv_cache_bytes;
             d["weights_bytes"] = s.weights_bytes;
             return d;
           })
      .def("capacity_tokens", &Engine::capacity_tokens)
      .def("shutdown", &Engine::shutdown, py::call_guard<py::gil_scoped_release>());
  m.def("kv_bytes_per_block", [](int num_layers, int block_size, int num_kv_heads, int head_dim, const std::string& dtype) {
    return KVCache::bytes_per_block(num_layers, block_size, num_kv_heads, head_dim,
                                    dtype == "bfloat16" ? cpu::DType::BF16 : cpu::DType::F32);
  });
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "lmrt C++ core";
  py::module_ k = m.def_submodule("kernels", "CPU kernels (for tests and benchmarks)");
  bind_kernels(k);
  bind_engine(m);
}
