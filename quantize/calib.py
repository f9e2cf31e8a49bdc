"""Offline calibration tokens: a text tokenised and cut into ``num_samples`` x ``seqlen`` windows.

The default text is the licences under /usr/share/common-licenses other than the GPL family
(GPL-3 is the evaluation text; LGPL-3 and GPL-2 share much of its wording). Together they hold
about 26k SmolLM2 tokens, i.e. 50 windows of 512. The default is 16 x 512 (8k tokens), not AutoAWQ's
128 x 512: the text holds 50 windows, and each calibration token costs two passes through every
layer (capture, then the quantised layer's outputs for the next), which on two shared cores is the
largest cost after the search. 8k tokens are still five times the widest linear input (1536), so
the Gram matrices the o/down scale and clip objectives use are well determined. (AutoAWQ's own
"128 samples" of pile-val come to ~60 windows after it drops long samples and re-splits.)
Windows are consecutive and do not overlap.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

LICENSE_DIR = Path("/usr/share/common-licenses")
DEFAULT_CALIB_FILES = ("Apache-2.0", "Artistic", "BSD", "GFDL-1.3", "LGPL-2.1", "MPL-2.0", "MPL-1.1", "CC0-1.0")
DEFAULT_EVAL_FILE = LICENSE_DIR / "GPL-3"
DEFAULT_NUM_SAMPLES = 16
DEFAULT_SEQLEN = 512


def default_calib_text() -> str:
    """The default calibration text: the non-GPL licences found on this machine, concatenated."""
    paths = [LICENSE_DIR / name for name in DEFAULT_CALIB_FILES if (LICENSE_DIR / name).is_file()]
    if not paths:
        raise FileNotFoundError(f"no default calibration text under {LICENSE_DIR}; pass --calib-file")
    return "\n\n".join(path.read_text(encoding="utf-8", errors="replace") for path in paths)


def calib_tokens(
    tokenizer, text: str | None = None, num_samples: int = DEFAULT_NUM_SAMPLES, seqlen: int = DEFAULT_SEQLEN
) -> torch.Tensor:
    """Token ids [num_samples, seqlen] (int64) from ``text`` (default: ``default_calib_text()``).

    A text too short for ``num_samples`` windows gives as many as it holds, with a warning on stderr.
    """
    if num_samples < 1 or seqlen < 2:
        raise ValueError(f"need at least one calibration sample of at least 2 tokens, got {num_samples} x {seqlen}")
    ids = tokenizer(text if text is not None else default_calib_text(), verbose=False)["input_ids"]
    available = len(ids) // seqlen
    if available == 0:
        raise ValueError(f"the calibration text has {len(ids)} tokens, fewer than one window of {seqlen}")
    if available < num_samples:
        print(
            f"warning: the calibration text holds {available} windows of {seqlen} tokens, not {num_samples}; using {available}",
            file=sys.stderr,
        )
        num_samples = available
    return torch.tensor(ids[: num_samples * seqlen], dtype=torch.int64).reshape(num_samples, seqlen)
