"""The packaged SmolLM2 engine against transformers' LlamaForCausalLM loaded from the same GGUF (fp32)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_llama():
    pytest.importorskip("accelerate")  # transformers needs it to load a GGUF
    from transformers import LlamaForCausalLM

    from ragglm.engine.sources import resolve_model_path

    path = resolve_model_path("smollm2")
    return LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def test_smollm2_logits_match_transformers(smollm2, reference_llama):
    ids = torch.tensor([smollm2.chat_ids([{"role": "user", "content": "How long does the filter last?"}])])
    with torch.no_grad():
        theirs = reference_llama(ids).logits
    assert (smollm2.logits(ids) - theirs).abs().max().item() <= 1e-3


def test_smollm2_greedy_32_tokens_equal_transformers(smollm2, reference_llama):
    from ragglm.engine.generate import generate_tokens

    prompt = smollm2.chat_ids([{"role": "user", "content": "Write a short poem about water filters."}])
    with torch.no_grad():
        theirs = reference_llama.generate(torch.tensor([prompt]), max_new_tokens=32, min_new_tokens=32,
                                          do_sample=False, eos_token_id=None, pad_token_id=0)
    ours = list(generate_tokens(smollm2.model, prompt, 32, set(), prefill_chunk=16))
    assert ours == theirs[0, len(prompt):].tolist()
