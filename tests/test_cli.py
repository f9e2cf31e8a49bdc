"""The lmrt CLI against a fake pipeline (real EngineConfig / GenerationConfig): argument parsing, every flag
reaching its config, errors in the command line's words before anything loads, streaming output, the chat
loop (history, over-long turns, multi-line turns). tests/test_cli_process.py runs the real command."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest

import lmrt
from lmrt import cli
from lmrt.api import PromptTooLongError
from lmrt.config import ConfigError, EngineConfig, GenerationConfig


@dataclasses.dataclass
class FakeResponse:
    text: str
    token_ids: list
    finish_reason: str | None = None
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    num_cached_tokens: int = 0


@dataclasses.dataclass
class FakeSpec:
    max_position_embeddings: int = 8192


CHECKPOINT_SAMPLING = GenerationConfig(temperature=0.2, top_p=0.9, repetition_penalty=1.1)

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
    "max_batch_size": 16,
    "weights_bytes": 90 * 2**20,
    "kv_cache_bytes": 3 * 2**30,
    "kv_cache_sizing": "16 sessions of 8,192 tokens would need 5.6 GiB; capped at 10% of the available RAM",
    "sampling_defaults": CHECKPOINT_SAMPLING.describe(),
    "sampling_defaults_source": "fake/model/generation_config.json",
}


class FakePipeline:
    """Replies with the pieces of `reply`, one Response each; records every call. A prompt's tokens are its
    words (chat: every message's words, plus 3 per message for the template)."""

    def __init__(
        self,
        model=None,
        engine_config=None,
        reply=("Hel", "lo", "!"),
        finish_reason="stop",
        interrupt_at=None,
        session_len=8192,
        fail_with=None,
    ):
        self.model, self.engine_config = model, engine_config
        self.reply, self.finish_reason, self.interrupt_at = reply, finish_reason, interrupt_at
        self.session_len, self.fail_with = session_len, fail_with
        self.spec = FakeSpec()
        self.generation_defaults = CHECKPOINT_SAMPLING
        self.prompts, self.gen_configs = [], []
        self.closed = False
        self.streams_closed = 0

    def encode_prompt(self, prompt):
        if isinstance(prompt, str):
            return prompt.split()
        return [w for m in prompt for w in ["<t>"] * 3 + m["content"].split()]

    def check_prompt_fits(self, num_tokens, generating=True):
        if num_tokens + generating > self.session_len:
            raise PromptTooLongError(num_tokens, self.session_len, "session_len", self.spec.max_position_embeddings)

    def generation_config(self, **changes):
        return dataclasses.replace(self.generation_defaults, **changes)

    def stream(self, prompt, gen_config=None, on_prefill=None):
        # Copy: the CLI must not mutate the history it already sent.
        self.prompts.append(prompt if isinstance(prompt, str) else [dict(m) for m in prompt])
        self.gen_configs.append(gen_config)
        if self.fail_with is not None:
            raise self.fail_with
        self.check_prompt_fits(len(self.encode_prompt(prompt)))
        return self._responses(len(self.encode_prompt(prompt)))

    def _responses(self, num_prompt_tokens):
        try:
            for i, piece in enumerate(self.reply):
                if i == self.interrupt_at:
                    raise KeyboardInterrupt
                last = i == len(self.reply) - 1
                yield FakeResponse(piece, [i], self.finish_reason if last else None, num_prompt_tokens, i + 1)
        finally:
            self.streams_closed += 1

    def info(self):
        return dict(INFO)

    def close(self):
        self.closed = True


class Created(list):
    """The pipelines a test created; `.options` are passed to the next ones."""

    def __init__(self):
        super().__init__()
        self.options = {}


@pytest.fixture
def fake(monkeypatch):
    """Install FakePipeline as lmrt.pipeline; returns the pipelines created."""
    created = Created()

    def pipeline(model=None, engine_config=None):
        created.append(FakePipeline(model, engine_config, **created.options))
        return created[-1]

    monkeypatch.setattr(lmrt, "pipeline", pipeline, raising=False)
    return created


# ---- generate ----


def test_generate_streams_raw_prompt(fake, capsys):
    assert (
        cli.main(["generate", "my/model", "--prompt", "Say hi", "--max-new-tokens", "7", "--temperature", "0.5"]) == 0
    )
    (pipe,) = fake
    assert capsys.readouterr().out == "Hello!\n"
    assert pipe.model == "my/model" and pipe.prompts == ["Say hi"]
    # Unset flags keep the checkpoint's defaults (top_p, repetition_penalty); set ones override them.
    assert pipe.gen_configs == [dataclasses.replace(CHECKPOINT_SAMPLING, max_new_tokens=7, temperature=0.5)]
    assert pipe.engine_config == EngineConfig(max_batch_size=1) and pipe.closed


def test_generate_with_no_flags_uses_the_checkpoint_sampling(fake):
    assert cli.main(["generate", "--prompt", "x"]) == 0
    assert fake[0].gen_configs == [CHECKPOINT_SAMPLING]


def test_generate_chat_with_system(fake):
    assert (
        cli.main(["generate", "--prompt", "Hi", "--chat", "--system", "Be brief.", "--top-k", "5", "--top-p", "0.5"])
        == 0
    )
    (pipe,) = fake
    assert pipe.model is None  # the default model
    assert pipe.prompts == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    assert pipe.gen_configs == [dataclasses.replace(CHECKPOINT_SAMPLING, top_k=5, top_p=0.5)]


def test_generate_warns_when_cut_at_length(fake, capsys):
    fake.options["finish_reason"] = "length"
    cli.main(["generate", "--prompt", "x"])
    assert "--max-new-tokens" in capsys.readouterr().err


def test_generate_reads_the_prompt_from_a_file(fake, tmp_path):
    text = "first line\nsecond line, é\n" + "word " * 50_000  # longer than any argument list should carry
    (tmp_path / "p.txt").write_text(text, encoding="utf-8")
    fake.options["session_len"] = 100_000
    assert cli.main(["generate", "--prompt-file", str(tmp_path / "p.txt")]) == 0
    assert fake[0].prompts == [text]


def test_generate_reads_the_prompt_from_stdin(fake, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert cli.main(["generate", "--prompt-file", "-", "--chat"]) == 0
    assert fake[0].prompts == [[{"role": "user", "content": "from stdin\n"}]]


def test_generate_stats(fake, capsys):
    assert cli.main(["generate", "--prompt", "a b c", "--stats"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"\[3 tokens, .*first token after .* prompt 3 tokens, 0 from the prefix cache\]", err), err


def test_a_prompt_beyond_the_session_names_session_len(fake, capsys):
    fake.options["session_len"] = 4
    assert cli.main(["generate", "--prompt", "one two three four five", "--session-len", "4"]) == 1
    assert capsys.readouterr().err == (
        "lmrt generate: error: the prompt has 5 tokens but --session-len is 4: shorten it, or raise --session-len "
        "(the model allows up to 8,192)\n"
    )


def test_a_session_len_beyond_the_model_is_refused_by_name(monkeypatch, capsys):
    def pipeline(model=None, engine_config=None):
        raise ConfigError(
            "session_len", engine_config.session_len, "must be <= the model's max_position_embeddings (8192)"
        )

    monkeypatch.setattr(lmrt, "pipeline", pipeline, raising=False)
    assert cli.main(["info", "--session-len", "9000"]) == 2
    assert capsys.readouterr().err == (
        "lmrt info: error: --session-len must be <= the model's max_position_embeddings (8192), got 9000\n"
    )


# ---- every flag reaches its config ----


@pytest.mark.parametrize(
    "argv, field, value",
    [
        (["--dtype", "bfloat16"], "dtype", "bfloat16"),
        (["--kv-cache-dtype", "float32"], "kv_cache_dtype", "float32"),
        (["--threads", "4"], "num_threads", 4),
        (["--session-len", "1000"], "session_len", 1000),
        (["--cache-memory-gib", "0.25"], "cache_memory_gib", 0.25),
        (["--max-batch-size", "3"], "max_batch_size", 3),
        (["--prefill-precision", "fp32"], "prefill_precision", "fp32"),
        (["--linear-precision", "int8"], "linear_precision", "int8"),
        (["--device", "cuda"], "device", "cuda"),
    ],
)
@pytest.mark.parametrize("command", [["info"], ["generate", "--prompt", "x"], ["chat"]])
def test_engine_flags(fake, monkeypatch, command, argv, field, value):
    monkeypatch.setattr("builtins.input", _lines("/exit"))
    assert cli.main(command + argv) == 0
    assert getattr(fake[0].engine_config, field) == value


@pytest.mark.parametrize("command, expected", [(["info"], 16), (["generate", "--prompt", "x"], 1), (["chat"], 1)])
def test_max_batch_size_default(fake, monkeypatch, command, expected):
    """chat and generate run one conversation: their KV cache is sized for one session, not sixteen."""
    monkeypatch.setattr("builtins.input", _lines("/exit"))
    assert cli.main(command) == 0
    assert fake[0].engine_config.max_batch_size == expected


@pytest.mark.parametrize(
    "argv, changes",
    [
        (["--max-new-tokens", "9"], dict(max_new_tokens=9)),
        (["--temperature", "0"], dict(temperature=0.0)),
        (["--top-p", "0.5"], dict(top_p=0.5)),
        (["--top-k", "7"], dict(top_k=7)),
        (["--min-p", "0.05"], dict(min_p=0.05)),
        (["--repetition-penalty", "1.3"], dict(repetition_penalty=1.3)),
        (["--stop", "END", "--stop", "\n\n"], dict(stop=("END", "\n\n"))),
        (["--seed", "11"], dict(seed=11)),
    ],
)
@pytest.mark.parametrize("command", [["generate", "--prompt", "x"], ["chat"]])
def test_generation_flags(fake, monkeypatch, command, argv, changes):
    monkeypatch.setattr("builtins.input", _lines("hello", "/exit"))
    assert cli.main(command + argv) == 0
    assert fake[0].gen_configs == [dataclasses.replace(CHECKPOINT_SAMPLING, **changes)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--prompt", "x", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
        (["generate", "--prompt", "x", "--max-new-tokens", "-5"], "--max-new-tokens must be an integer >= 0, got -5"),
        (["chat", "--session-len", "1"], "--session-len must be an integer >= 2, got 1"),
        (["info", "--cache-memory-gib", "0"], "--cache-memory-gib must be a number > 0 (GiB), got 0.0"),
        (["info", "--max-batch-size", "0"], "--max-batch-size must be an integer >= 1, got 0"),
        (["chat", "--temperature", "-1"], "--temperature must be a finite number >= 0 (0 = greedy), got -1.0"),
        (["chat", "--temperature", "nan"], "--temperature must be a finite number >= 0 (0 = greedy), got nan"),
        (["chat", "--top-p", "2"], "--top-p must be in (0, 1] (1 = off), got 2.0"),
        (["chat", "--top-k", "-1"], "--top-k must be an integer >= 0 (0 = off), got -1"),
        (["chat", "--min-p", "1.5"], "--min-p must be in [0, 1] (0 = off), got 1.5"),
        (["chat", "--repetition-penalty", "0"], "--repetition-penalty must be a number > 0 (1 = off), got 0.0"),
        (["chat", "--seed", "-1"], "--seed must be an integer in [0, 2**64), got -1"),
        (["chat", "--stop", ""], "--stop must be non-empty strings, got ('',)"),
    ],
)
def test_bad_values_are_refused_before_the_model_loads(fake, capsys, argv, message):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"lmrt {argv[0]}: error: {message}\n"
    assert not fake  # nothing was loaded


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["generate"],  # --prompt or --prompt-file is required
        ["generate", "--prompt", "x", "--prompt-file", "f"],  # not both
        ["generate", "--prompt", "x", "--system", "s"],  # --system needs --chat
        ["chat", "--dtype", "float16"],
        ["chat", "--kv-cache-dtype", "fp8"],
        ["chat", "--threads", "many"],
        ["info", "--temperature", "1"],  # generation options belong to chat/generate
    ],
)
def test_bad_arguments(fake, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and not fake


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"lmrt {lmrt.__version__}\n"


@pytest.mark.parametrize("command", ["chat", "generate", "info"])
def test_help_shows_every_default(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "model directory (HF checkpoint: dense, AutoAWQ or lmrt 4-bit) or .gguf file" in text
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    no_default = {"help", "stop", "system", "stats", "prompt", "prompt_file", "chat", "model"}
    for action in sub._actions:
        if action.dest not in no_default:
            assert "(default:" in (action.help or ""), f"--{action.dest} does not show its default"


def test_info_output(fake, capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for expected in [
        "fake/model",
        "134.5M",
        "4-bit, group 32; lm_head int8; other tensors float32",
        "90.0 MiB",
        "3.0 GiB (16 sessions of 8,192 tokens would need 5.6 GiB; capped at 10% of the available RAM)",
        "65,536 tokens",
        "avx512",
        "8,192",
        "temperature 0.2, top_p 0.9, repetition_penalty 1.1 (from fake/model/generation_config.json)",
    ]:
        assert expected in out
    assert fake[0].closed


def test_errors_are_reported_without_traceback(monkeypatch, capsys):
    def pipeline(model=None, engine_config=None):
        raise FileNotFoundError("no model at 'nope'; pass a model directory")

    monkeypatch.setattr(lmrt, "pipeline", pipeline, raising=False)
    assert cli.main(["info", "nope"]) == 1
    assert capsys.readouterr().err == "lmrt info: error: no model at 'nope'; pass a model directory\n"


def test_missing_extras_are_reported_without_traceback(monkeypatch, capsys):
    def pipeline(model=None, engine_config=None):
        raise ImportError("reading x.gguf needs the gguf package: pip install 'lmrt[convert]'")

    monkeypatch.setattr(lmrt, "pipeline", pipeline, raising=False)
    assert cli.main(["info", "x.gguf"]) == 1
    assert "pip install 'lmrt[convert]'" in capsys.readouterr().err


# ---- the chat loop ----


def _lines(*lines):
    """A `read` function that returns the lines, then raises EOFError (or an exception given as a line)."""
    it = iter(lines)

    def read(prompt):
        line = next(it, EOFError)
        if isinstance(line, type) and issubclass(line, BaseException):
            raise line
        return line

    return read


def _chat(pipe, *lines, system=None, gen=CHECKPOINT_SAMPLING, has_more=None, stats=False):
    out, err = io.StringIO(), io.StringIO()
    cli.chat_loop(pipe, gen, system, read=_lines(*lines), out=out, err=err, has_more=has_more, stats=stats)
    return out.getvalue(), err.getvalue()


def user_turns(pipe):
    return [p[-1]["content"] for p in pipe.prompts]


def test_chat_keeps_history():
    pipe = FakePipeline()
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
    assert pipe.gen_configs == [CHECKPOINT_SAMPLING] * 2


def test_chat_reset_and_exit():
    pipe = FakePipeline()
    _, err = _chat(pipe, "one", "/reset", "two", "/exit", "never sent", system="sys")
    assert "history cleared" in err
    assert pipe.prompts[1] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "two"}]
    assert len(pipe.prompts) == 2


@pytest.mark.parametrize("end", [EOFError, KeyboardInterrupt])
def test_chat_exits_cleanly_on_eof_and_ctrl_c(end):
    pipe = FakePipeline()
    out, _ = _chat(pipe, "hi", end, "never sent")
    assert out == "Hello!\n\n" and len(pipe.prompts) == 1


def test_ctrl_c_stops_reply_and_keeps_chatting():
    pipe = FakePipeline(interrupt_at=1)
    out, err = _chat(pipe, "first", "second")
    assert "reply stopped" in err
    assert out.startswith("Hel\n")
    # The interrupted turn is dropped from the history, and every stream was closed.
    assert pipe.prompts[1] == [{"role": "user", "content": "second"}]
    assert pipe.streams_closed == 2


def test_an_over_long_turn_is_refused_and_the_chat_goes_on():
    pipe = FakePipeline(session_len=20)
    long_turn = " ".join(["word"] * 30)
    out, err = _chat(pipe, "hi", long_turn, "still there?")
    assert (
        "[not sent: the prompt has 33 tokens but --session-len is 20: shorten it, or raise --session-len "
        "(the model allows up to 8,192)]"
    ) in err
    assert user_turns(pipe) == ["hi", "still there?"]  # the long turn never reached the engine
    # ... and left no trace in the history: the next turn follows the first exchange.
    assert [m["content"] for m in pipe.prompts[1]] == ["hi", "Hello!", "still there?"]
    assert out == "Hello!\nHello!\n\n"


def test_a_long_history_is_trimmed_oldest_first_with_a_note():
    # session 40 tokens, replies of up to 8 (reserve min(8, 40 // 4) = 8): each exchange costs 3+3+3+1 = 10.
    pipe = FakePipeline(session_len=40)
    gen = dataclasses.replace(CHECKPOINT_SAMPLING, max_new_tokens=8)
    _, err = _chat(pipe, "a b c", "d e f", "g h i", "j k l", system="s", gen=gen)
    contents = [[m["content"] for m in p] for p in pipe.prompts]
    assert contents[2] == ["s", "a b c", "Hello!", "d e f", "Hello!", "g h i"]  # 4 + 3 * 10 - 6 = 28 + 8 <= 40
    assert contents[3] == ["s", "d e f", "Hello!", "g h i", "Hello!", "j k l"]  # the first exchange dropped
    assert err.count("[dropped the 1 oldest exchange to stay within the 40-token session (--session-len)]") == 1


def test_a_failed_reply_is_reported_and_the_chat_goes_on():
    pipe = FakePipeline(fail_with=lmrt.RequestError("the model produced non-finite logits"))
    out, err = _chat(pipe, "hi", "again")
    assert err.count("[the reply failed: the model produced non-finite logits]") == 2
    assert len(pipe.prompts) == 2 and pipe.prompts[1] == [{"role": "user", "content": "again"}]


def test_a_block_between_triple_quotes_is_one_turn():
    pipe = FakePipeline()
    _chat(pipe, '"""', "line one", "", "  line three", '"""', "next", '"""inline block"""', '"""start', 'end"""')
    assert user_turns(pipe) == ["line one\n\n  line three", "next", "inline block", "start\nend"]


def test_a_trailing_backslash_continues_the_turn():
    pipe = FakePipeline()
    _chat(pipe, "first \\", "second\\", "third", "alone")
    assert user_turns(pipe) == ["first \nsecond\nthird", "alone"]


def test_lines_pasted_together_are_one_turn():
    pipe = FakePipeline()
    waiting = iter([True, True, False, False])  # two more lines were already there after the first
    _chat(pipe, "pasted 1", "pasted 2", "pasted 3", "typed later", has_more=lambda: next(waiting))
    assert user_turns(pipe) == ["pasted 1\npasted 2\npasted 3", "typed later"]


def test_ctrl_c_inside_a_block_discards_it():
    pipe = FakePipeline()
    _chat(pipe, '"""', "half", KeyboardInterrupt, "after")
    assert user_turns(pipe) == ["after"]


def test_chat_stats_after_each_reply():
    pipe = FakePipeline()
    _, err = _chat(pipe, "one two", "three", stats=True)
    assert len(re.findall(r"\[3 tokens, [\d.]+ tokens/s; first token after [\d.]+ s; prompt \d+ tokens", err)) == 2


def test_chat_command_end_to_end(fake, monkeypatch, capsys):
    monkeypatch.setattr("builtins.input", _lines("hello", "/exit"))
    assert cli.main(["chat", "m", "--system", "S", "--seed", "3"]) == 0
    (pipe,) = fake
    assert pipe.prompts == [[{"role": "system", "content": "S"}, {"role": "user", "content": "hello"}]]
    assert pipe.gen_configs == [dataclasses.replace(CHECKPOINT_SAMPLING, seed=3)]
    captured = capsys.readouterr()
    assert captured.out == "Hello!\n" and pipe.closed
    # It says what it loaded and which sampling is in force.
    assert (
        "lmrt: fake/model (LlamaForCausalLM; 4-bit, group 32; lm_head int8; other tensors float32); "
        "8,192-token sessions, 8 threads (avx512); sampling: temperature 0.2, top_p 0.9, repetition_penalty 1.1 "
        "(the model's generation_config.json)"
    ) in captured.err


def test_serve_and_gradio_take_the_engine_flags_and_listen_locally_by_default():
    parser = cli.build_parser()
    a = parser.parse_args(["serve", "--port", "9000", "--kv-cache-dtype", "int4", "--max-batch-size", "4"])
    assert (a.host, a.port, a.kv_cache_dtype, a.max_batch_size, a.max_waiting) == ("127.0.0.1", 9000, "int4", 4, 256)
    assert cli._engine_config(a) == lmrt.EngineConfig(kv_cache_dtype="int4", max_batch_size=4)
    g = parser.parse_args(["gradio", "some/model", "--threads", "2"])
    assert (g.host, g.port, g.model, g.threads) == ("127.0.0.1", 7860, "some/model", 2)
    assert cli._engine_config(g).max_batch_size == lmrt.EngineConfig().max_batch_size


def test_info_names_the_linear_precision():
    """info's prefill line does not call decode exact when the 4-bit products take int8 activations."""
    base = dict(INFO, prefill_precision="bf16", tile_unit="avx512bf16")
    exact = cli.format_info(dict(base, linear_precision="fp32"))
    fast = cli.format_info(dict(base, linear_precision="int8"))
    assert "smaller decode exact fp32" in exact and "4-bit products     fp32 (exact)" in exact
    assert "decode of 16+ requests" in exact
    assert "smaller decode int8 activations" in fast and "decode exact" not in fast
    assert "int8 activations (one scale per 32 inputs)" in fast
    il = cli.format_info(dict(base, linear_precision="int8", int8_weight_layout="interleaved"))
    assert "4-bit products with int8 activations at every batch size" in il and "bf16 on" in il
    assert "interleaved for many rows" in il and "decode exact" not in il
