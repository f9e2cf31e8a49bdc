"""``lmrt-quantize``: AWQ (or plain RTN) 4-bit quantisation of a HF checkpoint into an AutoAWQ gemm checkpoint.

    lmrt-quantize [MODEL] --out DIR [--method awq|rtn] [--w-bits 4] [--group-size 32|64|128]
                  [--calib-file F] [--calib-samples N] [--calib-seqlen L] [--no-clip] [--eval-file F]

MODEL defaults to lmrt's default model. Prints, and saves as report.json / report.md in DIR,
perplexity before and after on the evaluation text, weight bytes before and after, and times.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import calib, evaluate, pre_quant, writer

GROUP_SIZES = (128, 64, 32)


def pick_group_size(in_features: dict[str, int], requested: int | None) -> int:
    """The requested group size if it divides every linear's input size, else a ValueError naming one that does.

    With no request: the largest of 128 / 64 / 32 that divides them all.
    """
    working = [g for g in GROUP_SIZES if all(n % g == 0 for n in in_features.values())]
    if requested is None:
        if not working:
            raise ValueError(
                f"none of the group sizes {GROUP_SIZES} divides every linear's input size {sorted(set(in_features.values()))}"
            )
        return working[0]
    bad = {name: n for name, n in in_features.items() if n % requested}
    if bad:
        name, n = next(iter(bad.items()))
        hint = f"use --group-size {working[0]}" if working else f"none of {GROUP_SIZES} divides all of them"
        raise ValueError(f"--group-size {requested} does not divide the input size {n} of {name}; {hint}")
    return requested


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmrt-quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="HF checkpoint dir (default: lmrt's default model)")
    parser.add_argument("--out", required=True, type=Path, help="output checkpoint dir")
    parser.add_argument(
        "--method", choices=("awq", "rtn"), default="awq", help="awq (default) or plain round-to-nearest"
    )
    parser.add_argument("--w-bits", type=int, default=4, choices=(4,), help="weight bits (AutoAWQ gemm is 4-bit)")
    parser.add_argument(
        "--group-size", type=int, choices=GROUP_SIZES, help="default: the largest dividing every linear's input size"
    )
    parser.add_argument(
        "--calib-file", type=Path, help="calibration text (default: the non-GPL licences in /usr/share/common-licenses)"
    )
    parser.add_argument("--calib-samples", type=int, default=calib.DEFAULT_NUM_SAMPLES)
    parser.add_argument("--calib-seqlen", type=int, default=calib.DEFAULT_SEQLEN)
    parser.add_argument(
        "--search-samples",
        type=int,
        default=pre_quant.DEFAULT_SEARCH_SAMPLES,
        help="calibration sequences the attention/MLP scale objectives run on",
    )
    parser.add_argument("--no-clip", action="store_true", help="skip the clip search")
    parser.add_argument(
        "--eval-file", type=Path, default=calib.DEFAULT_EVAL_FILE, help="perplexity text (default: GPL-3)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        report = quantize(args, argv if argv is not None else sys.argv[1:])
    except (ValueError, FileNotFoundError) as error:
        print(f"lmrt-quantize: error: {error}", file=sys.stderr)
        return 2
    print(render_markdown(report))
    return 0


def quantize(args: argparse.Namespace, argv: list[str]) -> dict:
    import torch
    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.model is None:
        from lmrt.default_model import default_model_path

        model_dir = default_model_path()
    else:
        model_dir = Path(args.model)
    model = evaluate.load_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    linears = pre_quant.quantizable_linears(model)
    group_size = pick_group_size({name: m.in_features for name, m in linears.items()}, args.group_size)
    odd = [name for name, m in linears.items() if m.out_features % 8]
    if odd:
        raise ValueError(
            f"{odd[0]} has {linears[odd[0]].out_features} outputs, not a multiple of 8 (AutoAWQ packs 8 per int32)"
        )

    eval_ids = evaluate.text_ids(tokenizer, args.eval_file.read_text(encoding="utf-8", errors="replace"))
    t0 = time.perf_counter()
    ppl_before = evaluate.perplexity(model, eval_ids, desc="perplexity before")
    eval_seconds = time.perf_counter() - t0

    calib_info = None
    t0 = time.perf_counter()
    with torch.no_grad():
        if args.method == "awq":
            text = args.calib_file.read_text(encoding="utf-8", errors="replace") if args.calib_file else None
            calib_ids = calib.calib_tokens(tokenizer, text, args.calib_samples, args.calib_seqlen)
            calib_info = {
                "file": str(args.calib_file) if args.calib_file else "default: " + " ".join(calib.DEFAULT_CALIB_FILES),
                "samples": int(calib_ids.shape[0]),
                "seqlen": int(calib_ids.shape[1]),
                "search_samples": min(args.search_samples, int(calib_ids.shape[0])),
                "clip": not args.no_clip,
            }
            quantized, layer_reports = pre_quant.run_awq(
                model, calib_ids, group_size, clip=not args.no_clip, search_samples=args.search_samples
            )
        else:
            quantized, layer_reports = pre_quant.run_rtn(model, group_size), []
    quantize_seconds = time.perf_counter() - t0

    weight_file = writer.write_checkpoint(model, quantized, model_dir, args.out, group_size)
    del model
    t0 = time.perf_counter()
    ppl_after = evaluate.perplexity(evaluate.load_awq_dequantized(args.out), eval_ids, desc="perplexity after")
    eval_seconds += time.perf_counter() - t0

    report = {
        "model": str(model_dir),
        "method": args.method,
        "w_bits": args.w_bits,
        "group_size": group_size,
        "calibration": calib_info,
        "eval_file": str(args.eval_file),
        "eval_tokens": len(eval_ids),
        "ppl_before": ppl_before,
        "ppl_after": ppl_after,
        "bytes_before": writer.checkpoint_bytes(model_dir),
        "bytes_after": weight_file.stat().st_size,
        "quantize_seconds": round(quantize_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "command": "lmrt-quantize " + shlex.join(argv),
        "layers": [{"index": r.index, "alpha": r.alphas, "loss_vs_rtn": r.gain} for r in layer_reports],
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(render_markdown(report))
    return report


def render_markdown(report: dict) -> str:
    mb = 1024 * 1024
    rows = [
        ("model", report["model"]),
        ("method", f"{report['method'].upper()} w{report['w_bits']} g{report['group_size']}"),
        (
            "calibration",
            "none"
            if report["calibration"] is None
            else ", ".join(f"{k}={v}" for k, v in report["calibration"].items()),
        ),
        (
            "perplexity before",
            f"{report['ppl_before']:.3f} ({report['eval_file']}, {report['eval_tokens']} tokens, windows of {evaluate.DEFAULT_WINDOW})",
        ),
        ("perplexity after", f"{report['ppl_after']:.3f}"),
        ("weight bytes before", f"{report['bytes_before']} ({report['bytes_before'] / mb:.1f} MiB)"),
        ("weight bytes after", f"{report['bytes_after']} ({report['bytes_after'] / mb:.1f} MiB)"),
        ("quantize time", f"{report['quantize_seconds']} s ({report['threads']} threads)"),
        ("evaluation time", f"{report['eval_seconds']} s"),
        ("total time", f"{report['total_seconds']} s"),
        ("command", f"`{report['command']}`"),
    ]
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


if __name__ == "__main__":
    sys.exit(main())
