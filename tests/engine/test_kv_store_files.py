"""The KV cache folder: private when created, its key private, its budget kept across models and
writers, and no temporary file of a dead writer outlives the next open."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ragglm.engine.cache.kv_store import ROOT, KVFileStore, block_key
from ragglm.engine.cache.mac_key import KEY_NAME

REPO = Path(__file__).resolve().parents[2]
LAYOUT = (1, 1, 4)  # layers, kv heads, head dim
TOKENS = (5, 7)
FINGERPRINT = {"model": "tiny", "quant": "none", "dtype": "float32"}


def _open(folder: Path) -> KVFileStore:
    return KVFileStore(folder, FINGERPRINT, LAYOUT, torch.float32, budget_bytes=2**20)


def _block() -> torch.Tensor:
    return torch.arange(1 * 2 * 1 * len(TOKENS) * 4, dtype=torch.float32).reshape(1, 2, 1, len(TOKENS), 4)


def _finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_created_folders_are_private_and_existing_ones_keep_their_mode(tmp_path):
    existing = tmp_path / "cache"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    old_umask = os.umask(0o022)
    try:
        folder = existing / "kv" / "model"
        _open(folder)
    finally:
        os.umask(old_umask)
    assert _mode(folder) == _mode(folder.parent) == 0o700
    assert _mode(existing) == 0o755


def test_abandoned_temporaries_are_removed_when_the_store_opens(tmp_path):
    folder = tmp_path / "kv"
    _open(folder)
    stale = time.time() - 3600
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            names = {"dead": f".tmp-{_finished_pid()}-a1b2c3.kv", "live": f".tmp-{live.pid}-a1b2c3.kv",
                     "live but stale": f".tmp-{live.pid}-d4e5f6.kv", "unnamed": ".tmp-x9y8z7.kv",
                     "unnamed and stale": ".tmp-q1w2e3.kv", "block": "root-00ff.kv"}
            for name in names.values():
                (folder / name).write_bytes(b"partial")
            for key in ("live but stale", "unnamed and stale", "block"):
                os.utime(folder / names[key], (stale, stale))
            _open(folder)
            kept = {key for key, name in names.items() if (folder / name).exists()}
        finally:
            live.kill()
    assert kept == {"live", "unnamed", "block"}  # a block file is the pruning's business, not this


_KILLED_WRITE = textwrap.dedent("""
    import os, sys
    import torch
    from ragglm.engine.cache.kv_store import ROOT, KVFileStore, block_key
    store = KVFileStore(sys.argv[1], {fingerprint!r}, {layout!r}, torch.float32, budget_bytes=2**20)
    os.replace = lambda *args, **kwargs: os._exit(86)  # killed with the block written but not renamed
    kv = torch.arange({size}, dtype=torch.float32).reshape(1, 2, 1, {n}, 4)
    store.write(ROOT, block_key(ROOT, {tokens!r}), {tokens!r}, kv).result()
""")


@pytest.mark.slow
def test_a_write_killed_before_its_rename_leaves_nothing_after_the_next_open(tmp_path):
    folder = tmp_path / "kv"
    script = _KILLED_WRITE.format(fingerprint=FINGERPRINT, layout=LAYOUT, tokens=TOKENS, n=len(TOKENS),
                                  size=_block().numel())
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    finished = subprocess.run([sys.executable, "-c", script, str(folder)], env=environment, timeout=120)
    assert finished.returncode == 86
    assert len(list(folder.glob(".tmp-*.kv"))) == 1
    store = _open(folder)
    key = block_key(ROOT, TOKENS)
    assert not list(folder.glob(".tmp-*.kv"))
    assert store.read(ROOT, key, TOKENS) is None
    store.write(ROOT, key, TOKENS, _block()).result()
    torch.testing.assert_close(store.read(ROOT, key, TOKENS), _block())
    assert not list(folder.glob(".tmp-*.kv"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_the_key_is_created_private_on_first_use_and_shared_by_later_stores(tmp_path):
    old_umask = os.umask(0o022)
    try:
        first = _open(tmp_path / "kv")
    finally:
        os.umask(old_umask)
    key_file = tmp_path / KEY_NAME
    assert _mode(key_file) == 0o600 and key_file.stat().st_size == 32
    assert _open(tmp_path / "kv").spec.secret == first.spec.secret == key_file.read_bytes()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_key_others_could_read_is_replaced_and_its_files_rebuilt(tmp_path):
    store = _open(tmp_path / "kv")
    key = block_key(ROOT, TOKENS)
    store.write(ROOT, key, TOKENS, _block()).result()
    os.chmod(tmp_path / KEY_NAME, 0o644)
    reopened = _open(tmp_path / "kv")
    assert reopened.spec.secret != store.spec.secret and _mode(tmp_path / KEY_NAME) == 0o600
    assert reopened.read(ROOT, key, TOKENS) is None and reopened.rejected == 1


def _fill(store: KVFileStore, count: int, first_token: int = 0) -> None:
    for token in range(first_token, first_token + count):
        store.write(ROOT, block_key(ROOT, (token, token)), (token, token), _block())
    store.flush()


def _root_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.glob("*/*.kv"))


def test_the_budget_bounds_every_model_folder_and_writer_under_the_root_together(tmp_path):
    file_bytes = 64 + 4 * 2 * 4 * 2 + 32  # header block, payload, MAC
    budget = 10 * file_bytes
    stores = [KVFileStore(tmp_path / name, {**FINGERPRINT, "model": name}, LAYOUT, torch.float32, budget)
              for name in ("one", "two", "one")]  # two models, and a second writer of the first
    for round_ in range(4):
        for index, store in enumerate(stores):
            _fill(store, 4, first_token=100 * index + 10 * round_)
            assert _root_bytes(tmp_path) <= budget + 2 * budget * 0.05 + file_bytes
    assert sum(store.pruned for store in stores) > 0
    unrelated = tmp_path / "notes" / "mine.kv"  # a folder without model.json is never pruned
    unrelated.parent.mkdir()
    unrelated.write_bytes(b"keep")
    _fill(stores[0], 20, first_token=1000)
    assert unrelated.read_bytes() == b"keep"


def test_the_environment_budget_applies_when_a_store_opens(tmp_path, monkeypatch):
    _fill(_open(tmp_path / "kv"), 30)
    monkeypatch.setenv("RAGGLM_DISK_CACHE_MB", str(2000 / 2**20))
    store = KVFileStore(tmp_path / "kv", FINGERPRINT, LAYOUT, torch.float32)
    store.flush()
    store._writer.submit(lambda: None).result()
    assert store.budget_bytes == 2000 and _root_bytes(tmp_path) <= 2000
