"""The engine's bookkeeping on its own (csrc/engine/block_manager, scheduler): the invariants of
csrc/engine/README.md checked after every operation of random sequences (hypothesis), with no model and
no tensors.

BlockManager: a block's reference count is the number of live tables holding it; the free blocks are
exactly those with count 0; a table covers its tokens; a prefix-cache hit hands out only blocks whose
contents are the query's tokens.
Scheduler, driven as the engine drives it: a request is waiting, running or finished, never two; a
waiting request holds no blocks; a running one covers its computed tokens; a step stays within its
token budget and batch size; no step writes into a block another request shares; every request
finishes with its tokens, through preemption and prefix-cache hits alike.
"""

from __future__ import annotations

import collections

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis (the [test] extra)")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lmrt._core import bookkeeping as bk  # noqa: E402

# Token values from a small alphabet so that prompts share prefixes and the prefix cache gets hits.
TOKENS = st.integers(min_value=0, max_value=2)


def check_blocks(blocks, num_blocks, tables):
    """Reference counts and the free count against the live tables."""
    held = collections.Counter(b for table in tables for b in table)
    for b in range(num_blocks):
        assert blocks.ref_count(b) == held[b], f"block {b}: count {blocks.ref_count(b)}, held by {held[b]} tables"
    assert blocks.num_free_blocks() == sum(1 for b in range(num_blocks) if held[b] == 0)
    for table in tables:
        assert len(set(table)) == len(table), f"a table holds a block twice: {table}"


# ---------------------------------------------------------------- BlockManager

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("new"), st.lists(TOKENS, min_size=1, max_size=14)),
        st.tuples(st.just("grow"), st.integers(0, 7), st.lists(TOKENS, min_size=1, max_size=6)),
        st.tuples(st.just("free"), st.integers(0, 7)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, block_size=st.sampled_from([1, 2, 4]), num_blocks=st.integers(4, 12), caching=st.booleans())
def test_block_manager_invariants(ops, block_size, num_blocks, caching):
    blocks = bk.BlockManager(num_blocks, block_size, caching)
    live = []  # [tokens, table, num_hashed_blocks, last_hash]
    contents = {}  # block -> the tokens written into it (as far as they are full)

    def write(seq):
        tokens, table = seq[0], seq[1]
        for i, b in enumerate(table):
            part = tokens[i * block_size : (i + 1) * block_size]
            if len(part) == block_size:
                contents[b] = tuple(part)

    for op in ops:
        if op[0] == "new":
            tokens = list(op[1])
            n, table, last_hash = blocks.match_prefix(tokens, len(tokens) - 1)
            assert n == len(table) * block_size and n <= len(tokens) - 1
            assert caching or n == 0
            for i, b in enumerate(table):  # a hit is the query's own tokens, never a collision
                assert contents[b] == tuple(tokens[i * block_size : (i + 1) * block_size])
            if not blocks.can_allocate(table, len(tokens)):
                table = blocks.deallocate(table)
                assert table == []
            else:
                table = blocks.allocate(table, len(tokens))
                assert len(table) == blocks.blocks_for(len(tokens))
                seq = [tokens, table, n // block_size, last_hash]
                write(seq)
                seq[2], seq[3] = blocks.register_full_blocks(tokens, len(tokens), table, seq[2], seq[3])
                live.append(seq)
        elif op[0] == "grow" and live:
            seq = live[op[1] % len(live)]
            more = seq[0] + list(op[2])
            if blocks.can_allocate(seq[1], len(more)):
                seq[0], seq[1] = more, blocks.allocate(seq[1], len(more))
                assert len(seq[1]) == blocks.blocks_for(len(more))
                write(seq)
                seq[2], seq[3] = blocks.register_full_blocks(seq[0], len(seq[0]), seq[1], seq[2], seq[3])
        elif op[0] == "free" and live:
            seq = live.pop(op[1] % len(live))
            assert blocks.deallocate(seq[1]) == []
        check_blocks(blocks, num_blocks, [s[1] for s in live])
        # A block two tables share is full: nobody writes into it any more.
        shared = [b for b, c in collections.Counter(b for s in live for b in s[1]).items() if c > 1]
        for b in shared:
            assert b in contents, f"shared block {b} is not full"


def test_prefix_cache_hit_after_the_owner_leaves():
    """A freed block stays matchable until reused."""
    blocks = bk.BlockManager(4, 2, True)
    tokens = [5, 6, 7, 8, 9]
    table = blocks.allocate([], len(tokens))
    num_hashed, last = blocks.register_full_blocks(tokens, len(tokens), table, 0, 0)
    assert num_hashed == 2 and blocks.num_cached_blocks() == 2
    blocks.deallocate(table)
    assert blocks.num_free_blocks() == 4
    n, again, _ = blocks.match_prefix(tokens, len(tokens) - 1)
    assert n == 4 and again == table[:2] and blocks.ref_count(again[0]) == 1
    assert blocks.match_prefix([5, 6, 7, 0, 1], 4)[0] == 2  # only the first block matches


@pytest.mark.parametrize("caching", [False, True])
def test_free_blocks_reused_most_recent_first_and_cached_ones_last(caching):
    """Empty free blocks go out most recently freed first, so a stream of requests keeps reusing the same
    few blocks (warm, and mapped: the pool's pages are touched lazily) instead of walking the whole pool;
    cached blocks are evicted only when no empty block is left, the least recently freed first."""
    blocks = bk.BlockManager(64, 4, caching)
    first = blocks.allocate([], 10)  # 3 blocks, the last one partly full
    assert first == [0, 1, 2]
    blocks.deallocate(first)
    for _ in range(5):  # requests one after another: the same blocks each time
        table = blocks.allocate([], 10)
        assert table == first
        blocks.deallocate(table)
    if not caching:
        return
    # Two cached prompts, freed one after the other; then new requests fill the pool's empty blocks.
    owners = []
    for base in (100, 200):
        tokens = [base + i for i in range(9)]  # 2 full blocks + 1 partial
        table = blocks.allocate([], len(tokens))
        blocks.register_full_blocks(tokens, len(tokens), table, 0, 0)
        owners.append((tokens, table))
    for _, table in owners:
        blocks.deallocate(table)
    assert blocks.num_cached_blocks() == 4 and blocks.num_free_blocks() == 64
    held = blocks.allocate([], 4 * 60)  # every empty block: both prompts still hit in full
    assert blocks.num_cached_blocks() == 4
    assert not set(held) & {b for _, t in owners for b in t[:2]}
    for tokens, table in owners:
        n, hit, _ = blocks.match_prefix(tokens, len(tokens) - 1)
        assert n == 8 and hit == table[:2]
        blocks.deallocate(hit)
    # One more block evicts the least recently freed cached block: the first prompt's tail (freed tail first).
    more = blocks.allocate([], 4)
    assert more == [owners[0][1][1]] and blocks.num_cached_blocks() == 3
    assert blocks.match_prefix(owners[0][0], 8)[0] == 4


# ---------------------------------------------------------------- Scheduler

REQUESTS = st.lists(
    st.tuples(st.lists(TOKENS, min_size=1, max_size=20), st.integers(1, 6), st.integers(0, 4)),
    min_size=1,
    max_size=10,
)


def drive(requests, num_blocks, block_size, max_batch_size, budget, caching):
    """Runs the requests (prompt, max_new_tokens, arrival step) through a Scheduler the way Engine::step
    does, checking the invariants after every step; returns the requests and the scheduler."""
    blocks = bk.BlockManager(num_blocks, block_size, caching)
    sched = bk.Scheduler(blocks, max_batch_size, budget)
    reqs = [bk.Request(list(prompt), max_new) for prompt, max_new, _ in requests]
    for i, r in enumerate(reqs):
        r.id = i
    arrivals = sorted(range(len(reqs)), key=lambda i: requests[i][2])
    finished = set()
    step = 0
    while len(finished) < len(reqs):
        for i in arrivals:
            if requests[i][2] == step:
                sched.add(reqs[i])
        plan = sched.schedule()
        assert sum(n for _, n in plan) <= budget
        running, waiting = sched.running(), sched.waiting()
        assert len(running) <= max_batch_size
        ids = [r.id for r in running] + [r.id for r in waiting]
        assert len(ids) == len(set(ids)) and not set(ids) & finished, "a request in two places"
        for r in waiting:
            assert list(r.block_table) == [], f"waiting request {r.id} holds blocks"
        check_blocks(blocks, num_blocks, [r.block_table for r in running])
        holders = collections.Counter(b for r in running for b in r.block_table)
        for r, n in plan:
            assert r in running and n >= 1
            first, last = r.num_computed_tokens, r.num_computed_tokens + n
            assert last <= len(r.tokens)
            assert len(r.block_table) * block_size >= last, "a scheduled request lacks blocks for its tokens"
            for pos in range(first, last):  # no step writes into a block another request holds
                assert holders[r.block_table[pos // block_size]] == 1
        for r, n in plan:  # the forward pass, then Engine::postprocess
            r.num_computed_tokens += n
            r.num_hashed_blocks, r.last_block_hash = blocks.register_full_blocks(
                r.tokens, r.num_computed_tokens, r.block_table, r.num_hashed_blocks, r.last_block_hash
            )
            if r.num_computed_tokens < len(r.tokens):
                continue  # prefill goes on
            r.tokens = r.tokens + [(len(r.tokens) * 7 + r.id) % 3]  # the "sampled" token
            if len(r.tokens) - r.num_prompt_tokens == requests[r.id][1]:
                sched.remove(r)
                finished.add(r.id)
        for r in sched.running():
            assert len(r.block_table) * block_size >= r.num_computed_tokens
        step += 1
        assert step < 10_000, "no progress"
    check_blocks(blocks, num_blocks, [])
    return reqs, sched


@settings(max_examples=300, deadline=None)
@given(
    requests=REQUESTS,
    block_size=st.sampled_from([1, 2, 4]),
    max_batch_size=st.integers(1, 4),
    budget=st.integers(1, 16),
    caching=st.booleans(),
    spare=st.integers(0, 8),
)
def test_scheduler_invariants_and_liveness(requests, block_size, max_batch_size, budget, caching, spare):
    # Enough blocks for the longest request alone (it must be able to finish), and `spare` more.
    longest = max(len(p) + m for p, m, _ in requests)
    num_blocks = -(-longest // block_size) + spare
    reqs, _ = drive(requests, num_blocks, block_size, max_batch_size, budget, caching)
    for r, (prompt, max_new, _) in zip(reqs, requests):
        assert r.tokens[: len(prompt)] == prompt and len(r.tokens) == len(prompt) + max_new


def test_a_full_pool_preempts_the_newest_and_it_recomputes():
    # 3 requests of 6 prompt + 6 new tokens in 6 blocks of 2: they fit while prefilling, not while decoding.
    requests = [([1, 2, 0, 1, 2, 0], 6, 0), ([2, 2, 1, 0, 0, 1], 6, 0), ([0, 1, 1, 2, 2, 0], 6, 0)]
    reqs, sched = drive(requests, num_blocks=9, block_size=2, max_batch_size=3, budget=32, caching=True)
    assert sched.num_preemptions() > 0
    assert reqs[0].num_preemptions == 0  # the oldest is never the victim
    assert max(r.num_preemptions for r in reqs) > 0


def test_shared_prompts_hit_the_prefix_cache():
    prompt = [1, 2, 0, 1, 2, 0, 1, 2, 0]
    requests = [(prompt, 2, 0), (prompt, 2, 5), (prompt[:7] + [0, 0], 2, 6)]
    reqs, _ = drive(requests, num_blocks=16, block_size=2, max_batch_size=4, budget=16, caching=True)
    assert reqs[0].num_cached_tokens == 0
    assert reqs[1].num_cached_tokens == 8  # every full block before the last token
    assert reqs[2].num_cached_tokens == 6  # the blocks before the prompts differ
