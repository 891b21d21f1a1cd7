"""llama.cpp's `chatglm` GGUF files (ChatGLM3-6B, GLM-4-9B): ModelArgs, tensor naming, tokenizer.

llama.cpp's converter renames the original checkpoint's tensors and writes them unchanged:
  token_embd, output_norm, output                 <- word embeddings, final RMSNorm, output layer
  blk.N.attn_norm, blk.N.ffn_norm                  <- the two RMSNorms
  blk.N.attn_qkv (+ bias)                          <- query_key_value: all q rows, then k, then v
  blk.N.attn_output                                <- self_attention.dense
  blk.N.ffn_up [2 * ffn, dim], blk.N.ffn_down      <- dense_h_to_4h ([gate | up]), dense_4h_to_h
A file converted from transformers' GlmForCausalLM has attn_q/attn_k/attn_v (+ biases) instead of
attn_qkv; both are read. Rows are not permuted: llama.cpp rotates consecutive pairs ("normal"
rope) of the first rope.dimension_count dims of each head, which is ChatGLM's own rotary layout,
so the model is the one our ChatGLM folders build (family glm, interleaved pairs, half the head).

The vocabulary tells the two apart: ChatGLM3's is written as SentencePiece pieces
(`tokenizer.ggml.model` "llama", its command tokens numbered after the pieces), GLM-4's as
byte-level BPE ("gpt2", pre-tokenizer "chatglm-bpe"); each gets its own chat format.
"""

from __future__ import annotations

from ragglm.engine.loading.gguf_fields import shape_fields
from ragglm.engine.loading.weight_names import Naming
from ragglm.engine.model import ModelArgs
from ragglm.engine.tokenizers.gguf_sentencepiece import (
    GGUFSentencePieceTokenizer,
    SentencePieceFields,
)
from ragglm.engine.tokenizers.glm_chat_format import ChatGLM3Format, GLM4Format
from ragglm.engine.tokenizers.glm_tokenizer import GLM4_STOP_TOKENS
from ragglm.engine.tokenizers.tokenizer import bpe_from_gguf

__all__ = ["ARCH", "GGUF_CHATGLM_NAMES", "chatglm_gguf_args", "chatglm_gguf_tokenizer", "is_chatglm_vocab"]

ARCH = "chatglm"
CHATGLM3_STOP_TOKENS = ("<|user|>", "<|observation|>")
CHATGLM_PRE = ("chatglm-spm", "chatglm-bpe")

_QKV = {"attention.wqkv.weight": ("attn_q.weight", "attn_k.weight", "attn_v.weight"),
        "attention.wqkv.bias": ("attn_q.bias", "attn_k.bias", "attn_v.bias")}

GGUF_CHATGLM_NAMES = Naming(
    top={"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight",
         "output.weight": "output.weight"},
    layer_prefix="blk.",
    layer={
        "attn_norm.weight": "attention_norm.weight",
        "ffn_norm.weight": "ffn_norm.weight",
        "attn_qkv.weight": "attention.wqkv.weight",
        "attn_qkv.bias": "attention.wqkv.bias",
        "attn_output.weight": "attention.wo.weight",
        "ffn_up.weight": "feed_forward.w_gate_up.weight",
        "ffn_down.weight": "feed_forward.w_down.weight",
    },
    fused=_QKV,
)


def chatglm_gguf_args(meta: dict) -> ModelArgs:
    """ModelArgs from the `chatglm.*` fields (KeyError for a missing required one)."""
    fields = shape_fields(meta, ARCH)
    head_dim = fields["head_dim"]
    rotary = meta.get(f"{ARCH}.rope.dimension_count") or head_dim // 2
    if not 0 < rotary <= head_dim or rotary % 2:
        raise ValueError(f"{ARCH}.rope.dimension_count {rotary} does not fit a head of {head_dim}")
    return ModelArgs(family="glm", **fields, rope_fraction=rotary / head_dim, rope_interleaved=True, qkv_bias=True,
                     tie_embeddings=False, max_seq_len=meta.get(f"{ARCH}.context_length", 8192))


def is_chatglm_vocab(meta: dict) -> bool:
    """A chatglm file's tokenizer fields, also once kept apart from the file (a quantized folder
    keeps only `tokenizer.*`): the converter names its pre-tokenizer after the family."""
    return meta.get("general.architecture") == ARCH or meta.get("tokenizer.ggml.pre") in CHATGLM_PRE


def chatglm_gguf_tokenizer(meta: dict) -> tuple[object, object, tuple[str, ...]]:
    """(tokenizer, chat format, languages): ChatGLM3 for a SentencePiece vocabulary, GLM-4 for BPE."""
    model = meta.get("tokenizer.ggml.model")
    if model == "llama":
        # the commands are placed by id and all text is text, as ChatGLM3's own tokenizer has it
        tokenizer = GGUFSentencePieceTokenizer(SentencePieceFields.from_metadata(meta), CHATGLM3_STOP_TOKENS,
                                               control_in_text=False)
        return tokenizer, ChatGLM3Format(), ("zh", "en")
    if model == "gpt2":
        tokenizer = bpe_from_gguf(meta)
        for name in GLM4_STOP_TOKENS:
            index = tokenizer.token_id(name)
            if index is not None and index not in tokenizer.eos_token_ids:
                tokenizer.eos_token_ids.append(index)
        return tokenizer, GLM4Format(), ("zh", "en")
    raise ValueError(f"GGUF chatglm tokenizer {model!r} is not supported (llama for ChatGLM3, gpt2 for GLM-4 are)")
