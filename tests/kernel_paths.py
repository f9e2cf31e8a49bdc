"""The CPU kernel paths, each forced in turn: shared by the kernel test files."""
import numpy as np
import pytest

from lmrt._core import kernels as K

ISAS = ["scalar", "avx2", "avx512"]
CPU_NEEDS = {"avx2": "avx2+fma+f16c with OS YMM state", "avx512": "avx512f/bw/vl/dq with OS ZMM state"}


@pytest.fixture(params=ISAS)
def isa(request):
    name = request.param
    if not K.isa_supported(name):
        pytest.skip(f"CPU lacks {name} ({CPU_NEEDS[name]})")
    prev = K.active_isa()
    K.set_isa(name)
    yield name
    K.set_isa(prev)


def with_isa(name, fn):
    prev = K.active_isa()
    K.set_isa(name)
    try:
        return fn()
    finally:
        K.set_isa(prev)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_bits_equal(a, b, what):
    a, b = bits(a), bits(b)
    assert a.shape == b.shape, what
    if not np.array_equal(a, b):
        n = int((a != b).sum())
        pytest.fail(f"{what}: {n} of {a.size} elements differ in bits")
