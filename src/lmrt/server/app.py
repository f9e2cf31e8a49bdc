"""An OpenAI-compatible HTTP server on one shared engine (FastAPI + uvicorn).

Every request goes into the same Pipeline, so concurrent clients share the persistent batch. A streamed request
follows its engine stream from a worker thread; when the client goes away (Starlette cancels the response), the
request is detached in the engine: aborted at the next step, its KV blocks freed. The model loads in a thread
after the server starts: /health answers 503 until it is ready, then 200."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lmrt.api import OutputAssembler, Pipeline, PromptTooLongError, RequestError
from lmrt.server.metrics import Metrics
from lmrt.server.protocol import APIError, ChatCompletionRequest, CompletionRequest

POLL_S = 0.05  # a follower's longest wait on the engine: how soon a cancelled stream lets go of its thread


class ServerState:
    """The pipeline once loaded (or why it failed), and the settings every route reads."""

    def __init__(self, load: Callable[[], Pipeline], model_name: str, api_key: Optional[str], max_waiting: int):
        self.load, self.model_name, self.api_key, self.max_waiting = load, model_name, api_key, max_waiting
        self.pipe: Optional[Pipeline] = None
        self.load_error: Optional[str] = None
        self.created = int(time.time())
        self.executor = ThreadPoolExecutor(max_workers=256, thread_name_prefix="lmrt-follow")
        self.metrics = Metrics(lambda: self.pipe.stats() if self.pipe is not None else None)

    def start_loading(self) -> threading.Thread:
        def run():
            try:
                self.pipe = self.load()
            except Exception as e:  # reported by /health and every route
                self.load_error = f"{type(e).__name__}: {e}"

        t = threading.Thread(target=run, name="lmrt-load", daemon=True)
        t.start()
        return t

    def ready_pipe(self) -> Pipeline:
        if self.pipe is None:
            if self.load_error:
                raise APIError(500, f"the model failed to load: {self.load_error}", type="server_error")
            raise APIError(
                503, "the model is still loading; retry shortly (GET /health says when)", type="server_error"
            )
        return self.pipe


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def create_app(
    load: Callable[[], Pipeline], model_name: str, api_key: Optional[str] = None, max_waiting: int = 256
) -> FastAPI:
    """The app. load() builds the Pipeline (run in a thread once the server starts); model_name is what
    /v1/models lists and requests must name; api_key: required as `Authorization: Bearer <key>` when set;
    max_waiting: requests queued beyond this are refused with 429."""
    state = ServerState(load, model_name, api_key, max_waiting)

    async def lifespan(app: FastAPI):
        state.start_loading()
        yield
        state.executor.shutdown(wait=False, cancel_futures=True)
        if state.pipe is not None:
            state.pipe.close()

    app = FastAPI(title="lmrt", lifespan=lifespan)
    app.state.lmrt = state

    @app.exception_handler(APIError)
    async def api_error(_request: Request, e: APIError):
        state.metrics.errors.labels(str(e.status)).inc()
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            message, param = "the request body is not valid JSON", None
        else:
            message = (
                f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg", "invalid request"))
            )
        state.metrics.errors.labels("400").inc()
        return _error(APIError(400, message, param=param))

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if state.api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {state.api_key}":
                state.metrics.errors.labels("401").inc()
                return _error(
                    APIError(
                        401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
                    )
                )
        return await call_next(request)

    @app.get("/health")
    async def health():
        if state.pipe is not None:
            return PlainTextResponse("ok")
        if state.load_error:
            return PlainTextResponse(f"the model failed to load: {state.load_error}", status_code=500)
        return PlainTextResponse("loading", status_code=503)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(state.metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": state.model_name, "object": "model", "created": state.created, "owned_by": "lmrt"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        pipe = _admit(state, body.model)
        if not body.messages:
            raise APIError(400, "messages must hold at least one message", param="messages")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            ids = pipe.encode_prompt(messages)
        except APIError:
            raise
        except Exception as e:  # a template that rejects the roles, say
            raise APIError(400, f"cannot apply the chat template: {e}", param="messages") from e
        return await _generate(state, pipe, body, ids, request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        pipe = _admit(state, body.model)
        prompt = body.the_prompt()
        ids = pipe.encode_prompt(prompt if isinstance(prompt, str) else [int(t) for t in prompt])
        return await _generate(state, pipe, body, ids, request, chat=False)

    return app


def _admit(state: ServerState, model: str) -> Pipeline:
    pipe = state.ready_pipe()
    if model != state.model_name:
        raise APIError(
            404,
            f"the model '{model}' does not exist; this server has '{state.model_name}'",
            param="model",
            code="model_not_found",
        )
    waiting = pipe.stats()["num_waiting"]
    if waiting >= state.max_waiting:
        raise APIError(
            429,
            f"the server is busy: {waiting} requests are waiting (max_waiting {state.max_waiting}); retry later",
            type="rate_limit_exceeded",
        )
    return pipe


async def _generate(state: ServerState, pipe: Pipeline, body, ids: list, request: Request, chat: bool):
    param = "messages" if chat else "prompt"
    try:
        pipe.check_prompt_fits(len(ids))
    except PromptTooLongError as e:
        raise APIError(
            400,
            f"This model's maximum context length is {e.limit} tokens. However, your request has {len(ids)} input "
            f"tokens. Please reduce the length of the input ({e}).",
            param=param,
            code="context_length_exceeded",
        ) from e
    room = pipe.session_len - len(ids)
    max_new = body.max_new()
    if max_new is not None and max_new > room:
        raise APIError(
            400,
            f"This model's maximum context length is {pipe.session_len} tokens. However, you requested "
            f"{len(ids) + max_new} tokens ({len(ids)} in the {param}, {max_new} in the completion). Please reduce the "
            "length of the input or of the completion.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    gen = body.generation_config(pipe.generation_defaults, max_new if max_new is not None else None)
    if max_new is None:  # up to the checkpoint's default, within the session
        gen = dataclasses.replace(gen, max_new_tokens=max(1, min(room, gen.max_new_tokens)))
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    follower = _follow(state, pipe, ids, gen, request)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _sse(state, follower, rid, body.model, chat, include_usage, len(ids)), media_type="text/event-stream"
        )
    text, reason, usage = [], None, None
    try:
        async for piece, end, last_usage in follower:
            text.append(piece)
            reason, usage = end, last_usage
    except RequestError as e:
        raise APIError(500, f"the engine failed the request: {e}", type="server_error") from e
    state.metrics.requests.labels("chat" if chat else "completions", reason or "abort").inc()
    created = int(time.time())
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(text)},
            "finish_reason": reason,
            "logprobs": None,
        }
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [choice],
            "usage": usage,
        }
    choice = {"index": 0, "text": "".join(text), "finish_reason": reason, "logprobs": None}
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": body.model,
        "choices": [choice],
        "usage": usage,
    }


async def _follow(state: ServerState, pipe: Pipeline, ids: list, gen, request: Request) -> AsyncIterator[tuple]:
    """Submits and yields (text, finish_reason, usage) as the request runs; usage on the last item only. Leaving
    early (a client gone, a cancelled task) detaches the request: the engine aborts it and frees its blocks."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    rid = pipe._submit(ids, gen)
    state.metrics.prompt_tokens.inc(len(ids))
    out = OutputAssembler(pipe, ids, gen)
    done, last, cached, checked = False, None, 0, start
    try:
        while not done:
            chunk = await loop.run_in_executor(state.executor, pipe._engine.get, rid, POLL_S)
            if time.perf_counter() - checked > 0.2:  # a whole (non-streamed) reply has no write to fail
                checked = time.perf_counter()
                if await request.is_disconnected():
                    return
            if not chunk.token_ids and chunk.finish_reason is None:
                continue
            if chunk.finish_reason == "error":
                raise RequestError(chunk.error)
            now = time.perf_counter()
            n = len(chunk.token_ids)
            if n:
                state.metrics.generation_tokens.inc(n)
                if last is None:
                    state.metrics.ttft.observe(now - start)
                else:
                    for _ in range(n):
                        state.metrics.itl.observe((now - last) / n)
                last = now
            cached = chunk.num_cached_tokens
            text, reason = out.feed(chunk)
            done = reason is not None
            usage = None
            if done:
                usage = {
                    "prompt_tokens": len(ids),
                    "completion_tokens": out.num_generated,
                    "total_tokens": len(ids) + out.num_generated,
                    "prompt_tokens_details": {"cached_tokens": cached},
                }
            if text or done:
                yield text, reason, usage
    finally:
        if not done or out.stopped:
            pipe._engine.detach(rid)


async def _sse(state, follower, rid: str, model: str, chat: bool, include_usage: bool, num_prompt: int):
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choice: Optional[dict], usage=None) -> str:
        body = {"id": rid, "object": kind, "created": created, "model": model, "choices": [choice] if choice else []}
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n"

    reason = None
    try:
        if chat:
            yield event(
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}
            )
        async for text, reason, usage in follower:
            if text:
                delta = {"content": text} if chat else None
                choice = (
                    {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
                    if chat
                    else {"index": 0, "text": text, "finish_reason": None, "logprobs": None}
                )
                yield event(choice)
            if reason is not None:
                end = (
                    {"index": 0, "delta": {}, "finish_reason": reason, "logprobs": None}
                    if chat
                    else {"index": 0, "text": "", "finish_reason": reason, "logprobs": None}
                )
                yield event(end)
                if include_usage:
                    yield event(None, usage)
        yield "data: [DONE]\n\n"
    except RequestError as e:
        yield f"data: {json.dumps(APIError(500, str(e), type='server_error').body())}\n\n"
    finally:
        await follower.aclose()
        state.metrics.requests.labels("chat" if chat else "completions", reason or "abort").inc()
