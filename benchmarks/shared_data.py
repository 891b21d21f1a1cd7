"""Where the benchmarks find the shared data sets: $RAGGLM_SHARED_DATA, else shared/data beside the
repository (or beside the folder holding it, for a worktree)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["shared_data_dir"]

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir(required: bool = False) -> Path | None:
    """The folder, or None when absent; with required=True its absence ends the script with a hint."""
    for candidate in (os.environ.get("RAGGLM_SHARED_DATA"), REPO.parent / "shared" / "data",
                      REPO.parent.parent / "shared" / "data", "/work/shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    if required:
        sys.exit("shared data folder not found: set RAGGLM_SHARED_DATA")
    return None
