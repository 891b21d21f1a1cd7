"""Turn chat messages into the exact prompt a checkpoint was trained on, as token ids.

The Jinja template writes the markup; the markers it writes ("<|im_start|>", bos_token) become
control ids, while message contents are encoded as plain text, so a document that spells
"<|im_end|>" cannot end its turn. To tell the two apart, control strings inside contents are
swapped for private-use characters while the template renders, and swapped back before the text
between the template's markers is encoded. The same holds for the tools a template lists and the
tool calls it writes (their strings are hidden alike).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property

from ragglm.engine.tokenizers.specials import SpecialTokens

__all__ = ["ChatFormat"]

# Supplementary Private Use Area-A: characters no tokenizer gives a meaning to
_FIRST_SENTINEL, _LAST_SENTINEL = 0xF0000, 0xFFFFD


@dataclass
class ChatFormat:
    template: str  # a Jinja chat template, as shipped with the checkpoint
    bos_token: str | None = None
    eos_token: str | None = None

    @cached_property
    def _compiled(self):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = _tojson
        return env.from_string(self.template)

    @cached_property
    def takes_tools(self) -> bool:
        """Whether the template writes a `tools` list it is given (tool-calling templates do)."""
        return bool(re.search(r"\btools\b", self.template))

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
        return self._compiled.render(
            messages=messages, add_generation_prompt=add_generation_prompt, tools=tools,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "",
        )

    def ids(self, messages: list[dict], tokenizer, add_generation_prompt: bool = True,
            tools: list[dict] | None = None) -> list[int]:
        """Contents without control strings give the ids of encoding the rendered text whole."""
        masks = _ContentMasks(tokenizer.specials, [*messages, *(tools or ())], self._fixed_text())
        hidden_tools = [masks.hide_all(tool) for tool in tools] if tools else tools
        text = self.render(masks.hide_in(messages), add_generation_prompt, hidden_tools)
        ids: list[int] = []
        for part in tokenizer.specials.split(text):
            ids += tokenizer.encode_plain(masks.restore(part)) if isinstance(part, str) else [part]
        return ids

    def _fixed_text(self) -> str:
        return self.template + (self.bos_token or "") + (self.eos_token or "")


class _ContentMasks:
    """Stand-in characters for the pieces of message contents that could read as markers.

    Besides every control string, the characters at a content's edges are hidden: the template's
    text next to a content could otherwise complete a control string the content begins or ends.
    """

    def __init__(self, specials: SpecialTokens, messages: list[dict], fixed_text: str):
        self.specials = specials
        self.marker_chars = set("".join(specials.ids))
        texts = [fixed_text, *_contents(messages), *_roles(messages)]
        taken = self.marker_chars.union(*map(set, texts))
        self.free = (chr(c) for c in range(_FIRST_SENTINEL, _LAST_SENTINEL + 1) if chr(c) not in taken)
        self.sentinel: dict[str, str] = {}
        self.original: dict[int, str] = {}

    def hide_in(self, messages: list[dict]) -> list[dict]:
        if not self.specials:
            return messages
        return [{k: v if k == "role" else self.hide_all(v) for k, v in m.items()} for m in messages]

    def hide_all(self, value):
        """value with every string in it (nested in lists and dicts too) hidden."""
        if not self.specials:
            return value
        if isinstance(value, str):
            return self._hide(value)
        if isinstance(value, dict):
            return {k: self.hide_all(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.hide_all(v) for v in value]
        return value

    def _hide(self, content: str) -> str:
        parts, position = [], 0
        for match in self.specials.occurrences(content):
            parts += [content[position:match.start()], self._stand_in(match.group())]
            position = match.end()
        hidden = list("".join(parts) + content[position:])
        for index in _edge_indexes(hidden):
            if hidden[index] in self.marker_chars:
                hidden[index] = self._stand_in(hidden[index])
        return "".join(hidden)

    def _stand_in(self, piece: str) -> str:
        if piece not in self.sentinel:
            self.sentinel[piece] = next(self.free)
            self.original[ord(self.sentinel[piece])] = piece
        return self.sentinel[piece]

    def restore(self, text: str) -> str:
        return text.translate(self.original) if self.original else text


def _contents(messages: list[dict]) -> list[str]:
    """Every string in the messages (contents, tool calls) and tools, but the roles."""
    return [text for m in messages for k, v in m.items() if k != "role" for text in _strings(v)]


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _roles(messages: list[dict]) -> list[str]:
    return [str(m.get("role", "")) for m in messages]


def _edge_indexes(chars: list[str]) -> set[int]:
    """First and last characters, and first and last non-whitespace ones (a template may trim)."""
    ends = [i for i in (0, len(chars) - 1) if chars]
    start = next((i for i, c in enumerate(chars) if not c.isspace()), None)
    end = next((i for i in reversed(range(len(chars))) if not chars[i].isspace()), None)
    return set(ends) | {i for i in (start, end) if i is not None}


def _tojson(value, indent=None, separators=None, sort_keys=False, ensure_ascii=False) -> str:
    """JSON as chat templates are written against: keys in order, nothing escaped for HTML."""
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)


def _raise(message: str):
    raise ValueError(message)
