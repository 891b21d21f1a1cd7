"""Crafted KV files: each is rejected and removed without raising, and the next generation rebuilds it
and answers exactly as without the cache.

Files are written by the store's own writer, then altered and sealed again: with plain SHA-256
digests where the MACs go (what an editor without the key can compute), with the authentic header
MAC kept and a plain digest of the altered payload, with another key, and with the cache's own key
(as a buggy writer would: the checks behind the MAC must hold too).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets

import pytest
import torch

from ragglm.engine.cache import kv_file
from ragglm.engine.cache.keys import ROOT, block_key
from ragglm.engine.cache.kv_file import MAGIC
from ragglm.engine.cache.mac_key import KEY_NAME
from tests.engine.prefix_cache_models import (
    BLOCK,
    disk_cache,
    greedy,
    prompts,
    second_block_file,
    tiny_model,
)

_PREFIX, _MAC = 16, 32


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(header bytes, payload) of a file in the current format."""
    length = int.from_bytes(data[8:16], "little")
    header = data[_PREFIX + _MAC:_PREFIX + _MAC + length]
    offset = json.loads(header)["payload_offset"]
    return header, data[offset:-_MAC]


def _assemble(header: bytes, payload: bytes, seal) -> bytes:
    prefix = MAGIC + len(header).to_bytes(8, "little")
    offset = -(-(_PREFIX + _MAC + len(header)) // 64) * 64
    header_mac, block_mac = seal(prefix, header, payload)
    return prefix + header_mac + header + bytes(offset - _PREFIX - _MAC - len(header)) + payload + block_mac


def _plain(prefix, header, payload):
    return hashlib.sha256(prefix + header).digest(), hashlib.sha256(prefix + header + payload).digest()


def _header_kept(secret: bytes):
    def seal(prefix, header, payload):
        return kv_file._header_mac(secret, prefix, header), hashlib.sha256(payload).digest()
    return seal


def _keyed(secret: bytes):
    def seal(prefix, header, payload):
        return kv_file._header_mac(secret, prefix, header), kv_file._block_mac(secret, prefix, header, payload)
    return seal


def _edit_header(header: bytes, **changes) -> bytes:
    fields = json.loads(header)
    fields.update(changes)
    return json.dumps(fields, separators=(",", ":")).encode()


def _with_payload(header: bytes, payload: bytes) -> tuple[bytes, bytes]:
    return _edit_header(header, payload_bytes=len(payload)), payload


def _floats(payload: bytes, change) -> bytes:
    values = torch.frombuffer(bytearray(payload), dtype=torch.float32).clone()
    return change(values).numpy().tobytes()


# Each crafted change: (header, payload) -> (header, payload).
def _huge_token_id(header, payload):
    tokens = json.loads(header)["tokens"]
    return _edit_header(header, tokens=[2**64] + tokens[1:]), payload


def _nested_header(depth):
    def craft(header, payload):
        return b'{"tokens":' + b"[" * depth + b"]" * depth + b"}", payload
    return craft


def _ragged_payload(header, payload):
    return _with_payload(header, payload[:-3])


def _short_payload(header, payload):
    return _with_payload(header, payload[:len(payload) // 2])


def _zeroed_payload(header, payload):
    return header, bytes(len(payload))


def _nan_payload(header, payload):
    return header, _floats(payload, lambda v: v.index_fill(0, torch.tensor([3]), math.nan))


def _scaled_payload(header, payload):
    return header, _floats(payload, lambda v: v * 1.5)


def _unchanged(header, payload):
    return header, payload


STRUCTURAL = {"token id 2**64": _huge_token_id, "header nested 100,000 deep": _nested_header(100_000),
              "header nested 20,000 deep": _nested_header(20_000), "payload not a multiple of 8": _ragged_payload,
              "short payload": _short_payload, "NaN payload": _nan_payload}
VALUES = {"zeroed payload": _zeroed_payload, "scaled payload": _scaled_payload}
CASES = [(name, craft, "plain digests") for name, craft in {**STRUCTURAL, **VALUES}.items()]
PAYLOAD_ONLY = {"NaN payload": _nan_payload, **VALUES}
CASES += [(name, craft, "header MAC kept") for name, craft in PAYLOAD_ONLY.items()]
CASES += [(name, craft, "own key") for name, craft in STRUCTURAL.items()]  # authentic, yet not whole
CASES += [("a file from another key", _unchanged, "another key")]


def _seal_for(how: str, folder):
    if how == "plain digests":
        return _plain
    if how == "another key":
        return _keyed(secrets.token_bytes(32))
    secret = (folder / KEY_NAME).read_bytes()
    return _header_kept(secret) if how == "header MAC kept" else _keyed(secret)


def _craft(path, craft, seal) -> None:
    header, payload = craft(*_split(path.read_bytes()))
    path.write_bytes(_assemble(header, payload, seal))


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.mark.parametrize(("name", "craft", "how"), CASES, ids=[f"{c[0]}, {c[2]}" for c in CASES])
def test_a_crafted_file_is_rejected_removed_and_rebuilt(model, tmp_path, name, craft, how):
    (prompt,) = prompts(64, 8, seed=11)
    expected = greedy(model, prompt)[0]
    first, second, path = second_block_file(model, tmp_path, prompt)
    _craft(path, craft, _seal_for(how, tmp_path))

    reader = disk_cache(model, tmp_path)  # as a later process would
    assert reader.disk.read(first, second, prompt[BLOCK:2 * BLOCK]) is None
    assert reader.disk.rejected == 1 and not path.exists()

    ids, cached = greedy(model, prompt, reader)
    assert (ids, cached) == (expected, BLOCK)  # reuse stops before the bad block
    reader.flush()
    assert reader.disk.read(first, second, prompt[BLOCK:2 * BLOCK]) is not None  # rebuilt, and whole
    again = disk_cache(model, tmp_path)
    assert greedy(model, prompt, again) == (expected, 64)
    assert again.disk.rejected == 0


@pytest.mark.parametrize(("name", "craft", "how"), CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_a_crafted_file_never_counts_as_cached(model, tmp_path, name, craft, how):
    (prompt,) = prompts(48, 0, seed=12)
    writer = disk_cache(model, tmp_path)
    greedy(model, prompt + [1], writer, new_tokens=1)
    writer.flush()
    key = block_key(ROOT, prompt[:BLOCK])
    _craft(writer.disk.path(ROOT, key), craft, _seal_for(how, tmp_path))
    reader = disk_cache(model, tmp_path)
    assert reader.cached_length(prompt) == 0
    assert reader.disk.rejected == 1 and not reader.disk.path(ROOT, key).exists()


def test_files_of_the_older_format_are_discarded(model, tmp_path):
    (prompt,) = prompts(32, 0, seed=13)
    writer = disk_cache(model, tmp_path)
    key = block_key(ROOT, prompt)
    old = b"RAGGLMKV" + (20).to_bytes(8, "little") + b'{"version": 1}'.ljust(20) + bytes(64)
    writer.disk.path(ROOT, key).write_bytes(old)
    assert disk_cache(model, tmp_path).cached_length(prompt) == 0
    (writer.disk.folder / ".format").unlink()  # as in a folder a previous version left
    writer.disk.path(ROOT, key).write_bytes(old)
    disk_cache(model, tmp_path)
    assert not writer.disk.path(ROOT, key).exists()  # removed when the store opens


@pytest.mark.skipif(os.name != "posix", reason="POSIX file types")
def test_a_pipe_or_link_under_a_block_name_is_refused_without_waiting(model, tmp_path):
    (prompt,) = prompts(64, 0, seed=14)
    writer = disk_cache(model, tmp_path)
    first = block_key(ROOT, prompt[:BLOCK])
    os.mkfifo(writer.disk.path(ROOT, first))
    second = block_key(first, prompt[BLOCK:2 * BLOCK])
    target = tmp_path / "elsewhere.kv"
    target.write_bytes(b"x")
    writer.disk.path(first, second).symlink_to(target)
    reader = disk_cache(model, tmp_path)
    assert reader.disk.read(first, second, prompt[BLOCK:2 * BLOCK]) is None
    assert greedy(model, prompt, reader, new_tokens=2)[1] == 0
    assert reader.disk.rejected == 2 and target.read_bytes() == b"x"
    reader.flush()
    assert disk_cache(model, tmp_path).cached_length(prompt) == 64
