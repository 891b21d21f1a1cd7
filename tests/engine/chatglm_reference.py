"""The reference files of ../shared/data/reference/chatglm_cpp: outputs of the original ChatGLM modeling
code on tiny random models, read into tensors and written back as checkpoint folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

HIDDEN, HEADS, VOCAB = 32, 8, 5
PADDED_VOCAB = HIDDEN  # ids 0..4 are the file's; the rest pad the vocabulary to an identity head
STEPS = (("x1", (1, 3)), ("y1", (1, 3, HIDDEN)), ("x2", (1, 1)), ("y2", (1, 1, HIDDEN)),
         ("x3", (1, 1)), ("y3", (1, 1, HIDDEN)))

# ChatGLM-6B (original names under transformer.): weights in the file's order
GLM6B_WEIGHTS = (
    ("word_embeddings.weight", (VOCAB, HIDDEN)),
    ("layers.0.input_layernorm.weight", (HIDDEN,)), ("layers.0.input_layernorm.bias", (HIDDEN,)),
    ("layers.0.attention.query_key_value.weight", (3 * HIDDEN, HIDDEN)),
    ("layers.0.attention.query_key_value.bias", (3 * HIDDEN,)),
    ("layers.0.attention.dense.weight", (HIDDEN, HIDDEN)), ("layers.0.attention.dense.bias", (HIDDEN,)),
    ("layers.0.post_attention_layernorm.weight", (HIDDEN,)), ("layers.0.post_attention_layernorm.bias", (HIDDEN,)),
    ("layers.0.mlp.dense_h_to_4h.weight", (4 * HIDDEN, HIDDEN)), ("layers.0.mlp.dense_h_to_4h.bias", (4 * HIDDEN,)),
    ("layers.0.mlp.dense_4h_to_h.weight", (HIDDEN, 4 * HIDDEN)), ("layers.0.mlp.dense_4h_to_h.bias", (HIDDEN,)),
    ("final_layernorm.weight", (HIDDEN,)), ("final_layernorm.bias", (HIDDEN,)),
)
# ChatGLM3 (2 KV groups of head dim 4, ffn 48)
GLM3_QKV = HIDDEN + 2 * 2 * 4
GLM3_WEIGHTS = (
    ("embedding.word_embeddings.weight", (VOCAB, HIDDEN)),
    ("encoder.layers.0.input_layernorm.weight", (HIDDEN,)),
    ("encoder.layers.0.self_attention.query_key_value.weight", (GLM3_QKV, HIDDEN)),
    ("encoder.layers.0.self_attention.query_key_value.bias", (GLM3_QKV,)),
    ("encoder.layers.0.self_attention.dense.weight", (HIDDEN, HIDDEN)),
    ("encoder.layers.0.post_attention_layernorm.weight", (HIDDEN,)),
    ("encoder.layers.0.mlp.dense_h_to_4h.weight", (2 * 48, HIDDEN)),
    ("encoder.layers.0.mlp.dense_4h_to_h.weight", (HIDDEN, 48)),
    ("encoder.final_layernorm.weight", (HIDDEN,)),
)
GLM6B_PREFIX = (2, HEADS, 5, HIDDEN // HEADS)  # [layers * 2, kv heads, pre_seq_len, head dim]
GLM3_PREFIX = (2, 2, 5, 4)


def read_reference(path: Path, weights, prefix: tuple[int, ...] | None = None) -> dict:
    """{"prefix": fp16 array as float32 tensor, weight name: tensor, "x1".."y3": tensors}; the file's
    size must equal the sum of its arrays."""
    data = path.read_bytes()
    out, offset = {}, 0

    def take(shape, dtype):
        nonlocal offset
        count = int(np.prod(shape))
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += count * np.dtype(dtype).itemsize
        return torch.from_numpy(array.astype(np.float32 if dtype != np.int32 else np.int64))

    if prefix is not None:
        out["prefix"] = take(prefix, np.float16)
    for name, shape in weights:
        out[name] = take(shape, np.float32)
    for name, shape in STEPS:
        out[name] = take(shape, np.int32 if name.startswith("x") else np.float32)
    assert offset == len(data), f"{path.name}: read {offset} of {len(data)} bytes"
    return out


def padded_embedding(embedding: torch.Tensor) -> torch.Tensor:
    """The file's 5 rows, then random rows up to PADDED_VOCAB (never looked up by the reference ids)."""
    extra = torch.Generator().manual_seed(0)
    return torch.cat([embedding, torch.rand(PADDED_VOCAB - VOCAB, HIDDEN, generator=extra) - 0.5])


def save_tensors(tensors: dict[str, torch.Tensor], folder: Path, fmt: str, stem: str = "model") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.contiguous().clone() for name, t in tensors.items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(folder / f"{stem}.safetensors"))
    else:
        torch.save(tensors, folder / ("pytorch_model.bin" if stem == "model" else f"{stem}.bin"))


def glm6b_config(**overrides) -> dict:
    config = {
        "_name_or_path": "THUDM/chatglm-6b", "model_type": "chatglm", "architectures": ["ChatGLMModel"],
        "vocab_size": PADDED_VOCAB, "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_layers": 1,
        "inner_hidden_size": 4 * HIDDEN, "layernorm_epsilon": 1e-5, "max_sequence_length": 64,
        "position_encoding_2d": True, "bos_token_id": 2, "eos_token_id": 4, "gmask_token_id": 1,
        "mask_token_id": 30, "pad_token_id": 3, "pre_seq_len": None, "prefix_projection": False,
        "quantization_bit": 0, "torch_dtype": "float32",
    }
    config.update(overrides)
    return config


def write_glm6b_folder(ref: dict, folder: Path, fmt: str) -> Path:
    """The reference model as an original ChatGLM-6B folder, with an identity LM head (logits are
    the hidden states); no tokenizer files."""
    tensors = {f"transformer.{name}": ref[name] for name, _ in GLM6B_WEIGHTS}
    tensors["transformer.word_embeddings.weight"] = padded_embedding(ref["word_embeddings.weight"])
    tensors["lm_head.weight"] = torch.eye(HIDDEN)
    for layer in range(1):  # the original keeps its rotary frequencies as a buffer; loading skips it
        tensors[f"transformer.layers.{layer}.attention.rotary_emb.inv_freq"] = torch.ones(1)
    save_tensors(tensors, folder, fmt)
    (folder / "config.json").write_text(json.dumps(glm6b_config()))
    return folder


def glm3_config(**overrides) -> dict:
    config = {
        "_name_or_path": "THUDM/chatglm3-6b", "model_type": "chatglm", "architectures": ["ChatGLMModel"],
        "num_layers": 1, "padded_vocab_size": PADDED_VOCAB, "hidden_size": HIDDEN, "ffn_hidden_size": 48,
        "kv_channels": 4, "num_attention_heads": HEADS, "seq_length": 64, "multi_query_attention": True,
        "multi_query_group_num": 2, "layernorm_epsilon": 1e-5, "add_qkv_bias": True, "add_bias_linear": False,
        "rmsnorm": True, "post_layer_norm": True, "apply_residual_connection_post_layernorm": False,
        "original_rope": True, "pre_seq_len": None, "prefix_projection": False, "torch_dtype": "float32",
    }
    config.update(overrides)
    return config


def write_glm3_folder(ref: dict, folder: Path, fmt: str) -> Path:
    tensors = {f"transformer.{name}": ref[name] for name, _ in GLM3_WEIGHTS}
    tensors["transformer.embedding.word_embeddings.weight"] = padded_embedding(ref["embedding.word_embeddings.weight"])
    tensors["transformer.output_layer.weight"] = torch.eye(HIDDEN)
    save_tensors(tensors, folder, fmt)
    (folder / "config.json").write_text(json.dumps(glm3_config()))
    return folder


def write_ptuning_folder(prefix: torch.Tensor, model_config: dict, folder: Path, fmt: str = "bin",
                         projection: bool = False) -> Path:
    """A P-Tuning v2 output folder whose prefix encoder gives `prefix` ([layers * 2, kv heads, P, D]).

    With projection, the two-layer MLP is solved to give it: a random first layer, then the second
    layer's weights by least squares (exact: P rows against a wider hidden layer).
    """
    pre_seq_len = prefix.shape[2]
    target = prefix.permute(2, 0, 1, 3).reshape(pre_seq_len, -1).double()  # [P, layers * 2 * Hkv * D]
    if projection:
        generator = torch.Generator().manual_seed(1)
        width = model_config["hidden_size"]
        embedding = torch.rand(pre_seq_len, width, generator=generator, dtype=torch.float64) - 0.5
        w0 = torch.rand(width, width, generator=generator, dtype=torch.float64) - 0.5
        b0 = torch.rand(width, generator=generator, dtype=torch.float64) - 0.5
        hidden = torch.tanh(embedding @ w0.T + b0)
        w2 = (torch.linalg.pinv(hidden) @ target).T
        tensors = {"embedding.weight": embedding, "trans.0.weight": w0, "trans.0.bias": b0,
                   "trans.2.weight": w2, "trans.2.bias": torch.zeros(w2.shape[0], dtype=torch.float64)}
    else:
        tensors = {"embedding.weight": target}
    tensors = {f"transformer.prefix_encoder.{name}": t.float() for name, t in tensors.items()}
    save_tensors(tensors, folder, fmt)
    config = dict(model_config, pre_seq_len=pre_seq_len, prefix_projection=projection)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def run_steps(engine, ref: dict) -> list[float]:
    """Largest difference from the reference for the prompt pass and the two decode steps."""
    model = engine.model
    model.setup_cache(1, 16)
    with torch.inference_mode():
        y1 = model(ref["x1"], start=0)
        y2 = model.decode(ref["x2"], start=3)
        y3 = model.decode(ref["x3"], start=4)
    return [float((y - ref[name]).abs().max()) for y, name in ((y1, "y1"), (y2, "y2"), (y3, "y3"))]
