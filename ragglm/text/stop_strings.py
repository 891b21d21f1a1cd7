"""Cut generated text at the first stop string, also while it streams in pieces."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable

__all__ = ["StopStringFilter", "relay", "truncate_at_stop"]


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

    def __init__(self, stops: Iterable[str] | None = None, skip_leading_space: bool = False):
        """skip_leading_space drops white space before the first visible character, so that a stop
        string such as a line break ends the text only once it has begun."""
        self.stops = [s for s in stops or () if s]
        self.text = ""  # everything released so far
        self.stopped = False
        self._pending = ""
        self._skip_space = skip_leading_space

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if self._skip_space:
            piece = piece.lstrip()
            self._skip_space = not piece
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


def relay(pieces: Generator[str, None, None], stops: StopStringFilter, on_text: Callable[[str], None] | None = None,
          check: Callable[[], None] | None = None) -> None:
    """Stream pieces through stops to on_text until a stop string or the end; check() runs before each
    piece (it may raise to stop). The stream is closed on the way out, which ends its decode loop."""
    try:
        for piece in pieces:
            if check is not None:
                check()
            shown = stops.feed(piece)
            if shown and on_text:
                on_text(shown)
            if stops.stopped:
                break
    finally:
        pieces.close()
    tail = stops.flush()
    if tail and on_text:
        on_text(tail)


def _longest_stop_prefix_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of text that some stop string starts with."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-size:]):
                best = size
                break
    return best
