"""Parse many sources over the available cores, results in the order the sources were given."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from ragglm.connectors.formats import parse
from ragglm.documents import Document
from ragglm.errors import SourceError

__all__ = ["ParseJob", "available_cores", "parse_in_order"]


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


def _parse(job: ParseJob) -> Document | tuple[str, str, str]:
    """Runs in a worker: errors travel back as plain tuples, which always pickle."""
    try:
        return parse(job.source, job.data, job.content_type)
    except SourceError as exc:
        return (exc.source, exc.problem, exc.fix)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        return (job.source, f"could not be read ({exc.__class__.__name__}: {exc})", "")


def _result(value) -> Document | SourceError:
    return SourceError(*value) if isinstance(value, tuple) else value


def parse_in_order(jobs: Iterable[ParseJob], workers: int | None = None
                   ) -> Iterator[tuple[ParseJob, Document | SourceError]]:
    """(job, Document or SourceError) for each job, in order; at most 2 x workers jobs held at once."""
    workers = workers or available_cores()
    if workers <= 1:
        for job in jobs:
            yield job, _result(_parse(job))
        return
    # spawn: the parent may hold torch threads, which a forked child must not inherit
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[tuple[ParseJob, Future]] = deque()
        for job in jobs:
            pending.append((job, pool.submit(_parse, job)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, _result(future.result())
        while pending:
            done, future = pending.popleft()
            yield done, _result(future.result())
