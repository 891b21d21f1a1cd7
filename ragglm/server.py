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
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import version
from pathlib import Path

import h11
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from ragglm.api_error import ApiError
from ragglm.errors import RagglmError
from ragglm.integrations.answering import (
    Cancelled,
    Conversation,
    Outcome,
    ask_knowledge_base,
    chat_generator,
    is_remote,
)
from ragglm.integrations.openai_api import (
    CITATIONS_HEADER,
    KB_MODEL_ID,
    ChatCompletionRequest,
    EmbeddingRequest,
    ParameterError,
    chat_options,
    check_chat_request,
    citations_header,
    embedding_response,
    embedding_texts,
    engine_messages,
    relative_sources,
    sampling_options,
    tool_call_deltas,
)
from ragglm.server_worker import EngineWorker, ServerBusy
from ragglm.text.chunker import count_tokens
from ragglm.web import install_web

__all__ = ["KB_MODEL_ID", "BackgroundServer", "ChatCompletionRequest", "ServerLimits", "create_app", "serve"]



@dataclass
class ServerLimits:
    max_body_bytes: int = 1 << 20  # a request body larger than this is refused with 413
    max_new_tokens: int = 1024  # the most a request may ask for; more is refused with 400
    max_pending: int = 64  # requests waiting for the generator; more are refused with 503
    max_message_parts: int = 4096  # messages plus content parts in one request; more is refused with 413
    max_headers: int = 100  # header lines in one request; more are refused with 431
    max_header_bytes: int = 16 * 1024  # the request line and headers; more is refused with 431
    header_timeout_s: float = 10.0  # from connecting (or the previous response) to the end of the headers: 408
    body_timeout_s: float = 30.0  # from the end of the headers to the end of the body: 408
    max_connections: int | None = None  # open connections; more are answered 503 (None: 2 * max_pending + 16)
    max_upload_bytes: int = 50 << 20  # the body limit of a document upload, in place of max_body_bytes

    def connection_limit(self) -> int:
        # every waiting request holds a connection, and idle keep-alive ones need some room too
        return self.max_connections or 2 * self.max_pending + 16


def create_app(knowledge_base=None, *, generator=None, api_key: str | None = None,
               limits: ServerLimits | None = None, knowledge_bases=None,
               cors_origins: Sequence[str] = ()) -> FastAPI:
    """The ASGI app. Give a KnowledgeBase (its engine is loaded now), a generator, or both.

    knowledge_bases (a ragglm.web.KnowledgeBases) serves several, as models "ragglm:NAME", with the
    web page at / and the document API under /v1/knowledge-bases. cors_origins lets pages from those
    origins call the API from a browser ("*" for any); without them no CORS header is sent."""
    if knowledge_bases is not None and knowledge_base is None:
        knowledge_base = knowledge_bases.first
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
    app.add_middleware(_Gate, api_key=api_key, max_body_bytes=limits.max_body_bytes,
                       max_upload_bytes=limits.max_upload_bytes, max_headers=limits.max_headers,
                       max_header_bytes=limits.max_header_bytes, body_timeout_s=limits.body_timeout_s)
    if cors_origins:
        # added last, so outermost: a preflight carries no API key and must not meet the gate
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.state.worker = worker
    app.state.limits = limits  # serve() and BackgroundServer size the connection handling from these
    _install_error_handlers(app)

    def with_documents() -> bool:
        return knowledge_base is not None and len(knowledge_base) > 0

    def kb_model_ids() -> list[str]:
        if knowledge_bases is not None:
            return knowledge_bases.model_ids()
        return [KB_MODEL_ID] if with_documents() else []

    def kb_for(model_id: str):
        """The knowledge base a model id answers from, None for the plain generator."""
        if knowledge_bases is not None:
            return knowledge_bases.for_model(model_id)
        return knowledge_base if model_id == KB_MODEL_ID and with_documents() else None

    def model_card(model_id: str) -> dict:
        card = {"id": model_id, "object": "model", "created": started, "owned_by": "ragglm"}
        if model_id in kb_model_ids():
            target = kb_for(model_id)
            card.update(knowledge_base=True, sources=len(target.sources), chunks=len(target))
        elif model_id in embedding_ids():
            card.update(knowledge_base=False, embeddings=True)
        else:
            card.update(knowledge_base=False, languages=list(generator.languages))
        return card

    def current_embedder():
        """The knowledge base's embedder, which the embeddings endpoint serves as a model of its own."""
        return None if knowledge_base is None else knowledge_base.store.embedder

    def embedding_ids() -> list[str]:
        embedder = current_embedder()
        return [] if embedder is None else [_embedding_id(embedder)]

    def model_ids() -> list[str]:
        # the plain generator first: clients that take the first listed model expect plain chat
        return [generator_id] + kb_model_ids() + embedding_ids()

    @app.get("/health")
    async def health() -> dict:
        kb = None if knowledge_base is None else {"sources": len(knowledge_base.sources),
                                                  "chunks": len(knowledge_base)}
        return {"status": "ok", "model": generator_id, "knowledge_base": kb, "pending": worker.pending,
                "cancelled": worker.cancelled}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card(m) for m in model_ids()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict:
        if model_id not in model_ids():
            raise _unknown_model(model_id, model_ids())
        return model_card(model_id)

    def budget_for(request: ChatCompletionRequest) -> tuple[dict, dict]:
        """The generation arguments every model takes, and the sampling ones only the plain model does."""
        max_new_tokens = request.max_completion_tokens or request.max_tokens or default_tokens
        if max_new_tokens > limits.max_new_tokens:
            name = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise ApiError(400, f"{name} is {max_new_tokens}, over this server's limit of "
                                f"{limits.max_new_tokens}; ask for fewer", param=name)
        temperature = default_temperature if request.temperature is None else request.temperature
        temperature, sampling = sampling_options(request, temperature)
        return {"max_new_tokens": max_new_tokens, "temperature": temperature, "stop": request.stops()}, sampling

    def answer_from(target, request: ChatCompletionRequest, budget: dict, sampling: dict):
        if sampling:
            name = next(iter(sampling))
            raise ApiError(400, f"{name} applies to the plain model {generator_id!r}; model {request.model!r} "
                                "answers from the documents, which it decodes its own way", param=name)
        if request.seed is not None and is_remote(target.generator):
            raise ApiError(400, f"seed applies to the plain model {generator_id!r} when generation is remote",
                           param="seed")
        for name in chat_options(request):
            raise ApiError(400, f"{name} applies to the plain model {generator_id!r}; model {request.model!r} "
                                "answers from the documents in prose with citations", param=name)
        conversation = Conversation.of([{"role": m.role, "content": m.text()} for m in request.messages])
        if not conversation.question:
            raise ApiError(400, f"model {request.model!r} answers the last user message, and there is none",
                           param="messages")
        if len(target) == 0:
            raise ApiError(400, f"model {request.model!r} has no documents yet; add some first",
                           param="model", code="empty_knowledge_base")

        def work(on_text, cancelled) -> Outcome:
            outcome = ask_knowledge_base(target, conversation.question, on_text=on_text, cancelled=cancelled,
                                         history=conversation.history, instructions=conversation.instructions,
                                         seed=request.seed, **budget)
            with target.lock:  # the sources as they were when answered
                outcome.citations = relative_sources(outcome.citations, target.sources, _files_folder(target))
            return outcome
        return work

    def chat_with_generator(request: ChatCompletionRequest, budget: dict, sampling: dict):
        if sampling and is_remote(generator):
            name = next(iter(sampling))
            raise ApiError(400, f"{name} cannot be sent on to the remote generator {generator_id!r}", param=name)
        options = chat_options(request)
        if options and is_remote(generator):
            name = next(iter(options))
            raise ApiError(400, f"{name} cannot be sent on to the remote generator {generator_id!r}", param=name)
        messages = engine_messages(request)

        def work(on_text, cancelled) -> Outcome:
            return chat_generator(generator, messages, seed=request.seed, on_text=on_text, cancelled=cancelled,
                                  sampling=sampling, options=options, **budget)
        return work

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, http: Request):
        if request.parts() > limits.max_message_parts:
            raise ApiError(413, f"the request holds {request.parts()} messages and content parts, over this "
                                f"server's limit of {limits.max_message_parts}", param="messages",
                           code="request_too_large")
        try:
            check_chat_request(request)
        except ParameterError as exc:
            raise _refused(exc) from exc
        budget, sampling = budget_for(request)
        target = kb_for(request.model)
        if target is not None:
            work = answer_from(target, request, budget, sampling)
        elif request.model == generator_id:
            work = chat_with_generator(request, budget, sampling)
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
            outcome = await _outcome_unless_client_leaves(job, http)
        except Exception as exc:
            raise _as_api_error(exc) from exc
        if target is not None:  # answered from documents: the citations in a header too (see citations_header)
            return JSONResponse(reply.completion(outcome),
                                headers={CITATIONS_HEADER: citations_header(outcome.citations)})
        return reply.completion(outcome)

    @app.post("/v1/embeddings")
    async def embeddings(request: EmbeddingRequest) -> dict:
        embedder = current_embedder()
        if embedder is None or request.model != _embedding_id(embedder):
            raise _unknown_model(request.model, model_ids())
        try:
            texts = embedding_texts(request)
        except ParameterError as exc:
            raise _refused(exc) from exc
        dimension = await asyncio.to_thread(lambda: embedder.dimension)  # the first use loads the model
        if request.dimensions not in (None, dimension):
            raise ApiError(400, f"model {request.model!r} embeds in {dimension} dimensions only",
                           param="dimensions")
        vectors = await asyncio.to_thread(embedder.embed, texts)
        tokens = await asyncio.to_thread(_embedding_tokens, embedder, texts)
        return embedding_response(vectors, request.model, request.encoding_format, tokens)

    if knowledge_bases is not None:
        install_web(app, knowledge_bases, limits.max_upload_bytes)
    return app


async def _outcome_unless_client_leaves(job, http: Request, poll_s: float = 0.2) -> Outcome:
    """The job's outcome; a client that disconnects first cancels it, so an abandoned request
    stops generating at its next token instead of delaying every request queued behind it."""
    waiting = asyncio.ensure_future(job.outcome())
    try:
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=poll_s)
            if done:
                return waiting.result()
            if await http.is_disconnected():
                raise Cancelled()
    finally:
        if not waiting.done():  # the client left, or the server is stopping
            job.cancel()
            waiting.cancel()


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
            "choices": [{"index": 0, "message": _message(outcome), "finish_reason": outcome.finish_reason}],
            "usage": _usage(outcome), "citations": outcome.citations,
            "ragglm": {"mode": outcome.mode, "timings": outcome.timings, "plan": outcome.plan},
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
                    if value.tool_calls:
                        yield self.chunk({"tool_calls": tool_call_deltas(value.tool_calls)})
                    yield self.chunk({}, value.finish_reason, citations=value.citations,
                                     ragglm={"mode": value.mode, "timings": value.timings, "plan": value.plan})
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


def _message(outcome: Outcome) -> dict:
    if outcome.tool_calls:  # as OpenAI answers a call: no text unless the model wrote some besides
        return {"role": "assistant", "content": outcome.text or None, "tool_calls": outcome.tool_calls}
    return {"role": "assistant", "content": outcome.text}


def _sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def _usage(outcome: Outcome) -> dict:
    return {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens}


def _refused(exc: ParameterError) -> ApiError:
    return ApiError(400, str(exc), param=exc.param, code="unsupported_parameter")


def _embedding_id(embedder) -> str:
    return str(getattr(embedder, "name", "embeddings"))


def _files_folder(knowledge_base) -> Path | None:
    """Where a knowledge base keeps the files uploaded to it; their names are relative to it."""
    return None if knowledge_base.path is None else Path(knowledge_base.path) / "files"


def _embedding_tokens(embedder, texts: list[str]) -> int:
    """The inputs' tokens as the embedding model reads them, else a count of their words."""
    tokenizer = getattr(getattr(embedder, "_model", None), "tokenizer", None)
    if tokenizer is None:
        return sum(count_tokens(text) for text in texts)
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])


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
            # a check on the whole body names the field it found at fault in its context
            where = (error.get("ctx") or {}).get("param") or ".".join(
                str(p) for p in error.get("loc", ()) if p != "body")
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


# Document uploads carry files, so they get their own, larger body limit.
_UPLOAD_PATH = re.compile(r"^/v1/knowledge-bases/[^/]+/documents$")


class _Gate:
    """ASGI middleware: the header count, the API key on /v1/ routes, then the body's size and
    arrival time, before any parsing."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int, max_upload_bytes: int | None = None,
                 max_headers: int = 100, max_header_bytes: int = 16 * 1024, body_timeout_s: float = 30.0):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes or max_body_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.body_timeout_s = body_timeout_s

    def _limit(self, scope) -> int:
        return self.max_upload_bytes if _UPLOAD_PATH.match(scope["path"]) else self.max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = self._header_problem(scope)
        if problem:
            error = ApiError(431, problem, code="request_header_fields_too_large")
            return await error.response()(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"].startswith("/v1/"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key):
                error = ApiError(401, "missing or wrong API key; send 'Authorization: Bearer KEY'",
                                 "authentication_error", code="invalid_api_key",
                                 headers={"WWW-Authenticate": "Bearer"})
                return await error.response()(scope, receive, send)
        limit = self._limit(scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await self._too_large(scope, receive, send, limit, int(declared))
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        try:
            body = await self._read_body(receive, limit)
        except ApiError as error:
            return await error.response()(scope, receive, send)
        if body is None:  # the client left
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as streaming responses do

        await self.app(scope, replay, send)

    def _header_problem(self, scope) -> str | None:
        # h11 bounds only headers still incomplete; ones that arrive whole in one read are measured here
        count = len(scope["headers"])
        size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if count > self.max_headers:
            return f"the request has {count} header lines, over this server's limit of {self.max_headers}"
        if size > self.max_header_bytes:
            return f"the request headers hold {size} bytes, over this server's limit of {self.max_header_bytes}"
        return None

    async def _too_large(self, scope, receive, send, limit: int, declared: int):
        # A body of moderate size is read and dropped first, so that the client, still sending, reads
        # the 413 rather than a reset; a huge one is answered at once and the connection lingers.
        if declared <= DRAIN_BYTES:
            try:
                await self._read_body(receive, DRAIN_BYTES)
            except ApiError:
                pass
        await _body_too_large(limit).response()(scope, receive, send)

    async def _read_body(self, receive, limit: int) -> bytes | None:
        """The whole body, counted as it arrives: a chunked upload has no length to check up front,
        and a client that trickles it must not hold the connection for ever."""
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        pieces, size, more = [], 0, True
        while more:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.0))
            except TimeoutError:
                raise ApiError(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                               code="request_timeout") from None
            if message["type"] == "http.disconnect":
                return None
            pieces.append(message.get("body", b""))
            size += len(pieces[-1])
            more = message.get("more_body", False)
            if size > limit:
                raise _body_too_large(limit)
        return b"".join(pieces)


DRAIN_BYTES = 64 * 2**20


def _body_too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over this server's limit of {limit} bytes",
                    code="request_too_large")


def _uvicorn_options(app: FastAPI) -> dict:
    """uvicorn settings that carry this app's connection limits (see _HardenedH11)."""
    limits = getattr(app.state, "limits", None) or ServerLimits()
    return {"http": _protocol_class(limits), "timeout_keep_alive": 5}


def _protocol_class(limits: ServerLimits) -> type:
    return type("RagglmH11Protocol", (_HardenedH11,), {"limits": limits})


class _H11Connection(h11.Connection):
    """An h11 server connection that keeps its last parse error: uvicorn drops the status h11
    suggests for it (431 for headers over the size limit) and answers every such error 400."""

    last_error: h11.RemoteProtocolError | None = None

    def __init__(self, max_header_bytes: int):
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class _HardenedH11(H11Protocol):
    """uvicorn's h11 protocol, for clients that misbehave below the ASGI app:

    - a request line or headers h11 cannot parse are answered with the JSON error body (431 for
      headers over max_header_bytes) instead of uvicorn's plain-text 400;
    - the request line and headers must arrive within header_timeout_s of connecting, or of the
      previous response on a kept-alive connection (408), so a trickling client cannot hold one;
    - past connection_limit() open connections, a new one is answered 503;
    - after an answer sent while the client is still sending (413, 408, a parse error), the rest is
      read and dropped for linger_s: closing with unread data would reset the connection, and the
      client would lose the answer."""

    limits: ServerLimits
    linger_s = 2.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conn = _H11Connection(self.limits.max_header_bytes)
        self._header_timer = None
        self._lingering = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.connection_limit():
            self._refuse(ApiError(503, f"this server holds {self.limits.connection_limit()} connections "
                                       "already; retry shortly", "server_busy", headers={"Retry-After": "1"}))
            return
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the answer is out and the connection closing: what the client still sends is dropped
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_timer()  # the headers are in: the app's body timeout takes over

    def on_response_complete(self) -> None:
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.server_state.total_requests += 1
            self._linger()  # answered before the body was all in: the connection cannot be reused
            return
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()

    def shutdown(self) -> None:
        if self._lingering:  # h11 may be in its error state, where uvicorn's own shutdown would raise
            self.transport.close()
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        error = self.conn.last_error
        if error is not None and error.error_status_hint == 431:
            self._refuse(ApiError(431, f"the request line and headers are over this server's limit of "
                                       f"{self.limits.max_header_bytes} bytes",
                                  code="request_header_fields_too_large"))
        else:
            self._refuse(ApiError(400, f"malformed HTTP request: {error or msg}", code="malformed_request"))

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse(ApiError(408, f"the request line and headers did not arrive within "
                                       f"{self.limits.header_timeout_s:g} s", code="request_timeout"))

    def _refuse(self, error: ApiError) -> None:
        """Answer outside any request cycle (h11 has no usable state here), then close."""
        body = json.dumps(error.body()).encode()
        phrase = HTTPStatus(error.status).phrase
        lines = [f"HTTP/1.1 {error.status} {phrase}", "content-type: application/json",
                 f"content-length: {len(body)}", "connection: close",
                 *(f"{name}: {value}" for name, value in (error.headers or {}).items())]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self._linger()

    def _linger(self) -> None:
        self._lingering = True
        self._disarm_header_timer()
        self._unset_keepalive_if_required()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # sent once the answer is flushed: the client sees the end
        self.flow.resume_reading()
        self.loop.call_later(self.linger_s, self.transport.close)


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                **_uvicorn_options(app))


class BackgroundServer:
    """Serve an app on a thread of this process, e.g. in a notebook or a test:

        with BackgroundServer(create_app(kb)) as server:
            OpenAI(base_url=server.base_url, api_key="-")...
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2,
                                **_uvicorn_options(app))
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
