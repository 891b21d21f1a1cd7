"""Cut generated text at the first stop string, also while it streams in pieces."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopStringFilter", "truncate_at_stop"]


def truncate_at_stop(text: str, stops: Iterable[str] | None) -> tuple[str, bool]:
    """(text before the earliest stop string, whether one was found)."""
    positions = [text.find(s) for s in stops or () if s]
    positions = [p for p in positions if p >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


class StopStringFilter:
    """Feed streamed pieces; get back the text that is safe to show.

    A tail that could be the start of a stop string is held back until the next
    piece shows whether it is one, so a stop string never leaks half-printed.
    """

    def __init__(self, stops: Iterable[str] | None = None):
        self.stops = [s for s in stops or () if s]
        self.text = ""  # everything released so far
        self.stopped = False
        self._pending = ""

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            self.text += piece
            return piece
        self._pending += piece
        kept, found = truncate_at_stop(self._pending, self.stops)
        if found:
            self.stopped = True
            self._pending = ""
            return self._release(kept)
        hold = _longest_stop_prefix_suffix(self._pending, self.stops)
        ready, self._pending = self._pending[: len(self._pending) - hold], self._pending[len(self._pending) - hold:]
        return self._release(ready)

    def flush(self) -> str:
        """The held-back tail, once the stream has ended without a stop string."""
        tail, self._pending = self._pending, ""
        return "" if self.stopped else self._release(tail)

    def _release(self, text: str) -> str:
        self.text += text
        return text


def _longest_stop_prefix_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of text that some stop string starts with."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-size:]):
                best = size
                break
    return best
