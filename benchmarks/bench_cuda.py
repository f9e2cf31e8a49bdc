"""The CUDA backend's kernels against the card's own limit (issue 15): the 4-bit decode GEMV (linear_w4 on the GPU)
at the matrix shapes of a Llama of hidden 4096 / intermediate 14336 / 32 heads / 8 KV heads, beside the
device-to-device copy bandwidth measured in the same run. Times are device-side (CUDA events around replays of a
CUDA graph of >= 64 launches that cycle through weight sets larger than the L2), medians of --reps.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_cuda.py [--reps 20] [--results PATH]

Writes a dated section to benchmarks/RESULTS.md (or --results PATH, e.g. under $OUT on a lent GPU machine)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_log  # noqa: E402

from lmrt._core import kernels as K  # noqa: E402

# (name, K, N) of one layer's 4-bit products at hidden 4096, intermediate 14336, 32 heads of 128, 8 KV heads.
SHAPES = [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 2 * 14336), ("down", 14336, 4096)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rows", default="1,2,4,8", help="rows of x (decode batch sizes), comma-separated")
    ap.add_argument("--groups", default="128,32", help="group sizes, comma-separated")
    ap.add_argument(
        "--tc-rows", default="16,64,512", help="rows timed on the tensor cores (and the GEMVs beside), comma-separated"
    )
    ap.add_argument("--results", default=None, help="file the dated section is appended to (default RESULTS.md)")
    args = ap.parse_args()

    ok, name = K.cuda_available()
    if not ok:
        sys.exit(f"bench_cuda: no CUDA device: {name}")
    by_memcpy, by_kernel = K.cuda_copy_bandwidth(1 << 31, args.reps)
    copy = max(by_memcpy, by_kernel)
    print(
        f"{name}: device-to-device copy of 2 GiB, read + write: cudaMemcpy {by_memcpy:,.0f} GB/s, kernel {by_kernel:,.0f}"
    )

    header = [
        "M",
        "group",
        "kernel",
        *(f"{s[0]} [{s[2]}x{s[1]}] us (GB/s, % copy)" for s in SHAPES),
        "layer us (% copy)",
    ]
    rows = []
    # (rows, group, GEMV shape or "tc" for the tensor cores); 5+ rows run the narrow shape as their default, and
    # the streamed shape takes 1-4 rows
    runs = [
        (int(m), int(g), shape)
        for m in args.rows.split(",")
        for g in args.groups.split(",")
        for shape in ("default", "streamed", "narrow")
        if int(m) <= 4 or shape == "default"
    ]
    g0 = int(args.groups.split(",")[0])
    for m in (int(v) for v in args.tc_rows.split(",") if v):
        # the GEMVs beside (8 rows a pass; up to 64 rows: 512 would take minutes), then the tensor cores
        runs += ([(m, g0, "default")] if m <= 64 and str(m) not in args.rows.split(",") else []) + [(m, g0, "tc")]

    def run(M, g, shape):
        cells, total_us, total_bytes = [], 0.0, 0.0
        for _, k, n in SHAPES:
            tc = shape == "tc"
            try:
                us, nbytes = K.cuda_time_linear_w4(
                    M, k, n, g, args.reps, gemv="default" if tc else shape, tensor_cores=tc
                )
            except Exception as e:  # noqa: BLE001 - a cell of the table, and the next shapes still run
                cells.append(f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160])
                continue
            gbs = nbytes / (us * 1e-6) / 1e9
            cells.append(f"{us:.2f} ({gbs:,.0f}, {100 * gbs / copy:.0f}%)")
            total_us += us
            total_bytes += nbytes
        layer = f"{total_us:.1f} ({100 * total_bytes / (total_us * 1e-6) / 1e9 / copy:.0f}%)" if total_us else "—"
        kernel = {
            "tc": "tensor cores (64 x 64 tiles)",
            "streamed": "streamed (a warp per 8 outputs)",
            "narrow": "4 outputs a block",
        }.get(shape, "4 outputs a block" if M > 4 else f"{16 if M == 1 else 8} outputs a block")
        rows.append(f"| {M} | {g} | {kernel} | " + " | ".join(cells) + f" | {layer} |")
        print(rows[-1], flush=True)

    # A time limit's SIGTERM ends the runs but still writes the rows measured.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_cuda: cut by a time limit (SIGTERM)"))
    try:
        for M, g, shape in runs:
            run(M, g, shape)
    finally:
        if len(rows) < len(runs):
            rows.append(f"| cut by the time limit after {len(rows)} of {len(runs)} runs | | | |")
        write(args, name, by_memcpy, by_kernel, header, rows)


def write(args, name, by_memcpy, by_kernel, header, rows) -> None:
    section = results_log.section(
        f"CUDA 4-bit linear on {name}: the decode GEMV, and the tensor cores",
        "bench_cuda.py",
        [
            f"card: {name}; device-to-device copy of 2 GiB (bytes read + written, medians of {args.reps}): "
            f"cudaMemcpy {by_memcpy:,.0f} GB/s, a 16-byte copy kernel {by_kernel:,.0f} GB/s; the larger is the bound "
            "the GEMV's % is of",
            "bytes per call: the 4-bit codes, the fp32 scales and mins of each group, x and y; times per launch in a "
            "CUDA graph of >= 64 launches cycling through >= 512 MiB of weight sets (past the 60 MB L2)",
            "linear_w4 on the GPU (csrc/kernels/cuda/linear_w4.cu): a block of 8 warps per 16 outputs (1 row), 8 "
            "(2-4 rows) or 4 (5+ rows; and gemv='narrow', the earlier shape, for comparison), K split among the warps; "
            "gemv='streamed' (1-4 rows): a warp per 8 outputs over all of K, the next step's loads in flight; "
            "rows of x 8 at a time; tensor cores: linear_w4_tc (linear_tc.cu: bf16 WMMA, 64 x 64 tiles of y a block "
            "of 4 warps, weights formed in registers and rounded to bf16), the prompt-chunk and large-batch path",
        ],
        header,
        rows,
    )
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + section)
    else:
        results_log.append(section)


if __name__ == "__main__":
    main()
