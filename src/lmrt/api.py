"""`lmrt.pipeline(...)`: load a model into the C++ engine and generate from Python (the public API).

The engine runs on its own thread; this module turns text into token ids, submits
requests, and turns the streamed ids back into text (UTF-8 safe, stop strings).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, List, Optional, Sequence, Union

import numpy as np

from lmrt import _core, resolve
from lmrt.config import EngineConfig, GenerationConfig
from lmrt.detokenizer import IncrementalDetokenizer, StopStringMatcher
from lmrt.formats import read_json
from lmrt.loader import add_int8_lm_head, load_weights, metadata_dir, num_parameters
from lmrt.tokenizer import Tokenizer

Messages = List[dict]
Prompt = Union[str, Messages, Sequence[int]]

_POLL_S = 0.1  # get() wakes this often so Ctrl-C reaches a waiting caller


@dataclass
class Response:
    """One output. From stream(): `text` and `token_ids` are what is new since the previous item."""

    text: str
    token_ids: List[int]
    finish_reason: Optional[str] = None  # "stop" | "length" | "abort" | None while streaming
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache
    index: int = 0  # position in the batch given to __call__


class RequestError(RuntimeError):
    """The engine failed a request (the others keep running)."""


class PromptTooLongError(ValueError):
    """A prompt does not fit: ``num_tokens`` (plus one to generate) is beyond ``limit`` tokens, which the
    ``setting`` named (``"session_len"``, or ``"cache_memory_gib"`` when the whole KV cache holds fewer)."""

    def __init__(self, num_tokens: int, limit: int, setting: str, model_limit: int, generating: bool = True):
        self.num_tokens, self.limit, self.setting = num_tokens, limit, setting
        self.model_limit = model_limit  # the model's max_position_embeddings: session_len can go this far
        need = " (one more is needed to generate)" if generating else ""
        if setting == "session_len":
            msg = (
                f"prompt has {num_tokens} tokens but session_len is {limit}{need}: shorten the prompt or raise "
                "session_len"
            )
        else:
            msg = (
                f"prompt has {num_tokens} tokens but the KV cache holds {limit}{need}: shorten the prompt or give "
                "the cache more memory (cache_memory_gib)"
            )
        super().__init__(msg)


class Pipeline:
    """A loaded model and its engine. Thread-safe: many callers may stream at once."""

    def __init__(self, model: Optional[Union[str, Path]] = None, engine_config: Optional[EngineConfig] = None):
        self.engine_config = engine_config or EngineConfig()
        if model is None:  # the default model at 4 bits (default_model_path() is its float16 form)
            from lmrt.default_model import default_model_w4_path

            model = default_model_w4_path()
        self.model_path = Path(model)
        # A dir, or a .gguf file; dense matrices in the configured dtype.
        self.spec, weights = load_weights(self.model_path, dtype=resolve.weight_dtype(self.engine_config))
        self.resolved = resolve.resolve(self.engine_config, self.spec, resolve.Machine.detect())
        tokenizer_dir = metadata_dir(self.model_path)  # for a GGUF: its tokenizer and sampling, converted once
        # A checkpoint without tokenizer files still runs on token-id prompts (tests, benchmarks).
        has_tokenizer = (tokenizer_dir / "tokenizer.json").exists()
        self.tokenizer = Tokenizer.from_pretrained(tokenizer_dir) if has_tokenizer else None
        generation_json = tokenizer_dir / "generation_config.json"
        # What a request gets when it passes no GenerationConfig: the checkpoint's recommended sampling.
        self.generation_defaults = GenerationConfig.from_checkpoint(
            read_json(generation_json) if generation_json.is_file() else None
        )
        self.generation_defaults_source = str(generation_json) if generation_json.is_file() else None
        self.num_parameters = num_parameters(weights)
        if self.resolved.lm_head_dtype == "int8":
            add_int8_lm_head(weights)
        self._engine = _core.Engine(
            self.spec.to_core(self.resolved.weight_dtype), weights, self.resolved.engine_options()
        )
        del weights
        tok_eos = tuple(self.tokenizer.eos_token_ids) if self.tokenizer else ()
        self._eos = tuple(dict.fromkeys(tuple(self.spec.eos_token_ids) + tok_eos))

    @property
    def session_len(self) -> int:
        return self.resolved.session_len

    @property
    def max_prompt_tokens(self) -> int:
        """The longest prompt that can still generate a token: within session_len and the whole KV cache."""
        return min(self.session_len, self._engine.capacity_tokens()) - 1

    def generation_config(self, **changes) -> GenerationConfig:
        """The checkpoint's sampling defaults (``generation_defaults``) with ``changes`` applied."""
        return dataclasses.replace(self.generation_defaults, **changes)

    def check_prompt_fits(self, num_tokens: int, generating: bool = True) -> None:
        """Raises PromptTooLongError, with the numbers and the setting to raise, when a prompt cannot run."""
        extra = 1 if generating else 0
        if num_tokens + extra > self.session_len:
            raise PromptTooLongError(
                num_tokens, self.session_len, "session_len", self.spec.max_position_embeddings, generating
            )
        capacity = self._engine.capacity_tokens()
        if num_tokens + extra > capacity:
            raise PromptTooLongError(
                num_tokens, capacity, "cache_memory_gib", self.spec.max_position_embeddings, generating
            )

    # ---- prompts ----
    def encode_prompt(self, prompt: Prompt) -> List[int]:
        """A str is a raw prompt, a list of {"role", "content"} dicts a chat, a list of ints token ids."""
        if self.tokenizer is None and (isinstance(prompt, str) or (prompt and isinstance(prompt[0], dict))):
            raise ValueError(
                f"{self.model_path} has no tokenizer.json: pass token ids, or use a checkpoint with a tokenizer"
            )
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=True)
        if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) for m in prompt):
            text = self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
            return self.tokenizer.encode(text, add_special_tokens=False)
        if isinstance(prompt, (list, tuple, np.ndarray)) and all(isinstance(t, (int, np.integer)) for t in prompt):
            return [int(t) for t in prompt]
        raise TypeError("prompt must be a str, a list of {'role', 'content'} messages, or a list of token ids")

    def _submit(
        self, ids: List[int], gen: GenerationConfig, prompt_logprobs: bool = False, prompt_logits: bool = False
    ) -> int:
        self.check_prompt_fits(len(ids), generating=gen.max_new_tokens > 0)
        p = _core.RequestParams()
        p.max_new_tokens, p.min_new_tokens = gen.max_new_tokens, gen.min_new_tokens
        s = p.sampling
        s.temperature, s.top_k, s.top_p, s.min_p = gen.temperature, gen.top_k, gen.top_p, gen.min_p
        s.repetition_penalty, s.has_seed, s.seed = gen.repetition_penalty, gen.seed is not None, gen.seed or 0
        p.eos_token_ids, p.stop_token_ids, p.ignore_eos = list(self._eos), list(gen.stop_token_ids), gen.ignore_eos
        p.prompt_logprobs, p.prompt_logits = prompt_logprobs, prompt_logits
        return self._engine.submit(ids, p)

    def _get(self, rid: int, on_prefill: Optional[Callable[[int, int], None]] = None):
        """The next StreamChunk with news (tokens or the end); a failed request raises RequestError."""
        while True:
            chunk = self._engine.get(rid, _POLL_S)
            if chunk.token_ids or chunk.finish_reason is not None:
                if chunk.finish_reason == "error":
                    raise RequestError(chunk.error)
                return chunk
            if on_prefill is not None:
                on_prefill(chunk.num_prefilled_tokens, chunk.num_prompt_tokens)

    # ---- generation ----
    def stream(
        self,
        prompt: Prompt,
        gen_config: Optional[GenerationConfig] = None,
        on_prefill: Optional[Callable[[int, int], None]] = None,
    ) -> "RequestStream":
        """Submits now; iterating yields Responses as tokens are sampled, each with only the new text and ids.
        Closing the stream (or dropping it) before the end aborts the request. No gen_config: the checkpoint's
        defaults (``generation_defaults``). on_prefill(done, total), if given, is called about every 0.1 s
        while the prompt's tokens are computed (a progress bar for long prompts)."""
        gen = gen_config or self.generation_defaults
        ids = self.encode_prompt(prompt)
        return RequestStream(self, self._submit(ids, gen), ids, gen, on_prefill)

    async def astream(self, prompt: Prompt, gen_config: Optional[GenerationConfig] = None) -> AsyncIterator[Response]:
        """asyncio variant of stream(): the blocking waits run in a worker thread."""
        loop = asyncio.get_running_loop()
        it = self.stream(prompt, gen_config)
        sentinel = object()
        try:
            while True:
                item = await loop.run_in_executor(None, next, it, sentinel)
                if item is sentinel:
                    return
                yield item
        finally:
            it.close()

    def __call__(
        self, prompts: Union[Prompt, Sequence[Prompt]], gen_config: Optional[GenerationConfig] = None
    ) -> Union[Response, List[Response]]:
        """Generates whole responses. One prompt gives a Response; a list of prompts a list (run as one batch)."""
        single = isinstance(prompts, str) or (
            isinstance(prompts, (list, tuple))
            and prompts
            and (isinstance(prompts[0], dict) or isinstance(prompts[0], int))
        )
        batch = [prompts] if single else list(prompts)
        gen = gen_config or self.generation_defaults
        # Every request is in the engine before we wait on any: they run as one batch.
        encoded = [self.encode_prompt(p) for p in batch]
        followers = [RequestStream(self, self._submit(ids, gen), ids, gen) for ids in encoded]
        out = []
        for i, items in enumerate(list(f) for f in followers):
            last = items[-1]
            out.append(
                Response(
                    "".join(r.text for r in items),
                    [t for r in items for t in r.token_ids],
                    last.finish_reason,
                    last.num_prompt_tokens,
                    last.num_generated_tokens,
                    last.num_cached_tokens,
                    i,
                )
            )
        return out[0] if single else out

    # ---- scoring ----
    def get_logprobs(self, token_ids: Sequence[int]) -> np.ndarray:
        """log p(token_ids[i+1] | token_ids[:i+1]) for every i: float32 [len - 1]."""
        ids = self.encode_prompt(list(token_ids))
        if len(ids) < 2:
            raise ValueError("scoring needs at least 2 tokens")
        rid = self._submit(ids, GenerationConfig(max_new_tokens=0), prompt_logprobs=True)
        return np.asarray(self._get(rid).prompt_logprobs, dtype=np.float32)

    def get_logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of token_ids: float32 [len, vocab]."""
        rid = self._submit(self.encode_prompt(list(token_ids)), GenerationConfig(max_new_tokens=0), prompt_logits=True)
        return self._get(rid).prompt_logits

    def get_ppl(self, token_ids: Union[Sequence[int], Sequence[Sequence[int]]]) -> Union[float, List[float]]:
        """Perplexity of one token sequence (a float) or of each of several (a list), as LMDeploy's get_ppl."""
        if token_ids and not isinstance(token_ids[0], (int, np.integer)):
            return [self.get_ppl(t) for t in token_ids]
        return float(np.exp(-np.mean(self.get_logprobs(token_ids).astype(np.float64))))

    # ---- introspection and lifetime ----
    def stats(self) -> dict:
        """The engine's counters (EngineStats, csrc/engine/engine.h) by their C++ names."""
        s = self._engine.stats()
        return {name: getattr(s, name) for name in dir(s) if not name.startswith("_")}

    def info(self) -> dict:
        s, r = self._engine.stats(), self.resolved
        return dict(
            model=str(self.model_path),
            architecture=self.spec.architecture,
            num_parameters=self.num_parameters,
            weight_dtype=r.weight_dtype,
            weight_format=self.spec.weight_format,
            group_size=self.spec.group_size,
            lm_head_dtype=r.lm_head_dtype,
            kv_cache_dtype=r.kv_dtype,
            kv_capacity_tokens=self._engine.capacity_tokens(),
            kv_bytes_per_token=r.kv_bytes_per_token,
            kv_staging_bytes=r.kv_staging_bytes,
            block_size=r.block_size,
            num_threads=r.num_threads,
            kernel_isa=_core.kernels.active_isa(),
            session_len=r.session_len,
            prefill_precision=r.prefill_precision,
            tile_unit=r.tile_unit,
            linear_precision=r.linear_precision,
            device=r.device,
            ops_model=r.ops_model,
            step_graphs=r.step_graphs,
            int8_weight_layout=self._engine.int8_weight_layout() or None,
            weights_bytes=s.weights_bytes,
            kv_cache_bytes=s.kv_cache_bytes,
            kv_cache_sizing=r.kv_cache_sizing,
            max_batch_size=r.max_batch_size,
            sampling_defaults=self.generation_defaults.describe(),
            sampling_defaults_source=self.generation_defaults_source,
        )

    def close(self) -> None:
        self._engine.shutdown()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RequestStream:
    """An iterator over one request's output. The request is already in the engine; close() or
    garbage collection before the end aborts it and drops its output."""

    def __init__(
        self,
        pipe: Pipeline,
        rid: int,
        ids: List[int],
        gen: GenerationConfig,
        on_prefill: Optional[Callable[[int, int], None]] = None,
    ):
        self._pipe, self.request_id = pipe, rid
        self._state = {"finished": False}
        # The generator must not reference self, or dropping an unread stream would leave a cycle
        # for the garbage collector instead of aborting the request at once.
        self._it = _follow(pipe, rid, ids, gen, self._state, on_prefill)

    @property
    def finished(self) -> bool:
        return self._state["finished"]

    def __iter__(self) -> "RequestStream":
        return self

    def __next__(self) -> Response:
        return next(self._it)

    def close(self) -> None:
        """Ends the stream and aborts the request if it is still running. Safe from another thread while one
        iterates it (a Stop button): the request is then aborted in the engine, and the iterating thread gets
        its last Response, finish_reason "abort"."""
        try:
            self._it.close()
        except ValueError:  # "generator already executing": another thread is in next() right now
            if not self.finished:
                try:
                    self._pipe._engine.abort(self.request_id)
                except KeyError:  # finished and taken meanwhile
                    pass
            return
        if not self.finished:
            self._state["finished"] = True
            self._pipe._engine.detach(self.request_id)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown or a closed engine: nothing left to free
            pass


class OutputAssembler:
    """Turns one request's token chunks (StreamChunk) into text: incremental detokenization and stop strings.
    feed() gives (text, finish_reason); a stop string ends the output (finish_reason "stop") and the caller then
    detaches the request. Shared by the blocking streams here and the server's async ones."""

    def __init__(self, pipe: Pipeline, ids: List[int], gen: GenerationConfig):
        self.detok = (
            IncrementalDetokenizer(pipe.tokenizer, prompt_ids=ids, skip_special_tokens=gen.skip_special_tokens)
            if pipe.tokenizer
            else None
        )
        self.stops = StopStringMatcher(gen.stop) if gen.stop else None
        self.num_generated = 0
        self.stopped = False  # by a stop string: the engine may still be running the request

    def feed(self, chunk) -> tuple:
        self.num_generated += len(chunk.token_ids)
        reason = chunk.finish_reason
        text = self.detok.step(chunk.token_ids) if self.detok else ""
        if self.detok and reason is not None:
            text += self.detok.flush()
        if self.stops is not None:
            text = self.stops.feed(text)
            if self.stops.stopped:
                self.stopped, reason = True, "stop"
            elif reason is not None:
                text += self.stops.flush()
        return text, reason


def _follow(
    pipe: Pipeline,
    rid: int,
    ids: List[int],
    gen: GenerationConfig,
    state: dict,
    on_prefill: Optional[Callable[[int, int], None]] = None,
) -> Iterator[Response]:
    """Turns one request's token chunks into Responses: incremental text, stop strings."""
    out = OutputAssembler(pipe, ids, gen)
    while not state["finished"]:
        chunk = pipe._get(rid, on_prefill if out.num_generated == 0 else None)
        text, reason = out.feed(chunk)
        if out.stopped:
            pipe._engine.detach(rid)
        state["finished"] = reason is not None
        if text or chunk.token_ids or state["finished"]:
            yield Response(text, list(chunk.token_ids), reason, len(ids), out.num_generated, chunk.num_cached_tokens)


def pipeline(model: Optional[Union[str, Path]] = None, engine_config: Optional[EngineConfig] = None) -> Pipeline:
    """Loads `model`: a HF checkpoint dir (dense, AutoAWQ or lmrt 4-bit), a ``.gguf`` file, or None for the default
    model, SmolLM2-135M-Instruct, at 4 bits (``lmrt.default_model.default_model_path()`` is its float16 form)."""
    return Pipeline(model, engine_config)
