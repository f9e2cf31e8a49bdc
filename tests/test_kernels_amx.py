"""The AMX bf16 GEMM (linear_bf16_tiles): x and w rounded to bf16, products summed in fp32.

Two paths, each checked against float64 on the same bf16-rounded inputs: the software model of the
tile instruction (runs on every CPU: it checks the packing, padding, blocking and threading), and the
AMX tiles themselves where the CPU has AMX-BF16 (skipped elsewhere, with the reason).
"""
import numpy as np
import pytest

from kernel_paths import assert_bits_equal
from lmrt import _bf16
from lmrt._core import kernels as K

# Summing K products in fp32 (exact products of bf16 inputs): each partial sum rounds once, so
# |error| <= K * 2^-24 * sum_k |x_k w_k| (the classic gamma_K bound); we allow twice that.
def fp32_sum_bound(xr, wr, bias):
    mag = np.abs(xr) @ np.abs(wr).T + (0 if bias is None else np.abs(bias))
    return 2 * (xr.shape[1] + 1) * 2.0**-24 * mag


PATHS = ["model", "amx"]


@pytest.fixture(params=PATHS)
def emulate(request):
    if request.param == "amx" and not K.amx_available():
        pytest.skip("CPU lacks AMX-TILE/AMX-BF16, or the OS did not grant the tile state")
    return request.param == "model"


SHAPES = [  # (M, K, N): one tile, padding on every side, many blocks, the model's prefill shapes
    (1, 32, 16), (5, 40, 20), (3, 17, 3), (33, 96, 70), (64, 576, 960), (40, 1536, 576)
]


@pytest.mark.parametrize("M,K_,N", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_float64_on_bf16_inputs(emulate, M, K_, N, with_bias):
    rng = np.random.default_rng(M * 1000 + K_ + N)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    w = (rng.standard_normal((N, K_)) / np.sqrt(K_)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
    y = K.linear_bf16_tiles(x, w, bias, emulate=emulate)
    xr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(x)).astype(np.float64)
    wr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(w)).astype(np.float64)
    ref = xr @ wr.T + (0 if bias is None else bias.astype(np.float64))
    err = np.abs(y - ref)
    bound = fp32_sum_bound(xr, wr, bias)
    assert (err <= bound).all(), f"max error {err.max():.3g}, worst ratio to the bound {(err / bound).max():.3g}"


def test_bf16_weights_equal_rounded_fp32_weights(emulate):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((20, 64)).astype(np.float32)
    w = rng.standard_normal((48, 64)).astype(np.float32)
    a = K.linear_bf16_tiles(x, w, emulate=emulate)
    b = K.linear_bf16_tiles(x, _bf16.float32_to_bf16_bits(w), wdtype="bf16", emulate=emulate)
    assert_bits_equal(a, b, "bf16 weights vs the same weights given as fp32")


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_change_no_bit(emulate, threads):
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((100, 576)).astype(np.float32)
    w = rng.standard_normal((200, 576)).astype(np.float32)
    one = K.linear_bf16_tiles(x, w, emulate=emulate)
    assert_bits_equal(K.linear_bf16_tiles(x, w, num_threads=threads, emulate=emulate), one, f"{threads} threads vs 1")


def test_without_amx_the_error_names_the_way_out():
    if K.amx_available():
        pytest.skip("this CPU has AMX: the refusal cannot be shown")
    with pytest.raises(ValueError, match="emulate=True"):
        K.linear_bf16_tiles(np.ones((2, 32), np.float32), np.ones((16, 32), np.float32))
