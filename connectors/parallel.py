"""Parse many sources over the available cores, results in the order the sources were given.

Workers are plain `python -m ragglm.connectors.parse_worker` processes fed over pipes, not
multiprocessing children: those re-import the caller's `__main__`, which breaks a script that
indexes at module level (no `if __name__ == "__main__":`) and re-runs it in every worker.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ragglm.connectors.formats import parse
from ragglm.connectors.ocr_pages import PageProgress, page_progress
from ragglm.documents import Document
from ragglm.errors import SourceError

__all__ = ["ParseJob", "available_cores", "parse_budget_s", "parse_job", "parse_in_order"]

DEFAULT_PARSE_TIMEOUT_S = 120.0
DEFAULT_PARSE_MEMORY_MB = 4096  # address space of one parser process: a decompression bomb fails there


@dataclass
class ParseJob:
    source: str
    data: bytes
    content_type: str | None = None  # set for fetched URLs
    sha256: str = ""  # of data


def available_cores() -> int:
    override = os.environ.get("RAGGLM_WORKERS")
    if override and override.isdigit() and int(override) > 0:
        return int(override)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# Reader failures that mean "too large or too deeply nested to read safely", not "damaged"
_TOO_COMPLEX = (MemoryError, RecursionError, zlib.error)


def parse_budget_s() -> float:
    """Seconds a parser process may spend on one file: $RAGGLM_PARSE_TIMEOUT, else 120."""
    return float(os.environ.get("RAGGLM_PARSE_TIMEOUT") or DEFAULT_PARSE_TIMEOUT_S)


def parse_job(job: ParseJob) -> Document | SourceError:
    """The job's Document, or a SourceError naming it: one bad file must not stop the others."""
    try:
        return parse(job.source, job.data, job.content_type)
    except SourceError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a reader's own exception, reported per file
        detail = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        if isinstance(exc, _TOO_COMPLEX) or "limit" in exc.__class__.__name__.lower():
            return SourceError(job.source, f"is too large or too deeply nested to read safely ({detail})",
                               "split it into smaller files, or export it again from the program that made it")
        return SourceError(job.source, f"could not be read ({detail})",
                           "the file may be damaged: open it and save or export it again "
                           "(a PDF can be printed to a new PDF)")


class _Worker:
    """One parsing process; it holds at most one job, so neither side can block the other's pipe."""

    def __init__(self):
        # the child finds ragglm where this process does, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen([sys.executable, "-m", "ragglm.connectors.parse_worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def send(self, job: ParseJob) -> None:
        pickle.dump((job.source, job.data, job.content_type), self.process.stdin, pickle.HIGHEST_PROTOCOL)
        self.process.stdin.flush()

    def receive(self, job: ParseJob, budget_s: float, on_progress=None) -> Document | SourceError:
        """The job's result; each page of OCR the worker reports (PageProgress) renews the budget."""
        while True:
            ready = _read_ahead(self.process.stdout) or select.select([self.process.stdout], [], [], budget_s)[0]
            if not ready:
                self.process.kill()
                self.process.wait()
                return SourceError(job.source, f"took more than {budget_s:g} s to read (or one of its pages "
                                   "did, by OCR) and was skipped",
                                   "split it into smaller files, or raise RAGGLM_PARSE_TIMEOUT (seconds)")
            try:
                message = pickle.load(self.process.stdout)
            except (EOFError, pickle.UnpicklingError, OSError):
                return SourceError(job.source, "the parser process ended while reading it",
                                   "the file may be damaged or too large to read")
            if not isinstance(message, PageProgress):
                return message
            if on_progress is not None:
                on_progress(message)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the worker ends at end of input
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _read_ahead(stream) -> bool:
    """Whether bytes of the next message wait in the stream's buffer: a progress event and the result
    written together are read into it together, and select on the pipe does not see them there."""
    os.set_blocking(stream.fileno(), False)
    try:
        return bool(stream.peek(1))
    except BlockingIOError:
        return False
    finally:
        os.set_blocking(stream.fileno(), True)


def parse_in_order(jobs: Iterable[ParseJob], workers: int | None = None,
                   on_progress: Callable[[PageProgress], None] | None = None,
                   ) -> Iterator[tuple[ParseJob, Document | SourceError]]:
    """(job, Document or SourceError) for each job, in order; each worker holds one job at a time.

    workers=0 parses in this process, with no time or memory bound: for light files only.
    on_progress is given each page of OCR done (the worker's time budget is per page there)."""
    if workers is None:
        workers = available_cores()
    if workers == 0:
        for job in jobs:
            with page_progress(on_progress):
                result = parse_job(job)
            yield job, result
        return
    pool = [_Worker() for _ in range(workers)]
    pending: deque[tuple[ParseJob, int]] = deque()  # jobs sent, oldest first, with their worker's slot
    idle = deque(range(workers))
    try:
        for job in jobs:
            if not idle:
                yield _oldest(pending, pool, idle, on_progress)
            slot = idle.popleft()
            pool[slot].send(job)
            pending.append((job, slot))
        while pending:
            yield _oldest(pending, pool, idle, on_progress)
    finally:
        for worker in pool:
            worker.close()


def _oldest(pending: deque, pool: list[_Worker], idle: deque,
            on_progress=None) -> tuple[ParseJob, Document | SourceError]:
    """Wait for the oldest job's result; its worker becomes idle (replaced first if it died)."""
    job, slot = pending.popleft()
    result = pool[slot].receive(job, parse_budget_s(), on_progress)
    if pool[slot].process.poll() is not None:
        pool[slot] = _Worker()
    idle.append(slot)
    return job, result
