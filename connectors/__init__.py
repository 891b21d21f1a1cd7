"""Connectors turn files and folders into Documents made of numbered pages."""

from ragglm.connectors.directory import (
    LOADERS,
    LoadReport,
    expand_paths,
    iter_files,
    load,
    load_file,
    load_many,
)

__all__ = ["LOADERS", "LoadReport", "expand_paths", "iter_files", "load", "load_file", "load_many"]
