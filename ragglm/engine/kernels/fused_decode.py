"""The one-token decode step as one native call (csrc/fused_decode.cpp), for float32 models with
bf16, int8 or int4 linear layers on CPU: the default ("auto", and quantized) on CPUs with bf16 units.

A batch-1 decode step reads every weight once and does little else, so its floor is the time to
stream the weights from memory. Run as ~300 PyTorch operations it spends a third more on dispatch
and on forking threads for each one; the native step runs all of it in one parallel region. The
source is compiled on first use with the system's C++ compiler (about a second) and kept in a
per-user cache; without a compiler the model decodes as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.kernels.huge_pages import huge_pages_available, move_into_huge_pages
from ragglm.engine.linear.packed_linear import Bf16Linear
from ragglm.engine.linear.quantize import Int4Linear, Int8Linear
from ragglm.engine.model import Transformer
from ragglm.paths import cache_root

__all__ = ["FusedDecoder", "attach_fused_decode", "build_library", "load_library", "native_step_available",
           "streamed_weights", "int4_readable", "int4_scales", "KernelBuildError"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "fused_decode.cpp"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]


class KernelBuildError(RuntimeError):
    """The native decode step could not be compiled or loaded."""


BF16, INT8, INT4, INT4_SYMMETRIC = 0, 1, 2, 3  # the weight formats of csrc/fused_decode.cpp
INT4_BLOCK, MAX_INT4_GROUPS = 64, 2048


class _Matrix(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("scales", ctypes.c_void_p), ("format", ctypes.c_int64),
                ("group", ctypes.c_int64)]


class _LayerWeights(ctypes.Structure):
    _fields_ = [("attention_norm", ctypes.c_void_p), ("wqkv", _Matrix), ("qkv_bias", ctypes.c_void_p),
                ("wo", _Matrix), ("ffn_norm", ctypes.c_void_p), ("w_gate_up", _Matrix), ("w_down", _Matrix),
                ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p)]


class _DecodeModel(ctypes.Structure):
    _fields_ = (
        [(name, ctypes.c_int64) for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "inter",
                                            "vocab", "rotary_dim", "cache_len", "interleaved", "kv_half")]
        + [("norm_eps", ctypes.c_float), ("embedding", ctypes.c_void_p), ("norm", ctypes.c_void_p),
           ("head", _Matrix)]
        + [(name, ctypes.c_void_p) for name in ("cos", "sin", "layers", "scratch")]
    )


def kernel_cache_dir() -> Path:
    """$RAGGLM_KERNEL_DIR, else the kernels folder of ragglm's cache."""
    override = os.environ.get("RAGGLM_KERNEL_DIR")
    return Path(override) if override else cache_root() / "kernels"


def _compiler() -> str:
    for candidate in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    raise KernelBuildError("no C++ compiler on PATH (g++, c++ or clang++); install one (e.g. apt install g++)")


def _cpu_signature() -> str:
    # -march=native code is only valid on CPUs with the same features, so they are part of the key
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {flags.strip()}"


def build_library(compiler: str | None = None) -> Path:
    """Compile the native step once per source, compiler and CPU; returns the shared library."""
    compiler = compiler or _compiler()
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *FLAGS, _cpu_signature()]).encode()).hexdigest()
    target = kernel_cache_dir() / f"fused_decode-{key[:16]}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # written under a temporary name and renamed: a concurrent process never loads half a file
        handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    except OSError as error:
        raise KernelBuildError(f"cannot write to {target.parent} ({error.strerror}); point RAGGLM_KERNEL_DIR "
                               "at a writable folder") from error
    os.close(handle)
    try:
        built = subprocess.run([compiler, *FLAGS, "-o", partial, str(SOURCE)], capture_output=True, text=True)
        if built.returncode != 0:
            first = (built.stderr.strip().splitlines() or [f"exit status {built.returncode}"])[0]
            raise KernelBuildError(f"{compiler} could not build {SOURCE.name}: {first[:300]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


@cache
def load_library() -> ctypes.CDLL:
    """The native step, built on first use (KernelBuildError when it cannot be)."""
    target = build_library()
    try:
        library = ctypes.CDLL(str(target))
    except OSError as error:
        raise KernelBuildError(f"could not load {target}: {error}") from error
    library.decode_step.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    library.decode_step.restype = None
    library.decode_scratch_floats.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    library.decode_scratch_floats.restype = ctypes.c_int64
    library.dequantize_int4_int8.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 5 + [ctypes.c_void_p] * 2
    library.dequantize_int4_int8.restype = None
    library.quantize_rows_int8.argtypes = ([ctypes.c_void_p] + [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_int64]
                                           + [ctypes.c_void_p] * 3)
    library.quantize_rows_int8.restype = None
    library.gather_columns_int8.argtypes = ([ctypes.c_void_p] + [ctypes.c_int64] * 2 + [ctypes.c_void_p]
                                            + [ctypes.c_int64] * 2 + [ctypes.c_void_p])
    library.gather_columns_int8.restype = None
    library.scale_int32_bf16.argtypes = ([ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_void_p])
    library.scale_int32_bf16.restype = None
    library.pack_int4_blocks.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_void_p]
    library.pack_int4_blocks.restype = None
    library.int4_products_round_x_to_int8.argtypes = []
    library.int4_products_round_x_to_int8.restype = ctypes.c_int64
    return library


@cache
def native_step_available() -> bool:
    """Whether the native step builds and loads here; a failure is logged once and not retried
    (a broken compiler would otherwise run again for every model loaded)."""
    try:
        load_library()
    except KernelBuildError as error:
        log.warning("decoding without the native step (fused_decode): %s", error)
        return False
    return True


def _readable(linear: torch.nn.Module) -> bool:
    """Whether the native step can read this layer's weights as they are."""
    if isinstance(linear, Int8Linear):
        return linear.qweight.dtype == torch.int8 and linear.qweight.is_contiguous()
    if isinstance(linear, Int4Linear):
        return int4_readable(linear)
    return isinstance(linear, Bf16Linear)


def int4_readable(linear: Int4Linear) -> bool:
    """Whether the native library reads this int4 layer: PyTorch's CPU layout with float16 scales
    alone or bf16 (scale, zero) pairs."""
    if (not linear._cpu_layout or not linear.packed.is_contiguous()
            or linear.in_features // linear.group_size > MAX_INT4_GROUPS):
        return False
    name, kind = int4_scales(linear)
    scales = getattr(linear, name)
    return scales.is_contiguous() and scales.dtype == (torch.float16 if kind == INT4_SYMMETRIC else torch.bfloat16)


def int4_scales(linear: Int4Linear) -> tuple[str, int]:
    """The name of the int4 layer's scale buffer and the native format that reads it."""
    return ("group_scales", INT4_SYMMETRIC) if linear.group_scales is not None else ("scales_and_zeros", INT4)


def _weight_names(linear: torch.nn.Module) -> tuple[str, ...]:
    if isinstance(linear, Int8Linear):
        return ("qweight",)
    if isinstance(linear, Int4Linear):
        return ("packed", int4_scales(linear)[0])
    return ("weight",)


def _is_fusable(model: Transformer) -> bool:
    args, embedding = model.args, model.tok_embeddings.weight
    qkv = [layer.attention.wqkv for layer in model.layers]
    others = [model.output] + [linear for layer in model.layers for linear in (
        layer.attention.wo, layer.feed_forward.w_gate_up, layer.feed_forward.w_down)]
    norms = [model.norm] + [norm for layer in model.layers for norm in (layer.attention_norm, layer.ffn_norm)]
    return (embedding.device.type == "cpu" and embedding.dtype == torch.float32
            and args.n_heads % args.n_kv_heads == 0
            and all(_readable(linear) for linear in qkv + others)
            and all(linear.bias is None for linear in others)
            # gate and up rows are split at intermediate_size, which must start an int4 block
            and (args.intermediate_size % INT4_BLOCK == 0
                 or not any(isinstance(layer.feed_forward.w_gate_up, Int4Linear) for layer in model.layers))
            # the native step reads these by pointer as plain float32 arrays
            and all(t.is_contiguous() and t.dtype == torch.float32 for t in [embedding] + [n.weight for n in norms]))


class FusedDecoder:
    """model.decode for batch 1 through the native step; weights are read in place, not copied."""

    def __init__(self, model: Transformer, library: ctypes.CDLL):
        self.model = model
        self.library = library
        args = model.args
        self.qkv_biases = [None if layer.attention.wqkv.bias is None else layer.attention.wqkv.bias.float()
                           for layer in model.layers]
        self.scales: list[Tensor] = []  # float32 copies of int8 scales, alive while the step points at them
        self.layers = (_LayerWeights * args.n_layers)()
        for slot, layer, bias in zip(self.layers, model.layers, self.qkv_biases, strict=True):
            slot.attention_norm = layer.attention_norm.weight.data_ptr()
            slot.wqkv = self._matrix(layer.attention.wqkv)
            slot.qkv_bias = None if bias is None else bias.data_ptr()
            slot.wo = self._matrix(layer.attention.wo)
            slot.ffn_norm = layer.ffn_norm.weight.data_ptr()
            slot.w_gate_up = self._matrix(layer.feed_forward.w_gate_up)
            slot.w_down = self._matrix(layer.feed_forward.w_down)
        self.spec = _DecodeModel(
            dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads, n_kv_heads=args.n_kv_heads,
            head_dim=args.head_dim, inter=args.intermediate_size, vocab=args.vocab_size,
            rotary_dim=args.rotary_dim, interleaved=int(args.rope_interleaved), norm_eps=args.norm_eps,
            embedding=model.tok_embeddings.weight.data_ptr(), norm=model.norm.weight.data_ptr(),
            head=self._matrix(model.output), layers=ctypes.cast(self.layers, ctypes.c_void_p),
        )
        self.bound_cache = None  # the KV cache the pointers refer to; setup_cache may replace it
        self.scratch: Tensor | None = None

    def _matrix(self, linear: torch.nn.Module) -> _Matrix:
        if isinstance(linear, Int8Linear):
            self.scales.append(linear.scales.float().contiguous())
            return _Matrix(linear.qweight.data_ptr(), self.scales[-1].data_ptr(), INT8, 0)
        if isinstance(linear, Int4Linear):
            name, kind = int4_scales(linear)
            return _Matrix(linear.packed.data_ptr(), getattr(linear, name).data_ptr(), kind, linear.group_size)
        return _Matrix(linear.weight.data_ptr(), None, BF16, 0)

    def _bind_cache(self, threads: int) -> None:
        model = self.model
        for slot, layer in zip(self.layers, model.layers, strict=True):
            slot.k_cache = layer.attention.kv_cache.k.data_ptr()
            slot.v_cache = layer.attention.kv_cache.v.data_ptr()
        cos, sin = model.rope_cache
        self.rope = (cos.contiguous(), sin.contiguous())
        self.spec.cos, self.spec.sin = self.rope[0].data_ptr(), self.rope[1].data_ptr()
        self.spec.cache_len = model.cache_len
        self.spec.kv_half = int(model.layers[0].attention.kv_cache.k.dtype == torch.float16)
        floats = self.library.decode_scratch_floats(ctypes.byref(self.spec), threads)
        self.scratch = torch.empty(floats, dtype=torch.float32)
        self.spec.scratch = self.scratch.data_ptr()
        self.bound_cache = (model.layers[0].attention.kv_cache, threads)

    def __call__(self, tokens: Tensor, start: int) -> Tensor:
        """tokens [1, 1] at position start -> logits [1, 1, V] (float32)."""
        model = self.model
        kv = model.layers[0].attention.kv_cache
        if (tokens.shape != (1, 1) or kv is None or kv.k.shape[0] != 1 or start >= model.cache_len
                or kv.k.dtype not in (torch.float32, torch.float16)):
            return model.forward(tokens, start=start, last_only=True)
        threads = torch.get_num_threads()
        if self.bound_cache != (kv, threads):
            self._bind_cache(threads)
        token = int(tokens[0, 0])
        if not 0 <= token < model.args.vocab_size:  # the native step would read outside the embedding
            raise IndexError(f"token id {token} is outside the vocabulary of {model.args.vocab_size}")
        logits = torch.empty(model.args.vocab_size, dtype=torch.float32)
        self.library.decode_step(ctypes.byref(self.spec), token, start, threads, logits.data_ptr())
        return logits.view(1, 1, -1)


def streamed_weights(model: Transformer) -> list[tuple[torch.nn.Module, str]]:
    """The weights a native step reads, in the order it reads them."""
    linears = [linear for layer in model.layers for linear in (
        layer.attention.wqkv, layer.attention.wo, layer.feed_forward.w_gate_up, layer.feed_forward.w_down)]
    return [(linear, name) for linear in linears + [model.output] for name in _weight_names(linear)]


def attach_fused_decode(model: Transformer) -> bool:
    """Make model.decode run the native step when the model's layout allows it; builds the step
    on first use (KernelBuildError when it cannot). The weights it streams move into huge pages
    where the system has them."""
    if not _is_fusable(model):
        return False
    library = load_library()
    if huge_pages_available():
        try:
            move_into_huge_pages(streamed_weights(model))
        except OSError as error:  # no room for the buffer: nothing has moved yet, decode from where they are
            log.warning("weights stay on ordinary pages (%s); decoding is about 10%% slower", error)
    model.use_decode_step(FusedDecoder(model, library))
    return True
