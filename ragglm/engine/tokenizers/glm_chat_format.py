"""The GLM family's prompt formats, built as token ids the way each checkpoint was trained.

ChatGLM3: [gMASK] sop, then per message <|role|> + encode("\\n") + encode(content), then <|assistant|>.
ChatGLM2: [gMASK] sop + encode("[Round 1]\\n\\n问：...\\n\\n答：").
GLM-4:    [gMASK] <sop>, then per message <|role|> + encode("\\n" + content), then <|assistant|>.

Markers are placed by id and contents go through `encode_plain`, so a document that spells
"<|user|>" or "[gMASK]" stays text. ChatGLM2's rounds are plain text by design: nothing there
is a control id to forge.
"""

from __future__ import annotations

__all__ = ["ChatGLM3Format", "ChatGLM2Format", "GLM4Format", "question_rounds"]


class _RoleTurns:
    """<|role|>\ncontent turns after fixed markers: the layout ChatGLM3 and GLM-4 share."""

    roles = ("system", "user", "assistant", "observation")
    start: tuple[str, ...] = ()  # the markers before the first turn

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        text = "".join(self.start) + "".join(f"<|{_role(m, self.roles)}|>{m.get('metadata', '')}\n{m['content']}"
                                             for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def ids(self, messages: list[dict], tokenizer, add_generation_prompt: bool = True) -> list[int]:
        ids = [_command(tokenizer, marker) for marker in self.start]
        for message in messages:
            ids.append(_command(tokenizer, f"<|{_role(message, self.roles)}|>"))
            ids += self.turn_text(message["content"], tokenizer, message.get("metadata", ""))
        if add_generation_prompt:
            ids.append(_command(tokenizer, "<|assistant|>"))
        return ids

    def turn_text(self, content: str, tokenizer, metadata: str = "") -> list[int]:
        """metadata: the text on the role's line (a tool call's tool name), before the newline."""
        raise NotImplementedError


class ChatGLM3Format(_RoleTurns):
    start = ("[gMASK]", "sop")

    def turn_text(self, content: str, tokenizer, metadata: str = "") -> list[int]:
        # ChatGLM3's own tokenizer encodes the role line apart from the content
        return tokenizer.encode_plain(f"{metadata}\n") + tokenizer.encode_plain(content)


def question_rounds(messages: list[dict]) -> tuple[str, list[list[str]]]:
    """(the system text, [question, answer] per round) for the 问/答 formats, which have no system
    role: the system text leads the first question."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    rounds: list[list[str]] = []
    for message in messages:
        if message["role"] == "user":
            content = f"{system}\n\n{message['content']}" if system and not rounds else message["content"]
            rounds.append([content, ""])
        elif message["role"] == "assistant" and rounds:
            rounds[-1][1] = message["content"]
    return system, rounds


class ChatGLM2Format:
    """Rounds of 问/答; ChatGLM2 has no system role, so a system message leads the first question."""

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        _, rounds = question_rounds(messages)
        text = ""
        for i, (question, answer) in enumerate(rounds, start=1):
            text += f"[Round {i}]\n\n问：{question}\n\n答："
            if answer or i < len(rounds):
                text += f"{answer}\n\n"
        return text

    def ids(self, messages: list[dict], tokenizer, add_generation_prompt: bool = True) -> list[int]:
        prefix = [_command(tokenizer, "[gMASK]"), _command(tokenizer, "sop")]
        return prefix + tokenizer.encode_plain(self.render(messages, add_generation_prompt))


class GLM4Format(_RoleTurns):
    start = ("[gMASK]", "<sop>")

    def turn_text(self, content: str, tokenizer, metadata: str = "") -> list[int]:
        # together: the ids of the rendered text, which GLM-4's tokenizer splits at the markers
        return tokenizer.encode_plain(f"{metadata}\n" + content)


def _role(message: dict, roles: tuple[str, ...]) -> str:
    role = message["role"]
    if role not in roles:
        raise ValueError(f"message role {role!r} is not one of {', '.join(roles)}")
    return role


def _command(tokenizer, name: str) -> int:
    index = tokenizer.token_id(name)
    if index is None:
        raise ValueError(f"the tokenizer has no {name!r} token; is this a GLM checkpoint's tokenizer?")
    return index
