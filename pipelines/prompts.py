"""Grounded prompts with numbered sources, in the question's language."""

from __future__ import annotations

from ragglm.documents import Hit

__all__ = ["NOT_FOUND", "EXTRACT_NOTE", "build_messages", "format_sources", "source_label"]

# The fixed phrase for "the sources do not say"; callers and evaluation look for it verbatim.
NOT_FOUND = {
    "en": "The documents do not contain the answer.",
    "zh": "文档中没有找到答案。",
}

EXTRACT_NOTE = {"en": "Extract from the documents:", "zh": "以下摘自文档："}

_INSTRUCTIONS = {
    "en": (
        "You answer questions using only the numbered sources the user gives. "
        "Answer in one short sentence and cite the source number in brackets, like [1]. "
        'If the sources do not contain the answer, reply exactly: "{not_found}"'
    ),
    "zh": (
        "只根据用户给出的编号资料回答问题。用一句简短的话回答，并用方括号标出资料编号，例如 [1]。"
        "如果资料中没有答案，请只回答：“{not_found}”"
    ),
}
# Instructions a caller adds (an API system message) come after the grounding rules, which win: they
# may shape tone, language or length, never whether the answer must come from the sources.
_CALLER_INSTRUCTIONS = {
    "en": "Also follow these instructions where they agree with the rules above:\n{instructions}",
    "zh": "在不违背上述规则的前提下，也请遵守以下要求：\n{instructions}",
}
_LABELS = {"en": ("Sources", "Question", "page"), "zh": ("资料", "问题", "第{}页")}


def source_label(hit: Hit, language: str = "en") -> str:
    name = hit.source.replace("\\", "/").rsplit("/", 1)[-1]
    if not hit.page:
        return name
    page_word = _LABELS[language][2]
    return f"{name}, {page_word.format(hit.page)}" if "{}" in page_word else f"{name}, {page_word} {hit.page}"


def format_sources(hits: list[Hit], language: str = "en") -> str:
    return "\n\n".join(f"[{n}] ({source_label(hit, language)})\n{hit.text.strip()}" for n, hit in enumerate(hits, 1))


def build_messages(question: str, hits: list[Hit], language: str, instructions: str | None = None) -> list[dict]:
    """System instructions, then sources, then the question: the shared part comes first.

    instructions: the caller's own (a system message sent to the API), placed after the grounding rules."""
    system = _INSTRUCTIONS[language].format(not_found=NOT_FOUND[language])
    if instructions and instructions.strip():
        system += "\n\n" + _CALLER_INSTRUCTIONS[language].format(instructions=instructions.strip())
    sources, ask, _ = _LABELS[language]
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"{sources}:\n{format_sources(hits, language)}\n\n{ask}: {question}"},
    ]
