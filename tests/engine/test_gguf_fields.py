"""The shape fields GGUF architectures share, with and without their optional keys."""

from __future__ import annotations

import pytest

from ragglm.engine.loading.gguf_fields import shape_fields

REQUIRED = {"qwen2.attention.head_count": 8, "qwen2.embedding_length": 512, "qwen2.block_count": 4,
            "qwen2.feed_forward_length": 1024, "tokenizer.ggml.tokens": ["a"] * 300}


def test_optional_fields_fall_back_to_what_the_required_ones_imply():
    fields = shape_fields(REQUIRED, "qwen2")
    assert fields == {"vocab_size": 300, "dim": 512, "n_layers": 4, "n_heads": 8, "n_kv_heads": 8, "head_dim": 64,
                      "intermediate_size": 1024, "norm_eps": 1e-5, "rope_theta": 10000.0}


def test_stated_fields_win_and_the_rope_base_is_a_float():
    meta = {**REQUIRED, "qwen2.attention.head_count_kv": 2, "qwen2.attention.key_length": 128,
            "qwen2.vocab_size": 320, "qwen2.rope.freq_base": 1000000}
    fields = shape_fields(meta, "qwen2")
    assert (fields["n_kv_heads"], fields["head_dim"], fields["vocab_size"]) == (2, 128, 320)
    assert isinstance(fields["rope_theta"], float) and fields["rope_theta"] == 1e6


def test_a_missing_required_field_is_named():
    meta = {k: v for k, v in REQUIRED.items() if k != "qwen2.block_count"}
    with pytest.raises(KeyError, match="qwen2.block_count"):
        shape_fields(meta, "qwen2")
