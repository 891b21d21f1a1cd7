"""LoRA adapters in PEFT's format, merged into the float weights as a checkpoint streams in.

A PEFT LoRA folder holds `adapter_config.json` (r, lora_alpha, target_modules, ...) and
`adapter_model.safetensors` (or `.bin`) with a pair per adapted module M, named in the base
checkpoint's own naming: `base_model.model.M.lora_A.weight` [r, in] and `...lora_B.weight` [out, r].
The merged weight is W + scaling * B @ A, with scaling = lora_alpha / r (lora_alpha / sqrt(r) under
rsLoRA). Merging happens on each weight as it arrives, before any quantization, so the adapted model
runs exactly as fast as the base one: int8/int4 and the native decode step never see the adapter.

A module of the checkpoint may be part of one of our fused weights (q_proj of `wqkv`, gate_proj of
`w_gate_up`); its update then lands on that part's rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.loading.adapters.errors import AdapterError
from ragglm.engine.loading.checkpoint_files import iter_checkpoint_tensors
from ragglm.engine.loading.weight_names import Naming
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.errors import ModelNotFoundError

__all__ = ["LORA_CONFIG", "LoraConfig", "LoraPair", "LoraAdapter", "read_lora", "LoraMerge"]

LORA_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."
_UNSUPPORTED = {"use_dora": "DoRA", "lora_bias": "a LoRA bias"}


@dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: float
    fan_in_fan_out: bool = False
    use_rslora: bool = False
    rank_pattern: dict = field(default_factory=dict)  # module pattern -> r
    alpha_pattern: dict = field(default_factory=dict)  # module pattern -> lora_alpha
    base_model: str | None = None  # base_model_name_or_path: what the adapter was trained on

    def scaling(self, module: str, rank: int) -> float:
        """The factor of B @ A for one module, with PEFT's per-module rank and alpha overrides."""
        alpha = float(self.alpha_pattern[_pattern_of(self.alpha_pattern, module)]) \
            if _pattern_of(self.alpha_pattern, module) else self.alpha
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank

    def rank(self, module: str) -> int:
        pattern = _pattern_of(self.rank_pattern, module)
        return int(self.rank_pattern[pattern]) if pattern else self.r


def _pattern_of(patterns: dict, module: str) -> str | None:
    # as PEFT matches them: the pattern is the module's full name or a dotted suffix of it
    for pattern in patterns:
        if re.match(rf"(.*\.)?({pattern})$", module):
            return pattern
    return None


@dataclass
class LoraPair:
    """One adapted module: its low-rank factors and their scaling."""

    module: str  # the module's name in the base checkpoint, e.g. model.layers.0.self_attn.q_proj
    a: Tensor  # [r, in] (embeddings: [r, vocab])
    b: Tensor  # [out, r] (embeddings: [dim, r])
    scaling: float
    embedding: bool = False  # lora_embedding_A/B: the update is (B @ A).T

    def delta(self) -> Tensor:
        """The float32 update of the module's weight, [out, in] as the checkpoint stores it."""
        update = (self.b.float() @ self.a.float()) * self.scaling
        return update.t() if self.embedding else update


@dataclass
class LoraAdapter:
    path: Path
    config: LoraConfig
    pairs: dict[str, LoraPair]  # module name -> its pair
    # whole tensors the adapter trained (modules_to_save, biases under bias: all / lora_only), by their
    # name in the base checkpoint: they replace the checkpoint's
    replaced: dict[str, Tensor] = field(default_factory=dict)

    @property
    def trained_for(self) -> str:
        return f" (it was trained for {self.config.base_model})" if self.config.base_model else ""


def read_lora(folder: Path) -> LoraAdapter:
    """The adapter in a PEFT LoRA folder; AdapterError names the file and what is wrong."""
    config = _read_config(folder)
    try:
        tensors = dict(iter_checkpoint_tensors(folder))
    except ModelNotFoundError as exc:
        raise AdapterError(f"LoRA adapter {folder}: {exc}") from exc
    factors: dict[str, dict[str, Tensor]] = {}
    replaced: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        # an adapted module's own tensors, when saved (an embedding whose vocabulary may have grown,
        # trained biases), are its base layer's
        name = name.replace(".base_layer.", ".")
        match = re.fullmatch(r"(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?(?:\.weight)?",
                             name)
        if match is None and name.endswith((".weight", ".bias")):
            replaced[name.removeprefix(_PREFIX)] = tensor
            continue
        if match is None:
            raise AdapterError(f"LoRA adapter {folder}: tensor {name!r} is neither a LoRA factor (lora_A / "
                               "lora_B) nor a module's weight or bias; save the adapter again with PEFT")
        module = match.group(1).removeprefix(_PREFIX)
        factors.setdefault(module, {})[match.group(2)] = tensor
    pairs = {module: _pair(folder, config, module, parts) for module, parts in factors.items()}
    if not pairs:
        raise AdapterError(f"LoRA adapter {folder}: its weights file holds no lora_A / lora_B tensors")
    return LoraAdapter(folder, config, pairs, replaced)


def _read_config(folder: Path) -> LoraConfig:
    path = folder / LORA_CONFIG
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{path}: not readable JSON ({exc.__class__.__name__}); save the adapter again "
                           "with PEFT's save_pretrained") from exc
    if not isinstance(raw, dict):
        raise AdapterError(f"{path}: not a JSON object; save the adapter again with PEFT's save_pretrained")
    peft_type = str(raw.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        raise AdapterError(f"{path}: PEFT adapter type {peft_type} is not supported (LORA is; P-Tuning v2 "
                           "folders come with a config.json holding pre_seq_len)")
    for key, what in _UNSUPPORTED.items():
        if raw.get(key):
            raise AdapterError(f"{path}: {what} ({key}: true) is not supported; merge the adapter with PEFT's "
                               "merge_and_unload() and load the merged model instead")
    try:
        return LoraConfig(
            r=int(raw["r"]), alpha=float(raw.get("lora_alpha", raw["r"])),
            fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)), use_rslora=bool(raw.get("use_rslora", False)),
            rank_pattern=dict(raw.get("rank_pattern") or {}), alpha_pattern=dict(raw.get("alpha_pattern") or {}),
            base_model=raw.get("base_model_name_or_path"))
    except (KeyError, TypeError, ValueError) as exc:
        raise AdapterError(f"{path}: r and lora_alpha must be numbers ({exc!r})") from exc


def _pair(folder: Path, config: LoraConfig, module: str, parts: dict[str, Tensor]) -> LoraPair:
    embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
    a_key, b_key = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
    if a_key not in parts or b_key not in parts:
        missing = a_key if a_key not in parts else b_key
        raise AdapterError(f"LoRA adapter {folder}: {module} has no {missing}; save the adapter again")
    a, b = parts[a_key], parts[b_key]
    rank = config.rank(module)
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rank or b.shape[1] != rank:
        raise AdapterError(f"LoRA adapter {folder}: {module} has {a_key} {tuple(a.shape)} and {b_key} "
                           f"{tuple(b.shape)}, which do not share the rank r={rank} of {LORA_CONFIG}")
    # fan_in_fan_out describes base weights stored [in, out] (GPT-2's Conv1D); every family loaded
    # here stores [out, in] in nn.Linear, for which PEFT itself turns the flag off, so the update
    # is B @ A either way (and its shape is checked against the weight's below)
    return LoraPair(module, a, b, config.scaling(module, rank), embedding)


# rows of each part of our fused weights, in their order
_PART_ROWS = {
    "attention.wqkv.weight": lambda a: (a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.n_kv_heads * a.head_dim),
    "attention.wqkv.bias": lambda a: (a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim, a.n_kv_heads * a.head_dim),
    "feed_forward.w_gate_up.weight": lambda a: (a.intermediate_size, a.intermediate_size),
}


@dataclass
class _Target:
    source: str  # what the adapter calls it
    rows: slice  # the rows of our weight the update lands on
    transform: object = None  # the naming's transform of the checkpoint's tensor, applied to the update too
    pair: LoraPair | None = None  # a low-rank update
    replace: Tensor | None = None  # or a whole new value


class LoraMerge:
    """Where each of an adapter's updates lands in our naming, checked against the model's shapes
    before any weight is read; then merges them into a stream of our (name, tensor)."""

    def __init__(self, adapter: LoraAdapter, naming: Naming, args: ModelArgs, model: str):
        self.adapter, self.args, self.model = adapter, args, model
        with torch.device("meta"):
            shapes = {name: tuple(t.shape) for name, t in Transformer(args).state_dict().items()}
        self.targets: dict[str, list[_Target]] = {}
        for module, pair in adapter.pairs.items():
            ours, target = self._place(f"{module}.weight", module, naming)
            target.pair = pair
            self._check(module, pair, ours, target, shapes)
            self.targets.setdefault(ours, []).append(target)
        for name, tensor in adapter.replaced.items():
            ours, target = self._place(name, name, naming)
            target.replace = tensor
            self._check_whole(name, tensor, ours, target, shapes)
            self.targets.setdefault(ours, []).append(target)

    def _mismatch(self, message: str) -> AdapterError:
        return AdapterError(f"LoRA adapter {self.adapter.path} does not fit model {self.model}: {message}"
                            f"{self.adapter.trained_for}; use the adapter with the model it was trained on")

    def _place(self, name: str, source: str, naming: Naming) -> tuple[str, _Target]:
        """Our tensor and its rows for one of the checkpoint's tensor names."""
        if name in naming.top:
            ours = naming.top[name]
            if ours == "output.weight" and self.args.tie_embeddings:
                raise self._mismatch(f"it adapts {source}, which this model ties to its embeddings")
            return ours, _Target(source, slice(None))
        if name.startswith(naming.layer_prefix):
            layer, _, rest = name[len(naming.layer_prefix):].partition(".")
            transform = naming.transforms.get(rest)
            if rest in naming.layer:
                return f"layers.{layer}.{naming.layer[rest]}", _Target(source, slice(None), transform)
            fused = naming.fused_into(rest)
            if fused is not None and fused[0] in _PART_ROWS:
                ours, parts = fused
                rows = _PART_ROWS[ours](self.args)
                start = sum(rows[:parts.index(rest)])
                return f"layers.{layer}.{ours}", _Target(source, slice(start, start + rows[parts.index(rest)]),
                                                          transform)
        raise self._mismatch(f"it adapts {source}, which is not a tensor of this model "
                             f"(its layers are named {naming.layer_prefix}N.*)")

    def _check_whole(self, name: str, tensor: Tensor, ours: str, target: _Target, shapes: dict) -> None:
        if ours not in shapes:
            raise self._mismatch(f"it stores {name}, and the model has no {ours}")
        want = (len(range(shapes[ours][0])[target.rows]), *shapes[ours][1:])
        if tuple(tensor.shape) != want:
            raise self._mismatch(f"it stores {name} as {list(tensor.shape)} but the model's is {list(want)} "
                                 "(a resized vocabulary?)")

    def _check(self, module: str, pair: LoraPair, ours: str, target: _Target, shapes: dict) -> None:
        if ours not in shapes:
            raise self._mismatch(f"it adapts {module}, and the model has no {ours}")
        out, inp = shapes[ours]
        rows = len(range(out)[target.rows])
        update = (pair.a.shape[1], pair.b.shape[0]) if pair.embedding else (pair.b.shape[0], pair.a.shape[1])
        if update != (rows, inp):
            raise self._mismatch(f"{module} gets a [{update[0]}, {update[1]}] update (lora_B x lora_A) but the "
                                 f"model's weight is [{rows}, {inp}]")

    def merged(self, tensors: Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
        """The stream with every adapted weight merged (in float32, then back to its own dtype)."""
        pending = self.pending()
        for name, tensor in tensors:
            if name in pending:
                tensor = self.merge(name, tensor, pending)
            yield name, tensor
        self.finish(pending)

    def pending(self) -> dict[str, list[_Target]]:
        """The updates still to merge, by our weight name: hand it to merge() and finish()."""
        return dict(self.targets)

    def merge(self, name: str, tensor: Tensor, pending: dict[str, list[_Target]]) -> Tensor:
        """tensor with the updates of our weight `name` added; a new tensor (a memory-mapped
        checkpoint is never written)."""
        weight = tensor.float().clone() if tensor.dtype == torch.float32 else tensor.float()
        targets = pending.pop(name)
        for target in targets:  # whole values first, the low-rank updates go on top of them
            if target.replace is not None:
                weight[target.rows] = self._transformed(target, target.replace.float())
        for target in targets:
            if target.pair is not None:
                weight[target.rows] += self._transformed(target, target.pair.delta())
        return weight.to(tensor.dtype)

    def _transformed(self, target: _Target, tensor: Tensor) -> Tensor:
        return target.transform(tensor, self.args) if target.transform is not None else tensor

    def finish(self, pending: dict[str, list[_Target]]) -> None:
        if pending:
            name = next(iter(pending))
            raise self._mismatch(f"it adapts {pending[name][0].source}, which the checkpoint never "
                                 f"provided (as {name})")
