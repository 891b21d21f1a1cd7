"""Grounded prompts with numbered sources, in the question's language."""

from __future__ import annotations

from ragglm.documents import Hit

__all__ = ["NOT_FOUND", "build_messages", "format_sources"]

NOT_FOUND = {
    "en": "The documents do not contain the answer.",
    "zh": "文档中没有找到答案。",
}

_INSTRUCTIONS = {
    "en": (
        "Answer the question using only the numbered sources. "
        "Cite the source of every fact with its number in brackets, like [1]. "
        'If the sources do not contain the answer, reply exactly: "{not_found}"'
    ),
    "zh": (
        "只根据下面编号的资料回答问题。每个事实都要用方括号标出资料编号，例如 [1]。"
        "如果资料中没有答案，请只回答：“{not_found}”"
    ),
}


def format_sources(hits: list[Hit]) -> str:
    blocks = []
    for number, hit in enumerate(hits, 1):
        where = hit.source.rsplit("/", 1)[-1] + (f", page {hit.page}" if hit.page else "")
        blocks.append(f"[{number}] ({where})\n{hit.text}")
    return "\n\n".join(blocks)


def build_messages(question: str, hits: list[Hit], language: str) -> list[dict]:
    """System instructions, then sources, then the question: the shared part comes first."""
    instructions = _INSTRUCTIONS[language].format(not_found=NOT_FOUND[language])
    label = "Sources" if language == "en" else "资料"
    ask = "Question" if language == "en" else "问题"
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": f"{label}:\n{format_sources(hits)}\n\n{ask}: {question}"},
    ]
