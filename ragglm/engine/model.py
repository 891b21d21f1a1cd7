"""One decoder-only Transformer for the Llama and GLM families, which differ only in ModelArgs.

ChatGLM-6B differs most: LayerNorm, biases everywhere, a GeLU MLP, post-LN residuals scaled by
alpha, and 2D rotary positions with a prefix-LM mask (see glm_prefix_lm.py). A P-Tuning v2 prefix
(see set_kv_prefix) is KV in every layer that every token sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.bias import causal_lower_right

from ragglm.engine.glm_prefix_lm import PromptLayout, positions_2d, prefix_lm_mask, rope_tables_2d

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
    norm: str = "rms"  # "rms" | "layer" (LayerNorm with bias)
    mlp: str = "swiglu"  # "swiglu" | "gelu": one up projection, tanh GeLU (w_gate_up then holds only "up")
    linear_bias: bool = False  # biases on the output projection and the MLP
    # None: x + f(norm(x)); a number alpha: norm(x) * alpha + f(norm(x)) (ChatGLM-6B's post-LN residual)
    residual_scale: float | None = None
    position_mode: str = "1d"  # "1d" | "glm_2d": ChatGLM-6B's two rotary halves and prefix-LM mask
    sop_token_id: int | None = None  # glm_2d: <sop> ends the context
    gmask_token_id: int | None = None  # glm_2d: [gMASK] / [MASK] fix the first position of the answer
    mask_token_id: int | None = None

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.dim // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.rope_fraction)

    @property
    def bidirectional_context(self) -> bool:
        """The prompt's context attends both ways: it is prefilled in one pass, and its KV depends on
        every context token, so no prefix of it can be reused for another prompt."""
        return self.position_mode == "glm_2d"

    @property
    def parameter_count(self) -> int:
        """Weights at full size, however they are held (prepacked and quantized layers keep theirs
        as buffers, so counting a model's parameters undercounts them)."""
        q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        mlp = (3 if self.mlp == "swiglu" else 2) * self.dim * self.intermediate_size
        per_layer = self.dim * (q + 2 * kv) + q * self.dim + mlp + 2 * self.dim
        embeddings = self.vocab_size * self.dim * (1 if self.tie_embeddings else 2)
        return embeddings + self.n_layers * per_layer + self.dim


PRESETS: dict[str, ModelArgs] = {
    "smollm2-135m": ModelArgs(
        vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, intermediate_size=1536,
        rope_theta=100000.0, tie_embeddings=True, max_seq_len=8192,
    ),
}


FLOAT16_MAX = 65504.0


class KVCache(nn.Module):
    """Preallocated keys and values, written in place at position offsets.

    A KV prefix (P-Tuning) takes the first `offset` slots; token i's KV is then at slot offset + i.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype, device,
                 prefix: tuple[Tensor, Tensor] | None = None):
        super().__init__()
        self.offset = 0 if prefix is None else prefix[0].shape[1]
        self.widened: tuple[Tensor, Tensor] | None = None
        self.widened_len = 0  # slots of `widened` written
        shape = (batch, n_kv_heads, self.offset + max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        if prefix is not None:  # prefix k, v: [H_kv, P, D]
            self.k[:, :, :self.offset] = prefix[0]
            self.v[:, :, :self.offset] = prefix[1]

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        # k, v: [B, H_kv, T, D]; returns the cache up to start + T, with the prefix before it (widened,
        # while a prompt prefills into a float16 cache)
        if self.k.dtype == torch.float16:  # a value past float16's range would become infinite
            k, v = k.clamp(-FLOAT16_MAX, FLOAT16_MAX), v.clamp(-FLOAT16_MAX, FLOAT16_MAX)
        end = self.offset + start + k.shape[2]
        self.k[:, :, self.offset + start:end] = k
        self.v[:, :, self.offset + start:end] = v
        if self.widened is None:
            return self.k[:, :, :end], self.v[:, :, :end]
        for cache, wide in zip((self.k, self.v), self.widened, strict=True):
            wide[:, :, self.widened_len:end] = cache[:, :, self.widened_len:end]
        self.widened_len = end
        return self.widened[0][:, :, :end], self.widened[1][:, :, :end]

    def widen_into(self, buffers: tuple[Tensor, Tensor] | None) -> None:
        """Keep wider copies of the keys and values in buffers [B, H_kv, >= slots, D] (None: stop),
        each written once: a prompt's pieces then attend to them without widening the whole cache
        again for every piece (at 2,048 tokens in pieces of 128, 40% of attention's time)."""
        self.widened, self.widened_len = buffers, 0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(args: ModelArgs) -> nn.Module:
    if args.norm == "layer":
        return nn.LayerNorm(args.dim, eps=args.norm_eps)
    return RMSNorm(args.dim, args.norm_eps)


def linear_in_pieces(layer: nn.Module, x: Tensor, pieces: list[int] | None) -> Tensor:
    """layer(x); with pieces, x [B, sum(pieces), in] holds a prompt's pieces of these lengths, each
    of whose rows come out as layer(piece) gives them (a layer that can multiply them together does)."""
    if pieces is None or len(pieces) == 1:
        return layer(x)
    if hasattr(layer, "forward_pieces"):
        return layer.forward_pieces(x, pieces)
    return torch.cat([layer(part) for part in x.split(pieces, dim=1)], dim=1)


# Rows of consecutive prompt pieces whose linear products run as one (Transformer.prefill_by_layer):
# oneDNN's int8 product reaches its rate from about 512 rows, and the activations stay bounded.
BATCHED_PIECE_ROWS = 512


@dataclass(frozen=True)
class PromptPiece:
    """One piece of a prompt run through a block with others: its length, rotary tables, first
    position in the cache and mask, as Block.forward takes them."""

    length: int
    rope: tuple[Tensor, Tensor]
    start: int | None
    mask: Tensor | None = None


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        q_size, kv_size = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
        self.wqkv = nn.Linear(args.dim, q_size + 2 * kv_size, bias=args.qkv_bias)
        self.wo = nn.Linear(q_size, args.dim, bias=args.linear_bias)
        self.rope_halves = args.position_mode == "glm_2d"  # each half of a head rotates by its own positions
        self.kv_cache: KVCache | None = None
        self.kv_prefix: tuple[Tensor, Tensor] | None = None  # P-Tuning keys, values [Hkv, P, D]

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], interleaved: bool, start: int | None,
                mask: Tensor | None = None) -> Tensor:
        return self.forward_pieces(x, [PromptPiece(x.shape[1], rope, start, mask)], interleaved)

    def forward_pieces(self, x: Tensor, pieces: list[PromptPiece], interleaved: bool) -> Tensor:
        """forward of each piece in turn, x [B, sum of lengths, dim] holding them all: the
        projections may take all the rows at once (linear_in_pieces), attention goes piece by piece."""
        lengths = [piece.length for piece in pieces]
        heads = linear_in_pieces(self.wqkv, x, lengths)
        parts = heads.split(lengths, dim=1) if len(pieces) > 1 else [heads]
        attended = [self.attend(part, piece.rope, interleaved, piece.start, piece.mask)
                    for part, piece in zip(parts, pieces, strict=True)]
        return linear_in_pieces(self.wo, torch.cat(attended, dim=1) if len(attended) > 1 else attended[0], lengths)

    def attend(self, heads: Tensor, rope: tuple[Tensor, Tensor], interleaved: bool, start: int | None,
               mask: Tensor | None = None) -> Tensor:
        """wqkv's output [B, T, (H + 2 Hkv) D] -> the heads' attention [B, T, H D], the KV written."""
        # rope: cos, sin [T, 1, rotary_dim // 2], broadcast over heads ([B, T, 1, 2, D // 4] in halves)
        # mask: None for causal attention over the cache, else [B or 1, 1, T, keys] (True: seen)
        B, T, _ = heads.shape
        heads = heads.view(B, T, -1, self.head_dim)  # [B, T, H + 2 Hkv, D]
        qk = heads[:, :, :self.n_heads + self.n_kv_heads]
        if self.rope_halves:
            qk = apply_rope(qk.unflatten(-1, (2, self.head_dim // 2)), rope, False).flatten(-2)
        else:
            qk = apply_rope(qk, rope, interleaved)  # q and k in one pass
        q = qk[:, :, :self.n_heads].transpose(1, 2)  # [B, H, T, D]
        k = qk[:, :, self.n_heads:].transpose(1, 2)  # [B, Hkv, T, D]
        v = heads[:, :, self.n_heads + self.n_kv_heads:].transpose(1, 2)
        if start is None or self.kv_cache is None:
            if self.kv_prefix is not None:
                k = torch.cat((self.kv_prefix[0].expand(B, -1, -1, -1).to(k.dtype), k), dim=2)
                v = torch.cat((self.kv_prefix[1].expand(B, -1, -1, -1).to(v.dtype), v), dim=2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                               enable_gqa=True)
        else:
            k, v = self.kv_cache.update(start, k, v)
            if k.dtype != q.dtype:  # a float16 cache: attention reads its rounded keys and values in q's dtype
                k, v = k.to(q.dtype), v.to(q.dtype)
            if mask is not None:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            elif start == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=True)
            elif T == 1 and q.dtype == torch.float32:  # in bf16, flash attention's own float32 math wins
                y = one_query_attention(q, k, v)
            elif heads.device.type == "cuda":
                # a boolean mask would keep flash attention out; a lower-right causal bias lets it in
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(T, start + T),
                                                   enable_gqa=True)
            else:
                mask = causal_mask(start, T, heads.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return y.transpose(1, 2).reshape(B, T, -1)


class FeedForward(nn.Module):
    """SwiGLU with gate and up projections fused into one matrix ([gate | up]); or, with mlp="gelu",
    one up projection and tanh GeLU (the same attribute names, so every linear layer is found alike)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gelu = args.mlp == "gelu"
        up_rows = args.intermediate_size * (1 if self.gelu else 2)
        self.w_gate_up = nn.Linear(args.dim, up_rows, bias=args.linear_bias)
        self.w_down = nn.Linear(args.intermediate_size, args.dim, bias=args.linear_bias)

    def forward(self, x: Tensor, pieces: list[int] | None = None) -> Tensor:
        if self.gelu:
            return linear_in_pieces(self.w_down, F.gelu(linear_in_pieces(self.w_gate_up, x, pieces), approximate="tanh"),
                                    pieces)
        gate, up = linear_in_pieces(self.w_gate_up, x, pieces).chunk(2, dim=-1)
        return linear_in_pieces(self.w_down, F.silu(gate) * up, pieces)


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = make_norm(args)
        self.attention = Attention(args)
        self.ffn_norm = make_norm(args)
        self.feed_forward = FeedForward(args)
        self.residual_scale = args.residual_scale

    def forward(self, x, rope, interleaved, start, mask=None):
        return self.forward_pieces(x, [PromptPiece(x.shape[1], rope, start, mask)], interleaved)

    def forward_pieces(self, x: Tensor, pieces: list[PromptPiece], interleaved: bool) -> Tensor:
        """forward of each piece in turn, x [B, sum of lengths, dim] holding them all: each piece's
        rows come out as forward(piece) gives them, while the linear layers may take all the rows
        at once (linear_in_pieces); only attention goes piece by piece."""
        lengths = [piece.length for piece in pieces]
        if self.residual_scale is None:
            x = x + self.attention.forward_pieces(self.attention_norm(x), pieces, interleaved)
            return x + self.feed_forward(self.ffn_norm(x), lengths)
        normed = self.attention_norm(x)
        x = normed * self.residual_scale + self.attention.forward_pieces(normed, pieces, interleaved)
        normed = self.ffn_norm(x)
        return normed * self.residual_scale + self.feed_forward(normed, lengths)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = make_norm(args)
        self.output = None if args.tie_embeddings else nn.Linear(args.dim, args.vocab_size, bias=False)
        self.cache_len = 0  # tokens the KV cache can hold; 0 when none is set up
        self.rope_cache: tuple[Tensor, Tensor] | None = None  # cos, sin for positions < cache_len
        self._decode_step: Callable[..., Tensor] | None = None  # see use_decode_step
        self._sized_caches = False
        self.prompt_layouts: list[PromptLayout] | None = None  # glm_2d: of the prompts in the KV cache
        self.kv_prefix_id: str | None = None  # names the P-Tuning prefix, if any (see set_kv_prefix)
        self.kv_dtype: torch.dtype | None = None  # of the KV cache; None: the embedding's

    @property
    def cache_dtype(self) -> torch.dtype:
        """The dtype setup_cache gives keys and values: kv_dtype, else the embedding's."""
        return self.kv_dtype or self.tok_embeddings.weight.dtype

    @property
    def kv_bytes_per_position(self) -> int:
        """Bytes of keys and values one position takes in the cache, over all layers."""
        args = self.args
        return 2 * args.n_layers * args.n_kv_heads * args.head_dim * self.cache_dtype.itemsize

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
        weight = self.tok_embeddings.weight
        dtype = self.cache_dtype
        cache = self.layers[0].attention.kv_cache
        if self.cache_len >= max_seq_len and cache.k.shape[0] == batch and cache.k.dtype == dtype:
            return
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(
                batch, self.args.n_kv_heads, max_seq_len, self.args.head_dim, dtype, weight.device,
                prefix=layer.attention.kv_prefix,
            )
        self.cache_len = max_seq_len
        positions = torch.arange(max_seq_len, device=weight.device)
        self.rope_cache = self._rope_tables(positions, weight.dtype)

    @property
    def kv_prefix_len(self) -> int:
        prefix = self.layers[0].attention.kv_prefix if len(self.layers) else None
        return 0 if prefix is None else prefix[0].shape[1]

    def set_kv_prefix(self, prefix: list[tuple[Tensor, Tensor]] | None, name: str | None = None) -> None:
        """Install a KV prefix (P-Tuning v2): per layer keys and values [Hkv, P, D], seen by every
        token and not rotated; None removes it. name identifies it (prefix-cache keys include it).

        KV caches are rebuilt on next use; while a prefix is installed, decode() runs forward().
        """
        if prefix is not None:
            if len(prefix) != len(self.layers):
                raise ValueError(f"KV prefix has {len(prefix)} layers, the model {len(self.layers)}")
            want = (self.args.n_kv_heads, self.args.head_dim)
            for keys, values in prefix:
                if keys.shape != values.shape or keys.ndim != 3 or (keys.shape[0], keys.shape[2]) != want:
                    raise ValueError(f"KV prefix keys {tuple(keys.shape)} and values {tuple(values.shape)} "
                                     f"do not fit [kv heads {want[0]}, P, head dim {want[1]}]")
        weight = self.tok_embeddings.weight
        for i, layer in enumerate(self.layers):
            layer.attention.kv_prefix = None if prefix is None else tuple(
                t.to(weight.device, weight.dtype) for t in prefix[i])
            layer.attention.kv_cache = None
        self.cache_len = 0
        self.kv_prefix_id = None if prefix is None else (name or "kv-prefix")

    def _rope_tables(self, positions: Tensor, dtype) -> tuple[Tensor, Tensor]:
        if self.args.position_mode == "glm_2d":
            return rope_tables_2d(self.args.head_dim, self.args.rope_theta, positions, dtype)
        return rope_tables(self.args, positions, dtype)

    def decode(self, tokens: Tensor, start: int) -> Tensor:
        """One generation step: tokens [B, 1] at position start -> logits [B, 1, V].

        A step given to use_decode_step serves 1D models without a KV prefix (the native step knows
        neither 2D positions nor a prefix); the others decode through forward().
        """
        if self._decode_step is not None and self.args.position_mode == "1d" and not self.kv_prefix_len:
            return self._decode_step(tokens, start=start)
        return self.forward(tokens, start=start, last_only=True)

    def forward(self, tokens: Tensor, start: int | None = None, last_only: bool = False) -> Tensor:
        """tokens [B, T] -> logits [B, T, V] (or [B, 1, V] with last_only).

        start=None runs without the KV cache; an int writes this chunk's KV at that offset
        and attends to everything the cache holds before it.
        """
        if self.args.position_mode == "glm_2d":
            rope, mask = self._prefix_lm_inputs(tokens, start)
        else:
            rope, mask = self._causal_inputs(tokens, start)
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, rope, self.args.rope_interleaved, start, mask)
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        if self.output is None or (last_only and self.args.tie_embeddings):
            # A tied head reads the embedding table, float32 with bf16 linears too: for one row it costs
            # little, and logits rounded to bf16 tie close candidates (SmolLM2's first answer token).
            return F.linear(x.to(self.tok_embeddings.weight.dtype), self.tok_embeddings.weight).float()
        return self.output(x).float()  # called as a module so that a quantized head runs its own kernel

    def prefill_by_layer(self, tokens: Tensor, ends: list[int], start: int) -> Tensor:
        """The pieces tokens[:, previous end:end] run through forward(piece, start=...) in turn, run
        instead layer by layer: every piece through the first layer, then through the second, ...;
        logits [B, 1, V] of the last token. A 1D model only.

        Each piece meets the same inputs and the same keys (those of the pieces before it, written
        by then in that layer), so the KV and logits are forward's to the bit; but a layer's weights
        serve all pieces in a row, which lets a layer that prepares its weights for a product (int4
        written out as int8) do it once per prompt rather than once per piece, and consecutive pieces
        of up to BATCHED_PIECE_ROWS rows share the linear layers' products (Block.forward_pieces).
        """
        pieces = []
        for lo, hi in zip([0, *ends[:-1]], ends, strict=True):
            rope, mask = self._causal_inputs(tokens[:, lo:hi], start + lo)
            pieces.append(PromptPiece(hi - lo, rope, start + lo, mask))
        batches: list[list[PromptPiece]] = []
        for piece in pieces:
            if batches and sum(p.length for p in batches[-1]) + piece.length <= BATCHED_PIECE_ROWS:
                batches[-1].append(piece)
            else:
                batches.append([piece])
        xs = list(self.tok_embeddings(tokens).split([sum(p.length for p in batch) for batch in batches], dim=1))
        cache, dtype = self.layers[0].attention.kv_cache, self.tok_embeddings.weight.dtype
        # a float16 cache of a float32 model: one layer's keys and values widened at a time, into
        # buffers that every layer reuses
        widened = None if cache is None or cache.k.dtype == dtype else tuple(
            torch.empty(*cache.k.shape[:2], cache.offset + start + tokens.shape[1], cache.k.shape[3], dtype=dtype,
                        device=cache.k.device) for _ in range(2))
        for layer in self.layers:
            if widened is not None:
                layer.attention.kv_cache.widen_into(widened)
            try:
                for i, batch in enumerate(batches):
                    xs[i] = layer.forward_pieces(xs[i], batch, self.args.rope_interleaved)
            finally:
                if widened is not None:
                    layer.attention.kv_cache.widen_into(None)
        x = self.norm(xs[-1][:, -1:])
        if self.output is None or self.args.tie_embeddings:
            return F.linear(x.to(self.tok_embeddings.weight.dtype), self.tok_embeddings.weight).float()
        return self.output(x).float()

    def _cached_rope(self, start: int | None, end: int) -> tuple[Tensor, Tensor] | None:
        if start is not None and self.rope_cache is not None and end <= self.cache_len:
            return self.rope_cache
        return None

    def _causal_inputs(self, tokens: Tensor, start: int | None) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
        """Rotary tables [T, 1, rotary_dim // 2] and the mask (None: plain causal) of a 1D model."""
        T = tokens.shape[1]
        offset = 0 if start is None else start
        if self._cached_rope(start, offset + T) is not None:
            cos, sin = self.rope_cache[0][offset:offset + T], self.rope_cache[1][offset:offset + T]
        else:
            positions = torch.arange(offset, offset + T, device=tokens.device)
            cos, sin = rope_tables(self.args, positions, self.tok_embeddings.weight.dtype)
        rope = (cos[:, None], sin[:, None])  # one table for every head
        prefix = self.kv_prefix_len
        if not prefix or T == 1:
            return rope, None
        mask = torch.ones(T, offset + T, dtype=torch.bool, device=tokens.device).tril(offset)
        return rope, torch.cat((mask.new_ones(T, prefix), mask), dim=-1)[None, None]

    def _prefix_lm_inputs(self, tokens: Tensor, start: int | None) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
        """Rotary tables [B, T, 1, 2, head_dim // 4] (positions, block positions) and the prefix-LM mask.

        A pass from position 0 must hold the whole prompt (its context attends both ways; generation
        prefills it in one pass), whose layout is kept for the decode steps after it.
        """
        B, T = tokens.shape
        args = self.args
        if not start:
            layouts = [PromptLayout.of(row, args.sop_token_id, args.gmask_token_id, args.mask_token_id)
                       for row in tokens.tolist()]
            if start == 0:
                self.prompt_layouts = layouts
        else:
            layouts = self.prompt_layouts
            if layouts is None or len(layouts) != B:  # no prompt ran: tokens follow an empty context
                layouts = [PromptLayout(context_length=0, mask_position=None)] * B
        offset = start or 0
        positions, blocks = positions_2d(layouts, offset, T, tokens.device)  # [B, T] each
        tables = self._cached_rope(start, int(max(positions.max(), blocks.max())) + 1)
        if tables is None:
            every = torch.arange(int(max(positions.max(), blocks.max())) + 1, device=tokens.device)
            tables = self._rope_tables(every, self.tok_embeddings.weight.dtype)
        rope = tuple(torch.stack((table[positions], table[blocks]), dim=-2)[:, :, None] for table in tables)
        if T == 1:
            return rope, None
        return rope, prefix_lm_mask(layouts, offset, T, self.kv_prefix_len, tokens.device)


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
