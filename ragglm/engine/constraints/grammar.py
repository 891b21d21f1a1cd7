"""Grammar constraints: at each decode step, the tokens that keep the output inside a grammar.

`GrammarConstraint` wraps an xgrammar matcher. Besides masking, it makes sure the output ends
within the token budget: once the tokens left come close to what the shortest completion from
the current state needs, it writes that completion (closing strings, arrays and objects, the
fewest required fields) instead of letting the model go on. The completion is found by walking
the grammar on a copy of the matcher, preferring tokens that close ("}", "]", '"') and otherwise
the longest allowed token, so a JSON output is complete and valid whenever the budget covers the
shortest output the schema allows (`min_tokens`, checked up front by `require_budget`).

`TriggeredConstraint` leaves the model free until its text reaches a trigger (the start of a
tool call), then constrains the rest with a grammar.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ragglm.errors import InvalidRequestError

__all__ = ["GrammarConstraint", "TriggeredConstraint", "closing_ranks"]

# tokens kept in hand beyond the shortest completion, for a token that opens something new
_MARGIN = 8
_MAX_COMPLETION = 4096  # a grammar whose shortest completion is longer is not closed early


class GrammarConstraint:
    """The logits processor for one generation (see generate.Constraint); not reusable."""

    def __init__(self, compiled, pieces: list[bytes], vocab_size: int, ranks: tuple | None = None):
        import xgrammar

        self._xgr = xgrammar
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.pieces = pieces
        self.vocab_size = vocab_size
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
        self._mask_ready = False
        self.closing: list[int] | None = None  # the completion being written, once closing
        self._quote_rank, self._bracket_rank, self._shortness = ranks or closing_ranks(pieces)
        self.min_tokens = len(self._completion(self.matcher.fork()))
        self._plan_length = self.min_tokens  # the last completion found: when to look again

    def require_budget(self, max_new_tokens: int, what: str = "the output format") -> None:
        if max_new_tokens < self.min_tokens:
            raise InvalidRequestError(
                f"max_new_tokens is {max_new_tokens}, fewer than the {self.min_tokens} tokens the shortest "
                f"output matching {what} needs; ask for at least {self.min_tokens}")

    def allowed(self, logits: Tensor, remaining: int) -> Tensor:
        """logits [V] -> logits [V] with every id the grammar forbids at -inf."""
        if self.closing is None and remaining <= self._plan_length + 2 * _MARGIN:
            plan = self._completion(self.matcher.fork())
            self._plan_length = len(plan) if plan else self._plan_length
            if plan and remaining <= len(plan) + _MARGIN:
                self.closing = plan
        if self.closing:
            only = torch.full_like(logits, float("-inf"))
            only[self.closing[0]] = 0.0
            return only
        self._fill()
        logits = logits.float().clone()
        self._xgr.apply_token_bitmask_inplace(logits.unsqueeze(0), self.bitmask, vocab_size=self.vocab_size)
        return logits

    def accept(self, token: int) -> bool:
        """Record the chosen token; True once the output is complete (nothing but an end token may follow)."""
        if self.closing:
            self.closing.pop(0)
        if not self.matcher.accept_token(token):
            raise RuntimeError(f"token {token} was chosen outside the grammar")
        self._mask_ready = False
        if self.matcher.is_terminated():
            return True
        return self.matcher.is_completed() and self._only_stop_allowed()

    def accept_text(self, text: str) -> bool:
        """Feed text written before the grammar took over (a trigger's overshoot); False if it does not fit."""
        self._mask_ready = False
        return not text or bool(self.matcher.accept_string(text))

    def _fill(self) -> None:
        if not self._mask_ready:
            self.matcher.fill_next_token_bitmask(self.bitmask)
            self._mask_ready = True

    def _allowed_mask(self, matcher) -> Tensor:
        """bool [V]: the ids the matcher allows next (computed into the shared bitmask)."""
        matcher.fill_next_token_bitmask(self.bitmask)
        scores = torch.zeros(1, self.vocab_size)
        self._xgr.apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=self.vocab_size)
        return torch.isfinite(scores[0])

    def _only_stop_allowed(self) -> bool:
        self._fill()
        scores = torch.zeros(1, self.vocab_size)
        self._xgr.apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=self.vocab_size)
        allowed = set(torch.isfinite(scores[0]).nonzero().flatten().tolist())
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
                allowed = self._allowed_mask(matcher)
                allowed[list(matcher.stop_token_ids)] = False
                in_text = int(allowed.sum()) > self.vocab_size // 4
                scores = (self._quote_rank if in_text else self._bracket_rank) + self._shortness
                token = int(scores.masked_fill(~allowed, float("-inf")).argmax())
                if not allowed[token] or not matcher.accept_token(token):
                    return []
                tokens.append(token)
            return tokens
        finally:
            self._mask_ready = False  # the shared bitmask now holds another state's mask


def closing_ranks(pieces: list[bytes]) -> tuple[Tensor, Tensor, Tensor]:
    """[V] floats: how much a token closes inside a string (a quote, then brackets), outside one
    (brackets only), and a small bonus for long tokens; empty pieces are never chosen."""
    quote, bracket, short = (torch.zeros(len(pieces)) for _ in range(3))
    for index, piece in enumerate(pieces):
        if not piece:
            short[index] = float("-inf")
            continue
        short[index] = len(piece) / 1000
        if all(b in b'"}]' for b in piece):
            brackets = piece.count(b"}") + piece.count(b"]")
            if piece.startswith(b'"') and piece.count(b'"') == 1:
                quote[index] = 1 + brackets
            if b'"' not in piece:
                bracket[index] = brackets
    return quote, bracket, short


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
