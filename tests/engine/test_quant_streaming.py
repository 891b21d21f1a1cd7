"""GLM folders quantize as they stream in, one tensor at a time, with the same result as quantizing
the whole float model; float weights do not outlive their quantization."""

from __future__ import annotations

import weakref

import pytest
import torch

from ragglm.engine import Engine
from ragglm.engine.linear.quantize import QuantConfig, quantize_int4, quantize_int8, quantize_weight
from ragglm.engine.loading import checkpoint
from ragglm.engine.loading.quant_loader import build_quantized
from ragglm.engine.loading.safetensors_reader import (
    SafetensorsFile,
    iter_safetensors,
    write_safetensors,
)
from ragglm.engine.loading.weight_names import GLM_NAMES, rename_weights
from ragglm.engine.model import ModelArgs
from tests.engine.glm_fixtures import (
    chatglm_config,
    save_chatglm_folder,
    save_glm_folder,
    tiny_glm_config,
    tiny_glm_model,
)

SCHEMES = ["int8", "int4:g32"]
_CHATGLM_LINEAR = ("query_key_value.weight", "dense.weight", "dense_h_to_4h.weight", "dense_4h_to_h.weight",
                   "output_layer.weight")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The same bf16 weights in both namings (transformers `glm` and original `chatglm`)."""
    config = tiny_glm_config(num_hidden_layers=3)
    model = tiny_glm_model(config).to(torch.bfloat16)
    glm = save_glm_folder(model, tmp_path_factory.mktemp("glm-bf16"))
    # fp32 throughout keeps every weight in state_dict (bf16 linears are packed, out of it); the
    # values are the bf16 ones widened, so narrowing them back is exact
    ours = {k: v.to(torch.bfloat16) for k, v in Engine.from_pretrained(glm, dtype="fp32").model.state_dict().items()}
    chatglm = save_chatglm_folder(ours, chatglm_config(config) | {"torch_dtype": "bfloat16"},
                                  tmp_path_factory.mktemp("chatglm-bf16"))
    return {"glm": glm, "chatglm": chatglm}


@pytest.fixture
def small_blocks(monkeypatch):
    """Quantize in blocks of 64 rows, so that even tiny weights take the multi-block path."""
    monkeypatch.setattr("ragglm.engine.linear.quantize._QUANT_BLOCK_ELEMENTS", 64 * 64)
    monkeypatch.setattr("ragglm.engine.linear.quantize._PACK_ROWS", 64)


def tokens():
    return torch.tensor([[5, 17, 99, 3, 250, 41, 7, 480, 12, 66]])


@pytest.mark.parametrize("naming", ["glm", "chatglm"])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_streamed_quantization_equals_quantizing_the_whole_float_model(folders, naming, scheme, dtype, small_blocks):
    streamed = Engine.from_pretrained(folders[naming], quant=scheme, dtype=dtype)
    whole = Engine.from_pretrained(folders[naming], dtype="fp32")  # the float model, fully built first
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    reference = build_quantized(whole.args, dict(whole.model.state_dict()), dtype=torch_dtype,
                                config=QuantConfig.parse(scheme))
    with torch.inference_mode():
        assert torch.equal(streamed.logits(tokens()), reference(tokens()))
    # embeddings, norms and biases are kept in the activation dtype, never widened on the way
    assert streamed.model.tok_embeddings.weight.dtype == torch_dtype
    assert streamed.quant_paths and sum(streamed.quant_paths.values()) == 3 * 4 + 1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_both_namings_quantize_to_the_same_model(folders, scheme):
    glm = Engine.from_pretrained(folders["glm"], quant=scheme, dtype="bf16")
    chatglm = Engine.from_pretrained(folders["chatglm"], quant=scheme, dtype="bf16")
    assert torch.equal(glm.logits(tokens()), chatglm.logits(tokens()))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_blocked_quantization_is_bit_identical_to_one_pass(scheme, small_blocks):
    weight = torch.randn(200, 128, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    config = QuantConfig.parse(scheme)
    blocked = quantize_weight(weight, config)  # 64-row blocks and a 8-row tail
    whole = quantize_int8(weight) if config.scheme == "int8" else quantize_int4(weight, config.group_size)
    assert torch.equal(blocked.qweight, whole.qweight)
    assert torch.equal(blocked.scales, whole.scales)
    assert (blocked.zeros is None) == (whole.zeros is None)
    if whole.zeros is not None:
        assert torch.equal(blocked.zeros, whole.zeros)
    assert torch.equal(weight, weight.clone())  # the input is left as it was


def _tracking_reader(original, refs: list, alive_at_read: list):
    """Wraps iter_checkpoint_tensors: before each read, notes which earlier tensors are still alive."""

    def reader(folder):
        for name, tensor in original(folder):
            alive_at_read.append([n for n, ref in refs if ref() is not None])
            refs.append((name, weakref.ref(tensor)))
            box = [tensor]
            del tensor  # hold nothing while waiting, like the loaders themselves
            yield name, box.pop()

    return reader


@pytest.mark.parametrize("scheme", SCHEMES)
def test_chatglm_float_weights_are_freed_as_soon_as_quantized(folders, monkeypatch, scheme):
    refs: list = []
    alive_at_read: list = []
    monkeypatch.setattr(checkpoint, "iter_checkpoint_tensors",
                        _tracking_reader(checkpoint.iter_checkpoint_tensors, refs, alive_at_read))
    Engine.from_pretrained(folders["chatglm"], quant=scheme, dtype="bf16")
    assert len(alive_at_read) > 20
    for alive in alive_at_read:
        assert not [n for n in alive if n.endswith(_CHATGLM_LINEAR)], alive


def test_glm_naming_fuses_qkv_without_waiting_for_later_layers(folders, monkeypatch):
    refs: list = []
    alive_at_read: list = []
    monkeypatch.setattr(checkpoint, "iter_checkpoint_tensors",
                        _tracking_reader(checkpoint.iter_checkpoint_tensors, refs, alive_at_read))
    Engine.from_pretrained(folders["glm"], quant="int4:g32", dtype="bf16")
    assert len(alive_at_read) > 20  # the reader was the one the load went through
    for alive in alive_at_read:
        linear = {n.split(".")[2] for n in alive if n.startswith("model.layers.") and "proj.weight" in n}
        assert len(linear) <= 1, alive  # q/k/v parts of at most one layer wait for their siblings


def test_glm_stream_yields_each_layer_before_reading_the_next():
    q, k, v = torch.ones(4, 8), torch.ones(2, 8) * 2, torch.ones(2, 8) * 3
    read: list[str] = []

    def source():
        for layer in range(3):
            for part, t in (("q", q), ("k", k), ("v", v)):
                read.append(f"{layer}.{part}")
                yield f"model.layers.{layer}.self_attn.{part}_proj.weight", t

    args = ModelArgs(family="glm", dim=8, n_layers=3, n_heads=2, n_kv_heads=1)
    for name, fused in rename_weights(source(), GLM_NAMES, args, None):
        layer = name.split(".")[1]
        assert read[-1] == f"{layer}.v"  # nothing of the next layer was read to produce this one
        assert torch.equal(fused, torch.cat([q, k, v]))


def test_safetensors_reader_matches_the_safetensors_library(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16), "f16": torch.randn(7, generator=g).half(),
        "f32": torch.randn(2, 3, 4, generator=g), "i64": torch.arange(6).reshape(2, 3),
        "u8": torch.arange(10, dtype=torch.uint8), "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata={"format": "pt"})
    with safe_open(str(tmp_path / "t.safetensors"), framework="pt") as f, SafetensorsFile(tmp_path / "t.safetensors") as ours:
        assert sorted(ours.keys()) == sorted(f.keys())
        assert ours.metadata == {"format": "pt"}
        for name in f.keys():
            want, got = f.get_tensor(name), ours.get_tensor(name)
            assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), name
    assert dict(iter_safetensors(tmp_path / "t.safetensors")).keys() == tensors.keys()


def test_safetensors_reader_names_a_truncated_file(tmp_path):
    from safetensors.torch import save_file

    from ragglm.errors import ModelNotFoundError

    path = tmp_path / "cut.safetensors"
    save_file({"w": torch.ones(100, 100)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelNotFoundError, match="cut.safetensors.*incomplete"):
        SafetensorsFile(path)  # refused when opened: its header promises bytes the file lacks
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00nope!")
    with pytest.raises(ModelNotFoundError, match="junk.safetensors"):
        SafetensorsFile(tmp_path / "junk.safetensors")


def test_safetensors_writer_is_read_back_by_the_safetensors_library(tmp_path):
    from safetensors import safe_open

    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(3, 5, generator=g).to(torch.bfloat16), "i32": torch.arange(6, dtype=torch.int32),
        "f32_view": torch.randn(4, 6, generator=g).t(),  # not contiguous
        "u8": torch.arange(9, dtype=torch.uint8).reshape(3, 3), "scalar": torch.tensor(1.5), "empty": torch.zeros(0),
    }
    path = tmp_path / "w.safetensors"
    write_safetensors(path, iter(tensors.items()), metadata={"format": "pt"})
    assert not list(tmp_path.glob("*.data"))  # the scratch file is gone
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert sorted(f.keys()) == sorted(tensors)
        for name, want in tensors.items():
            got = f.get_tensor(name)
            assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), name


@pytest.mark.parametrize("naming", ["llama", "glm", "gguf"])
def test_a_qkv_part_without_its_siblings_names_the_missing_tensor(naming):
    from ragglm.engine.loading.weight_names import GGUF_NAMES, LLAMA_NAMES
    from ragglm.errors import ModelNotFoundError

    table = {"llama": LLAMA_NAMES, "glm": GLM_NAMES, "gguf": GGUF_NAMES}[naming]
    q_name, k_name = table.fused["attention.wqkv.weight"][:2]
    source = [(f"{table.layer_prefix}0.{q_name}", torch.ones(4, 8)), (f"{table.layer_prefix}0.{k_name}", torch.ones(2, 8))]
    args = ModelArgs(dim=8, n_layers=1, n_heads=2, n_kv_heads=1)
    with pytest.raises(ModelNotFoundError, match="lacks .*v"):
        list(rename_weights(iter(source), table, args, None))
