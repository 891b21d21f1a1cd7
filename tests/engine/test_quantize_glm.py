"""A quantized tiny GLM (fused QKV with bias, untied head) against its fp32 self."""

from __future__ import annotations

import pytest
import torch

from ragglm.engine import Engine
from ragglm.engine.loading.quantize_checkpoint import save_quantized_checkpoint
from tests.engine.glm_fixtures import (
    TEXT,
    glm4_tokenizer_json,
    save_glm_folder,
    tiny_glm_config,
    tiny_glm_model,
)

# Two tiny GLMs. The random one (the shared fixture) predicts an almost flat distribution (mean top-1
# probability 0.08), so any weight noise flips its argmax; measured there: int8 agrees on 32/32 greedy
# tokens (98% teacher-forced), int4 on 1/32 (35-45% teacher-forced). The trained one has learnt a few
# sentences and is confident like a real model (top-1 probability 0.998); measured there: int8 and
# int4 (g64, g32) agree on 32/32 greedy tokens and 100% teacher-forced.
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def glm_folder(tmp_path_factory):
    return save_glm_folder(tiny_glm_model(tiny_glm_config()), tmp_path_factory.mktemp("glm"))


@pytest.fixture(scope="module")
def glm_fp32(glm_folder):
    return Engine.from_pretrained(glm_folder)


@pytest.fixture(scope="module")
def trained_glm_folder(tmp_path_factory):
    """A tiny GLM trained until it reproduces the fixture sentences (confident next-token choices)."""
    from tokenizers import Tokenizer
    from transformers import GlmForCausalLM

    folder = tmp_path_factory.mktemp("glm-trained")
    glm4_tokenizer_json(folder / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = torch.tensor([[i for line in TEXT for i in tokenizer.encode(line + "\n").ids][:160]])
    torch.manual_seed(0)
    model = GlmForCausalLM(tiny_glm_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3
    model.eval().save_pretrained(folder)
    return folder


def agreement(engine, reference, prompt_ids) -> tuple[float, float]:
    """(free-running greedy, teacher-forced) shares of positions where both pick the same token."""
    want = greedy(reference, prompt_ids)
    got = greedy(engine, prompt_ids)
    free_running = sum(a == b for a, b in zip(got, want, strict=True)) / len(want)
    sequence = torch.tensor([prompt_ids + want])
    forced = (engine.logits(sequence).argmax(-1) == reference.logits(sequence).argmax(-1)).float().mean().item()
    return free_running, forced


def greedy(engine, prompt_ids):
    return engine.generate(prompt_ids, max_new_tokens=NEW_TOKENS, stop_token_ids=[]).token_ids


def prompt(engine):
    return engine.tokenizer.encode("滤芯的使用寿命大约是六个月。The filter lasts")


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "int4:g64", "int4:g32"])
def test_quantized_trained_glm_greedy_output_matches_fp32(trained_glm_folder, scheme):
    reference = Engine.from_pretrained(trained_glm_folder)
    engine = Engine.from_pretrained(trained_glm_folder, quant=scheme)
    assert sum(engine.quant_paths.values()) == 4 * engine.args.n_layers + 1  # + the untied head
    assert engine.model.layers[0].attention.wqkv.bias is not None
    free_running, forced = agreement(engine, reference, reference.tokenizer.encode("滤芯的使用寿命"))
    assert free_running >= 0.9 and forced >= 0.9, (free_running, forced)


def test_int8_glm_agrees_even_on_a_random_model_with_flat_predictions(glm_folder, glm_fp32):
    engine = Engine.from_pretrained(glm_folder, quant="int8")
    assert engine.quant == "int8"
    free_running, forced = agreement(engine, glm_fp32, prompt(glm_fp32))
    assert free_running >= 0.9 and forced >= 0.9, (free_running, forced)


def test_quantized_glm_folder_saves_and_reloads_with_identical_logits(glm_folder, tmp_path):
    out = tmp_path / "glm-int4"
    meta = save_quantized_checkpoint(glm_folder, out, "int4:g32")
    assert meta["scheme"] == "int4" and (out / "quantized.safetensors").is_file()
    assert not list(out.glob("model*.safetensors"))  # the float weights are not copied along
    direct = Engine.from_pretrained(glm_folder, quant="int4:g32")
    reloaded = Engine.from_pretrained(out)
    assert reloaded.quant == "int4:g32"
    ids = prompt(direct)
    sequence = torch.tensor([ids])
    assert torch.equal(direct.logits(sequence), reloaded.logits(sequence))
    assert greedy(direct, ids) == greedy(reloaded, ids)
    assert reloaded.tokenizer.encode("滤芯") == direct.tokenizer.encode("滤芯")
