"""Our Transformer on the packaged SmolLM2 GGUF against transformers' LlamaForCausalLM."""

import pytest
import torch

PROMPT = [{"role": "user", "content": "The AquaPure W3 filter lasts 12 months. How long does it last?"}]


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("accelerate")
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    from ragglm.engine.loading.sources import resolve_model_path

    logging.disable_progress_bar()
    path = resolve_model_path("smollm2")
    return LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.slow
def test_logits_match_transformers(smollm2, reference):
    ids = torch.tensor([smollm2.chat_ids(PROMPT)])
    with torch.no_grad():
        expected = reference(ids).logits
    ours = smollm2.logits(ids)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_greedy_tokens_match_transformers(smollm2, reference):
    prompt = smollm2.chat_ids(PROMPT)
    expected = reference.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):]
    expected = [t for t in expected.tolist() if t not in smollm2.tokenizer.eos_token_ids]
    ours = smollm2.generate(prompt, max_new_tokens=32).token_ids
    assert ours == expected[: len(ours)] and len(ours) == len(expected)


def test_tokenizer_matches_transformers(smollm2):
    pytest.importorskip("accelerate")
    from transformers import AutoTokenizer

    from ragglm.engine.loading.sources import resolve_model_path

    path = resolve_model_path("smollm2")
    theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = "<|im_start|>user\nPrice: 1,299.50 CNY (¥) for 3 units — naïve café 数字 12345<|im_end|>\n"
    assert smollm2.tokenizer.encode(text) == theirs.encode(text, add_special_tokens=False)
    assert smollm2.tokenizer.decode(smollm2.tokenizer.encode("naïve café")) == "naïve café"


def test_streaming_yields_the_same_text(smollm2):
    prompt = smollm2.chat_ids(PROMPT)
    whole = smollm2.generate(prompt, max_new_tokens=12)
    pieces = list(smollm2.generate(prompt, max_new_tokens=12, stream=True))
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text
    assert whole.ttft_s > 0 and len(whole.token_ids) <= 12
