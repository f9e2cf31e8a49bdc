"""int8 weights with one scale per output row (the core's I8Matrix): w[n, k] ~ q[n, k] * scale[n]."""

from __future__ import annotations

import numpy as np


def quantize_rows_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric round-to-nearest: scale = max|w[n]| / 127. w [N, K] float32 -> (q int8 [N, K], scale float32 [N])."""
    w = np.asarray(w, dtype=np.float32)
    scale = np.abs(w).max(axis=1) / 127.0  # [N]
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)
