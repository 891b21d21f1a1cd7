"""A parsing process: reads pickled (source, data, content type) jobs on stdin, writes pickled
Documents or SourceErrors on stdout, one at a time, until its input ends; before a result, a
PageProgress for each page of OCR done."""

from __future__ import annotations

import os
import pickle
import resource
import sys

from ragglm.connectors.ocr_pages import page_progress
from ragglm.connectors.parallel import DEFAULT_PARSE_MEMORY_MB, ParseJob, parse_job

__all__ = ["main"]


def main() -> None:
    limit_mb = int(os.environ.get("RAGGLM_PARSE_MEMORY_MB") or DEFAULT_PARSE_MEMORY_MB)
    resource.setrlimit(resource.RLIMIT_AS, (limit_mb * 2**20, resource.RLIM_INFINITY))
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a reader that prints must not corrupt the results stream
    while True:
        try:
            source_name, data, content_type = pickle.load(source)
        except EOFError:
            return
        with page_progress(lambda event: _send(event, sink)):
            result = parse_job(ParseJob(source_name, data, content_type))
        _send(result, sink)


def _send(message, sink) -> None:
    """A result, or a page of OCR done (which tells the parent this process is alive)."""
    pickle.dump(message, sink, pickle.HIGHEST_PROTOCOL)
    sink.flush()


if __name__ == "__main__":
    main()
