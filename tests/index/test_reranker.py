"""The cross-encoder reranker orders fused hits by the model's own pair scores (tiny random model)."""

from __future__ import annotations

import pytest

from ragglm.documents import Chunk, Hit
from ragglm.index.reranker import CrossEncoderReranker


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("cross-encoder")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", *"门锁电池密码滤芯"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def test_rerank_follows_cross_encoder_scores(tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    texts = ["门锁电池", "滤芯", "密码锁", "abc", "电池电池"]
    hits = [Hit(Chunk(t, "s", None, 0, len(t)), 1.0 - n / 10) for n, t in enumerate(texts)]
    reranked = CrossEncoderReranker(tiny_cross_encoder).rerank("门锁", hits, 3)
    scores = CrossEncoder(tiny_cross_encoder).predict([("门锁", t) for t in texts])
    expected = sorted(range(len(texts)), key=lambda i: -float(scores[i]))[:3]
    assert [h.text for h in reranked] == [texts[i] for i in expected]
    assert [h.score for h in reranked] == pytest.approx([float(scores[i]) for i in expected], abs=1e-5)
