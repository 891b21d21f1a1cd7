"""A Transformer built on the meta device given its tensors, with the checks every loader needs."""

from __future__ import annotations

import torch

from ragglm.engine.model import ModelArgs, Transformer
from ragglm.errors import ModelNotFoundError

__all__ = ["meta_model", "assemble_model"]


def meta_model(args: ModelArgs) -> Transformer:
    """The model's structure without memory behind it (its layer names, or a frame to assign into)."""
    with torch.device("meta"):
        return Transformer(args)


def assemble_model(model: Transformer, state: dict, device, source: str, unfit: str) -> Transformer:
    """A meta model given the tensors of `state` (assigned, not copied), on device and in eval mode.

    source names what was read in the "lacks N tensors" error; unfit is the start of the error for
    tensors whose shapes disagree with the configuration they came with.
    """
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ModelNotFoundError(f"{source} lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    try:
        model.load_state_dict(state, assign=True, strict=True)
    except RuntimeError as exc:  # tensors whose shapes disagree with the config or metadata
        lines = str(exc).strip().splitlines()
        raise ModelNotFoundError(f"{unfit} ({lines[-1].strip() if lines else exc.__class__.__name__}); "
                                 "download or convert the model again") from exc
    return model.to(device).eval()
