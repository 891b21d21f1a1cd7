"""LangChain: ChatRagGLM (a chat model), RagGLM (a custom LLM) on the ragglm engine, and
RagGLMRetriever over a KnowledgeBase.

    from ragglm.integrations.langchain import ChatRagGLM, RagGLM, RagGLMRetriever

    chat = ChatRagGLM(model="smollm2")                  # messages, tools, structured output

    llm = RagGLM(model="smollm2")                       # plain generation
    bot = RagGLM(knowledge_base=kb)                     # answers from kb's documents, with citations
    retriever = RagGLMRetriever(knowledge_base=kb, k=4)
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from ragglm.integrations.answering import Cancelled, Outcome, ask_knowledge_base, chat_generator
from ragglm.integrations.engine_params import DecodingOptions, EngineParams
from ragglm.integrations.openai_api import CITATIONS_HEADER

__all__ = ["ChatRagGLM", "DecodingOptions", "RagGLM", "RagGLMRetriever", "citations_from",  # noqa: F822
           "pieces_from_thread"]

_loaded: dict[tuple, Any] = {}
_loading = threading.Lock()


def shared_generator(model: str, quant: str | None, device: str):
    """One loaded generator per (model, quant, device) in this process, however many RagGLM use it."""
    key = (str(model), quant, device)
    with _loading:
        if key not in _loaded:
            from ragglm.engine.factory import (
                load_generator,  # torch: only once a model is asked for
            )

            _loaded[key] = load_generator(model, quant=quant, device=device)
        return _loaded[key]


class RagGLM(LLM, EngineParams):
    """A LangChain LLM on the ragglm engine (or a remote `openai:http://...` model).

    Bound to a `knowledge_base`, the prompt is taken as a question and answered from the
    documents by the knowledge base's own generator (its `model` setting); the citations come
    back in the generation's `generation_info["citations"]`. Its settings are EngineParams'.
    """

    @property
    def _llm_type(self) -> str:
        return "ragglm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self._engine_params()

    def _call(self, prompt: str, stop: list[str] | None = None,
              run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> str:
        return self._complete(prompt, stop, **kwargs).text

    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> LLMResult:
        generations = []
        for prompt in prompts:
            outcome = self._complete(prompt, stop, **kwargs)
            generations.append([Generation(text=outcome.text, generation_info=_info(outcome))])
        return LLMResult(generations=generations, llm_output={"model": self.model})

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                ) -> Iterator[GenerationChunk]:
        for item in pieces_from_thread(lambda on_text, cancelled: self._complete(
                prompt, stop, on_text=on_text, cancelled=cancelled, **kwargs)):
            if isinstance(item, Outcome):
                chunk = GenerationChunk(text="", generation_info=_info(item))
            else:
                chunk = GenerationChunk(text=item)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _complete(self, prompt: str, stop: list[str] | None, on_text=None, cancelled=None,
                  **kwargs: Any) -> Outcome:
        budget, sampling, seed = self._decoding(**kwargs).split()
        if self.knowledge_base is not None:
            if sampling:
                raise ValueError(f"{', '.join(sampling)} applies to plain generation; a RagGLM bound to a "
                                 "knowledge base answers with its pipeline's own decoding")
            return ask_knowledge_base(self.knowledge_base, prompt, stop=stop, on_text=on_text,
                                      cancelled=cancelled, seed=seed, **budget)
        generator = shared_generator(self.model, self.quant, self.device)
        return chat_generator(generator, [{"role": "user", "content": prompt}], stop=stop, seed=seed,
                              on_text=on_text, cancelled=cancelled, sampling=sampling, **budget)


class RagGLMRetriever(BaseRetriever):
    """The k best chunks of a KnowledgeBase as Documents with source, page and score metadata."""

    knowledge_base: Any = Field(exclude=True)
    k: int = 4

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        k = kwargs.pop("k", self.k)
        if kwargs:
            raise ValueError(f"RagGLMRetriever takes k, not {', '.join(sorted(kwargs))}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, not {k!r}")
        with self.knowledge_base.lock:
            hits = self.knowledge_base.search(query, k)
        return [
            Document(page_content=hit.text, metadata={
                "source": hit.source, "page": hit.page, "score": float(hit.score), "rank": rank,
                "heading": hit.chunk.heading, "start": hit.chunk.start, "end": hit.chunk.end,
            })
            for rank, hit in enumerate(hits, 1)
        ]


def citations_from(message: Any) -> list[dict]:
    """The citations of an answer from a knowledge base, as a LangChain message carries them.

    ChatRagGLM bound to a knowledge base puts them in response_metadata["citations"]; ChatOpenAI
    talking to `ragglm serve`'s "ragglm" model drops the body's `citations` field, but keeps the
    response headers when built with include_response_headers=True, and the server sends them in
    one (without their quoted text). A streamed ChatOpenAI answer has no headers to keep: [].
    """
    metadata = getattr(message, "response_metadata", None) or {}
    if "citations" in metadata:
        return list(metadata["citations"])
    headers = {str(k).lower(): v for k, v in (metadata.get("headers") or {}).items()}
    if CITATIONS_HEADER in headers:
        return json.loads(headers[CITATIONS_HEADER])
    return []


def _info(outcome: Outcome) -> dict:
    return {"finish_reason": outcome.finish_reason, "citations": outcome.citations, "mode": outcome.mode,
            "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens}


_END = object()


def pieces_from_thread(work, timeout_s: float | None = None) -> Iterator[Any]:
    """Run work(on_text, cancelled) in a thread; yield its text pieces, then what it returns.

    Closing the iterator early sets `cancelled`, which ends generation at the next token; so does
    timeout_s running out, which then raises TimeoutError here.
    """
    pieces: queue.Queue = queue.Queue()
    cancelled = threading.Event()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        cancelled.set()

    def run() -> None:
        try:
            pieces.put(work(pieces.put, cancelled))
        except Cancelled:
            if timed_out.is_set():
                pieces.put(TimeoutError(f"no answer within timeout={timeout_s} s"))
        except BaseException as exc:  # handed to the consumer's thread
            pieces.put(exc)
        finally:
            pieces.put(_END)

    timer = threading.Timer(timeout_s, expire) if timeout_s else None
    thread = threading.Thread(target=run, name="ragglm-langchain-stream", daemon=True)
    thread.start()
    if timer:
        timer.daemon = True
        timer.start()
    try:
        while (item := pieces.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancelled.set()
        if timer:
            timer.cancel()


def __getattr__(name: str):
    if name == "ChatRagGLM":
        from ragglm.integrations.chat_model import (
            ChatRagGLM,  # chat_model imports this module's helpers: looked up on first use, not at import
        )

        return ChatRagGLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
