"""Background indexing: one thread per knowledge base takes jobs in order; answering goes on meanwhile.

A job indexes its files one at a time through the Ingestor (unchanged content is skipped), then saves
once. If it fails as a whole (an error that is not one file's) the index is reloaded from its last
save and the files it brought are taken back, so the knowledge base is as it was before the job.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from ragglm.ingestor import Ingestor, IngestReport
from ragglm.web.locked_store import LockedStore
from ragglm.web.uploads import StoredFile

__all__ = ["FileTask", "Indexer", "Job", "JobBoard"]


@dataclass
class FileTask:
    name: str  # as shown: the stored file name, or the URL
    source: str | None  # the path or URL to index; None for a file refused on arrival
    status: str = "queued"  # queued | indexing | indexed | unchanged | failed
    error: str | None = None
    chunks: int = 0
    stored: StoredFile | None = None
    warnings: list[str] = field(default_factory=list)  # pages left out or read by OCR, with why
    read: dict | None = None  # how it was read (formats.how_read): pages, OCR pages, tables

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "error": self.error, "chunks": self.chunks,
                "warnings": self.warnings, "read": self.read}


@dataclass
class Job:
    kb: str
    tasks: list[FileTask]
    force: bool = False  # index again even when the content hash is unchanged
    id: str = field(default_factory=lambda: f"job-{uuid.uuid4().hex[:16]}")
    status: str = "queued"  # queued | running | done | failed
    created: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def to_dict(self) -> dict:
        done = sum(1 for t in self.tasks if t.status not in ("queued", "indexing"))
        return {"id": self.id, "object": "job", "knowledge_base": self.kb, "status": self.status,
                "created": int(self.created), "finished": self.finished and int(self.finished),
                "error": self.error, "progress": {"done": done, "total": len(self.tasks)},
                "files": [t.to_dict() for t in self.tasks]}


class JobBoard:
    """Every job by id, the most recent few hundred kept."""

    def __init__(self, keep: int = 500):
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def add(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].active:
                    break
                del self._jobs[oldest]
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def active(self, kb: str) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if job.kb == kb and job.active]

    def last_read(self, kb: str) -> dict[str, FileTask]:
        """Per source, the task that last read it (indexed or failed) among the jobs kept."""
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.kb == kb]
        return {task.source: task for job in jobs for task in job.tasks
                if task.source and task.status in ("indexed", "failed")}


class Indexer:
    def __init__(self, library, board: JobBoard):
        self.library = library
        self.board = board
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f"ragglm-index-{library.name}", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self.board.add(job)
        if not any(task.source for task in job.tasks):
            self._finish(job, "done")  # every file was refused on arrival
        else:
            self._queue.put(job)
        return job

    def stop(self) -> None:
        self._queue.put(None)

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            self._run(job)

    def _run(self, job: Job) -> None:
        kb = self.library.kb
        job.status = "running"
        try:
            changed = False
            for task in job.tasks:
                if task.source is not None:
                    changed |= self._index(kb, task, job.force)
            if changed:
                with kb.lock:
                    kb.save()
        except BaseException as exc:
            kb.reload()
            for task in job.tasks:
                if task.stored is not None and task.status != "failed":
                    task.stored.undo()
                task.status, task.error = "failed", task.error or "the job failed"
            job.error = f"{exc.__class__.__name__}: {exc}"
            self._finish(job, "failed")
            return
        for task in job.tasks:
            if task.stored is not None and task.status != "failed":
                task.stored.keep()
        self._finish(job, "done")

    def _index(self, kb, task: FileTask, force: bool) -> bool:
        """Index one file or URL; True when the store changed."""
        task.status = "indexing"
        store = LockedStore(kb, force=[task.source] if force else [])
        ingestor = Ingestor(store, kb.chunker, kb.settings.allow_private_urls)
        report = ingestor.ingest([task.source])  # a PDF or Office file in a bounded parser process
        _settle(task, report, kb)
        if task.status == "failed" and task.stored is not None:
            task.stored.undo()
        return bool(report.added or report.removed)

    @staticmethod
    def _finish(job: Job, status: str) -> None:
        job.finished = time.time()
        job.status = status


def _settle(task: FileTask, report: IngestReport, kb) -> None:
    # the stored path means nothing to whoever uploaded the file: name it as they did
    task.warnings = [line.replace(task.source, task.name) for line in [*report.warnings, *report.notes]]
    task.read = next(iter(report.read.values()), None)
    if report.errors:
        task.status, task.error = "failed", str(report.errors[0]).replace(task.source, task.name)
    elif report.added:
        task.status, task.chunks = "indexed", report.chunks
    elif report.unchanged:
        with kb.lock:
            entry = kb.store.sources.get(report.unchanged[0], {})
        task.status, task.chunks = "unchanged", len(entry.get("ids", []))
    else:
        task.status = "failed"
        task.error = "; ".join(task.warnings) or "nothing could be read from it"

