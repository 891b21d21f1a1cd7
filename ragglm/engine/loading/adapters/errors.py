"""The error of an adapter that cannot be read or does not fit the model it is loaded with."""

from __future__ import annotations

from ragglm.errors import RagglmError

__all__ = ["AdapterError"]


class AdapterError(RagglmError):
    """An adapter folder that is unreadable or made for another model: the model cannot be loaded
    with it (exit 3, like a missing model)."""

    exit_code = 3
    http_status = 400
    code = "adapter_mismatch"
