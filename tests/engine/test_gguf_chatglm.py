"""llama.cpp's `chatglm` GGUF files against the checkpoint folders they were converted from.

A tiny ChatGLM3 (and GLM-4) folder is written as llama.cpp lays such a file out (see
gguf_chatglm_fixtures); the engine built from the file must compute what the folder's computes,
and its tokenizer and chat format must give the folder's ids.
"""

from __future__ import annotations

import pytest
import torch

from ragglm.engine import Engine
from ragglm.engine.constraints.vocabulary import token_pieces
from ragglm.engine.linear.quantize import QuantConfig, dequantize, linear_names, quantize_weight
from ragglm.engine.loading.gguf_blocks import Q4_0, Q8_0
from ragglm.engine.loading.gguf_loader import describe_gguf, read_gguf
from ragglm.engine.loading.gguf_model import load_gguf
from ragglm.engine.model import Transformer
from ragglm.engine.tokenizers.glm_chat_format import ChatGLM3Format, GLM4Format
from ragglm.errors import ModelNotFoundError
from tests.engine.gguf_chatglm_fixtures import (
    chatglm3_vocab_fields,
    glm4_ranks,
    glm4_vocab_fields,
    train_prefixed_sentencepiece,
    write_chatglm_gguf,
)
from tests.engine.glm_fixtures import (
    PROMPT,
    VOCAB,
    chatglm_config,
    save_chatglm_folder,
    save_glm_folder,
    tiny_glm_config,
    tiny_glm_model,
)

TEXTS = ["滤芯的使用寿命大约是六个月，请按时更换。", "Flush the device for 5 minutes (12345).", "  two  spaces\n\ttab",
         "emoji 😀 and ü", "[gMASK]<|user|> sop"]
MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "滤芯多久更换？<|user|>"},
            {"role": "assistant", "content": "六个月。"}, {"role": "user", "content": "And the flush?"}]


@pytest.fixture(scope="module")
def our_state(tmp_path_factory):
    reference = tiny_glm_model(tiny_glm_config())
    folder = save_glm_folder(reference, tmp_path_factory.mktemp("glm-hf"))
    engine = Engine.from_pretrained(folder, dtype="fp32")
    return engine.model.state_dict(), reference.config, folder, engine


@pytest.fixture(scope="module")
def chatglm3(our_state, tmp_path_factory):
    """(folder engine, {GGML type: GGUF path}) for ChatGLM3 with its SentencePiece vocabulary."""
    state, config, _, _ = our_state
    folder = save_chatglm_folder(state, chatglm_config(config), tmp_path_factory.mktemp("chatglm3"))
    model = train_prefixed_sentencepiece()
    (folder / "tokenizer.model").write_bytes(model)
    vocab = chatglm3_vocab_fields(model, VOCAB)
    files = {kind: write_chatglm_gguf(folder.parent / f"chatglm3-{kind}.gguf", folder, vocab, kind)
             for kind in (0, Q8_0, Q4_0)}
    return Engine.from_pretrained(folder, dtype="fp32"), files


@pytest.fixture(scope="module")
def glm4(our_state, tmp_path_factory):
    """(folder engine, F32 GGUF path) for GLM-4 with its tiktoken ranks written as BPE merges."""
    state, config, _, _ = our_state
    folder = save_chatglm_folder(state, chatglm_config(config, rope_ratio=5.0, name="THUDM/glm-4-9b-chat"),
                                 tmp_path_factory.mktemp("glm4"))
    ranks = glm4_ranks()
    (folder / "tokenizer.model").write_bytes(ranks)
    path = write_chatglm_gguf(folder.parent / "glm4.gguf", folder, glm4_vocab_fields(ranks, VOCAB))
    return Engine.from_pretrained(folder, dtype="fp32"), path


def test_float_chatglm3_file_computes_the_folders_logits(chatglm3):
    folder, files = chatglm3
    engine = Engine.from_pretrained(files[0], dtype="fp32")
    args = engine.args
    assert (args.family, args.rope_fraction, args.rope_interleaved, args.qkv_bias, args.n_kv_heads) == (
        "glm", 0.5, True, True, 2)
    assert (engine.logits(PROMPT) - folder.logits(PROMPT)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind, config", [(Q8_0, "int8"), (Q4_0, "int4:g32")])
def test_quantized_chatglm3_file_computes_what_its_weights_compute(chatglm3, kind, config):
    """Quantized layers built from the blocks against a float model of the file's weights, dequantized
    by the gguf package and (int8) put through the engine's own int8 rounding; Q4_0 blocks are
    int4 group 32 as they stand."""
    _, files = chatglm3
    quant_config = QuantConfig.parse(config)
    ours, _, quant = load_gguf(files[kind], quant_config, "cpu", torch.float32)
    checkpoint = read_gguf(files[kind])
    with torch.device("meta"):
        reference = Transformer(checkpoint.args)
    state = dict(checkpoint.state_dict)
    if config == "int8":
        for name in linear_names(reference):
            state[f"{name}.weight"] = dequantize(quantize_weight(state[f"{name}.weight"], quant_config))
    reference.load_state_dict(state, assign=True)
    for model in (ours, reference):
        model.setup_cache(1, 16)
    with torch.inference_mode():
        got, want = ours(PROMPT, start=0), reference.eval()(PROMPT, start=0)
    assert quant == config
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


def test_q8_0_weights_are_the_folders_within_a_block_step(chatglm3):
    folder, files = chatglm3
    theirs = read_gguf(files[Q8_0]).state_dict
    for name, want in folder.model.state_dict().items():
        got = theirs[name]
        if got.dim() != 2:
            assert torch.equal(got, want), name
            continue
        blocks = want.reshape(want.shape[0], -1, 32)
        step = (blocks.abs().amax(-1, keepdim=True) / 127).expand_as(blocks).reshape(want.shape)
        # half a step, plus what rounding the block's scale to float16 moves the largest value by
        assert ((got - want).abs() <= step * (0.5 + 127 * 2**-11) + 1e-6).all(), name


def test_chatglm3_tokenizer_and_format_match_the_folders(chatglm3):
    folder, files = chatglm3
    engine = Engine.from_pretrained(files[0], dtype="fp32")
    assert isinstance(engine.chat_format, ChatGLM3Format)
    for text in TEXTS:
        assert engine.tokenizer.encode_plain(text) == folder.tokenizer.encode_plain(text), text
        assert engine.tokenizer.encode(text) == folder.tokenizer.encode(text), text
        assert engine.tokenizer.decode(engine.tokenizer.encode(text)) == text
    assert engine.chat_format.ids(MESSAGES, engine.tokenizer) == folder.chat_format.ids(MESSAGES, folder.tokenizer)
    assert engine.tokenizer.eos_token_ids == folder.tokenizer.eos_token_ids
    # commands and the padded vocabulary's unused ids write nothing, as in the folder's tokenizer,
    # for decoding and for grammars alike
    ids = engine.tokenizer.encode_plain(TEXTS[0]) + [folder.tokenizer.token_id("[gMASK]"), VOCAB - 1, 2]
    assert engine.tokenizer.decode(ids) == folder.tokenizer.decode(ids) == TEXTS[0]
    assert token_pieces(engine.tokenizer, VOCAB) == token_pieces(folder.tokenizer, VOCAB)


@pytest.fixture(scope="module")
def glm_hf(our_state):
    """(folder engine, F32 GGUF path) for a transformers-naming GLM folder (llama.cpp converts
    GlmForCausalLM to chatglm too, with attn_q/attn_k/attn_v)."""
    _, _, folder, engine = our_state
    return engine, write_chatglm_gguf(folder.parent / "glm-hf.gguf", folder, glm4_vocab_fields(glm4_ranks(), VOCAB))


def test_a_file_from_transformers_glm_naming_keeps_q_k_v_apart_and_computes_the_same(glm_hf):
    engine, path = glm_hf
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.weight"} <= {t.name for t in describe_gguf(path).tensors}
    ours = Engine.from_pretrained(path, dtype="fp32")
    assert (ours.logits(PROMPT) - engine.logits(PROMPT)).abs().max().item() <= 1e-5


def test_float_glm4_file_computes_the_folders_logits(glm4):
    folder, path = glm4
    engine = Engine.from_pretrained(path, dtype="fp32")
    assert engine.args.rope_theta == folder.args.rope_theta == 50000.0
    assert (engine.logits(PROMPT) - folder.logits(PROMPT)).abs().max().item() <= 1e-5


def test_glm4_tokenizer_and_format_match_the_folders(glm4):
    folder, path = glm4
    engine = Engine.from_pretrained(path, dtype="fp32")
    assert isinstance(engine.chat_format, GLM4Format)
    for text in TEXTS:
        assert engine.tokenizer.encode_plain(text) == folder.tokenizer.encode_plain(text), text
        assert engine.tokenizer.decode(engine.tokenizer.encode_plain(text)) == text
    assert engine.chat_format.ids(MESSAGES, engine.tokenizer) == folder.chat_format.ids(MESSAGES, folder.tokenizer)
    assert sorted(engine.tokenizer.eos_token_ids) == sorted(folder.tokenizer.eos_token_ids)


def test_a_chatglm_file_without_its_sizes_names_the_file(chatglm3, tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "broken.gguf"
    writer = GGUFWriter(str(path), "chatglm")
    writer.add_embedding_length(64)
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelNotFoundError, match="broken.gguf.*chatglm metadata"):
        describe_gguf(path)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["chatglm3", "glm4", "glm_hf"])
def test_llama_cpp_reads_the_file_as_we_do(request, which):
    """llama.cpp itself (llama-cpp-python, when installed) on the same file: the same ids for the
    same text and, with a float32 KV cache, the same logits."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import numpy as np

    fixture = request.getfixturevalue(which)
    path = fixture[1][0] if which == "chatglm3" else fixture[1]
    ours = Engine.from_pretrained(path, dtype="fp32")
    theirs = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2,
                             type_k=0, type_v=0)
    for text in TEXTS[:4]:
        assert theirs.tokenize(text.encode(), add_bos=False, special=False) == ours.tokenizer.encode_plain(text), text
    ids = PROMPT[0].tolist()
    theirs.eval(ids)
    logits = torch.from_numpy(np.array(theirs.scores[:len(ids)], dtype=np.float32))
    assert (logits - ours.logits(PROMPT)[0]).abs().max().item() <= 1e-4


def test_a_quantized_folder_of_a_chatglm_file_keeps_its_tokenizer_and_format(chatglm3, tmp_path):
    """`ragglm quantize` keeps only the file's tokenizer fields; they still say ChatGLM3."""
    from ragglm.engine.loading.quantize_checkpoint import save_quantized_checkpoint

    folder, files = chatglm3
    save_quantized_checkpoint(files[0], tmp_path / "q", "int8")
    engine = Engine.from_pretrained(tmp_path / "q", dtype="fp32")
    assert engine.quant == "int8" and isinstance(engine.chat_format, ChatGLM3Format)
    assert engine.chat_format.ids(MESSAGES, engine.tokenizer) == folder.chat_format.ids(MESSAGES, folder.tokenizer)


def test_chatglm3_file_chats_as_its_folder(chatglm3):
    """Greedy replies, plain and held to a JSON schema, are the folder's token for token."""
    folder, files = chatglm3
    engine = Engine.from_pretrained(files[0], dtype="fp32")
    for kwargs in ({}, {"response_format": {"type": "json_schema", "json_schema": {"schema": {
            "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}}):
        ours = engine.chat(MESSAGES, max_new_tokens=12, **kwargs)
        theirs = folder.chat(MESSAGES, max_new_tokens=12, **kwargs)
        assert (ours.token_ids, ours.text) == (theirs.token_ids, theirs.text) and ours.token_ids
