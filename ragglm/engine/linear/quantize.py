"""Weight-only int8 and int4 quantization of the Transformer's linear layers.

int8: symmetric, one scale per output channel.
int4: asymmetric, one (scale, zero) pair per group of `group_size` input columns, two values per byte.

Weights are quantized one tensor at a time (as a checkpoint streams in), into a portable form
(`QuantizedWeight`) that is also what a quantized checkpoint stores. The modules then hand it to
torch's packed kernels where this torch build and device have them, or keep it for a
dequantize-then-matmul fallback; `Int8Linear.path` / `Int4Linear.path` say which runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import groupby

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ragglm.engine.linear.packed_linear import Bf16Linear, PackedLinear
from ragglm.errors import RagglmError

__all__ = [
    "QuantizationError", "QuantConfig", "QuantizedWeight", "Int8Linear", "Int4Linear", "SCHEMES",
    "quantize_int8", "quantize_int4", "dequantize", "quantize_weight", "fill_row_blocks", "concat_rows",
    "linear_names", "kernel_paths", "quantized_bytes", "cpu_int4_blocks", "cpu_int4_pack", "use_int4_packer",
]

SCHEMES = ("int8", "int4")
# int4 group sizes tried in this order when a layer's input width is not a multiple of the configured one
_FALLBACK_GROUPS = (128, 64, 32)
_PACK_ROWS = 512  # int4 rows converted to the kernel layout at a time (bounds the int32 scratch)
_QUANT_BLOCK_ELEMENTS = 1 << 22  # weight elements quantized at a time (16 MB of float32 scratch)
# The packed kernels cost one pass over the weight per input row; past this many rows (prefill) it is
# cheaper to convert the weight once and run a single matrix product (kernels.int8_prompt_products).
KERNEL_MAX_ROWS = 48
_CPU_BLOCK_ROWS = 64  # rows per block in the CPU int4 kernel's layout
# (layer, rows [M, in] bf16, pieces) -> [M, out] bf16: a faster product for the many rows of a prompt, set
# on a layer where one exists (kernels.int8_prompt_products); pieces: the row counts of prompt pieces
# to round on their own (None: all the rows are one)
PromptProduct = Callable[[nn.Module, Tensor, list[int] | None], Tensor]


class QuantizationError(RagglmError, ValueError):
    """A quantization that cannot be applied as asked; the message says what would work."""


@dataclass(frozen=True)
class QuantConfig:
    scheme: str  # "int8" | "int4"
    # int4 only: input columns sharing one scale and zero. 32 is the block of GGUF's Q4_0/Q4_1, so
    # re-quantizing such a file keeps its grid (64 mixes two blocks' scales: SmolLM2 perplexity +40%)
    group_size: int = 32

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise QuantizationError(f"quantization {self.scheme!r} is not one of {', '.join(SCHEMES)} or none")
        if self.scheme == "int4" and self.group_size not in (32, 64, 128, 256):
            raise QuantizationError(f"int4 group size {self.group_size} must be 32, 64, 128 or 256 (e.g. int4:g64)")

    @classmethod
    def parse(cls, spec: str | QuantConfig | None) -> QuantConfig | None:
        """None, "int8", "int4" or "int4:g32" (group size after the colon)."""
        if spec is None or isinstance(spec, QuantConfig):
            return spec
        spec = spec.strip().lower()
        if spec in ("", "none", "fp32", "float", "off"):
            return None
        scheme, _, group = spec.partition(":")
        if group:
            if not group.lstrip("g").isdigit():
                raise QuantizationError(f"quantization {spec!r}: write the group size as int4:g64")
            return cls(scheme, int(group.lstrip("g")))
        return cls(scheme)

    def group_for(self, in_features: int) -> int:
        """The configured group size, or the largest smaller one that divides the layer's width."""
        for group in (self.group_size, *[g for g in _FALLBACK_GROUPS if g < self.group_size]):
            if in_features % group == 0:
                return group
        raise QuantizationError(f"int4 needs layer input widths divisible by 32; one layer has {in_features} "
                                "(use int8 for this model)")

    @property
    def name(self) -> str:
        return self.scheme if self.scheme == "int8" else f"int4:g{self.group_size}"


@dataclass
class QuantizedWeight:
    """A linear layer's weight [out, in] in portable quantized form.

    int8: qweight int8 [out, in], scales float32 [out]; w = q * scale.
    int4: qweight uint8 [out, in // 2] (column 2j in the low nibble, 2j+1 in the high one),
          scales and zeros float32 [out, in // group]; w = (q - 8) * scale + zero, q in 0..15.
    """

    scheme: str
    qweight: Tensor
    scales: Tensor
    zeros: Tensor | None = None
    group_size: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        out, cols = self.qweight.shape
        return (out, cols * 2) if self.scheme == "int4" else (out, cols)

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        out = {f"{prefix}.qweight": self.qweight, f"{prefix}.scales": self.scales}
        if self.zeros is not None:
            out[f"{prefix}.zeros"] = self.zeros
        return out


def quantize_int8(weight: Tensor) -> QuantizedWeight:
    w = weight.float()  # may be `weight` itself: only new tensors are changed in place below
    scales = w.abs().amax(dim=1).clamp(min=1e-10) / 127.0  # [out]
    q = (w / scales[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return QuantizedWeight("int8", q, scales)


def quantize_int4(weight: Tensor, group_size: int) -> QuantizedWeight:
    out, inp = weight.shape
    w = weight.float().reshape(out, inp // group_size, group_size)  # may share memory with `weight`
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)  # [out, groups]
    scales = ((hi - lo) / 15.0).clamp(min=1e-10)
    q = (w - lo[..., None]).div_(scales[..., None]).round_().clamp_(0, 15).to(torch.uint8).reshape(out, inp)
    del w
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    # the kernels compute (q - 8) * scale + zero, so the zero is the value at q = 8
    zeros = lo + 8.0 * scales
    return QuantizedWeight("int4", packed.contiguous(), scales, zeros, group_size)


def quantize_weight(weight: Tensor, config: QuantConfig) -> QuantizedWeight:
    """Quantize by blocks of rows (rows are independent, so the result is the same as in one go).

    Each block's float scratch stays around `_QUANT_BLOCK_ELEMENTS` whatever the weight's dtype and
    size, and the blocks are written straight into the result rather than concatenated.
    """
    out, inp = weight.shape
    group = config.group_for(inp) if config.scheme == "int4" else 0
    rows = max(64, _QUANT_BLOCK_ELEMENTS // inp // 64 * 64)

    def block(part: Tensor) -> QuantizedWeight:
        return quantize_int8(part) if config.scheme == "int8" else quantize_int4(part, group)

    if out <= rows:
        return block(weight)
    return fill_row_blocks(out, rows, lambda start: block(weight[start:start + rows]))


def fill_row_blocks(total: int, step: int, part_at: Callable[[int], QuantizedWeight]) -> QuantizedWeight:
    """One weight of `total` rows from the parts quantized `step` rows at a time (part_at(start)),
    written into the result as they come rather than concatenated at the end."""
    result: QuantizedWeight | None = None
    for start in range(0, total, step):
        part = part_at(start)
        if result is None:
            result = QuantizedWeight(part.scheme, _rows_like(part.qweight, total), _rows_like(part.scales, total),
                                     None if part.zeros is None else _rows_like(part.zeros, total), part.group_size)
        end = start + part.qweight.shape[0]
        result.qweight[start:end] = part.qweight
        result.scales[start:end] = part.scales
        if result.zeros is not None:
            result.zeros[start:end] = part.zeros
    return result


def _rows_like(tensor: Tensor, rows: int) -> Tensor:
    return tensor.new_empty((rows, *tensor.shape[1:]))


def concat_rows(parts: list[QuantizedWeight]) -> QuantizedWeight:
    """One weight from quantized blocks of consecutive output rows."""
    first = parts[0]
    zeros = torch.cat([p.zeros for p in parts]) if first.zeros is not None else None
    return QuantizedWeight(first.scheme, torch.cat([p.qweight for p in parts]),
                           torch.cat([p.scales for p in parts]), zeros, first.group_size)


def _int4_values(qweight: Tensor) -> Tensor:
    """uint8 [out, in // 2] -> int32 [out, in] values 0..15."""
    values = torch.empty(qweight.shape[0], qweight.shape[1] * 2, dtype=torch.int32, device=qweight.device)
    values[:, 0::2] = qweight & 0x0F
    values[:, 1::2] = qweight >> 4
    return values


def dequantize(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> Tensor:
    if qw.scheme == "int8":
        return (qw.qweight.float() * qw.scales.float()[:, None]).to(dtype)
    out, inp = qw.shape
    q = _int4_values(qw.qweight).float().reshape(out, inp // qw.group_size, qw.group_size)
    w = (q - 8.0) * qw.scales.float()[..., None] + qw.zeros.float()[..., None]
    return w.reshape(out, inp).to(dtype)


@cache
def _kernel_available(scheme: str, device_type: str) -> bool:
    """Whether this torch build runs the packed kernel on this device (tried once on a tiny layer)."""
    try:
        x = torch.zeros(1, 64, device=device_type)
        if scheme == "int8":
            torch.ops.aten._weight_int8pack_mm(
                x, torch.zeros(16, 64, dtype=torch.int8, device=device_type), torch.ones(16, device=device_type))
            return True
        # CUDA's kernel takes bf16 inputs and scales only, and tiles the input width by 128: a
        # float32 probe of width 64 would fail there and send every layer to the fallback
        dtype, width = (torch.bfloat16, 256) if device_type == "cuda" else (torch.float32, 64)
        x = torch.zeros(1, width, device=device_type, dtype=dtype)
        packed = _pack_int4(torch.zeros(16, width, dtype=torch.int32), device_type)
        _int4_mm(x, packed, 32, torch.ones(width // 32, 16, 2, device=device_type, dtype=dtype), device_type)
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def _pack_int4(q: Tensor, device_type: str) -> Tensor:
    """int32 [out, in] values 0..15 -> the kernel's packed layout for this device."""
    if device_type == "cpu":
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
    # the CUDA layout takes the values two per byte, high nibble first
    pairs = (q[:, 0::2] << 4 | q[:, 1::2]).to(torch.uint8).to(device_type)
    return torch.ops.aten._convert_weight_to_int4pack(pairs, 8)


def _int4_mm(x: Tensor, packed: Tensor, group_size: int, scales_and_zeros: Tensor, device_type: str) -> Tensor:
    if device_type == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
    return torch.ops.aten._weight_int4pack_mm(x, packed, group_size, scales_and_zeros)


def cpu_int4_blocks(packed: Tensor, in_features: int, dtype: torch.dtype) -> Tensor:
    """The CPU int4 kernel's layout, uint8 [out, in // 2] -> values 0..15 in dtype, [out // 64, in, 64].

    Each block of 64 output rows is stored column by column, rows n and n + 32 sharing a byte (low,
    high nibble), which makes every block the transpose of its slice of the weight.
    """
    halves = packed.reshape(-1, in_features, _CPU_BLOCK_ROWS // 2)
    values = torch.empty(*halves.shape[:2], _CPU_BLOCK_ROWS, dtype=dtype, device=packed.device)
    values[..., :_CPU_BLOCK_ROWS // 2].copy_(halves & 0x0F)
    values[..., _CPU_BLOCK_ROWS // 2:].copy_(halves >> 4)
    return values


def cpu_int4_pack(qweight: Tensor) -> Tensor:
    """uint8 [out, in // 2] (neighbouring columns share a byte) -> the CPU int4 kernel's layout, the
    same bytes torch's own conversion gives but without an int32 copy of the weight.

    In a block of 64 rows, rows n and 32 + n share a byte of each column: column 2j takes the low
    nibbles of their byte j, column 2j + 1 the high ones. The nibbles are moved eight bytes at a
    time (shifts and masks on int64 words, which never mix two bytes once masked), then the bytes
    are transposed once.
    """
    out, half = qweight.shape
    blocks = out // _CPU_BLOCK_ROWS
    packed = torch.empty(blocks, half, 2, _CPU_BLOCK_ROWS // 2, dtype=torch.uint8)
    step = max(1, (1 << 22) // (_CPU_BLOCK_ROWS * max(half, 1)))  # blocks at a time: 4 MB of scratch
    words = qweight.contiguous().view(torch.int64).reshape(blocks, 2, _CPU_BLOCK_ROWS // 2, -1)
    for first in range(0, blocks, step):
        top, bottom = words[first:first + step].unbind(1)  # rows 0..31 and 32..63 [b, 32, in // 16]
        pairs = torch.empty(top.shape[0], 2, *top.shape[1:], dtype=torch.int64)  # low nibbles, high nibbles
        torch.bitwise_and(top, _LOW_NIBBLES, out=pairs[:, 0]).bitwise_or_((bottom << 4).bitwise_and_(_HIGH_NIBBLES))
        torch.bitwise_and(bottom, _HIGH_NIBBLES, out=pairs[:, 1]).bitwise_or_((top >> 4).bitwise_and_(_LOW_NIBBLES))
        # [b, 2, 32, in // 2] -> [b, in // 2, 2, 32]
        packed[first:first + step] = pairs.view(torch.uint8).permute(0, 3, 1, 2)
    return packed.reshape(out, half)


def use_int4_packer(packer: Callable[[Tensor], Tensor | None] | None) -> None:
    """Have CPU int4 layers packed by `packer` (cpu_int4_pack's input and result; it returns None
    where it cannot, and cpu_int4_pack runs): a native one is registered from a unit above."""
    global _int4_packer
    _int4_packer = packer


_int4_packer: Callable[[Tensor], Tensor | None] | None = None
_LOW_NIBBLES = 0x0F0F0F0F0F0F0F0F
_HIGH_NIBBLES = -0x0F0F0F0F0F0F0F10  # 0xF0F0F0F0F0F0F0F0 as a signed int64


@cache
def _cpu_int4_layout_known() -> bool:
    """Whether this torch build packs int4 as cpu_int4_blocks reads it (checked once on random values)."""
    if not _kernel_available("int4", "cpu"):
        return False
    q = torch.randint(0, 16, (2 * _CPU_BLOCK_ROWS, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    unpacked = cpu_int4_blocks(_pack_int4(q, "cpu"), 64, torch.int32).permute(0, 2, 1).reshape(q.shape)
    return torch.equal(unpacked, q)


def _int4_cpu_blocks_mm(x: Tensor, packed: Tensor, group_size: int, scales_and_zeros: Tensor) -> Tensor:
    """x [M, in] @ dequantized weight.T, dequantizing straight from the kernel layout (no transposes)."""
    rows, in_features = x.shape
    groups = in_features // group_size
    weight_t = cpu_int4_blocks(packed, in_features, x.dtype)  # [blocks, in, 64]
    blocks = weight_t.shape[0]
    # scales_and_zeros [groups, out, 2] -> [blocks, groups, 1, 64] each
    scales, zeros = (part.to(x.dtype).reshape(groups, blocks, 1, _CPU_BLOCK_ROWS).transpose(0, 1)
                     for part in scales_and_zeros.unbind(-1))
    # (q - 8) * scale + zero, written as q * scale + (zero - 8 * scale): two passes over the weight
    weight_t.view(blocks, groups, group_size, -1).mul_(scales).add_(zeros - 8 * scales)
    y = torch.matmul(x, weight_t)  # [blocks, M, 64]
    return y.transpose(0, 1).reshape(rows, -1)


class _QuantizedLinear(nn.Module):
    """What Int8Linear and Int4Linear share: the product of rows in the compute dtype (`_product`),
    then the input's dtype and the bias; and a prompt's pieces multiplied together."""

    in_features: int
    out_features: int
    compute_dtype: torch.dtype | None
    prompt_product: PromptProduct | None

    def _product(self, rows: Tensor, compute: torch.dtype) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        compute = self.compute_dtype or x.dtype
        return self._finish(self._product(x.reshape(-1, self.in_features).to(compute), compute), x)

    def forward_pieces(self, x: Tensor, pieces: list[int]) -> Tensor:
        """self(x) for x [1, sum(pieces), in] that holds a prompt's pieces of these lengths, each
        piece's rows as self(piece) gives them. Consecutive pieces that the prompt product takes
        share one integer product (it rounds each piece's rows on their own): at 128 rows oneDNN's
        int8 product of a 4096-wide input runs at 560 GOP/s on two cores, from 512 rows at 780."""
        compute = self.compute_dtype or x.dtype
        if x.shape[0] != 1 or self.prompt_product is None or compute != torch.bfloat16:
            return torch.cat([self(part) for part in x.split(pieces, dim=1)], dim=1)
        rows = x.reshape(-1, self.in_features).to(compute)
        parts, lo = [], 0
        for large, run in groupby(pieces, key=lambda n: n > KERNEL_MAX_ROWS):
            run = list(run)
            if large:
                parts.append(self.prompt_product(self, rows[lo:lo + sum(run)], run))
            else:
                parts.extend(self._product(part, compute) for part in rows[lo:lo + sum(run)].split(run))
            lo += sum(run)
        return self._finish(torch.cat(parts) if len(parts) > 1 else parts[0], x)

    def _finish(self, y: Tensor, x: Tensor) -> Tensor:
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


class Int8Linear(_QuantizedLinear):
    """y = x @ (q * scale).T + bias, through _weight_int8pack_mm where available."""

    def __init__(self, qw: QuantizedWeight, bias: Tensor | None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.out_features, self.in_features = qw.shape
        self.compute_dtype: torch.dtype | None = None  # matmul input dtype; None: the input's own
        self.prompt_product: PromptProduct | None = None
        device = torch.device(device)
        self.path = "_weight_int8pack_mm" if _kernel_available("int8", device.type) else "dequantize"
        self.register_buffer("qweight", qw.qweight.to(device))
        self.register_buffer("scales", qw.scales.to(device, dtype))
        self.register_buffer("bias", None if bias is None else bias.to(device, dtype))

    def compute_in(self, dtype: torch.dtype) -> None:
        """Feed the kernel inputs of this dtype (whatever the model's), keeping the scales in it too."""
        self.compute_dtype = dtype
        self.scales = self.scales.to(dtype)

    def _product(self, rows: Tensor, compute: torch.dtype) -> Tensor:
        if self.path == "_weight_int8pack_mm" and rows.shape[0] <= KERNEL_MAX_ROWS:
            return torch.ops.aten._weight_int8pack_mm(rows.contiguous(), self.qweight, self.scales.to(compute))
        if self.prompt_product is not None and compute == torch.bfloat16:
            return self.prompt_product(self, rows)
        # the scale is per output channel, so it can wait until after the product
        return F.linear(rows, self.qweight.to(compute)) * self.scales.to(compute)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, path={self.path}"


class Int4Linear(_QuantizedLinear):
    """y = x @ ((q - 8) * scale + zero).T + bias, through the int4 packed kernel where available.

    On the CPU, a weight whose zeros are all 0 and whose scales float16 holds exactly (GGUF's Q4_0)
    keeps only its scales, as float16 `group_scales` [out // 64, groups, 64] (each 64-row block of the
    packed layout followed by its scales in the order a decode step reads them): the file's values
    to the bit, and 18 bytes read per 32 weights instead of 20. PyTorch's kernels take (scale, zero)
    pairs; those are built per call (about 1 ms for 90M weights, against 8 ms for an 8-row product).
    """

    def __init__(self, qw: QuantizedWeight, bias: Tensor | None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.out_features, self.in_features = qw.shape
        self.group_size = qw.group_size
        self.compute_dtype: torch.dtype | None = None  # matmul input dtype; None: the input's own
        self.prompt_product: PromptProduct | None = None
        device = torch.device(device)
        kernel = (self.out_features % 16 == 0 and _kernel_available("int4", device.type)
                  and (device.type != "cuda" or self.in_features % 128 == 0))
        if kernel:
            self.path = "_weight_int4pack_mm_for_cpu" if device.type == "cpu" else "_weight_int4pack_mm"
            cpu_layout = device.type == "cpu" and self.out_features % _CPU_BLOCK_ROWS == 0 and _cpu_int4_layout_known()
            if cpu_layout:
                packed = _int4_packer(qw.qweight) if _int4_packer is not None else None
                packed = cpu_int4_pack(qw.qweight) if packed is None else packed
            else:  # converted in row blocks so the int32 scratch stays small (the layout is blocked by rows)
                blocks = [_pack_int4(_int4_values(qw.qweight[i:i + _PACK_ROWS]), device.type)
                          for i in range(0, self.out_features, _PACK_ROWS)]
                packed = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
            self.register_buffer("packed", packed)
            if cpu_layout and _zeros_free_in_float16(qw):
                blocked = qw.scales.to(torch.float16).unflatten(0, (-1, _CPU_BLOCK_ROWS)).transpose(1, 2)
                self.register_buffer("group_scales", blocked.contiguous())
                self.register_buffer("scales_and_zeros", None)
            else:  # [groups, out, 2] as the kernels take it
                scales_and_zeros = torch.stack((qw.scales.t(), qw.zeros.t()), dim=-1)
                self.register_buffer("scales_and_zeros", scales_and_zeros.to(device, dtype).contiguous())
                self.register_buffer("group_scales", None)
        else:
            self.path = "dequantize"
            self.register_buffer("packed", qw.qweight.to(device))
            self.register_buffer("scales", qw.scales.to(device, dtype))
            self.register_buffer("zeros", qw.zeros.to(device, dtype))
        self.register_buffer("bias", None if bias is None else bias.to(device, dtype))

    def compute_in(self, dtype: torch.dtype) -> None:
        """Feed the kernel inputs of this dtype (whatever the model's), keeping scales and zeros in it too."""
        self.compute_dtype = dtype
        for name in ("scales_and_zeros", "scales", "zeros"):
            if getattr(self, name, None) is not None:
                setattr(self, name, getattr(self, name).to(dtype))

    def kernel_scales(self, dtype: torch.dtype) -> Tensor:
        """[groups, out, 2] (scale, zero) pairs in dtype, as PyTorch's int4 kernels take them."""
        if self.group_scales is None:
            return self.scales_and_zeros.to(dtype)
        scales = self.group_scales.to(dtype).permute(1, 0, 2).reshape(-1, self.out_features)  # [groups, out]
        return torch.stack((scales, torch.zeros_like(scales)), dim=-1)

    def _product(self, rows: Tensor, compute: torch.dtype) -> Tensor:
        if self.path == "dequantize":
            qw = QuantizedWeight("int4", self.packed, self.scales, self.zeros, self.group_size)
            return F.linear(rows, dequantize(qw, compute))
        if rows.shape[0] > KERNEL_MAX_ROWS and self.prompt_product is not None and compute == torch.bfloat16:
            return self.prompt_product(self, rows)
        if rows.shape[0] > KERNEL_MAX_ROWS and self._cpu_layout:
            return _int4_cpu_blocks_mm(rows, self.packed, self.group_size, self.kernel_scales(compute))
        return _int4_mm(rows.contiguous(), self.packed, self.group_size, self.kernel_scales(compute), rows.device.type)

    @property
    def _cpu_layout(self) -> bool:
        return (self.path == "_weight_int4pack_mm_for_cpu" and self.out_features % _CPU_BLOCK_ROWS == 0
                and _cpu_int4_layout_known())

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, group={self.group_size}, path={self.path}"


def _zeros_free_in_float16(qw: QuantizedWeight) -> bool:
    """Whether every zero is 0 and every scale a float16 value (Q4_0's blocks)."""
    return not qw.zeros.any() and torch.equal(qw.scales.to(torch.float16).to(qw.scales.dtype), qw.scales)


def linear_names(model: nn.Module) -> list[str]:
    """Qualified names of the nn.Linear layers to quantize (all of them: QKV, output, MLP, head)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def kernel_paths(model: nn.Module) -> dict[str, int]:
    """How many layers run each path, e.g. {"_weight_int4pack_mm_for_cpu": 210, "onednn_packed_bf16": 1}."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, (Int8Linear, Int4Linear, PackedLinear, Bf16Linear)):
            counts[module.path] = counts.get(module.path, 0) + 1
    return counts


def quantized_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes held by linear-layer weights (quantized values plus their scales and zeros) and by the rest."""
    linear = other = 0
    seen: set[int] = set()
    args = getattr(model, "args", None)
    # a tied head's packed copy is the embedding again, which the linear-layer figures leave out
    tied_head = getattr(model, "output", None) if args is not None and args.tie_embeddings else None
    for module in model.modules():
        if type(module).__name__ == "KVCache":  # working memory, not weights
            continue
        is_linear = isinstance(module, (Int8Linear, Int4Linear, PackedLinear, Bf16Linear, nn.Linear)) and module is not tied_head
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor is None or id(tensor) in seen or tensor.device.type == "meta":
                continue
            seen.add(id(tensor))
            size = tensor.numel() * tensor.element_size()
            if is_linear and name != "bias":
                linear += size
            else:
                other += size
    return {"linear": linear, "other": other}
