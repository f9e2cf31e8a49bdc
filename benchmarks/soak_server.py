"""Soak test of `lmrt serve` (issue 13): --requests requests from --clients concurrent clients against one server
process on the default model, a mix of prompt and reply lengths, streamed and whole, chat and completions;
10% of them disconnect mid-stream and 5% are malformed. Checks that every good request completes with the
finish_reason its length implies ("length" when it got max_tokens, else "stop"), every malformed one gets a 400
with an OpenAI error body, no KV block leaks (used blocks back to 0 at the end), and the server's resident memory
is flat after warm-up (within 5% between the end of the first tenth of the run and the end). The server gets
--cache-memory-gib (default 0.25): the KV pool's pages become resident as blocks are first used, and the block
allocator reuses the least recently freed block, so a pool larger than what the warm-up touches grows the
resident memory until all of it has been used once; that is the pool filling, not a leak. Appends a section
to benchmarks/RESULTS.md; tests/test_server.py runs a short version.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/soak_server.py [--requests 1000] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

import lmrt

LMRT_ROOT = Path(lmrt.__file__).resolve().parents[1]  # the server child imports the lmrt this process does
MODEL = "SmolLM2-135M-Instruct"
WORDS = "the sea a ship sails under grey skies while gulls cry over waves and the harbour lights fade".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, extra=()) -> subprocess.Popen:
    code = (
        f"import sys; sys.path.insert(0, {str(LMRT_ROOT)!r}); from lmrt.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "serve", "--port", str(port), *extra]
    proc = subprocess.Popen(
        argv, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"lmrt serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("lmrt serve did not become healthy in 180 s")
        time.sleep(0.2)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


MALFORMED = [
    '{"model": "x", "messages": [',  # not JSON
    json.dumps({"model": MODEL, "messages": []}),
    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}),
    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
    json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": 7}),
]


def one_request(base: str, rng: random.Random, kind: str) -> dict:
    """One request of `kind` ('good', 'drop', 'bad'); returns what happened."""
    url = base + "/v1/chat/completions"
    if kind == "bad":
        r = httpx.post(url, content=rng.choice(MALFORMED), headers={"Content-Type": "application/json"}, timeout=120)
        ok = r.status_code == 400 and set(r.json().get("error", {})) == {"message", "type", "param", "code"}
        return {"kind": kind, "ok": ok, "detail": r.text[:200]}
    chat = rng.random() < 0.7
    words = " ".join(rng.choice(WORDS) for _ in range(rng.choice([5, 20, 80, 300, 700])))
    max_tokens = rng.choice([1, 8, 32, 64, 128])
    body = {
        "model": MODEL,
        "max_tokens": max_tokens,
        "temperature": rng.choice([0.0, 0.7]),
        "seed": rng.randrange(1000),
    }
    if chat:
        body["messages"] = [{"role": "user", "content": f"Continue this: {words}"}]
    else:
        url, body["prompt"] = base + "/v1/completions", words
    stream = kind == "drop" or rng.random() < 0.5
    if not stream:
        r = httpx.post(url, json=body, timeout=300)
        if r.status_code != 200:
            return {"kind": kind, "ok": False, "detail": r.text[:200]}
        j = r.json()
        n, reason = j["usage"]["completion_tokens"], j["choices"][0]["finish_reason"]
        return {"kind": kind, "ok": finished_right(reason, n, max_tokens), "detail": f"{n} {reason}"}
    body["stream"], body["stream_options"] = True, {"include_usage": True}
    if kind == "drop":
        body["max_tokens"], body["ignore_eos"] = 2000, True  # still running when the client leaves
    with httpx.Client(timeout=300) as h:
        with h.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                return {"kind": kind, "ok": False, "detail": r.read().decode()[:200]}
            reason, usage, seen = None, None, 0
            for line in r.iter_lines():
                if not line:
                    continue
                seen += 1
                if kind == "drop" and seen >= rng.randint(2, 6):
                    return {"kind": kind, "ok": True, "detail": f"left after {seen} events"}
                if line == "data: [DONE]":
                    break
                event = json.loads(line[len("data: ") :])
                if event.get("choices") and event["choices"][0].get("finish_reason"):
                    reason = event["choices"][0]["finish_reason"]
                if event.get("usage"):
                    usage = event["usage"]
    n = usage["completion_tokens"] if usage else -1
    return {"kind": kind, "ok": finished_right(reason, n, max_tokens), "detail": f"{n} {reason}"}


def finished_right(reason, n: int, max_tokens: int) -> bool:
    """ "length" exactly at max_tokens; "stop" (end of sequence) at any length up to it, the last one included."""
    return (reason == "length" and n == max_tokens) or (reason == "stop" and 0 < n <= max_tokens)


def soak(base: str, pid: int, requests: int, clients: int, seed: int = 0) -> dict:
    kinds = ["drop"] * (requests // 10) + ["bad"] * (requests // 20)
    kinds += ["good"] * (requests - len(kinds))
    random.Random(seed).shuffle(kinds)
    results, lock, next_i = [], threading.Lock(), [0]
    warm_rss = {}
    t0 = time.perf_counter()
    start_blocks = metric(httpx.get(base + "/metrics").text, "lmrt_kv_blocks_used")

    def client(c):
        rng = random.Random(seed * 1000 + c)
        while True:
            with lock:
                i = next_i[0]
                if i >= len(kinds):
                    return
                next_i[0] += 1
            try:
                res = one_request(base, rng, kinds[i])
            except Exception as e:  # a failed request is a finding, not a crash of the soak
                res = {"kind": kinds[i], "ok": False, "detail": f"{type(e).__name__}: {e}"}
            with lock:
                results.append(res)
                if len(results) == max(1, requests // 10):
                    warm_rss["bytes"] = rss_bytes(pid)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    deadline = time.monotonic() + 30  # dropped requests end at the engine's next step
    while True:
        m = httpx.get(base + "/metrics").text
        if metric(m, "lmrt_num_requests_running") == 0 and metric(m, "lmrt_num_requests_waiting") == 0:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    end_rss = rss_bytes(pid)
    failures = [r for r in results if not r["ok"]]
    by_kind = {k: sum(r["kind"] == k for r in results) for k in ("good", "drop", "bad")}
    return {
        "requests": len(results),
        "by_kind": by_kind,
        "failures": failures,
        "wall_s": wall,
        "blocks_used_start": start_blocks,
        "blocks_used_end": metric(m, "lmrt_kv_blocks_used"),
        "running_end": metric(m, "lmrt_num_requests_running"),
        "rss_warm": warm_rss.get("bytes", 0),
        "rss_end": end_rss,
        "generated": metric(m, "lmrt_generation_tokens"),
        "preemptions": metric(m, "lmrt_engine_preemptions"),
        "kv_cache_bytes": metric(m, "lmrt_kv_cache_bytes"),
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import results_log

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--cache-memory-gib", type=float, default=0.25)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    port = free_port()
    proc = start_server(port, ["--max-batch-size", "16", "--cache-memory-gib", str(args.cache_memory_gib)])
    try:
        s = soak(f"http://127.0.0.1:{port}", proc.pid, args.requests, args.clients)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    growth = s["rss_end"] / s["rss_warm"] - 1 if s["rss_warm"] else float("nan")
    print(json.dumps({k: v for k, v in s.items() if k != "failures"}, indent=1), f"failures: {s['failures'][:5]}")
    row = (
        f"| {s['requests']} | {args.clients} | {s['by_kind']['good']} / {s['by_kind']['drop']} / {s['by_kind']['bad']} "
        f"| {len(s['failures'])} | {s['blocks_used_start']:.0f} -> {s['blocks_used_end']:.0f} | "
        f"{s['rss_warm'] / 2**20:.0f} -> {s['rss_end'] / 2**20:.0f} MiB ({100 * growth:+.1f}%) | {s['wall_s']:.0f} s |"
    )
    section = results_log.section(
        "lmrt serve soak: mixed clients, disconnects and malformed requests (default model)",
        "soak_server.py",
        [
            f"one `lmrt serve --max-batch-size 16 --cache-memory-gib {args.cache_memory_gib}` process (KV pool "
            f"{s['kv_cache_bytes'] / 2**20:.0f} MiB), 2 kernel threads; requests: chat 70% / completions 30%, "
            "prompts of 5 to 700 words, max_tokens 1 to 128, greedy or temperature 0.7, streamed or whole",
            "good: finish_reason as its length allows; drop: a stream of 2,000 tokens left after 2 to 6 events; "
            "bad: a malformed body answered 400 with an OpenAI error",
        ],
        [
            "requests",
            "clients",
            "good / drop / bad",
            "failures",
            "KV blocks used",
            "server RSS after warm-up -> end",
            "wall",
        ],
        [row],
        [f"- failures (first 5): {s['failures'][:5]}", ""] if s["failures"] else [],
    )
    if not args.no_write:
        results_log.append(section)
    ok = not s["failures"] and s["blocks_used_end"] == 0 and abs(growth) <= 0.05
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
