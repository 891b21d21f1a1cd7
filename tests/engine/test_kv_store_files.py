"""The KV cache folder: private when created, and no temporary file of a dead writer outlives the next open."""

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
