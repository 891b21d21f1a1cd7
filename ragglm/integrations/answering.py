"""Per-request generation shared by the HTTP server and LangChain: stop strings, cancellation, locking."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from ragglm.engine.generate import GenerationResult
from ragglm.protocols import Generator
from ragglm.text.stop_strings import StopStringFilter, relay

__all__ = ["Cancelled", "Conversation", "Outcome", "ask_knowledge_base", "chat_generator", "is_remote"]


class Cancelled(Exception):
    """The caller went away (client disconnected, stream closed): generation stopped early."""


@dataclass
class Outcome:
    text: str
    finish_reason: str  # "stop" | "length" | "tool_calls"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    citations: list[dict] = field(default_factory=list)
    mode: str = "generate"  # "generate" for plain chat, else the Answer's mode
    timings: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)  # the Answer's plan (route, refusal, standalone question)
    tool_calls: list[dict] = field(default_factory=list)  # OpenAI shape


@dataclass
class Conversation:
    """An OpenAI-shaped conversation as a knowledge base answers it: the last user message is the
    question, the user and assistant turns are the history a follow-up is rewritten from, and system
    (or developer) messages are the caller's instructions."""
    question: str
    history: list[dict]
    instructions: str | None

    @classmethod
    def of(cls, messages: list[dict]) -> Conversation:
        history = [{"role": m["role"], "content": m.get("content") or ""} for m in messages
                   if m["role"] in ("user", "assistant")]
        question = next((m["content"] for m in reversed(history) if m["role"] == "user"), "").strip()
        instructions = "\n\n".join((m.get("content") or "").strip() for m in messages
                                    if m["role"] in ("system", "developer") and (m.get("content") or "").strip())
        return cls(question, history, instructions or None)


def chat_generator(generator: Generator, messages: list[dict], *, max_new_tokens: int, temperature: float,
                   stop: list[str] | None = None, seed: int | None = None,
                   on_text: Callable[[str], None] | None = None,
                   cancelled: threading.Event | None = None, sampling: dict | None = None,
                   options: dict | None = None) -> Outcome:
    """Plain chat completion on an Engine or RemoteGenerator, one caller at a time.

    sampling: the Engine's top_p, top_k and repetition_penalty; a RemoteGenerator takes none of them.
    options: Engine.chat's tools, tool_choice and response_format."""
    if sampling and is_remote(generator):
        raise ValueError(f"{', '.join(sampling)} cannot be sent on to a remote generator")
    stops = StopStringFilter(stop)
    result = GenerationResult([])
    extra = {**({"seed": seed} if seed is not None else {}), **(sampling or {}), **(options or {})}
    with nullcontext() if generator.concurrent else generator.lock:
        relay(generator.chat(messages, max_new_tokens=max_new_tokens, temperature=temperature, stream=True,
                             result=result, **extra), stops, on_text, lambda: _check(cancelled))
    completion_tokens = len(result.token_ids) or int(result.timings.get("completion_tokens", 0))
    finish = "stop" if stops.stopped and not result.tool_calls else result.finish_reason
    timings = {"ttft_s": round(result.ttft_s, 4), "decode_tok_s": round(result.decode_tok_s, 2)}
    return Outcome(stops.text, finish, result.prompt_tokens, completion_tokens, timings=timings,
                   tool_calls=list(getattr(result, "tool_calls", None) or []))


def ask_knowledge_base(knowledge_base, question: str, *, max_new_tokens: int, temperature: float,
                       stop: list[str] | None = None, on_text: Callable[[str], None] | None = None,
                       cancelled: threading.Event | None = None, history: list[dict] | None = None,
                       seed: int | None = None, instructions: str | None = None) -> Outcome:
    """KnowledgeBase.ask with this request's token budget and temperature; the answer keeps its citations.

    With a history holding earlier user turns the question is a follow-up: KnowledgeBase.chat rewrites
    it to stand alone first. instructions (a system message) go to the model after the grounding rules.
    Callers take turns: the knowledge base's lock keeps its index still while it answers, and the
    generator's keeps one KV cache to one prompt."""
    stops = StopStringFilter(stop)

    def show(piece: str) -> None:
        _check(cancelled)
        shown = stops.feed(piece)
        if shown and on_text:
            on_text(shown)

    follow_up = history is not None and sum(1 for m in history if m.get("role") == "user") > 1
    with knowledge_base.lock, knowledge_base.generator.lock:
        if seed is not None:
            _seed_sampling(knowledge_base.generator, seed)
        if follow_up:
            answer = knowledge_base.chat(history, on_text=show, max_new_tokens=max_new_tokens,
                                         temperature=temperature, instructions=instructions)
        else:
            answer = knowledge_base.ask(question, on_text=show, max_new_tokens=max_new_tokens,
                                        temperature=temperature, instructions=instructions)
    if not stops.text and not stops.stopped and answer.text:
        show(answer.text)  # answers decided without generating (nothing found) are not streamed
    tail = stops.flush()
    if tail and on_text:
        on_text(tail)
    timings = dict(answer.timings)
    generated = int(timings.get("generated_tokens", 0))
    finish = "stop" if stops.stopped or generated < max_new_tokens else "length"
    text = stops.text.strip()
    prompt_tokens, completion_tokens = int(timings.get("prompt_tokens", 0)), generated
    if not generated and not prompt_tokens:  # an extract or a refusal: no model ran, yet text went in and out
        count = knowledge_base.generator.count_tokens
        prompt_tokens, completion_tokens = count(question), count(text)
    summary = answer.to_dict()
    return Outcome(text, finish, prompt_tokens, completion_tokens, summary["citations"], answer.mode, timings,
                   summary.get("plan", {}))


def is_remote(generator: Generator) -> bool:
    """Whether generation runs on another server, whose sampling this process does not control."""
    return generator.device == "remote"


def _seed_sampling(generator: Generator, seed: int) -> None:
    """The answering pipeline passes no seed to the engine, which then samples from torch's global
    generator: seeding it, under the generator's lock, makes a sampled answer repeatable."""
    if is_remote(generator):
        raise ValueError("a seed cannot be sent on to a remote generator through the answering pipeline")
    import torch

    torch.manual_seed(seed)


def _check(cancelled: threading.Event | None) -> None:
    if cancelled is not None and cancelled.is_set():
        raise Cancelled()
