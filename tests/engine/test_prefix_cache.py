"""Prefix cache: same greedy output with and without it, whole-block reuse, eviction, disk files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from ragglm.engine.cache.kv_store import ROOT, block_key
from ragglm.engine.cache.prefix_cache import PrefixCache, model_fingerprint
from ragglm.engine.model import ModelArgs, Transformer
from tests.engine.prefix_cache_models import (
    BLOCK,
    disk_cache,
    greedy,
    prompts,
    second_block_file,
    tiny_model,
)

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ["llama", "glm"]


def block_bytes(model) -> int:
    args = model.args
    return args.n_layers * 2 * args.n_kv_heads * BLOCK * args.head_dim * 4  # fp32


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_output_is_the_same_with_the_cache(family):
    model = tiny_model(family)
    # 70 shared tokens: four whole blocks of 16 and 6 tokens into the fifth
    first, second = prompts(70, 9, 23)
    expected = [greedy(model, p)[0] for p in (first, second)]
    cache = PrefixCache.for_model(model, block_size=BLOCK)
    ids, cached = greedy(model, first, cache)
    assert (ids, cached) == (expected[0], 0)
    ids, cached = greedy(model, second, cache)
    assert ids == expected[1]
    assert cached == 64  # whole blocks only: the fifth is prefilled as a full prefill cuts it
    ids, cached = greedy(model, first, cache)
    assert ids == expected[0]
    assert cached == 64  # 79 tokens: the last is always prefilled for its logits, so its block too


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_after_a_cached_prefix_match_a_full_prefill(family):
    model = tiny_model(family)
    first, second = prompts(45, 5, 12)
    cache = PrefixCache.for_model(model, block_size=BLOCK)
    with torch.inference_mode():
        model.setup_cache(1, 128)
        model(torch.tensor([first]), start=0)
        cache.store(model, first)
        model.setup_cache(1, 256)  # a fresh, zeroed KV cache
        reused = cache.load_into(model, second)
        assert reused == 32  # 45 shared tokens: two whole blocks
        cached = model(torch.tensor([second[reused:]]), start=reused)
        full = model(torch.tensor([second]))
    torch.testing.assert_close(cached[0], full[0, reused:], atol=1e-4, rtol=1e-4)


def test_cached_length_is_the_longest_common_prefix():
    model = tiny_model("llama")
    cache = PrefixCache.for_model(model, block_size=BLOCK)
    (prompt,) = prompts(50, 0)
    greedy(model, prompt, cache, new_tokens=1)
    assert cache.cached_length(prompt) == 48
    for cut in (3, 16, 17, 31, 32, 40):  # inside the first block, on a boundary, inside later blocks
        other = prompt[:cut] + [(prompt[cut] + 1) % 512] + prompt[cut + 1:]
        assert cache.cached_length(other) == cut // BLOCK * BLOCK
    assert cache.cached_length([(prompt[0] + 1) % 512] + prompt[1:]) == 0
    assert cache.cached_length(prompt + [1, 2, 3]) == 48


def test_least_recently_used_blocks_are_evicted_under_a_small_budget():
    model = tiny_model("llama")
    budget = 10 * block_bytes(model)
    cache = PrefixCache.for_model(model, block_size=BLOCK, budget_bytes=budget)
    a, b, c = prompts(0, 64, 64, 64, seed=3)  # four blocks each, nothing shared
    greedy(model, a, cache, new_tokens=1)
    greedy(model, b, cache, new_tokens=1)
    assert cache.cached_length(a) == 64 and cache.cached_length(b) == 64
    greedy(model, a, cache, new_tokens=1)  # a is now more recent than b
    greedy(model, c, cache, new_tokens=1)
    assert cache.used_bytes <= budget
    assert cache.evictions == 2
    assert cache.cached_length(c) == 64
    assert cache.cached_length(a) == 64
    assert cache.cached_length(b) == 32  # its last two blocks went first, leaves before parents
    expected = greedy(model, b)[0]
    assert greedy(model, b, cache)[0] == expected


def test_held_blocks_are_never_evicted():
    model = tiny_model("llama")
    cache = PrefixCache.for_model(model, block_size=BLOCK, budget_bytes=4 * block_bytes(model))
    a, b, c = prompts(0, 64, 64, 64, seed=4)
    greedy(model, a, cache, new_tokens=1)
    with cache.hold(a) as held:
        assert held == 64
        greedy(model, b, cache, new_tokens=1)
        greedy(model, c, cache, new_tokens=1)
        assert cache.cached_length(a) == 64
        assert cache.cached_length(b) == 0 and cache.cached_length(c) == 0
    greedy(model, b, cache, new_tokens=1)
    assert cache.cached_length(b) == 64 and cache.cached_length(a) == 0
    assert cache.used_bytes <= 4 * block_bytes(model)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_new_process_reuses_the_disk_cache(family, tmp_path):
    model = tiny_model(family)
    first, second = prompts(70, 9, 23, seed=5)
    cache = disk_cache(model, tmp_path)
    greedy(model, first, cache)
    cache.flush()
    assert not list(tmp_path.rglob(".tmp-*"))
    run = subprocess.run([sys.executable, "-m", "tests.engine.prefix_cache_models", family, str(tmp_path),
                          *map(str, second)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    child = json.loads(run.stdout)
    assert child["cached_length"] == 64
    assert child["cached_tokens"] == 64
    assert child["rejected"] == 0
    assert child["ids"] == greedy(model, second)[0]


def _corrupt_payload(path: Path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[:-100])


def _garble_header(path: Path):
    data = bytearray(path.read_bytes())
    data[20:40] = b"x" * 20
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_corrupt_payload, _truncate, _garble_header])
def test_a_corrupt_file_is_detected_and_rebuilt(damage, tmp_path):
    model = tiny_model("llama")
    (prompt,) = prompts(64, 8, seed=6)
    expected = greedy(model, prompt)[0]
    *_, damaged = second_block_file(model, tmp_path, prompt)
    damage(damaged)

    fresh = disk_cache(model, tmp_path)
    ids, cached = greedy(model, prompt, fresh)
    assert ids == expected
    assert cached == BLOCK  # reuse stops before the damaged block
    assert fresh.disk.rejected == 1
    fresh.flush()
    assert damaged.is_file()  # written again from the recomputed KV

    again = disk_cache(model, tmp_path)
    ids, cached = greedy(model, prompt, again)
    assert (ids, cached, again.disk.rejected) == (expected, 64, 0)


def test_files_of_another_model_are_not_trusted(tmp_path):
    model, other = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    (prompt,) = prompts(48, 4, seed=7)
    cache = disk_cache(model, tmp_path)
    greedy(model, prompt, cache)
    cache.flush()
    # Same name and config, different weights: another folder, so nothing is reused.
    assert disk_cache(other, tmp_path).cached_length(prompt) == 0
    # A file copied into this model's folder from another model's is recognised as stale.
    other_cache = disk_cache(other, tmp_path)
    greedy(other, prompt, other_cache)
    other_cache.flush()
    key = block_key(ROOT, prompt[:BLOCK])
    cache.disk.path(ROOT, key).write_bytes(other_cache.disk.path(ROOT, key).read_bytes())
    fresh = disk_cache(model, tmp_path)
    assert greedy(model, prompt, fresh)[1] == 0
    assert fresh.disk.rejected == 1
    assert model_fingerprint(model, "tiny") != model_fingerprint(other, "tiny")


def test_concurrent_writers_leave_whole_files(tmp_path):
    model = tiny_model("glm")
    (prompt,) = prompts(96, 0, seed=8)
    writers = [disk_cache(model, tmp_path) for _ in range(3)]
    with torch.inference_mode():
        model.setup_cache(1, 128)
        model(torch.tensor([prompt]), start=0)
        for cache in writers:  # the same blocks, written three times over by background threads
            cache.store(model, prompt)
    for cache in writers:
        cache.flush()
    reader = disk_cache(model, tmp_path)
    assert greedy(model, prompt, reader, new_tokens=1)[1] == 80  # the block of the last token is prefilled
    assert reader.disk.rejected == 0
    assert not list(tmp_path.rglob(".tmp-*"))


def test_disk_budget_removes_the_oldest_files(tmp_path):
    model = tiny_model("llama")
    budget = 6 * block_bytes(model)
    a, b = prompts(0, 64, 64, seed=9)
    cache = disk_cache(model, tmp_path)
    cache.disk.budget_bytes = budget
    greedy(model, a, cache, new_tokens=1)
    cache.flush()
    greedy(model, b, cache, new_tokens=1)
    cache.flush()
    sizes = sum(p.stat().st_size for p in tmp_path.rglob("*.kv"))
    assert sizes <= budget
    fresh = disk_cache(model, tmp_path)
    assert fresh.cached_length(b) > 0


@pytest.mark.slow
def test_engine_reports_cached_tokens_and_reuses_the_context(smollm2, tmp_path):
    from ragglm.documents import Chunk, Hit
    from ragglm.engine import Engine
    from ragglm.pipelines.prompts import build_messages

    engine = Engine(smollm2.model, smollm2.tokenizer, smollm2.chat_format, name="smollm2")
    folder = engine.enable_disk_cache(tmp_path)
    text = (REPO / "examples" / "manuals" / "smartlock-s2-guide.md").read_text(encoding="utf-8")
    hits = [Hit(Chunk(text, "smartlock-s2-guide.md", None, 0, len(text)), 1.0)]
    first = engine.chat_ids(build_messages("How do I change the batteries?", hits, "en"))
    second = engine.chat_ids(build_messages("How do I add a fingerprint?", hits, "en"))
    shared = next(i for i, (x, y) in enumerate(zip(first, second, strict=False)) if x != y)
    assert shared > 100
    shared -= shared % engine.prefix_cache.block_size  # whole blocks
    assert engine.cached_prefix_length(second) == 0
    plain = [engine.generate(ids, max_new_tokens=12, use_prefix_cache=False).token_ids for ids in (first, second)]
    result = engine.generate(first, max_new_tokens=12)
    assert (result.token_ids, result.cached_tokens) == (plain[0], 0)
    assert engine.cached_prefix_length(second) == shared
    result = engine.generate(second, max_new_tokens=12)
    assert (result.token_ids, result.cached_tokens) == (plain[1], shared)
    engine.prefix_cache.flush()
    assert folder.parent == tmp_path and list(folder.glob("*.kv"))


@pytest.mark.slow
def test_knowledge_base_keeps_the_kv_in_its_folder(tmp_path, manuals):
    from ragglm.knowledge_base import KB_KV_CACHE_MB, KnowledgeBase

    kb = KnowledgeBase(tmp_path / "kb", max_new_tokens=4)
    kb.add(manuals / "aquapure-w3-manual.pdf")
    first = kb.ask("How long does the filter cartridge last?", mode="stuff")
    second = kb.ask("What does error code E2 mean?", mode="stuff")
    assert first.timings["cached_tokens"] == 0
    assert second.timings["cached_tokens"] > 0
    kb.generator.prefix_cache.flush()
    assert list((tmp_path / "kb" / "kv-cache").rglob("*.kv"))
    # a knowledge base's folder is pruned above its own, smaller budget; memory holds one window's KV
    assert kb.generator.prefix_cache.disk.budget_bytes <= KB_KV_CACHE_MB * 2**20
    args = kb.generator.args
    window_kv = 2 * args.n_layers * args.n_kv_heads * args.head_dim * 4 * args.max_seq_len
    assert kb.generator.prefix_cache.budget_bytes <= window_kv


def test_a_glm_checkpoint_reuses_its_prefix_in_memory_and_from_disk(tmp_path):
    pytest.importorskip("transformers")
    from ragglm.engine import Engine
    from tests.engine.glm_fixtures import TEXT, save_glm_folder, tiny_glm_config, tiny_glm_model

    folder = save_glm_folder(tiny_glm_model(tiny_glm_config(max_position_embeddings=2048)), tmp_path / "glm")
    engine = Engine.from_pretrained(folder, cache_dir=tmp_path / "kv")
    context = "\n".join(TEXT)

    def messages(question):
        return [{"role": "system", "content": "Answer from the sources and cite them."},
                {"role": "user", "content": f"Sources:\n{context}\n\nQuestion: {question}"}]

    first, second = engine.chat_ids(messages("滤芯多久更换？")), engine.chat_ids(messages("How long to flush?"))
    shared = next(i for i, (x, y) in enumerate(zip(first, second, strict=False)) if x != y)
    assert shared > 2 * BLOCK
    block = engine.prefix_cache.block_size
    shared -= shared % block  # whole blocks
    plain = [engine.generate(ids, max_new_tokens=16, use_prefix_cache=False).token_ids for ids in (first, second)]
    result = engine.generate(first, max_new_tokens=16)
    assert (result.token_ids, result.cached_tokens) == (plain[0], 0)
    result = engine.generate(second, max_new_tokens=16)
    assert (result.token_ids, result.cached_tokens) == (plain[1], shared)
    engine.prefix_cache.flush()

    reloaded = Engine.from_pretrained(folder, cache_dir=tmp_path / "kv")
    assert reloaded.cached_prefix_length(second) == len(second) // block * block
    result = reloaded.generate(second, max_new_tokens=16)
    assert (result.token_ids, result.cached_tokens) == (plain[1], (len(second) - 1) // block * block)


def _seeded_runs(generate, prompt: list[int], block: int, other: list[int]):
    """(k, ids, cached tokens) of prompt generated after a prompt sharing exactly k blocks of it filled
    a fresh cache, for k = 0..len(prompt) // block; generate(ids, fresh) -> (ids, cached)."""
    for k in range(len(prompt) // block + 1):
        shared = prompt[:k * block]
        diverging = prompt[len(shared)] if len(shared) < len(prompt) else None  # so exactly k blocks are shared
        seed = shared + [token for token in other if token != diverging][:block + 3]
        generate(seed, True)
        yield k, *generate(prompt, False)


def _wide_model(family: str) -> Transformer:
    """Two layers as wide as SmolLM2's: at this width a matrix product rounds a row differently
    depending on how many rows it takes, which the narrow test models never show."""
    torch.manual_seed(0)
    args = dict(vocab_size=512, dim=576, n_layers=2, n_heads=9, n_kv_heads=3, intermediate_size=1536,
                max_seq_len=2048)
    glm = dict(family="glm", rope_fraction=0.5, rope_interleaved=True, qkv_bias=True) if family == "glm" else {}
    return Transformer(ModelArgs(**args, **glm)).eval()


def _prompt_kv(model, length: int) -> list[Tensor]:
    return [torch.stack((layer.attention.kv_cache.k[0, :, :length], layer.attention.kv_cache.v[0, :, :length]))
            for layer in model.layers]


# Ten whole blocks, and ten with the start of an eleventh.
@pytest.mark.parametrize(("family", "extra"), [("llama", 0), ("glm", 7)])
def test_greedy_output_is_identical_at_every_cached_length(family, extra):
    model = _wide_model(family)
    block = PrefixCache.for_model(model).block_size
    prompt, other = prompts(0, 10 * block + extra, 64, seed=21)
    expected = greedy(model, prompt, new_tokens=8)[0]
    expected_kv = _prompt_kv(model, len(prompt))
    state = {}

    def generate(ids, fresh):
        if fresh:
            state["cache"] = PrefixCache.for_model(model)
        return greedy(model, ids, state["cache"], new_tokens=8 if not fresh else 1)

    for k, ids, cached in _seeded_runs(generate, prompt, block, other):
        assert cached == min(k * block, (len(prompt) - 1) // block * block)
        assert ids == expected, f"{k} cached blocks"
        # The KV is the same to the bit, not only close enough to keep these tokens.
        assert all(map(torch.equal, _prompt_kv(model, len(prompt)), expected_kv)), f"{k} cached blocks"


@pytest.mark.slow
def test_smollm2_greedy_output_is_identical_at_every_cached_length():
    from ragglm.engine import Engine

    engine = Engine.from_pretrained("smollm2")  # default dtype: bf16 linear layers where the CPU has them
    block = engine.prefix_cache.block_size
    generator = torch.Generator().manual_seed(22)
    vocab = engine.model.args.vocab_size
    prompt, other = (torch.randint(100, vocab - 100, (n,), generator=generator).tolist() for n in (10 * block, 64))
    expected = engine.generate(prompt, max_new_tokens=16, use_prefix_cache=False).token_ids

    def generate(ids, fresh):
        if fresh:
            engine.prefix_cache = PrefixCache.for_model(engine.model)
        result = engine.generate(ids, max_new_tokens=1 if fresh else 16)
        return result.token_ids, result.cached_tokens

    for k, ids, cached in _seeded_runs(generate, prompt, block, other):
        assert cached == min(k, 9) * block  # the block holding the last prompt token is prefilled
        assert ids == expected, f"{k} cached blocks"
