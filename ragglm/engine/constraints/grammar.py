"""Grammar constraints: at each decode step, the tokens that keep the output inside a grammar.

`GrammarConstraint` wraps an xgrammar matcher. Besides masking, it makes sure a JSON output ends
complete within the token budget. It keeps the completion from the current state at hand: the
tokens that finish the output soonest, found by walking the grammar on a copy of the matcher
(closing strings, arrays and objects first, otherwise the longest allowed token, so that forced
text such as a key takes the fewest steps). When the tokens left come within `zone` of that
completion (the larger of 32 and the shortest whole output), nothing new may be opened: the model
may still write string contents, digits and literals, and otherwise must take the completion's
next token; within a few tokens of the end, it writes the completion. So the output is complete
and valid whenever max_new_tokens covers the shortest output the schema allows (`min_tokens`,
checked up front by `require_budget`) and no single token opens a structure whose shortest form
is longer than the zone (an array item's object, say, of more than 32 tokens).

`TriggeredConstraint` leaves the model free until its text reaches a trigger (the start of a
tool call), then constrains the rest with a grammar.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ragglm.errors import InvalidRequestError

__all__ = ["GrammarConstraint", "TriggeredConstraint", "closing_ranks"]

_END_MARGIN = 3  # tokens left beyond the completion when it is written out
_MIN_ZONE = 32
_MAX_COMPLETION = 4096  # a grammar whose shortest completion is longer is not closed early
_OPENERS = frozenset(b'"{}[],:\\')  # bytes that may start or end a structure outside a string


class GrammarConstraint:
    """The logits processor for one generation (see generate.Constraint); not reusable."""

    def __init__(self, compiled, pieces: list[bytes], vocab_size: int, ranks: tuple | None = None):
        import xgrammar

        self._xgr = xgrammar
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.pieces = pieces
        self.vocab_size = vocab_size
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        quote_rank, bracket_rank, tiebreak, self._harmless = ranks or closing_ranks(pieces)
        # numpy throughout: a step is a few single-threaded vector operations over the vocabulary,
        # where torch's would each wake its thread pool (milliseconds on a loaded machine)
        self._text_scores = quote_rank + tiebreak
        self._structure_scores = bracket_rank + tiebreak
        stops = np.array(sorted(self.matcher.stop_token_ids), dtype=np.int64)
        self._stop_ids = stops[stops < vocab_size]
        self.closing: list[int] | None = None  # the completion being written, once the end is near
        self._plan: list[int] | None = self._completion(self.matcher.fork())
        self.min_tokens = len(self._plan) if self._plan else 0
        self.zone = max(_MIN_ZONE, self.min_tokens)
        self._plan_length = self.min_tokens  # the last completion's length, even once out of date
        self._mask: np.ndarray | None = None  # bool [V] for the current state
        self._in_text = False

    def require_budget(self, max_new_tokens: int, what: str = "the output format") -> None:
        if max_new_tokens < self.min_tokens:
            raise InvalidRequestError(
                f"max_new_tokens is {max_new_tokens}, fewer than the {self.min_tokens} tokens the shortest "
                f"output matching {what} needs; ask for at least {self.min_tokens}")

    def allowed(self, logits: Tensor, remaining: int) -> Tensor:
        """logits [V] -> logits [V] with every id the grammar forbids at -inf."""
        if self.closing is None and remaining <= self._plan_length + self.zone + _END_MARGIN:
            plan = self._current_plan()
            if plan and remaining <= len(plan) + _END_MARGIN:
                self.closing = self._completion(self.matcher.fork())  # fresh, not an estimate
        if self.closing:
            only = torch.full_like(logits, float("-inf"), dtype=torch.float32)
            only[self.closing[0]] = 0.0
            return only
        mask = self._current_mask()
        if self._plan and remaining <= len(self._plan) + self.zone:
            narrowed = mask & self._harmless
            narrowed[self._plan[0]] = mask[self._plan[0]]
            mask = narrowed if narrowed.any() else mask
        return _masked(logits, mask)

    def accept(self, token: int) -> bool:
        """Record the chosen token; True once the output is complete (nothing but an end token may follow)."""
        if self.closing:
            self.closing.pop(0)
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"token {token} was chosen outside the grammar")
        if self._plan and token == self._plan[0]:
            self._plan = self._plan[1:]  # the walk is deterministic: the rest is the new state's completion
        elif not (self._in_text and self._harmless[token]):
            self._plan = None  # string contents leave the completion as it was (kept as an estimate)
        self._mask = None
        if self.matcher.is_terminated():
            return True
        return self.matcher.is_completed() and self._only_stop_allowed()

    def accept_text(self, text: str) -> bool:
        """Feed text written before the grammar took over (a trigger's overshoot); False if it does not fit."""
        self._mask = None
        self._plan = None
        return not text or bool(self.matcher.accept_string(text))

    def _current_mask(self) -> np.ndarray:
        if self._mask is None:
            self._mask = self._allowed_bits(self.matcher).view(np.bool_)
            self._in_text = int(np.count_nonzero(self._mask)) > self.vocab_size // 4
        return self._mask

    def _current_plan(self) -> list[int] | None:
        if self._plan is None:
            self._plan = self._completion(self.matcher.fork()) or None
            if self._plan:
                self._plan_length = len(self._plan)
        return self._plan

    def _allowed_bits(self, matcher) -> np.ndarray:
        """uint8 [V], 1 where the matcher allows the id next (a fresh array: the bitmask is reused)."""
        matcher.fill_next_token_bitmask(self.bitmask)
        # bit i of int32 word j is id 32j+i; little-endian words read as bytes keep that order
        bytes_ = self.bitmask[0].numpy().view(np.uint8)
        return np.unpackbits(bytes_, bitorder="little")[: self.vocab_size]

    def _only_stop_allowed(self) -> bool:
        allowed = set(np.flatnonzero(self._current_mask()).tolist())
        return allowed <= set(self.matcher.stop_token_ids)

    def _completion(self, matcher) -> list[int]:
        """Tokens that complete the output from the matcher's state, or [] if none are found.

        Inside free text (a string: most of the vocabulary is allowed) a token that opens with a
        quote and only closes is preferred; elsewhere one made of closing brackets; else the
        longest allowed token, which writes forced text (a key) in the fewest steps."""
        tokens: list[int] = []
        try:
            while not matcher.is_completed():
                if len(tokens) >= _MAX_COMPLETION:
                    return []
                allowed = self._allowed_bits(matcher)
                allowed[self._stop_ids] = 0
                ids = np.flatnonzero(allowed)  # [allowed count]
                if not len(ids):
                    return []
                in_text = len(ids) > self.vocab_size // 4
                scores = (self._text_scores if in_text else self._structure_scores)[ids]
                best = int(scores.argmax())
                if scores[best] == float("-inf") or not matcher.accept_token(int(ids[best])):
                    return []
                token = int(ids[best])
                tokens.append(token)
            return tokens
        finally:
            self._mask = None  # the shared bitmask now holds another state's mask


def closing_ranks(pieces: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """[V] each: how much a token closes inside a string (a quote, then brackets) and outside one
    (brackets only), a small bonus for long tokens that end on a whole UTF-8 character (-inf
    for empty pieces, never chosen), and
    whether it is harmless (bool: no byte that could open or close a structure)."""
    quote, bracket, long = (np.zeros(len(pieces), dtype=np.float32) for _ in range(3))
    harmless = np.zeros(len(pieces), dtype=np.bool_)
    for index, piece in enumerate(pieces):
        if not piece:
            long[index] = float("-inf")
            continue
        # a token that leaves a character unfinished is never preferred: the walk could go on
        # finishing one character and starting the next for ever
        long[index] = len(piece) / 1000 + (0.5 if _ends_whole(piece) else 0.0)
        harmless[index] = _OPENERS.isdisjoint(piece)
        if all(b in b'"}]' for b in piece):
            brackets = piece.count(b"}") + piece.count(b"]")
            if piece.startswith(b'"') and piece.count(b'"') == 1:
                quote[index] = 1 + brackets
            if b'"' not in piece:
                bracket[index] = brackets
    return quote, bracket, long, harmless


def _masked(logits: Tensor, mask: np.ndarray) -> Tensor:
    """float logits [V] with the ids outside mask (bool [V]) at -inf."""
    if logits.device.type == "cpu":
        return torch.from_numpy(np.where(mask, logits.float().numpy(), np.float32("-inf")))
    return logits.float().masked_fill(~torch.from_numpy(mask).to(logits.device), float("-inf"))


def _ends_whole(piece: bytes) -> bool:
    """Whether the bytes end on a complete UTF-8 character (a token may begin mid-character)."""
    for back in range(1, min(4, len(piece)) + 1):
        byte = piece[-back]
        if byte & 0xC0 != 0x80:  # the last lead byte (or ASCII): how long is its character?
            length = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return back == length
    return True  # continuation bytes only: they finish a character begun before


class TriggeredConstraint:
    """Free text until the output reaches a trigger, then a grammar for what follows it.

    make_grammar(trigger) builds the GrammarConstraint for the text after that trigger. The text
    already written past the trigger is fed to it; if it does not fit, the output stays free."""

    def __init__(self, triggers: list[str], make_grammar, decode, at_start_only: bool = False):
        self.triggers = triggers
        self.make_grammar = make_grammar
        self.decode = decode
        self.at_start_only = at_start_only
        self.ids: list[int] = []
        self.inner: GrammarConstraint | None = None
        self.gave_up = False

    def allowed(self, logits: Tensor, remaining: int) -> Tensor:
        return logits if self.inner is None else self.inner.allowed(logits, remaining)

    def accept(self, token: int) -> bool:
        if self.inner is not None:
            return self.inner.accept(token)
        if self.gave_up:
            return False
        self.ids.append(token)
        text = self.decode(self.ids)
        for trigger in self.triggers:
            where = text.find(trigger)
            if where < 0 or (self.at_start_only and text[:where].strip()):
                continue
            inner = self.make_grammar(trigger)
            if inner.accept_text(text[where + len(trigger):]):
                self.inner = inner
            else:
                self.gave_up = True
            return False
        if self.at_start_only and text.strip() and not any(t.startswith(text.lstrip()) or text.lstrip().startswith(t)
                                                           for t in self.triggers):
            self.gave_up = True  # plain text: no call follows
        return False
