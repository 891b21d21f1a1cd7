"""Damaged or crafted model files are refused from their headers, with one line naming the file.

Every crafted size here is far beyond memory (a 1 TB tensor, an array of 2**40 strings): the tests
pass only because the check comes before any allocation or loop that the size would drive.
"""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ragglm.engine.loading.checkpoint_files import iter_checkpoint_tensors
from ragglm.engine.loading.gguf_loader import read_gguf
from ragglm.engine.loading.safetensors_reader import SafetensorsFile, write_safetensors
from ragglm.errors import ModelNotFoundError

REPO = Path(__file__).resolve().parents[2]
TB = 2**40


# -- safetensors -------------------------------------------------------------------------------------

def _safetensors(path: Path, header, data: bytes = b"", length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _refused(path: Path, *words: str, load=SafetensorsFile) -> str:
    """The message load(path) refuses the file with, at once, as one line with exit code 3."""
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError) as caught:
        load(path)
    assert time.monotonic() - started < 2
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message
    return message


def test_a_valid_file_still_reads(tmp_path):
    write_safetensors(tmp_path / "ok.safetensors", [("a", torch.arange(6.0).reshape(2, 3)), ("b", torch.ones(0))])
    with SafetensorsFile(tmp_path / "ok.safetensors") as f:
        assert torch.equal(f.get_tensor("a"), torch.arange(6.0).reshape(2, 3))
        assert f.get_tensor("b").numel() == 0


def test_a_one_terabyte_tensor_is_refused_before_allocating(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [TB // 4], "data_offsets": [0, TB]}}
    _refused(_safetensors(tmp_path / "big.safetensors", header, b"\0" * 16), "data section of 16 bytes")


def test_a_size_that_disagrees_with_the_shape_is_refused(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [TB // 4], "data_offsets": [0, 16]}}
    _refused(_safetensors(tmp_path / "lies.safetensors", header, b"\0" * 16), "needs 1099511627776 bytes")


def test_offsets_past_the_end_are_refused(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
    _refused(_safetensors(tmp_path / "past.safetensors", header, b"\0" * 16), "bytes 8..24")


def test_overlapping_tensors_are_refused(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    _refused(_safetensors(tmp_path / "overlap.safetensors", header, b"\0" * 16), "share bytes")


def test_bad_json_is_refused(tmp_path):
    _refused(_safetensors(tmp_path / "json.safetensors", b'{"w": {"dtype": '), "not JSON")


@pytest.mark.parametrize("header, words", [
    ([1, 2], "not a JSON object"),
    ({"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}, "'F99'"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "not a list of sizes"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, "bytes 4..0"),
    ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, "not a list of sizes"),
    ({"w": "F32"}, "not an object"),
    ({"__metadata__": [1], "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, "__metadata__"),
])
def test_malformed_entries_are_refused(tmp_path, header, words):
    _refused(_safetensors(tmp_path / "bad.safetensors", header, b"\0" * 4), words)


def test_a_header_length_past_the_file_or_too_large_is_refused(tmp_path):
    _refused(_safetensors(tmp_path / "long.safetensors", b"{}", length=1000), "claims 1000 bytes")
    _refused(_safetensors(tmp_path / "huge.safetensors", b"{}", length=TB), "at most")
    (tmp_path / "short.safetensors").write_bytes(b"\1\2")
    _refused(tmp_path / "short.safetensors", "too short")


def _llama_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 32, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16}))
    return folder


def test_one_bad_shard_stops_the_folder_before_any_tensor_is_read(tmp_path):
    folder = _llama_folder(tmp_path / "model")
    write_safetensors(folder / "model-1.safetensors", [("a", torch.ones(2))])
    _safetensors(folder / "model-2.safetensors", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, TB]}})
    with pytest.raises(ModelNotFoundError, match="model-2.safetensors"):
        iter_checkpoint_tensors(folder)


# -- pickle .bin -------------------------------------------------------------------------------------

class _Payload:
    """Pickles as a call to os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_bin_holding_a_class_reference_is_refused_without_running_it(tmp_path):
    folder = _llama_folder(tmp_path / "model")
    marker = tmp_path / "ran"
    torch.save({"w": torch.ones(2), "x": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError) as caught:
        dict(iter_checkpoint_tensors(folder))
    message = str(caught.value)
    assert "pytorch_model.bin" in message and "other than tensors" in message and ".safetensors" in message
    assert "\n" not in message and "weights_only" not in message  # no advice to turn the guard off
    assert not marker.exists()


def test_a_raw_pickle_bin_is_refused_unread(tmp_path):
    import pickle

    folder = _llama_folder(tmp_path / "model")
    marker = tmp_path / "ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelNotFoundError, match="raw pickle files are not loaded"):
        iter_checkpoint_tensors(folder)
    assert not marker.exists()


def test_a_plain_bin_still_loads(tmp_path):
    folder = _llama_folder(tmp_path / "model")
    torch.save({"w": torch.arange(3.0)}, folder / "pytorch_model.bin")
    assert torch.equal(dict(iter_checkpoint_tensors(folder))["w"], torch.arange(3.0))


# -- GGUF --------------------------------------------------------------------------------------------

def _tiny_gguf(path: Path) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_array("test.numbers", [1, 2, 3])
    writer.add_tensor("token_embd.weight", np.ones((3, 4), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _patch_u64(path: Path, after: bytes, skip: int, value: int) -> None:
    """Overwrite the u64 that lies `skip` bytes after the (only) occurrence of `after`."""
    data = bytearray(path.read_bytes())
    at = data.index(after) + len(after) + skip
    data[at:at + 8] = struct.pack("<Q", value)
    path.write_bytes(bytes(data))


def _gguf_refused(path: Path, *words: str) -> str:
    return _refused(path, *words, load=read_gguf)


def test_a_valid_tiny_gguf_passes_the_walk(tmp_path):
    from gguf import GGML_QUANT_SIZES, GGUFReader

    from ragglm.engine.loading.gguf_header import check_gguf

    path = _tiny_gguf(tmp_path / "ok.gguf")
    layout = check_gguf(path, {int(k): v for k, v in GGML_QUANT_SIZES.items()})
    assert (layout.tensor_count, layout.data_start) == (2, GGUFReader(str(path)).data_offset)


@pytest.mark.parametrize("key", [b"tokenizer.ggml.tokens", b"test.numbers"])
def test_an_array_of_two_to_the_forty_items_is_refused_at_once(tmp_path, key):
    path = _tiny_gguf(tmp_path / "array.gguf")
    _patch_u64(path, key, 4 + 4, TB)  # after the key: value type u32, item type u32, then the count
    _gguf_refused(path, f"array {key.decode()!r} is {TB}")


def test_a_tensor_offset_past_the_end_is_refused(tmp_path):
    path = _tiny_gguf(tmp_path / "offset.gguf")
    _patch_u64(path, b"output_norm.weight", 4 + 8 + 4, TB)  # n_dims u32, one dim u64, type u32
    _gguf_refused(path, "'output_norm.weight'", f"bytes {TB}..")


def test_huge_counts_and_lengths_are_refused(tmp_path):
    path = _tiny_gguf(tmp_path / "counts.gguf")
    _patch_u64(path, b"GGUF", 4, TB)  # the tensor count, after the version
    _gguf_refused(path, f"tensor count is {TB}")
    path = _tiny_gguf(tmp_path / "key.gguf")
    _patch_u64(path, b"GGUF", 4 + 8 + 8, TB)  # the first key's length
    _gguf_refused(path, f"a metadata key needs {TB} bytes")


def test_a_truncated_gguf_is_refused(tmp_path):
    path = _tiny_gguf(tmp_path / "cut.gguf")
    path.write_bytes(path.read_bytes()[:-20])
    _gguf_refused(path, "'output_norm.weight'")
    (tmp_path / "empty.gguf").write_bytes(b"")
    _gguf_refused(tmp_path / "empty.gguf", "empty")
    (tmp_path / "text.gguf").write_bytes(b"hello world, not a model")
    _gguf_refused(tmp_path / "text.gguf", "does not start with GGUF")


# -- the CLI -----------------------------------------------------------------------------------------

def _ask(model: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragglm.cli", "ask", "--model", str(model), "--docs",
                           str(REPO / "examples" / "manuals"), "--no-stream", "x"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def _one_line_exit_3(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ragglm: error: "), done.stderr
    for word in words:
        assert word in lines[0]


def test_cli_refuses_a_crafted_safetensors_model_with_exit_3(tmp_path):
    folder = _llama_folder(tmp_path / "model")
    header = {"w": {"dtype": "F32", "shape": [TB // 4], "data_offsets": [0, TB]}}
    _safetensors(folder / "model.safetensors", header, b"\0" * 16)
    _one_line_exit_3(_ask(folder), "model.safetensors", "not a valid safetensors file")


def test_cli_refuses_a_crafted_gguf_model_with_exit_3(tmp_path):
    path = _tiny_gguf(tmp_path / "array.gguf")
    _patch_u64(path, b"tokenizer.ggml.tokens", 4 + 4, TB)
    _one_line_exit_3(_ask(path), "array.gguf", "not a valid GGUF file")
