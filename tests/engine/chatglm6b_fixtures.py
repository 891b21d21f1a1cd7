"""A ChatGLM-6B tokenizer trained on the spot (the layout of ice_text.model: whitespace and control
pieces as user-defined symbols) and a tiny random ChatGLM-6B whose vocabulary fits it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from ragglm.engine.tokenizers.chatglm6b_tokenizer import CONTROL_PIECES, MAX_BLANK, NUM_IMAGE_TOKENS
from tests.engine.glm_fixtures import TEXT

WHITESPACE_PIECES = ("<n>", "<|tab|>", *(f"<|blank_{n}|>" for n in range(2, MAX_BLANK + 1)))


def train_ice_text() -> bytes:
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 20), model_writer=out, vocab_size=500, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, bos_id=-1, eos_id=2, unk_id=0, pad_id=1,
        user_defined_symbols=list(CONTROL_PIECES + WHITESPACE_PIECES), minloglevel=2,
        hard_vocab_limit=False, normalization_rule_name="identity",  # text kept as is, as decode compares it
    )
    return out.getvalue()


def ids_of(model: bytes) -> dict[str, int]:
    """Model ids (image tokens first) of the control pieces."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return {piece: NUM_IMAGE_TOKENS + sp.piece_to_id(piece) for piece in CONTROL_PIECES}


def write_tiny_glm6b(folder: Path, seed: int = 0) -> Path:
    """A random one-layer ChatGLM-6B in the original naming, with its ice_text.model."""
    import sentencepiece as spm

    model = train_ice_text()
    vocab = NUM_IMAGE_TOKENS + spm.SentencePieceProcessor(model_proto=model).vocab_size()
    ids = ids_of(model)
    hidden, heads = 32, 4
    config = {
        "_name_or_path": "THUDM/chatglm-6b", "model_type": "chatglm", "vocab_size": vocab, "hidden_size": hidden,
        "num_attention_heads": heads, "num_layers": 1, "inner_hidden_size": 4 * hidden,
        "layernorm_epsilon": 1e-5, "max_sequence_length": 2048, "position_encoding_2d": True,
        "bos_token_id": ids["<sop>"], "eos_token_id": ids["<eop>"], "mask_token_id": ids["[MASK]"],
        "gmask_token_id": ids["[gMASK]"], "pad_token_id": 3, "pre_seq_len": None, "prefix_projection": False,
        "torch_dtype": "float32",
    }
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return 0.2 * torch.randn(*shape, generator=generator)

    layer = "transformer.layers.0."
    tensors = {
        "transformer.word_embeddings.weight": rand(vocab, hidden),
        "transformer.final_layernorm.weight": 1 + rand(hidden), "transformer.final_layernorm.bias": rand(hidden),
        "lm_head.weight": rand(vocab, hidden),
    }
    for name, rows, columns in (("attention.query_key_value", 3 * hidden, hidden), ("attention.dense", hidden, hidden),
                                ("mlp.dense_h_to_4h", 4 * hidden, hidden), ("mlp.dense_4h_to_h", hidden, 4 * hidden)):
        tensors[f"{layer}{name}.weight"] = rand(rows, columns)
        tensors[f"{layer}{name}.bias"] = rand(rows)
    for norm in ("input_layernorm", "post_attention_layernorm"):
        tensors[f"{layer}{norm}.weight"] = 1 + rand(hidden)
        tensors[f"{layer}{norm}.bias"] = rand(hidden)
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "ice_text.model").write_bytes(model)
    return folder
