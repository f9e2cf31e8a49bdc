"""Tokenizer for a Hugging Face model directory, without transformers.

The encoding itself is the ``tokenizers`` library reading ``tokenizer.json``. On top of it this module reads what
transformers keeps beside it -- ``tokenizer_config.json`` (special tokens, ``add_bos_token``, extra added tokens,
chat templates), ``chat_template.jinja`` / ``chat_template.json`` and the eos ids of ``generation_config.json`` /
``config.json`` -- and applies them the way transformers' fast tokenizers do, so ids and prompts match it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tokenizers import AddedToken, processors
from tokenizers import Tokenizer as _Backend

from .chat_template import render_chat
from .formats import read_json

# transformers' named special tokens, in its order (which sets the order of `all_special_ids`).
_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_content(value) -> str | None:
    # Special tokens are saved either as strings or as serialized AddedToken dicts.
    if isinstance(value, Mapping):
        return value.get("content")
    return value


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _load_chat_template(model_dir: Path, config: dict) -> str | dict[str, str] | None:
    # Same precedence as transformers: the raw .jinja files win over chat_template.json, which wins over the
    # copy inside tokenizer_config.json.
    templates: dict[str, str] = {}
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        templates["default"] = jinja_file.read_text(encoding="utf-8")
    extra_dir = model_dir / "additional_chat_templates"
    if extra_dir.is_dir():
        for f in sorted(extra_dir.glob("*.jinja")):
            templates[f.stem] = f.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates

    template = read_json(model_dir / "chat_template.json", default={}).get("chat_template") or config.get(
        "chat_template"
    )
    if isinstance(template, list):
        # Older configs store named templates as [{"name": ..., "template": ...}].
        template = {t["name"]: t["template"] for t in template}
    return template


class Tokenizer:
    """Encodes, decodes and renders chat prompts for one model.

    Build it with :meth:`from_pretrained`. ``decode`` does not apply transformers' ``clean_up_tokenization_spaces``:
    it is off by default there (and ignored for BPE), and it would break incremental detokenization.
    """

    def __init__(
        self,
        backend: _Backend,
        *,
        special_tokens: Mapping[str, str] = (),
        extra_special_tokens: Sequence[str] = (),
        chat_template: str | Mapping[str, str] | None = None,
        extra_eos_token_ids: Sequence[int] = (),
        name: str = "",
    ):
        self._backend = backend
        self.special_tokens: dict[str, str] = {k: v for k, v in dict(special_tokens).items() if v is not None}
        self._extra_special_tokens = tuple(extra_special_tokens)
        self.chat_template = dict(chat_template) if isinstance(chat_template, Mapping) else chat_template
        self.name = name
        bos, eos = self.special_tokens.get("bos_token"), self.special_tokens.get("eos_token")
        self.bos_token_id = self.token_to_id(bos) if bos else None
        # A model may end a turn with several tokens (e.g. <|im_end|> and <|endoftext|>): generation must stop on
        # any eos id from any file, not just the tokenizer's eos_token.
        eos_ids = [self.token_to_id(eos) if eos else None, *extra_eos_token_ids]
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(i for i in eos_ids if i is not None))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Tokenizer":
        model_dir = Path(path)
        tokenizer_file = model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(
                f"No tokenizer.json in {model_dir}. lmrt needs the fast-tokenizer file; create it with "
                f"transformers: AutoTokenizer.from_pretrained(...).save_pretrained({str(model_dir)!r})."
            )
        backend = _Backend.from_file(str(tokenizer_file))
        config = read_json(model_dir / "tokenizer_config.json", default={})

        special = {name: _token_content(config.get(name)) for name in _SPECIAL_TOKEN_NAMES}
        extra_special = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        if isinstance(extra_special, Mapping):  # model-specific named tokens, e.g. {"image_token": "<image>"}
            extra_special = list(extra_special.values())
        extra_special = [_token_content(t) for t in extra_special]
        _add_missing_tokens(backend, config, [t for t in [*special.values(), *extra_special] if t])

        # tokenizer.json's post-processor decides whether encode adds bos/eos; transformers (v5) ignores the
        # config's add_bos_token/add_eos_token when that file exists, and so do we. A tokenizer.json without a
        # post-processor cannot say, so there the config decides (transformers would add nothing; a model trained
        # with a bos token degrades without it).
        if backend.post_processor is None:
            _set_bos_eos_post_processor(
                backend,
                special["bos_token"] if config.get("add_bos_token") else None,
                special["eos_token"] if config.get("add_eos_token") else None,
            )

        extra_eos = []
        for name in ("generation_config.json", "config.json"):
            extra_eos += _as_id_list(read_json(model_dir / name, default={}).get("eos_token_id"))
        return cls(
            backend,
            special_tokens=special,
            extra_special_tokens=extra_special,
            chat_template=_load_chat_template(model_dir, config),
            extra_eos_token_ids=extra_eos,
            name=str(model_dir),
        )

    # -- vocabulary ---------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (``len(tokenizer)`` in transformers)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def all_special_ids(self) -> tuple[int, ...]:
        """Ids of the named special tokens, then the extra special tokens (transformers' order)."""
        tokens = [*self.special_tokens.values(), *self._extra_special_tokens]
        ids = (self.token_to_id(t) for t in tokens)
        return tuple(dict.fromkeys(i for i in ids if i is not None))

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    # -- text ---------------------------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # -- chat ---------------------------------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def get_chat_template(self, chat_template: str | None = None, tools=None) -> str:
        """The template source to use: ``chat_template`` may be a template, or a name among the model's templates."""
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is not None:
                return templates.get(chat_template, chat_template)
            if tools is not None and "tool_use" in templates:
                return templates["tool_use"]
            if "default" in templates:
                return templates["default"]
            raise ValueError(
                f"{self.name or 'This model'} has several chat templates and none is named 'default'; "
                f"pass chat_template= one of {sorted(templates)}."
            )
        if chat_template is not None:
            return chat_template
        if templates:
            return templates
        raise ValueError(
            f"{self.name or 'This model'} has no chat template (a base model, or a tokenizer saved without one). "
            "Pass a plain string prompt instead of chat messages, or pass chat_template= a Jinja template string."
        )

    def apply_chat_template(
        self,
        messages: Sequence[Mapping],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        *,
        chat_template: str | None = None,
        tools: Sequence[Mapping] | None = None,
        documents: Sequence[Mapping] | None = None,
        **kwargs,
    ) -> str | list[int]:
        """Render ``messages`` as transformers' ``apply_chat_template`` does; ``kwargs`` reach the template.

        With ``tokenize=True`` returns ids, encoded without adding special tokens: the template writes them.
        """
        source = self.get_chat_template(chat_template, tools)
        text = render_chat(
            source,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens,
            tools=tools,
            documents=documents,
            **kwargs,
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text


def _add_missing_tokens(backend: _Backend, config: dict, special_tokens: list[str]) -> None:
    """Add the tokens that tokenizer_config.json declares but tokenizer.json lacks, as transformers does."""
    declared = sorted(config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0]))
    missing = []
    for _, tok in declared:
        if backend.token_to_id(tok["content"]) is None:
            missing.append(
                AddedToken(
                    tok["content"],
                    single_word=tok.get("single_word", False),
                    lstrip=tok.get("lstrip", False),
                    rstrip=tok.get("rstrip", False),
                    normalized=tok.get("normalized", not tok.get("special", False)),
                    special=tok.get("special", False),
                )
            )
    names = {t.content for t in missing}
    missing += [
        AddedToken(t, special=True, normalized=False)
        for t in dict.fromkeys(special_tokens)
        if backend.token_to_id(t) is None and t not in names
    ]
    if missing:
        backend.add_tokens(missing)


def _set_bos_eos_post_processor(backend: _Backend, bos: str | None, eos: str | None) -> None:
    single = f"{bos + ':0 ' if bos else ''}$A:0{' ' + eos + ':0' if eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if bos else ''} $B:1{' ' + eos + ':1' if eos else ''}"
    special = [(t, backend.token_to_id(t)) for t in (bos, eos) if t]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
