"""One thread that owns the generator; HTTP requests queue for it and await their results.

A model's KV cache holds one sequence, so generations must not interleave. Rather than hold a
lock across an HTTP stream (a client that vanishes mid-stream would keep it), each request is a
job: the worker runs jobs one at a time and posts text pieces back to the request's event loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable

from ragglm.integrations.answering import Cancelled

__all__ = ["EngineWorker", "Job", "ServerBusy"]

Work = Callable[[Callable[[str], None] | None, threading.Event], object]


class ServerBusy(Exception):
    """The queue of waiting requests is full."""


class Job:
    """One request's work; its events (piece, done, error, cancelled) arrive on the caller's loop."""

    def __init__(self, work: Work, loop: asyncio.AbstractEventLoop, stream: bool):
        self._work = work
        self._loop = loop
        self._stream = stream
        self._events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def run(self) -> str:
        """Called on the worker thread; returns how the job ended: done, error or cancelled."""
        if self.cancelled.is_set():  # its client left while it waited
            return self._post("cancelled", None)
        try:
            outcome = self._work(self._piece if self._stream else None, self.cancelled)
        except Cancelled:
            return self._post("cancelled", None)
        except BaseException as exc:  # handed to the request, which answers with an error
            return self._post("error", exc)
        return self._post("done", outcome)

    async def events(self) -> AsyncIterator[tuple[str, object]]:
        while True:
            kind, value = await self._events.get()
            yield kind, value
            if kind != "piece":
                return

    async def outcome(self):
        async for kind, value in self.events():
            if kind == "done":
                return value
            if kind == "error":
                raise value
            if kind == "cancelled":
                raise Cancelled()
        raise Cancelled()

    def _piece(self, text: str) -> None:
        self._post("piece", text)

    def _post(self, kind: str, value) -> str:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: the server is shutting down
            self.cancelled.set()
        return kind


class EngineWorker:
    def __init__(self, max_pending: int = 64):
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self.cancelled = 0  # jobs whose client left before or during their generation
        self._thread = threading.Thread(target=self._serve, name="ragglm-engine", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._jobs.qsize()

    def submit(self, work: Work, stream: bool = False) -> Job:
        """Queue work(on_text, cancelled); call from a coroutine on the loop that will await the job."""
        job = Job(work, asyncio.get_running_loop(), stream)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise ServerBusy(f"{self._jobs.maxsize} requests are already waiting; retry shortly") from None
        return job

    def stop(self) -> None:
        """Let the thread end after the job in hand; jobs still waiting are cancelled."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel()
                job.run()  # only posts "cancelled", so its request answers rather than hangs
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.run() == "cancelled":
                self.cancelled += 1
