"""A parsing process: reads pickled (source, data, content type) jobs on stdin, writes pickled
Documents or SourceErrors on stdout, one at a time, until its input ends."""

from __future__ import annotations

import pickle
import sys

from ragglm.connectors.parallel import ParseJob, parse_job

__all__ = ["main"]


def main() -> None:
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a reader that prints must not corrupt the results stream
    while True:
        try:
            source_name, data, content_type = pickle.load(source)
        except EOFError:
            return
        pickle.dump(parse_job(ParseJob(source_name, data, content_type)), sink, pickle.HIGHEST_PROTOCOL)
        sink.flush()


if __name__ == "__main__":
    main()
