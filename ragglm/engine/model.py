"""One decoder-only Transformer for the Llama and GLM families, which differ only in ModelArgs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ModelArgs", "Transformer", "KVCache", "PRESETS", "MIN_COMPILED_CACHE"]

# A compiled decode step is specialised to its KV cache, and a larger cache means a new trace:
# caches sized in powers of two from here keep those recompiles to a handful.
MIN_COMPILED_CACHE = 2048


@dataclass
class ModelArgs:
    family: str = "llama"  # "llama" | "glm"
    vocab_size: int = 32000
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 32
    head_dim: int | None = None  # dim // n_heads when None
    intermediate_size: int = 11008
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_position_scale: float = 1.0  # positions are divided by this (position interpolation)
    rope_fraction: float = 1.0  # share of each head's dims that rotate (GLM: 0.5)
    rope_interleaved: bool = False  # GPT-J style pairs (GLM) instead of halves (Llama)
    qkv_bias: bool = False
    tie_embeddings: bool = False
    max_seq_len: int = 8192

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.dim // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rope_fraction)

    @property
    def parameter_count(self) -> int:
        """Weights at full size, however they are held (prepacked and quantized layers keep theirs
        as buffers, so counting a model's parameters undercounts them)."""
        q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        per_layer = self.dim * (q + 2 * kv) + q * self.dim + 3 * self.dim * self.intermediate_size + 2 * self.dim
        embeddings = self.vocab_size * self.dim * (1 if self.tie_embeddings else 2)
        return embeddings + self.n_layers * per_layer + self.dim


PRESETS: dict[str, ModelArgs] = {
    "smollm2-135m": ModelArgs(
        vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, intermediate_size=1536,
        rope_theta=100000.0, tie_embeddings=True, max_seq_len=8192,
    ),
}


class KVCache(nn.Module):
    """Preallocated keys and values, written in place at position offsets."""

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # k, v: [B, H_kv, T, D]; returns the cache up to start + T
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        q_size, kv_size = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
        self.wqkv = nn.Linear(args.dim, q_size + 2 * kv_size, bias=args.qkv_bias)
        self.wo = nn.Linear(q_size, args.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], interleaved: bool, start: int | None) -> Tensor:
        # rope: cos, sin [T, 1, rotary_dim // 2], broadcast over heads
        B, T, _ = x.shape
        heads = self.wqkv(x).view(B, T, -1, self.head_dim)  # [B, T, H + 2 Hkv, D]
        qk = apply_rope(heads[:, :, :self.n_heads + self.n_kv_heads], rope, interleaved)  # q and k in one pass
        q = qk[:, :, :self.n_heads].transpose(1, 2)  # [B, H, T, D]
        k = qk[:, :, self.n_heads:].transpose(1, 2)  # [B, Hkv, T, D]
        v = heads[:, :, self.n_heads + self.n_kv_heads:].transpose(1, 2)
        if start is None or self.kv_cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True)
        else:
            k, v = self.kv_cache.update(start, k, v)
            if start == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True)
            elif T == 1 and q.dtype == torch.float32:  # in bf16, flash attention's own float32 math wins
                y = one_query_attention(q, k, v)
            else:
                mask = causal_mask(start, T, x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU with gate and up projections fused into one matrix ([gate | up])."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w_gate_up = nn.Linear(args.dim, 2 * args.intermediate_size, bias=False)
        self.w_down = nn.Linear(args.intermediate_size, args.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x, rope, interleaved, start):
        x = x + self.attention(self.attention_norm(x), rope, interleaved, start)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = None if args.tie_embeddings else nn.Linear(args.dim, args.vocab_size, bias=False)
        self.cache_len = 0  # tokens the KV cache can hold; 0 when none is set up
        self.rope_cache: tuple[Tensor, Tensor] | None = None  # cos, sin for positions < cache_len
        self._decode_step: Callable[..., Tensor] | None = None  # see use_decode_step
        self._sized_caches = False

    @property
    def decode_step(self) -> Callable[..., Tensor] | None:
        """The step decode() runs instead of forward(), if one was given."""
        return self._decode_step

    def use_decode_step(self, step: Callable[..., Tensor] | None, *, sized_caches: bool = False) -> None:
        """Make decode() run `step(tokens, start=start)` -> logits [B, 1, V]; None restores forward().

        sized_caches: the step is specialised to its KV cache (a compiled trace), so caches are then
        sized in powers of two from MIN_COMPILED_CACHE, which keeps its recompiles to a handful.
        """
        self._decode_step = step
        self._sized_caches = step is not None and sized_caches

    def setup_cache(self, batch: int, max_seq_len: int) -> None:
        if self._sized_caches:
            max_seq_len = max(MIN_COMPILED_CACHE, 1 << (max_seq_len - 1).bit_length())
        max_seq_len = min(max_seq_len, self.args.max_seq_len)
        if self.cache_len >= max_seq_len and self.layers[0].attention.kv_cache.k.shape[0] == batch:
            return
        weight = self.tok_embeddings.weight
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(
                batch, self.args.n_kv_heads, max_seq_len, self.args.head_dim, weight.dtype, weight.device
            )
        self.cache_len = max_seq_len
        positions = torch.arange(max_seq_len, device=weight.device)
        self.rope_cache = rope_tables(self.args, positions, weight.dtype)

    def decode(self, tokens: Tensor, start: int) -> Tensor:
        """One generation step: tokens [B, 1] at position start -> logits [B, 1, V]."""
        if self._decode_step is not None:
            return self._decode_step(tokens, start=start)
        return self.forward(tokens, start=start, last_only=True)

    def forward(self, tokens: Tensor, start: int | None = None, last_only: bool = False) -> Tensor:
        """tokens [B, T] -> logits [B, T, V] (or [B, 1, V] with last_only).

        start=None runs without the KV cache; an int writes this chunk's KV at that offset
        and attends to everything the cache holds before it.
        """
        T = tokens.shape[1]
        offset = 0 if start is None else start
        if start is not None and self.rope_cache is not None and offset + T <= self.cache_len:
            cos, sin = self.rope_cache[0][offset:offset + T], self.rope_cache[1][offset:offset + T]
        else:
            positions = torch.arange(offset, offset + T, device=tokens.device)
            cos, sin = rope_tables(self.args, positions, self.tok_embeddings.weight.dtype)
        rope = (cos[:, None], sin[:, None])  # [T, 1, rotary_dim // 2]: one table for every head
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, rope, self.args.rope_interleaved, start)
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        if self.output is None or (last_only and self.args.tie_embeddings):
            # A tied head reads the embedding table, float32 with bf16 linears too: for one row it costs
            # little, and logits rounded to bf16 tie close candidates (SmolLM2's first answer token).
            return F.linear(x.to(self.tok_embeddings.weight.dtype), self.tok_embeddings.weight).float()
        return self.output(x).float()  # called as a module so that a quantized head runs its own kernel


def one_query_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attention of one new token over the cache: q [B, H, 1, D], k and v [B, Hkv, L, D] -> [B, H, 1, D].

    Two small matrix products and a softmax; CPU flash attention spends most of its time on setup
    for a single query row (decode of SmolLM2 in float32: 26 instead of 32 ms a token).
    """
    B, H, _, D = q.shape
    groups = q.reshape(B, k.shape[1], H // k.shape[1], D) * D ** -0.5  # [B, Hkv, H/Hkv, D]
    scores = groups @ k.transpose(-1, -2)  # [B, Hkv, H/Hkv, L]
    return (torch.softmax(scores, dim=-1) @ v).reshape(B, H, 1, D)


def causal_mask(start: int, T: int, device) -> Tensor | None:
    """[T, start+T] boolean mask: query i (at position start+i) sees keys at positions <= start+i."""
    if T == 1:
        return None
    keys = torch.arange(start + T, device=device)
    queries = torch.arange(start, start + T, device=device)
    return keys[None, :] <= queries[:, None]


def rope_tables(args: ModelArgs, positions: Tensor, dtype) -> tuple[Tensor, Tensor]:
    """cos, sin of shape [T, rotary_dim // 2], computed in float32 and then cast."""
    half = args.rotary_dim // 2
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, half, device=positions.device, dtype=torch.float32) / half))
    angles = torch.outer(positions.float() / args.rope_position_scale, inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor], interleaved: bool) -> Tensor:
    """Rotate the first rotary_dim dims of x [..., D]; the rest pass through.

    cos and sin [..., rotary_dim // 2] broadcast against x's leading dims: [T, r/2] for x [B, H, T, D],
    [T, 1, r/2] for x [B, T, H, D].
    """
    cos, sin = rope
    rotary_dim = cos.shape[-1] * 2
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    else:
        x1, x2 = rot.chunk(2, dim=-1)
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return torch.cat((rotated, rest), dim=-1) if rest.shape[-1] else rotated
