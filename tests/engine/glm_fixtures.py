"""Tiny GLM checkpoints and tokenizers built on the spot: transformers naming, original ChatGLM naming."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

TEXT = [
    "滤芯的使用寿命大约是六个月，请按时更换。",
    "设备在首次使用前需要冲洗五分钟。",
    "如果指示灯闪烁红色，说明水压过低。",
    "请勿在零度以下的环境中使用本产品。",
    "The filter lasts about six months; replace it on time.",
    "Flush the device for five minutes before first use.",
    "If the light blinks red, the water pressure is too low.",
    "Do not use the product below zero degrees.",
    "用户手册第三章介绍了安装步骤和注意事项。",
    "Chapter three of the manual describes installation.",
]
VOCAB = 512  # model vocabulary; the tokenizers below stay under it
PROMPT = torch.tensor([[5, 17, 300, 42, 42, 7, 99, 250, 3, 64, 128, 11]])  # token ids under VOCAB
SP_VOCAB = 400


def train_sentencepiece() -> bytes:
    """A small sentencepiece model with byte fallback, so any Chinese text round-trips."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 20), model_writer=out, vocab_size=SP_VOCAB, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        minloglevel=2, hard_vocab_limit=False, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False,  # like ChatGLM3: text kept as is
    )
    return out.getvalue()


def glm4_tokenizer_json(path: Path) -> None:
    """A byte-level BPE tokenizer.json with GLM-4's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ragglm.engine.tokenizers.glm_tokenizer import GLM4_SPECIAL_TOKENS

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(GLM4_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(TEXT * 20, trainer)
    tokenizer.save(str(path))


def tiny_glm_config(**overrides):
    from transformers import GlmConfig

    settings = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        pad_token_id=0, eos_token_id=None,
    )
    settings.update(overrides)
    return GlmConfig(**settings)


def tiny_glm_model(config, seed: int = 0):
    """A GlmForCausalLM with every weight and bias random (zero biases would hide mistakes)."""
    from transformers import GlmForCausalLM

    torch.manual_seed(seed)
    model = GlmForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(0.2 * torch.randn_like(param))
    return model


def save_glm_folder(model, folder: Path) -> Path:
    """transformers naming, with a GLM-4 style tokenizer.json."""
    model.save_pretrained(folder)
    glm4_tokenizer_json(folder / "tokenizer.json")
    return folder


def chatglm_config(config, rope_ratio: float = 1.0, name: str = "THUDM/chatglm3-6b") -> dict:
    """The original ChatGLM config.json for the same shape as a GlmConfig."""
    return {
        "_name_or_path": name, "model_type": "chatglm", "architectures": ["ChatGLMModel"],
        "num_layers": config.num_hidden_layers, "padded_vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size, "ffn_hidden_size": config.intermediate_size,
        "kv_channels": config.head_dim, "num_attention_heads": config.num_attention_heads,
        "seq_length": config.max_position_embeddings, "multi_query_attention": True,
        "multi_query_group_num": config.num_key_value_heads, "layernorm_epsilon": config.rms_norm_eps,
        "add_qkv_bias": True, "add_bias_linear": False, "rmsnorm": True, "post_layer_norm": True,
        "apply_residual_connection_post_layernorm": False, "rope_ratio": rope_ratio, "original_rope": True,
        "torch_dtype": "float32",
    }


def save_chatglm_folder(our_state_dict: dict, config: dict, folder: Path, fmt: str = "safetensors") -> Path:
    """Original ChatGLM naming in two shards with an index file, plus a sentencepiece tokenizer."""
    from ragglm.engine.loading.weight_names import CHATGLM_NAMES, to_their_names

    folder.mkdir(parents=True, exist_ok=True)
    theirs = {name: t.contiguous().clone() for name, t in to_their_names(our_state_dict, CHATGLM_NAMES).items()}
    theirs["transformer.rotary_pos_emb.inv_freq"] = torch.ones(config["kv_channels"] // 4)  # ignored on load
    names = sorted(theirs)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    suffix = "safetensors" if fmt == "safetensors" else "bin"
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    weight_map = {}
    for i, part in enumerate(halves, start=1):
        filename = f"{stem}-{i:05d}-of-00002.{suffix}"
        shard = {n: theirs[n] for n in part}
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(shard, str(folder / filename))
        else:
            torch.save(shard, folder / filename)
        weight_map.update({n: filename for n in part})
    (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.model").write_bytes(train_sentencepiece())
    return folder
