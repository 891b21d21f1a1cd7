"""ChatGLM-6B's prompt, as its own chat code builds it.

One question alone is the prompt as it is. With earlier turns, rounds are numbered from 0:
"[Round i]\\n问：{question}\\n答：{answer}\\n" for each, then "[Round n]\\n问：{question}\\n答：". The
text is encoded as plain text and `[gMASK]` `<sop>` follow it, placed by id: the context ends at
[gMASK], and the answer starts at <sop>. ChatGLM-6B has no system role, so system messages lead
the first question.
"""

from __future__ import annotations

from ragglm.engine.tokenizers.glm_chat_format import question_rounds

__all__ = ["ChatGLM6BFormat"]


class ChatGLM6BFormat:
    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        for message in messages:
            if message["role"] not in ("system", "user", "assistant"):
                raise ValueError(f"message role {message['role']!r} is not one of system, user, assistant")
        system, rounds = question_rounds(messages)
        if not rounds:
            return system
        if len(rounds) == 1 and add_generation_prompt:
            return rounds[0][0]
        text = "".join(f"[Round {i}]\n问：{q}\n答：{a}\n" for i, (q, a) in enumerate(rounds[:-1]))
        question, answer = rounds[-1]
        text += f"[Round {len(rounds) - 1}]\n问：{question}\n答："
        return text if add_generation_prompt else text + answer

    def ids(self, messages: list[dict], tokenizer, add_generation_prompt: bool = True) -> list[int]:
        ids = tokenizer.encode_plain(self.render(messages, add_generation_prompt))
        if add_generation_prompt:
            ids += [_control(tokenizer, "[gMASK]"), _control(tokenizer, "<sop>")]
        return ids


def _control(tokenizer, name: str) -> int:
    index = tokenizer.token_id(name)
    if index is None:
        raise ValueError(f"the tokenizer has no {name!r} piece; is this ChatGLM-6B's ice_text.model?")
    return index
