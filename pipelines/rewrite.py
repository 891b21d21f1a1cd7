"""Turn a follow-up question ("and how do I reset it?") into one that stands alone for retrieval."""

from __future__ import annotations

import re

from ragglm.errors import InvalidRequestError
from ragglm.pipelines.citations import content_words
from ragglm.protocols import Generator
from ragglm.text.language import detect_language

__all__ = ["standalone_question", "is_follow_up", "last_user_question"]

_REFERENCES = {
    "en": re.compile(r"\b(it|its|they|them|their|this|that|these|those|he|she|him|her|there|one|ones|"
                     r"the same|above|previous|former|latter)\b", re.IGNORECASE),
    "zh": re.compile(r"它|它们|这个|那个|这些|那些|这种|那种|其|该|他|她|上面|前面|刚才|呢[？?]?$"),
}
_PROMPTS = {
    "en": ("Rewrite the last question so that it can be understood without the conversation. "
           "Reply with the rewritten question only.\n\nConversation:\n{history}\n\nLast question: {question}"),
    "zh": "把最后一个问题改写成不看对话也能理解的完整问题。只回答改写后的问题。\n\n对话：\n{history}\n\n最后一个问题：{question}",
}
_CONTEXT = {"en": "{question} (context: {topic})", "zh": "{question}（上文：{topic}）"}


def last_user_question(history: list[dict]) -> str:
    for message in reversed(history):
        if message.get("role") == "user" and message.get("content", "").strip():
            return message["content"].strip()
    raise InvalidRequestError("the conversation has no user question; end it with {'role': 'user', 'content': ...}")


def is_follow_up(question: str, language: str) -> bool:
    """Refers back (pronouns, "that one") or is too short to search for on its own."""
    return bool(_REFERENCES[language].search(question)) or len(content_words(question)) < 2


def standalone_question(history: list[dict], generator: Generator | None = None) -> str:
    """The last user question, made self-contained with the earlier turns when it refers back to them."""
    question = last_user_question(history)
    earlier = [m for m in history[: _last_user_index(history)] if m.get("content", "").strip()]
    language = detect_language(question)
    if not earlier or not is_follow_up(question, language):
        return question
    topic = next((m["content"].strip() for m in reversed(earlier) if m.get("role") == "user"), "")
    if generator is not None and language in generator.languages:
        rewritten = _model_rewrite(generator, earlier, question, language)
        if rewritten and _faithful(rewritten, earlier, question):
            return rewritten
    return _CONTEXT[language].format(question=question, topic=topic) if topic else question


def _last_user_index(history: list[dict]) -> int:
    for index in range(len(history) - 1, -1, -1):
        if history[index].get("role") == "user" and history[index].get("content", "").strip():
            return index
    return len(history)


def _model_rewrite(generator: Generator, earlier: list[dict], question: str, language: str) -> str:
    lines = [f"{m['role']}: {' '.join(m['content'].split())[:400]}" for m in earlier[-4:]]
    prompt = _PROMPTS[language].format(history="\n".join(lines), question=question)
    result = generator.chat([{"role": "user", "content": prompt}], max_new_tokens=48, temperature=0.0)
    text = result.text.strip().splitlines()[0].strip().strip('"“”') if result.text.strip() else ""
    return text


def _faithful(rewritten: str, earlier: list[dict], question: str) -> bool:
    """Keeps the question's words, adds some from the conversation and invents none."""
    new = content_words(rewritten)
    asked = content_words(question)
    known = asked | set().union(*(content_words(m["content"]) for m in earlier))
    added = new - asked
    return bool(added) and new <= known and len(asked & new) >= max(1, len(asked) // 2)
