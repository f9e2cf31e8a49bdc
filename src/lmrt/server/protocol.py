"""The OpenAI API's request bodies (the fields lmrt serves), their checks, and its error shape.

A field lmrt does not serve is refused by name rather than ignored (a client that asks for n=2 or logprobs gets
a 400 that says so); unknown extra fields are ignored, as OpenAI's API does."""

from __future__ import annotations

from typing import Any, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from lmrt.config import ConfigError, GenerationConfig


class APIError(Exception):
    """An error as OpenAI shapes it: {"error": {"message", "type", "param", "code"}} with an HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: Optional[Union[str, List[dict]]] = None

    def text(self) -> str:
        """The content as text: a string, or the text parts of a list of content parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise APIError(
                    400, f"content parts of type {part.get('type')!r} are not supported (text only)", param="messages"
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class _Sampling(BaseModel):
    """The fields both endpoints share. top_k, min_p and repetition_penalty are extensions (vLLM's names)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = None
    n: int = 1
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    logprobs: Optional[Any] = None
    ignore_eos: bool = False
    min_tokens: int = 0

    def generation_config(self, defaults: GenerationConfig, max_tokens: Optional[int]) -> GenerationConfig:
        """The request's sampling: the checkpoint's defaults (`defaults`), each field the request gives in its
        place. max_tokens None: up to the end of the session (the caller bounds it)."""
        if self.n != 1:
            raise APIError(400, f"n={self.n} is not supported: lmrt returns one choice per request (n=1)", param="n")
        if self.logprobs not in (None, False, 0):
            raise APIError(400, "logprobs are not supported by this server", param="logprobs")
        if max_tokens is not None and max_tokens < 1:
            raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise APIError(400, "stop takes at most 4 sequences", param="stop")
        changes = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }
        fields = {k: v for k, v in changes.items() if v is not None}
        fields["max_new_tokens"] = max_tokens if max_tokens is not None else defaults.max_new_tokens
        fields["stop"] = tuple(stop)
        fields["ignore_eos"] = self.ignore_eos
        fields["min_new_tokens"] = self.min_tokens
        if fields.get("top_k") == -1:  # vLLM and OpenAI-style "off"
            fields["top_k"] = 0
        try:
            base = {f: getattr(defaults, f) for f in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")}
            return GenerationConfig(**{**base, **fields})
        except ConfigError as e:
            param = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens"}.get(e.field, e.field)
            raise APIError(400, f"{param}={e.value!r}: {e.requirement}", param=param) from e


class ChatCompletionRequest(_Sampling):
    messages: List[Message] = Field(default_factory=list)
    max_completion_tokens: Optional[int] = None

    def max_new(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Sampling):
    prompt: Union[str, List[int], List[str], List[List[int]]]
    echo: bool = False
    suffix: Optional[str] = None

    def max_new(self) -> Optional[int]:
        return self.max_tokens if self.max_tokens is not None else 16  # OpenAI's default for completions

    def the_prompt(self) -> Union[str, List[int]]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise APIError(400, "one prompt per request (a list of prompts is not supported)", param="prompt")
            p = p[0]
        if self.echo or self.suffix:
            raise APIError(400, "echo and suffix are not supported", param="echo" if self.echo else "suffix")
        if isinstance(p, list) and not p or p == "":
            raise APIError(400, "prompt is empty", param="prompt")
        return p
