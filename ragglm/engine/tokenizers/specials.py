"""A tokenizer's control strings: where they occur in text and which single ids they stand for.

Chat formats split their rendered markup at these strings so that the format's own markers
become control ids while everything between them is encoded as plain text.
"""

from __future__ import annotations

import re

__all__ = ["SpecialTokens"]


class SpecialTokens:
    def __init__(self, ids: dict[str, int], strip: dict[str, tuple[bool, bool]] | None = None):
        self.ids = dict(ids)
        self.all_ids = frozenset(self.ids.values())
        # (lstrip, rstrip): a marker that swallows the whitespace beside it, as Hugging Face added tokens may
        self.strip = strip or {}
        # longest first, so a marker that starts with a shorter one is found whole
        names = sorted(self.ids, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, names))) if names else None

    @classmethod
    def from_backend(cls, backend) -> SpecialTokens:
        """The special added tokens of a Hugging Face `tokenizers` model."""
        added = {i: t for i, t in backend.get_added_tokens_decoder().items() if t.special}
        ids = {t.content: i for i, t in added.items()}
        strip = {t.content: (t.lstrip, t.rstrip) for t in added.values() if t.lstrip or t.rstrip}
        return cls(ids, strip)

    def __bool__(self) -> bool:
        return bool(self.ids)

    def occurrences(self, text: str) -> list[re.Match]:
        return list(self.pattern.finditer(text)) if self.pattern else []

    def split(self, text: str) -> list[str | int]:
        """Text pieces and marker ids in order; the pieces hold no marker."""
        parts: list[str | int] = []
        position = 0
        for match in self.occurrences(text):
            lstrip, rstrip = self.strip.get(match.group(), (False, False))
            before = text[position:match.start()]
            parts += [before.rstrip() if lstrip else before, self.ids[match.group()]]
            position = match.end()
            if rstrip:
                position += len(text[position:]) - len(text[position:].lstrip())
        parts.append(text[position:])
        return [p for p in parts if p != ""]
