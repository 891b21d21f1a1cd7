"""Random-weight GGUF files of a given shape, for measuring loaders and engines on the same file.

The blocks are random bytes with their float16 scale fields set to small finite values, written
one tensor at a time, so a 7B-shape file is written in about the time the disk takes and never
exists as floats. The weights mean nothing; the shapes, types and layout are those of a real model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SyntheticShape", "LLAMA2_7B", "TINY", "write_random_gguf", "byte_tokenizer_fields"]


@dataclass(frozen=True)
class SyntheticShape:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn: int
    vocab: int
    context: int = 4096

    def params(self) -> int:
        head = self.dim // self.n_heads
        attn = self.dim * (self.dim + 2 * self.n_kv_heads * head) + self.dim * self.dim
        return self.n_layers * (attn + 3 * self.dim * self.ffn) + 2 * self.vocab * self.dim


LLAMA2_7B = SyntheticShape(4096, 32, 32, 32, 11008, 32000)
TINY = SyntheticShape(256, 2, 4, 2, 512, 259, 512)  # rows of 256: a whole K-quant block

# GGML type -> byte offsets of its float16 scale fields in a block, and their typical size
_SCALE_FIELDS = {2: ((0,), 0.004), 3: ((0, 2), 0.004), 6: ((0,), 0.002), 7: ((0, 2), 0.002), 8: ((0,), 0.0003),
                 12: ((0, 2), 0.0004), 13: ((0, 2), 0.0002), 14: ((208,), 0.0002)}


def byte_tokenizer_fields() -> dict:
    """A byte-level BPE vocabulary of the 256 bytes, two control tokens and one merge ("ab")."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in visible:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    # one merge: GGUF writes no empty arrays
    tokens = [chars[b] for b in range(256)] + ["<|endoftext|>", "<|im_end|>", "ab"]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [1] * 256 + [3, 3, 1], "tokenizer.ggml.merges": ["a b"],
            "tokenizer.ggml.bos_token_id": 256, "tokenizer.ggml.eos_token_id": 257}


def _random_blocks(rng: np.random.Generator, rows: int, cols: int, kind: int) -> np.ndarray:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if kind == 0:
        return rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
    if kind == 1:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    blocks = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    offsets, typical = _SCALE_FIELDS[kind]
    for offset in offsets:
        scale = (np.abs(rng.standard_normal((rows, cols // block), dtype=np.float32)) * typical + typical / 4)
        blocks[..., offset:offset + 2] = scale.astype(np.float16).view(np.uint8).reshape(rows, cols // block, 2)
    return blocks.reshape(rows, -1)


def write_random_gguf(path: Path, shape: SyntheticShape, kind: int, tokenizer: dict | None = None,
                      seed: int = 0, tied: bool = False) -> Path:
    """A llama-architecture file of `shape` whose 2-D weights are random blocks of GGML type `kind`;
    norms are float32. tokenizer: GGUF tokenizer fields (default: byte_tokenizer_fields)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

    rng = np.random.default_rng(seed)
    fields = tokenizer or byte_tokenizer_fields()
    vocab = len(fields["tokenizer.ggml.tokens"])
    head = shape.dim // shape.n_heads
    tensors: list[tuple[str, tuple[int, int] | tuple[int]]] = [("token_embd.weight", (vocab, shape.dim))]
    for i in range(shape.n_layers):
        tensors += [(f"blk.{i}.attn_norm.weight", (shape.dim,)),
                    (f"blk.{i}.attn_q.weight", (shape.dim, shape.dim)),
                    (f"blk.{i}.attn_k.weight", (shape.n_kv_heads * head, shape.dim)),
                    (f"blk.{i}.attn_v.weight", (shape.n_kv_heads * head, shape.dim)),
                    (f"blk.{i}.attn_output.weight", (shape.dim, shape.dim)),
                    (f"blk.{i}.ffn_norm.weight", (shape.dim,)),
                    (f"blk.{i}.ffn_gate.weight", (shape.ffn, shape.dim)),
                    (f"blk.{i}.ffn_up.weight", (shape.ffn, shape.dim)),
                    (f"blk.{i}.ffn_down.weight", (shape.dim, shape.ffn))]
    tensors.append(("output_norm.weight", (shape.dim,)))
    if not tied:
        tensors.append(("output.weight", (vocab, shape.dim)))

    writer = GGUFWriter(str(path), "llama")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.dim)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_rope_dimension_count(head)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    for key, value in fields.items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, int(value))
    for name, dims in tensors:
        if len(dims) == 1:
            writer.add_tensor_info(name, dims, np.dtype(np.float32), dims[0] * 4)
        elif kind in (0, 1):
            dtype = np.dtype(np.float32 if kind == 0 else np.float16)
            writer.add_tensor_info(name, dims, dtype, dims[0] * dims[1] * dtype.itemsize)
        else:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            nbytes = dims[0] * dims[1] // block * size
            writer.add_tensor_info(name, (dims[0], dims[1] // block * size), np.dtype(np.uint8), nbytes,
                                   raw_dtype=GGMLQuantizationType(kind))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _name, dims in tensors:
        if len(dims) == 1:
            data = (1.0 + 0.1 * rng.standard_normal(dims, dtype=np.float32)).astype(np.float32)
        else:
            data = _random_blocks(rng, dims[0], dims[1], kind)
        writer.write_tensor_data(data)
        del data
    writer.close()
    return path
