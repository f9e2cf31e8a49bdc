"""The lmrt CLI against a fake pipeline: argument parsing, streaming output, the chat loop."""
from __future__ import annotations

import dataclasses
import io

import pytest

import lmrt
from lmrt import cli


@dataclasses.dataclass(frozen=True)
class FakeEngineConfig:
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    num_threads: int | None = None


@dataclasses.dataclass(frozen=True)
class FakeGenerationConfig:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


@dataclasses.dataclass
class FakeResponse:
    text: str
    token_ids: list
    finish_reason: str | None = None


INFO = {
    "model": "fake/model",
    "architecture": "LlamaForCausalLM",
    "num_parameters": 134_515_008,
    "weight_dtype": "float32",
    "weight_format": "w4",
    "group_size": 32,
    "lm_head_dtype": "int8",
    "kv_cache_dtype": "bfloat16",
    "kv_capacity_tokens": 65536,
    "block_size": 64,
    "num_threads": 8,
    "kernel_isa": "avx512",
    "session_len": 8192,
    "weights_bytes": 90 * 2**20,
    "kv_cache_bytes": 3 * 2**30,
}


class FakePipeline:
    """Replies with the pieces of `reply`, one Response each; records every call."""

    def __init__(self, model, engine_config, reply=("Hel", "lo", "!"), finish_reason="stop", interrupt_at=None):
        self.model, self.engine_config = model, engine_config
        self.reply, self.finish_reason, self.interrupt_at = reply, finish_reason, interrupt_at
        self.prompts, self.gen_configs = [], []
        self.closed = False
        self.streams_closed = 0

    def stream(self, prompt, gen_config=None):
        # Copy: the CLI must not mutate the history it already sent.
        self.prompts.append(prompt if isinstance(prompt, str) else [dict(m) for m in prompt])
        self.gen_configs.append(gen_config)
        return self._responses()

    def _responses(self):
        try:
            for i, piece in enumerate(self.reply):
                if i == self.interrupt_at:
                    raise KeyboardInterrupt
                last = i == len(self.reply) - 1
                yield FakeResponse(piece, [i], self.finish_reason if last else None)
        finally:
            self.streams_closed += 1

    def info(self):
        return dict(INFO)

    def close(self):
        self.closed = True


class Created(list):
    """The pipelines a test created; `.options` are passed to the next ones."""


@pytest.fixture
def fake(monkeypatch):
    """Install the fakes as lmrt.pipeline / EngineConfig / GenerationConfig; returns the created pipelines."""
    created = Created()
    options = {}

    def pipeline(model=None, engine_config=None):
        created.append(FakePipeline(model, engine_config, **options))
        return created[-1]

    monkeypatch.setattr(lmrt, "pipeline", pipeline, raising=False)
    monkeypatch.setattr(lmrt, "EngineConfig", FakeEngineConfig, raising=False)
    monkeypatch.setattr(lmrt, "GenerationConfig", FakeGenerationConfig, raising=False)
    created.options = options
    return created


def test_generate_streams_raw_prompt(fake, capsys):
    assert cli.main(["generate", "my/model", "--prompt", "Say hi", "--max-new-tokens", "7", "--temperature", "0.5"]) == 0
    (pipe,) = fake
    assert capsys.readouterr().out == "Hello!\n"
    assert pipe.model == "my/model" and pipe.prompts == ["Say hi"]
    assert pipe.gen_configs == [FakeGenerationConfig(max_new_tokens=7, temperature=0.5)]
    assert pipe.engine_config == FakeEngineConfig() and pipe.closed


def test_generate_chat_with_system(fake, capsys):
    assert cli.main(["generate", "--prompt", "Hi", "--chat", "--system", "Be brief.", "--top-k", "5", "--top-p", "0.9"]) == 0
    (pipe,) = fake
    assert pipe.model is None  # the default model
    assert pipe.prompts == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    assert pipe.gen_configs == [FakeGenerationConfig(top_k=5, top_p=0.9)]


def test_generate_warns_when_cut_at_length(fake, capsys):
    fake.options["finish_reason"] = "length"
    cli.main(["generate", "--prompt", "x"])
    assert "--max-new-tokens" in capsys.readouterr().err


def test_engine_options(fake):
    cli.main(["info", "m", "--dtype", "bfloat16", "--kv-cache-dtype", "float32", "--threads", "4"])
    assert fake[0].engine_config == FakeEngineConfig(dtype="bfloat16", kv_cache_dtype="float32", num_threads=4)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["generate"],  # --prompt is required
        ["generate", "--prompt", "x", "--system", "s"],  # --system needs --chat
        ["chat", "--dtype", "float16"],
        ["chat", "--threads", "many"],
        ["info", "--temperature", "1"],  # generation options belong to chat/generate
    ],
)
def test_bad_arguments(fake, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and not fake


def test_info_output(fake, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for expected in ["fake/model", "134.5M", "4-bit, group 32; lm_head int8; other tensors float32", "90.0 MiB", "3.0 GiB", "65,536 tokens", "avx512", "8,192"]:
        assert expected in out
    assert fake[0].closed


def test_errors_are_reported_without_traceback(monkeypatch, capsys):
    def pipeline(model=None, engine_config=None):
        raise FileNotFoundError("no model at 'nope'; pass a model directory")

    monkeypatch.setattr(lmrt, "pipeline", pipeline, raising=False)
    monkeypatch.setattr(lmrt, "EngineConfig", FakeEngineConfig, raising=False)
    assert cli.main(["info", "nope"]) == 1
    assert capsys.readouterr().err == "lmrt: error: no model at 'nope'; pass a model directory\n"


def _lines(*lines):
    """A `read` function that returns the lines, then raises EOFError (or an exception given as a line)."""
    it = iter(lines)

    def read(prompt):
        line = next(it, EOFError)
        if isinstance(line, type) and issubclass(line, BaseException):
            raise line
        return line

    return read


def _chat(pipe, *lines, system=None):
    out, err = io.StringIO(), io.StringIO()
    cli.chat_loop(pipe, "GEN", system, read=_lines(*lines), out=out, err=err)
    return out.getvalue(), err.getvalue()


def test_chat_keeps_history():
    pipe = FakePipeline(None, None)
    out, _ = _chat(pipe, "hi", "", "  ", "again", system="sys")
    assert out == "Hello!\nHello!\n\n"  # each reply, then a newline at EOF
    assert pipe.prompts == [
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "again"},
        ],
    ]
    assert pipe.gen_configs == ["GEN", "GEN"]


def test_chat_reset_and_exit():
    pipe = FakePipeline(None, None)
    _, err = _chat(pipe, "one", "/reset", "two", "/exit", "never sent", system="sys")
    assert "history cleared" in err
    assert pipe.prompts[1] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "two"}]
    assert len(pipe.prompts) == 2


@pytest.mark.parametrize("end", [EOFError, KeyboardInterrupt])
def test_chat_exits_cleanly_on_eof_and_ctrl_c(end):
    pipe = FakePipeline(None, None)
    out, _ = _chat(pipe, "hi", end, "never sent")
    assert out == "Hello!\n\n" and len(pipe.prompts) == 1


def test_ctrl_c_stops_reply_and_keeps_chatting():
    pipe = FakePipeline(None, None, interrupt_at=1)
    out, err = _chat(pipe, "first", "second")
    assert "reply stopped" in err
    assert out.startswith("Hel\n")
    # The interrupted turn is dropped from the history, and every stream was closed.
    assert pipe.prompts[1] == [{"role": "user", "content": "second"}]
    assert pipe.streams_closed == 2


def test_chat_command_end_to_end(fake, monkeypatch, capsys):
    monkeypatch.setattr("builtins.input", _lines("hello", "/exit"))
    assert cli.main(["chat", "m", "--system", "S", "--seed", "3"]) == 0
    (pipe,) = fake
    assert pipe.prompts == [[{"role": "system", "content": "S"}, {"role": "user", "content": "hello"}]]
    assert pipe.gen_configs == [FakeGenerationConfig(seed=3)]
    assert capsys.readouterr().out == "Hello!\n" and pipe.closed
