"""OpenAI-compatible HTTP API over a KnowledgeBase and its generator.

Two models are listed at /v1/models: the generator itself (plain chat, e.g. "smollm2") and, when
documents are loaded, "ragglm", which answers the last user message from the documents and returns
the citations in an extra `citations` field. One worker thread owns the generator, so requests wait
in a bounded queue and never share its KV cache.

    from ragglm.server import create_app
    app = create_app(KnowledgeBase("./kb"), api_key="secret")   # serve with uvicorn
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragglm.errors import RagglmError
from ragglm.integrations.answering import Cancelled, Outcome, ask_knowledge_base, chat_generator
from ragglm.server_worker import EngineWorker, ServerBusy

__all__ = ["KB_MODEL_ID", "BackgroundServer", "ChatCompletionRequest", "ServerLimits", "create_app", "serve"]

KB_MODEL_ID = "ragglm"


@dataclass
class ServerLimits:
    max_body_bytes: int = 1 << 20  # a request body larger than this is refused with 413
    max_new_tokens: int = 1024  # the most a request may ask for; more is refused with 400
    max_pending: int = 64  # requests waiting for the generator; more are refused with 503


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    # Fields OpenAI clients send that do not apply here (top_p, user, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: dict | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1)


class ApiError(Exception):
    """An error answered as OpenAI does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def create_app(knowledge_base=None, *, generator=None, api_key: str | None = None,
               limits: ServerLimits | None = None) -> FastAPI:
    """The ASGI app. Give a KnowledgeBase (its engine is loaded now), a generator, or both."""
    if knowledge_base is None and generator is None:
        raise ValueError("create_app needs a knowledge base or a generator")
    limits = limits or ServerLimits()
    generator = generator if generator is not None else knowledge_base.generator
    settings = knowledge_base.settings if knowledge_base is not None else None
    default_tokens = min(settings.max_new_tokens if settings else 256, limits.max_new_tokens)
    default_temperature = settings.temperature if settings else 0.0
    generator_id = str(generator.name)
    started = int(time.time())
    worker = EngineWorker(limits.max_pending)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        worker.stop()

    app = FastAPI(title="ragglm", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(_Gate, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    app.state.worker = worker
    _install_error_handlers(app)

    def with_documents() -> bool:
        return knowledge_base is not None and len(knowledge_base) > 0

    def model_card(model_id: str) -> dict:
        card = {"id": model_id, "object": "model", "created": started, "owned_by": "ragglm"}
        if model_id == KB_MODEL_ID:
            card.update(knowledge_base=True, sources=len(knowledge_base.sources), chunks=len(knowledge_base))
        else:
            card.update(knowledge_base=False, languages=list(generator.languages))
        return card

    def model_ids() -> list[str]:
        # the plain generator first: clients that take the first listed model expect plain chat
        return [generator_id] + ([KB_MODEL_ID] if with_documents() else [])

    @app.get("/health")
    async def health() -> dict:
        kb = None if knowledge_base is None else {"sources": len(knowledge_base.sources),
                                                  "chunks": len(knowledge_base)}
        return {"status": "ok", "model": generator_id, "knowledge_base": kb, "pending": worker.pending}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card(m) for m in model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict:
        if model_id not in model_ids():
            raise _unknown_model(model_id, model_ids())
        return model_card(model_id)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest):
        max_new_tokens = request.max_completion_tokens or request.max_tokens or default_tokens
        if max_new_tokens > limits.max_new_tokens:
            raise ApiError(400, f"max_tokens is {max_new_tokens}, over this server's limit of "
                                f"{limits.max_new_tokens}; ask for fewer", param="max_tokens")
        if request.n != 1:
            raise ApiError(400, "only n=1 is supported", param="n")
        temperature = default_temperature if request.temperature is None else request.temperature
        stop = [request.stop] if isinstance(request.stop, str) else request.stop
        budget = {"max_new_tokens": max_new_tokens, "temperature": temperature, "stop": stop}
        if request.model == KB_MODEL_ID and with_documents():
            question = next((m.text() for m in reversed(request.messages) if m.role == "user"), "").strip()
            if not question:
                raise ApiError(400, f"model {KB_MODEL_ID!r} answers the last user message, and there is none",
                               param="messages")

            def work(on_text, cancelled) -> Outcome:
                return ask_knowledge_base(knowledge_base, question, on_text=on_text, cancelled=cancelled,
                                          **budget)
        elif request.model == generator_id:
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in request.messages]

            def work(on_text, cancelled) -> Outcome:
                return chat_generator(generator, messages, seed=request.seed, on_text=on_text,
                                      cancelled=cancelled, **budget)
        else:
            raise _unknown_model(request.model, model_ids())
        try:
            job = worker.submit(work, stream=request.stream)
        except ServerBusy as exc:
            raise ApiError(503, str(exc), "server_busy", headers={"Retry-After": "1"}) from exc
        reply = _Reply(request.model, include_usage=bool((request.stream_options or {}).get("include_usage")))
        if request.stream:
            return StreamingResponse(reply.events(job), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            outcome = await job.outcome()
        except asyncio.CancelledError:
            job.cancel()  # the server is stopping, or the client left
            raise
        except Exception as exc:
            raise _as_api_error(exc) from exc
        return reply.completion(outcome)

    return app


class _Reply:
    """The JSON shapes of one completion: whole, or as server-sent chunks."""

    def __init__(self, model: str, include_usage: bool):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def completion(self, outcome: Outcome) -> dict:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome.text},
                         "finish_reason": outcome.finish_reason}],
            "usage": _usage(outcome), "citations": outcome.citations,
            "ragglm": {"mode": outcome.mode, "timings": outcome.timings},
        }

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        return _sse(body)

    async def events(self, job) -> AsyncIterator[str]:
        try:
            yield self.chunk({"role": "assistant", "content": ""})
            async for kind, value in job.events():
                if kind == "piece":
                    yield self.chunk({"content": value})
                elif kind == "done":
                    yield self.chunk({}, value.finish_reason, citations=value.citations,
                                     ragglm={"mode": value.mode, "timings": value.timings})
                    if self.include_usage:
                        yield _sse({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                    "model": self.model, "choices": [], "usage": _usage(value)})
                elif kind == "error":
                    # the status line is gone already; OpenAI clients raise on an "error" event
                    yield _sse(_as_api_error(value).body())
                    return
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()  # a client that left stops the generation at its next token


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _usage(outcome: Outcome) -> dict:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


def _unknown_model(model: str, available: list[str]) -> ApiError:
    return ApiError(404, f"model {model!r} is not served here; use one of: {', '.join(available)}",
                    param="model", code="model_not_found")


def _as_api_error(exc: BaseException) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Cancelled):
        return ApiError(499, "the request was cancelled", "cancelled")
    if isinstance(exc, RagglmError):  # e.g. a prompt over the model window, a remote generator that is down
        kind = "upstream_error" if exc.http_status >= 500 else "invalid_request_error"
        return ApiError(exc.http_status, str(exc), kind, code=exc.code)
    return ApiError(500, f"internal error: {exc.__class__.__name__}: {exc}", "server_error")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems, param = [], None
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            if error.get("type") == "json_invalid":
                problems.append("the request body is not valid JSON")
                continue
            param = param or where or None
            problems.append(f"{where or 'body'}: {error.get('msg')}")
        return ApiError(400, "; ".join(problems) or "invalid request", param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), kind, headers=exc.headers).response()

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        return _as_api_error(exc).response()


class _Gate:
    """ASGI middleware: API key on /v1/ routes, then the body size limit, before any parsing."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"].startswith("/v1/"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key):
                error = ApiError(401, "missing or wrong API key; send 'Authorization: Bearer KEY'",
                                 "authentication_error", code="invalid_api_key",
                                 headers={"WWW-Authenticate": "Bearer"})
                return await error.response()(scope, receive, send)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        # Read the whole body here (a chunked upload has no length to check), then hand it on.
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as streaming responses do

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        error = ApiError(413, f"the request body is over this server's limit of {self.max_body_bytes} bytes",
                         code="request_too_large")
        await error.response()(scope, receive, send)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


class BackgroundServer:
    """Serve an app on a thread of this process, e.g. in a notebook or a test:

        with BackgroundServer(create_app(kb)) as server:
            OpenAI(base_url=server.base_url, api_key="-")...
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = None
        self.host = host
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        import threading

        self._thread = threading.Thread(target=self._server.run, name="ragglm-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        # port 0 asks the system for a free port: read back the one bound
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _version() -> str:
    return version("ragglm")
