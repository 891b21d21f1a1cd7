"""Connectors turn files, folders and URLs into Documents made of numbered pages."""

from ragglm.connectors.directory import (
    LOADERS,
    Collected,
    LoadReport,
    collect,
    expand_paths,
    iter_files,
    iter_jobs,
    load,
    load_file,
    load_many,
    worker_count,
)
from ragglm.connectors.fetch import fetch_url, is_url
from ragglm.connectors.parallel import ParseJob, parse_in_order

__all__ = ["LOADERS", "Collected", "LoadReport", "ParseJob", "collect", "expand_paths", "fetch_url",
           "is_url", "iter_files", "iter_jobs", "load", "load_file", "load_many", "parse_in_order",
           "worker_count"]
