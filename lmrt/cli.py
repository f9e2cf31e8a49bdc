"""The ``lmrt`` command: ``chat``, ``generate`` and ``info`` on top of :func:`lmrt.pipeline`."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, TextIO

CHAT_HELP = "Commands: /reset clears the history, /exit (or Ctrl-D) quits; Ctrl-C stops a reply, or quits at the prompt."


def _engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None, help="model name or directory (default: the default model)")
    group = parser.add_argument_group("engine")
    group.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], help="compute dtype for the weights")
    group.add_argument("--kv-cache-dtype", help="KV-cache dtype, e.g. auto, bfloat16, float32")
    group.add_argument("--threads", type=int, help="CPU threads (default: chosen by the engine)")
    group.add_argument("--prefill-precision", choices=["auto", "fp32", "bf16"],
                       help="bf16: prompt chunks in bf16 (AMX tiles or AVX512-BF16); fp32: exact (default auto: bf16 where "
                            "the CPU has either)")


def _generation_args(parser: argparse.ArgumentParser) -> None:
    # Defaults are None so that only what the user sets overrides GenerationConfig's own defaults.
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int)
    group.add_argument("--temperature", type=float, help="0 means greedy")
    group.add_argument("--top-p", type=float)
    group.add_argument("--top-k", type=int, help="0 means no top-k limit")
    group.add_argument("--seed", type=int)
    group.add_argument("--system", help="system message for the conversation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrt", description="Run LLMs on the CPU with lmrt.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = sub.add_parser("chat", help="chat in the terminal", description=f"Chat in the terminal. {CHAT_HELP}")
    _engine_args(chat)
    _generation_args(chat)

    generate = sub.add_parser("generate", help="complete one prompt and print the result as it streams")
    _engine_args(generate)
    _generation_args(generate)
    generate.add_argument("--prompt", required=True, help="the prompt text")
    generate.add_argument("--chat", action="store_true", help="send the prompt as a user message (chat template)")

    sub.add_parser("quantize", help="AWQ 4-bit quantization (same as lmrt-quantize; see lmrt quantize --help)",
                   add_help=False)
    info = sub.add_parser("info", help="show the model, its memory use and the engine configuration")
    _engine_args(info)
    return parser


def _engine_config(args: argparse.Namespace):
    import lmrt

    options = {"dtype": args.dtype, "kv_cache_dtype": args.kv_cache_dtype, "num_threads": args.threads,
               "prefill_precision": args.prefill_precision}
    return lmrt.EngineConfig(**{k: v for k, v in options.items() if v is not None})


def _generation_config(args: argparse.Namespace):
    import lmrt

    options = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "seed": args.seed,
    }
    return lmrt.GenerationConfig(**{k: v for k, v in options.items() if v is not None})


def _stream_reply(pipe, prompt, gen_config, out: TextIO) -> tuple[str, str | None]:
    """Print the completion as it arrives; return its text and finish reason."""
    stream = pipe.stream(prompt, gen_config)
    pieces, finish_reason = [], None
    try:
        for response in stream:
            pieces.append(response.text)
            out.write(response.text)
            out.flush()
            finish_reason = response.finish_reason
    finally:
        # An interrupted generator only runs its cleanup when collected; close it now so the engine aborts the
        # request and frees its KV cache before the next turn.
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        out.write("\n")
        out.flush()
    return "".join(pieces), finish_reason


def _warn_if_truncated(finish_reason: str | None, err: TextIO) -> None:
    if finish_reason == "length":
        err.write("[reply cut at the token limit; raise --max-new-tokens for longer replies]\n")


def chat_loop(
    pipe,
    gen_config,
    system: str | None = None,
    read: Callable[[str], str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> None:
    """Read user turns with ``read`` (default: input) and stream the replies, keeping the conversation history."""
    # Looked up per call, not bound as defaults, so redirected/monkeypatched stdio is honoured.
    read, out, err = read or input, out or sys.stdout, err or sys.stderr
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    err.write(CHAT_HELP + "\n")
    while True:
        try:
            line = read(">>> ")
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
        history.append({"role": "user", "content": line})
        try:
            reply, finish_reason = _stream_reply(pipe, list(history), gen_config, out)
        except KeyboardInterrupt:
            # The partial reply is dropped with its question, so the next turn starts from a consistent history.
            history.pop()
            err.write("[reply stopped]\n")
            continue
        history.append({"role": "assistant", "content": reply})
        _warn_if_truncated(finish_reason, err)


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
        return (f"4-bit, group {info['group_size']}; lm_head {info.get('lm_head_dtype', 'dense')}; "
                f"other tensors {info['weight_dtype']}")
    if info.get("lm_head_dtype") == "int8":
        return f"{info['weight_dtype']}; lm_head int8"
    return info["weight_dtype"]


_TILE_UNITS = {"amx": "AMX tiles", "avx512bf16": "AVX512-BF16", "model": "the tile model (slow)"}


def _format_prefill(precision: str, unit: str | None) -> str:
    if precision == "bf16":
        return f"bf16 on {_TILE_UNITS.get(unit, unit)} (prompt chunks of 32+ tokens; decode exact fp32)"
    return "fp32 (exact; logits do not depend on batching)"


def format_info(info: dict) -> str:
    rows = [
        ("model", info["model"]),
        ("architecture", info["architecture"]),
        ("parameters", _format_count(info["num_parameters"])),
        ("weights", _format_weights(info)),
        ("weights memory", _format_bytes(info["weights_bytes"])),
        ("KV cache dtype", info["kv_cache_dtype"]),
        ("KV cache memory", _format_bytes(info["kv_cache_bytes"])),
        ("KV capacity", f"{info['kv_capacity_tokens']:,} tokens ({info['block_size']} per block)"),
        ("session length", f"{info['session_len']:,} tokens"),
        ("kernel path", info["kernel_isa"]),
        ("prefill", _format_prefill(info.get("prefill_precision", "fp32"), info.get("tile_unit"))),
        ("threads", info["num_threads"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _run(args: argparse.Namespace) -> None:
    import lmrt

    pipe = lmrt.pipeline(args.model, _engine_config(args))
    try:
        if args.command == "info":
            print(format_info(pipe.info()))
        elif args.command == "generate":
            prompt = args.prompt
            if args.chat:
                prompt = [{"role": "system", "content": args.system}] if args.system else []
                prompt.append({"role": "user", "content": args.prompt})
            _, finish_reason = _stream_reply(pipe, prompt, _generation_config(args), sys.stdout)
            _warn_if_truncated(finish_reason, sys.stderr)
        else:
            try:
                import readline  # noqa: F401  (line editing and history for input(), where available)
            except ImportError:
                pass
            chat_loop(pipe, _generation_config(args), args.system)
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
    try:
        _run(args)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except (OSError, ValueError) as e:
        # Bad model paths, unsupported options, models without a chat template: the message names the fix.
        sys.stderr.write(f"lmrt: error: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
