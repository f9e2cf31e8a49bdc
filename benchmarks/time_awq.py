"""Time the AWQ search alone (no evaluation) on the default model: wall and process CPU seconds.

HF_HUB_OFFLINE=1 python benchmarks/time_awq.py THREADS [GROUP_SIZE]
"""

import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.append(str(Path(__file__).resolve().parents[1]))  # quantize/ from a checkout

from transformers import AutoTokenizer  # noqa: E402

from lmrt.default_model import default_model_path  # noqa: E402
from quantize import calib, evaluate, pre_quant  # noqa: E402

threads = int(sys.argv[1])
group_size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
torch.set_num_threads(threads)
path = default_model_path()
model = evaluate.load_model(path)
ids = calib.calib_tokens(AutoTokenizer.from_pretrained(path))
cpu0, wall0 = time.process_time(), time.perf_counter()
pre_quant.run_awq(model, ids, group_size)
print(
    f"AWQ g{group_size} threads={threads}: wall {time.perf_counter() - wall0:.1f} s, process CPU {time.process_time() - cpu0:.1f} s"
)
