"""The engine's sampler (csrc/engine/sampler.cpp) against a float64 NumPy reference of HF transformers' order:
repetition penalty, bans, temperature, top-k, top-p, min-p, then a draw. Which tokens can be drawn must be exactly
the reference's, and how often each is drawn must match its probability: 40,000 draws from one seeded rng (the
same counts on every run), each frequency within 6 standard deviations of the reference probability, plus 1e-3."""

from __future__ import annotations

import numpy as np
import pytest

from lmrt import _core

DRAWS = 40_000


def reference(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, context=(), banned=()):
    x = np.asarray(logits, np.float64).copy()
    for t in set(context):
        x[t] = x[t] / repetition_penalty if x[t] > 0 else x[t] * repetition_penalty
    x[list(banned)] = -np.inf
    x = x / temperature
    order = sorted(range(len(x)), key=lambda i: (-x[i], i))  # descending, ties to the lower id
    keep = order[:top_k] if top_k else order
    p = np.exp(x[keep] - x[keep[0]])
    p /= p.sum()
    if top_p < 1.0:
        n = int(np.searchsorted(np.cumsum(p), top_p) + 1)
        keep, p = keep[:n], p[:n]
    if min_p > 0.0:
        ok = p >= min_p * p[0]
        keep, p = [k for k, o in zip(keep, ok) if o], p[ok]
    probs = np.zeros(len(x))
    probs[keep] = p / p.sum()
    return probs


CASES = [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_p=0.8),
    dict(temperature=0.2, top_p=0.9, repetition_penalty=1.1, context=(3, 7, 7, 11)),  # the default model's defaults
    dict(temperature=1.0, min_p=0.1),
    dict(temperature=0.9, top_k=20, top_p=0.95, min_p=0.02, banned=(0, 1)),
    dict(temperature=1.0, top_k=1),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_the_sampler_draws_as_the_reference(case):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal(200) * 2.0).astype(np.float32)
    logits[50] = logits[51]  # a tie
    ref = reference(logits, **case)
    p = _core.SamplingParams()
    for k in ("temperature", "top_k", "top_p", "min_p", "repetition_penalty"):
        if k in case:
            setattr(p, k, case[k])
    counts = _core.bookkeeping.sample_counts(
        logits, p, list(case.get("context", ())), list(case.get("banned", ())), 12345, DRAWS
    )
    freq = counts / DRAWS
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(ref)), "drew a token the reference excludes"
    assert all(counts[i] > 0 for i in np.flatnonzero(ref > 1e-3)), "never drew a token the reference keeps"
    bound = 6 * np.sqrt(ref * (1 - ref) / DRAWS) + 1e-3
    assert (np.abs(freq - ref) <= bound).all(), np.abs(freq - ref).max()


def test_a_wide_flat_vocabulary_keeps_its_nucleus():
    """A 49,152-token vocabulary with a flat tail (most tokens within a few units of the best): the part of the
    vocabulary the sampler sorts must still hold the whole nucleus."""
    rng = np.random.default_rng(5)
    logits = rng.standard_normal(49152).astype(np.float32)
    logits[:8] += 6.0
    for top_p in (0.5, 0.95):
        ref = reference(logits, temperature=1.0, top_p=top_p)
        p = _core.SamplingParams()
        p.temperature, p.top_p = 1.0, top_p
        draws = 1000  # each draw sorts most of the vocabulary here (a 0.95 nucleus of a flat tail)
        counts = _core.bookkeeping.sample_counts(logits, p, [], [], 7, draws)
        assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(ref))
        top = np.argsort(-ref)[:8]
        bound = 6 * np.sqrt(ref[top] * (1 - ref[top]) / draws) + 1e-3
        assert (np.abs(counts[top] / draws - ref[top]) <= bound).all()


@pytest.mark.parametrize("V", [1, 15, 16, 17, 200, 49152])
def test_greedy_is_numpys_argmax(V):
    """Temperature 0: the first index of the maximum (numpy's and torch's argmax), whatever the vocabulary size
    (whole runs of 16 lanes and a tail), with ties at the maximum, -inf logits (bans) and the maximum in the tail."""
    rng = np.random.default_rng(V)
    p = _core.SamplingParams()
    p.temperature = 0.0
    for trial in range(6):
        logits = rng.standard_normal(V).astype(np.float32)
        if trial == 1 and V > 3:  # a tie at the maximum: the lower id wins
            i, j = sorted(rng.choice(V, 2, replace=False))
            logits[i] = logits[j] = logits.max() + 1
        if trial == 2:
            logits[:] = -np.inf  # every token banned: argmax is 0
        if trial == 3:
            logits[-1] = logits.max() + 1  # in the tail past the last whole run
        if trial == 4:
            logits[rng.random(V) < 0.5] = -np.inf
        banned = [int(np.argmax(logits))] if trial == 5 and V > 1 else []
        want = logits.copy()
        want[banned] = -np.inf
        counts = _core.bookkeeping.sample_counts(logits, p, [], banned, 1, 1)
        assert int(np.flatnonzero(counts)[0]) == int(np.argmax(want)), trial


@pytest.mark.parametrize("V", [1, 15, 16, 17, 64, 77])
def test_logits_finite_finds_nan_and_inf_at_every_position(V):
    """The engine's check before sampling (Sampler::all_finite, a 16-lane loop and a tail): a NaN or +inf at any
    position fails a row, -inf (a banned token) does not; rows of ordinary values pass."""
    finite = _core.bookkeeping.logits_finite
    rng = np.random.default_rng(V)
    row = rng.standard_normal(V).astype(np.float32) * 30
    assert finite(row)
    for i in range(V):
        for bad in (np.nan, np.inf):
            r = row.copy()
            r[i] = bad
            assert not finite(r), (i, bad)
        r = row.copy()
        r[i] = -np.inf
        assert finite(r), i
    assert finite(np.full(V, -np.inf, np.float32))
    assert finite(np.full(V, np.finfo(np.float32).max, np.float32))


def token_at_u(
    logits, u, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, penalized=(), banned=()
):
    """The token the rule draws at u, computed here on its own: -1 for NaN or +inf; the penalty and temperature in
    float32 (the engine's logits are fp32), float64 from there; the cuts over (value descending, id ascending); the
    draw over the survivors in id order, at u times their total (float32 parameters, as the engine holds them)."""
    x = np.asarray(logits, np.float32).copy()
    if np.isnan(x).any() or np.isposinf(x).any():
        return -1
    f32 = np.float32
    for t in penalized:
        x[t] = x[t] / f32(repetition_penalty) if x[t] > 0 else x[t] * f32(repetition_penalty)
    x[list(banned)] = -np.inf
    if temperature <= 0:
        return int(np.argmax(x))
    x = (x / f32(temperature)).astype(np.float64)
    best = x.max()
    if best == -np.inf:  # every token banned: greedy's answer
        return 0
    order = np.lexsort((np.arange(len(x)), -x))  # value descending, ties to the lower id
    order = order[x[order] >= np.float64(f32(best) - f32(50.0))]  # the rest have weights under e^-50
    keep = order[:top_k] if top_k else order
    p = np.exp(x[keep] - best)
    p /= p.sum()
    if top_p < 1.0:
        n = int(np.searchsorted(np.cumsum(p), np.float64(f32(top_p))) + 1)
        keep, p = keep[:n], p[:n]
    if min_p > 0.0:
        ok = p >= np.float64(f32(min_p)) * p[0]
        keep, p = keep[ok], p[ok]
    by_id = np.argsort(keep)
    keep, cum = keep[by_id], np.cumsum(p[by_id])
    i = int(np.searchsorted(cum, u * cum[-1], side="right"))
    return int(keep[min(i, len(keep) - 1)])


def test_a_draw_at_u_gives_the_references_token():
    """The rule itself (common/sampling.h's sample_row, what the CPU op set runs and the CUDA kernel keeps): the
    token at a given draw u equals the reference's, for every filter alone and together, rows full of ties (cuts
    inside runs of equal values), penalties, bans, NaN and +inf rows, vocabularies from 1 to 49,152 tokens."""
    from kernel_paths import sample_rows
    from test_kernels_cuda import sampling_cases

    checked = 0
    for rows in sampling_cases():
        if len(rows[0][0]) > 50_000:
            rows = rows[:6]  # Llama 3's vocabulary: a few rows (the reference sorts in Python-called NumPy)
        logits = np.stack([x for x, _ in rows])
        for r, (x, p) in enumerate(rows):
            kw = {k: v for k, v in p.items() if k not in ("penalized", "banned", "u")}
            got = sample_rows(logits[r : r + 1], u=p["u"], penalized=[p["penalized"]], banned=[p["banned"]], **kw)[0]
            assert got == token_at_u(x, **p), (len(x), r, p)
            checked += got >= 0
    assert checked > 100
