"""Tiny ChatGLM3 / GLM-4 checkpoints written as llama.cpp's `chatglm` GGUF files.

The layout follows llama.cpp's converter: the original tensor names lose their "transformer."
prefix and are renamed by the gguf package's own table for MODEL_ARCH.CHATGLM; the tensors are
written unchanged (2-D weights in the chosen GGML type, norms and biases in float32). ChatGLM3's
vocabulary is every id of the padded vocabulary as SentencePiece pieces (ids 0-2 renamed, the
command tokens as control tokens, the padding as unused "[PADn]"); GLM-4's is byte-level BPE
with merges recovered from the tiktoken ranks, pre-tokenizer "chatglm-bpe".
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from tests.engine.glm_fixtures import TEXT

CHATGLM3_COMMANDS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>",
                     "<|observation|>")
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def train_prefixed_sentencepiece(vocab_size: int = 400) -> bytes:
    """Like ChatGLM3's tokenizer.model: BPE with byte fallback and the dummy "▁" prefix."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 20), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
        hard_vocab_limit=False, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=True,
    )
    return out.getvalue()


def piece_type(sp, i: int) -> int:
    if sp.is_unknown(i):
        return UNKNOWN
    if sp.is_control(i):
        return CONTROL
    if sp.is_unused(i):
        return UNUSED
    return BYTE if sp.is_byte(i) else NORMAL


def chatglm3_vocab_fields(model: bytes, padded_vocab: int) -> dict:
    """ChatGLM3's vocabulary as llama.cpp's converter writes it."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    base = sp.vocab_size()
    tokens, scores, types = [], [], []
    for i in range(padded_vocab):
        if i < base:
            text = {0: "<unk>", 1: "<bos>", 2: "<eos>"}.get(i, sp.id_to_piece(i))
            tokens.append(text)
            scores.append(sp.get_score(i))
            types.append(piece_type(sp, i))
        elif i - base < len(CHATGLM3_COMMANDS):
            tokens.append(CHATGLM3_COMMANDS[i - base])
            scores.append(0.0)
            types.append(CONTROL)
        else:
            tokens.append(f"[PAD{i}]")
            scores.append(0.0)
            types.append(UNUSED)
    # what the converter's SpecialVocab reads from ChatGLM3's config.json
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "chatglm-spm", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.padding_token_id": 0}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for every byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def glm4_ranks(vocab_size: int = 420) -> bytes:
    """A tiktoken ranks file (the form GLM-4 ships): the 256 bytes, then merges learned from TEXT."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(TEXT * 20, trainer)
    decode = {char: byte for byte, char in bytes_to_unicode().items()}
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    ranked = [bytes([b]) for b in range(256)]
    for merge in merges:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        ranked.append(bytes(decode[c] for c in left + right))
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for rank, token in enumerate(ranked))


def _bpe(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    parts = [token[i:i + 1] for i in range(len(token))]
    while True:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best is None or best_rank >= max_rank:
            return parts
        parts[best:best + 2] = [parts[best] + parts[best + 1]]


def glm4_vocab_fields(ranks_file: bytes, padded_vocab: int) -> dict:
    """GLM-4's vocabulary as llama.cpp's converter writes it: byte-level tokens, merges from ranks."""
    from ragglm.engine.tokenizers.glm_tokenizer import GLM4_SPECIAL_TOKENS

    ranks = {}
    for line in ranks_file.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    chars = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _bpe(ranks, token, rank)
            merges.append(f"{text(left)} {text(right)}")
    tokens = [text(t) for t, _ in sorted(ranks.items(), key=lambda item: item[1])]
    types = [NORMAL] * len(tokens)
    tokens += list(GLM4_SPECIAL_TOKENS)
    types += [CONTROL] * len(GLM4_SPECIAL_TOKENS)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), padded_vocab)]
    types += [UNUSED] * (padded_vocab - len(types))
    special = {t: tokens.index(t) for t in ("<|endoftext|>", "<|user|>", "[gMASK]")}
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "chatglm-bpe", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.eos_token_id": special["<|endoftext|>"], "tokenizer.ggml.eot_token_id": special["<|user|>"],
            "tokenizer.ggml.unknown_token_id": special["<|endoftext|>"],
            "tokenizer.ggml.bos_token_id": special["[gMASK]"]}


def write_chatglm_gguf(path: Path, folder: Path, vocab: dict, kind: int = 0) -> Path:
    """The checkpoint in folder (original ChatGLM naming, see glm_fixtures.save_chatglm_folder, or
    transformers' GLM naming, whose q/k/v stay apart) as a chatglm GGUF; kind: the GGML type of the
    2-D weights (0 F32, 8 Q8_0, 2 Q4_0, ...)."""
    from gguf import MODEL_ARCH, GGMLQuantizationType, GGUFWriter, get_tensor_name_map
    from gguf.quants import quantize

    from ragglm.engine.loading.checkpoint_files import iter_checkpoint_tensors

    config = json.loads((folder / "config.json").read_text())
    tensors = dict(iter_checkpoint_tensors(folder))
    # the converter reads ChatGLM's keys, falling back to transformers' GLM ones where it does
    heads, dim = config["num_attention_heads"], config["hidden_size"]
    layers = config.get("num_layers") or config["num_hidden_layers"]
    table = get_tensor_name_map(MODEL_ARCH.CHATGLM, layers)
    writer = GGUFWriter(str(path), "chatglm")
    writer.add_name(str(config.get("_name_or_path", "glm")).split("/")[-1])
    writer.add_context_length(config.get("seq_length", dim))
    writer.add_embedding_length(dim)
    writer.add_feed_forward_length(config.get("ffn_hidden_size") or config["intermediate_size"])
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("multi_query_group_num") or config.get("num_key_value_heads", heads))
    writer.add_layer_norm_rms_eps(config.get("layernorm_epsilon", 1e-5))
    writer.add_file_type(0 if kind == 0 else 7 if kind == 8 else 2)
    writer.add_rope_dimension_count(int(dim // heads * config.get("partial_rotary_factor", 0.5)))
    writer.add_add_bos_token(False)
    writer.add_rope_freq_base(10000 * config.get("rope_ratio", 1))
    writer.add_tokenizer_model(vocab["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(vocab["tokenizer.ggml.pre"])
    writer.add_token_list(vocab["tokenizer.ggml.tokens"])
    if "tokenizer.ggml.scores" in vocab:
        writer.add_token_scores(vocab["tokenizer.ggml.scores"])
    writer.add_token_types(vocab["tokenizer.ggml.token_type"])
    if "tokenizer.ggml.merges" in vocab:
        writer.add_token_merges(vocab["tokenizer.ggml.merges"])
    for key, value in vocab.items():
        if key.endswith("_token_id"):
            writer.add_uint32(key, value)
    for name, tensor in tensors.items():
        if name.endswith("rotary_pos_emb.inv_freq"):
            continue
        theirs = table.get_name(name.removeprefix("transformer."), try_suffixes=(".weight", ".bias"))
        data = tensor.float().numpy()
        if data.ndim == 2 and kind != 0:
            writer.add_tensor(theirs, quantize(data, GGMLQuantizationType(kind)),
                              raw_dtype=GGMLQuantizationType(kind))
        else:
            writer.add_tensor(theirs, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
