"""THUDM's pre-quantized folders (quantization_bit 4 / 8) against the float model they dequantize to.

The folders are written here as THUDM's quantization.py writes them: per-row fp16 scale =
absmax / (2^(bits-1) - 1), int8 q = round(w / scale), and for 4 bits two signed nibbles per byte,
column 2j in the high one. Loaded into our int8/int4 layers, the model must give the logits of the
float model built from q * scale, and no quantized layer may ever exist as a float tensor.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ragglm.engine import Engine
from ragglm.engine.linear.quantize import Int4Linear, Int8Linear
from ragglm.engine.loading.families import family_of
from ragglm.engine.loading.thudm_quant import thudm_int4_to_ours
from ragglm.engine.loading.weight_names import to_their_names
from ragglm.engine.model import Transformer
from ragglm.errors import ModelNotFoundError
from tests.engine.chatglm_reference import glm6b_config
from tests.engine.glm_fixtures import chatglm_config, tiny_glm_config

TOL = 1e-4
QUANTIZED = ("query_key_value.weight", "dense.weight", "dense_h_to_4h.weight", "dense_4h_to_h.weight")


def glm3_config(**overrides) -> dict:
    return chatglm_config(tiny_glm_config(**overrides))


def random_checkpoint(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the folder's own naming, every shape from the model the config describes."""
    family = family_of(None, config)
    with torch.device("meta"):
        shapes = {name: t.shape for name, t in Transformer(family.args(config)).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    ours = {}
    for name, shape in shapes.items():
        values = torch.randn(shape, generator=generator)
        ours[name] = 1.0 + 0.1 * values if "norm" in name and name.endswith("weight") else 0.1 * values
    return to_their_names(ours, family.naming)


def thudm_quantize(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(stored weight, fp16 scale, the float weight they stand for), as THUDM's QuantizedLinear."""
    scale = (weight.abs().amax(dim=-1) / (2 ** (bits - 1) - 1)).half()
    q = torch.round(weight / scale.float()[:, None]).to(torch.int8)
    dequantized = q.float() * scale.float()[:, None]
    if bits == 4:
        high, low = q[:, 0::2].to(torch.int16) & 0x0F, q[:, 1::2].to(torch.int16) & 0x0F
        q = ((high << 4) | low).to(torch.uint8).view(torch.int8)
    return q, scale, dequantized


def save_folder(tensors: dict[str, torch.Tensor], config: dict, folder, fmt: str = "bin"):
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.contiguous() for name, t in tensors.items()}
    if fmt == "bin":
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def thudm_pair(tmp_path, config: dict, bits: int, fmt: str = "bin"):
    """(THUDM quantized folder, the float folder of its dequantized weights)."""
    theirs = random_checkpoint(config)
    stored, floats = {}, {}
    for name, tensor in theirs.items():
        if name.endswith(QUANTIZED):
            q, scale, dequantized = thudm_quantize(tensor, bits)
            stored[name], stored[name.replace(".weight", ".weight_scale")] = q, scale
            floats[name] = dequantized
        else:
            stored[name] = floats[name] = tensor
    quantized = save_folder(stored, {**config, "quantization_bit": bits}, tmp_path / f"int{bits}", fmt)
    return quantized, save_folder(floats, config, tmp_path / "float", "safetensors")


CASES = {
    "chatglm3": lambda: glm3_config(),
    "chatglm-6b": lambda: glm6b_config(num_layers=2),
}


@pytest.mark.parametrize("family", CASES)
@pytest.mark.parametrize("bits, quant", [(4, "int4:g32"), (8, "int8")])
def test_quantized_folder_gives_the_logits_of_its_dequantized_float_model(tmp_path, family, bits, quant):
    folder, float_folder = thudm_pair(tmp_path, CASES[family](), bits)
    engine = Engine.from_pretrained(folder, dtype="fp32")
    reference = Engine.from_pretrained(float_folder, dtype="fp32")
    ids = torch.tensor([[3, 7, 1, 2, 9, 11, 4]]) % engine.args.vocab_size
    assert (engine.logits(ids) - reference.logits(ids)).abs().max().item() < TOL
    assert engine.quant == quant
    layers = Int4Linear if bits == 4 else Int8Linear
    assert sum(isinstance(m, layers) for m in engine.model.modules()) == 4 * engine.args.n_layers
    assert isinstance(engine.model.output, torch.nn.Linear)  # THUDM leaves the output layer in float
    prompt = ids[0].tolist()
    want = reference.generate(prompt, max_new_tokens=4, stop_token_ids=[]).token_ids
    assert engine.generate(prompt, max_new_tokens=4, stop_token_ids=[]).token_ids == want


def test_safetensors_folder_loads_alike(tmp_path):
    folder, float_folder = thudm_pair(tmp_path, glm3_config(), 4, fmt="safetensors")
    ids = torch.tensor([[5, 17, 300, 42]])
    got = Engine.from_pretrained(folder, dtype="fp32").logits(ids)
    assert (got - Engine.from_pretrained(float_folder, dtype="fp32").logits(ids)).abs().max().item() < TOL


def test_every_byte_converts_as_the_original_kernel_reads_it():
    stored = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.int8)[None, :]  # [1, 256]
    ours = thudm_int4_to_ours(stored)
    assert ours.dtype == torch.uint8 and ours.shape == stored.shape
    signed = [b - 256 if b > 127 else b for b in range(256)]
    high = torch.tensor([s >> 4 for s in signed])  # (char)b >> 4, sign kept
    low = torch.tensor([((s << 4) & 0xFF) - 256 if ((s << 4) & 0xFF) > 127 else (s << 4) & 0xFF for s in signed]) >> 4
    assert torch.equal((ours[0] & 0x0F).long() - 8, high)  # column 2j: our low nibble, q - 8
    assert torch.equal((ours[0] >> 4).long() - 8, low)


class FloatAllocations(TorchDispatchMode):
    """Elements of every new float tensor any torch op computes (views and in-place results share
    memory and are not counted; bytes read from a file arrive as uint8 buffers). Widening a weight
    (dequantizing it, or any arithmetic on it in float) is such an op."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        for i, tensor in enumerate(tree_leaves(out)):
            fresh = i >= len(returns) or returns[i].alias_info is None
            if (isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and fresh
                    and tensor.device.type != "meta"):  # a meta tensor holds no memory
                self.elements += tensor.numel()
        return out


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_layers_are_never_widened_to_float(tmp_path, bits):
    """The float tensors loading computes come to a fraction of the quantized layers' size (their
    scales), so no quantized layer is ever widened, let alone the model. The control: quantizing
    the float folder while loading computes at least their full size."""
    config = glm3_config(hidden_size=128, intermediate_size=256, head_dim=32, vocab_size=64, num_hidden_layers=2)
    folder, float_folder = thudm_pair(tmp_path, config, bits, fmt="safetensors")
    with torch.device("meta"):
        linears = sum(m.weight.numel() for name, m in Transformer(family_of(None, config).args(config)).named_modules()
                      if isinstance(m, torch.nn.Linear) and name != "output")
    with FloatAllocations() as counted:
        Engine.from_pretrained(folder, dtype="fp32")
    with FloatAllocations() as control:
        Engine.from_pretrained(float_folder, dtype="fp32", quant="int8" if bits == 8 else "int4:g128")
    assert control.elements >= linears
    assert counted.elements < 0.1 * linears, (counted.elements, linears)


def test_asking_for_another_quantization_is_refused(tmp_path):
    folder, _ = thudm_pair(tmp_path, glm3_config(), 4)
    with pytest.raises(ModelNotFoundError, match="int4"):
        Engine.from_pretrained(folder, quant="int8", dtype="fp32")


def test_a_weight_without_its_scale_is_named(tmp_path):
    folder, _ = thudm_pair(tmp_path, glm3_config(), 8)
    state = torch.load(folder / "pytorch_model.bin")
    del state["transformer.encoder.layers.1.mlp.dense_4h_to_h.weight_scale"]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="dense_4h_to_h.weight_scale"):
        Engine.from_pretrained(folder, dtype="fp32")


def write_lora(folder, targets: dict[str, tuple[int, int]], rank: int = 4, seed: int = 2) -> None:
    """A PEFT-format LoRA folder: random factors for each module name -> (out, in)."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (out, inp) in targets.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = 0.2 * torch.randn(rank, inp, generator=generator)
        tensors[f"base_model.model.{module}.lora_B.weight"] = 0.2 * torch.randn(out, rank, generator=generator)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["query_key_value", "dense"],
        "base_model_name_or_path": "THUDM/chatglm3-6b-int8"}))


@pytest.mark.parametrize("bits", [4, 8])
def test_lora_on_a_quantized_folder_is_merged_into_its_layers(tmp_path, bits):
    """Each adapted layer is dequantized on its own, merged and quantized again on our grid."""
    folder, float_folder = thudm_pair(tmp_path, glm3_config(), bits)
    prefix = "transformer.encoder.layers"
    write_lora(tmp_path / "lora", {f"{prefix}.0.self_attention.query_key_value": (128, 64),
                                   f"{prefix}.1.self_attention.dense": (64, 64)})
    ids = torch.tensor([[5, 17, 300, 42, 42, 7, 99]])
    adapted = Engine.from_pretrained(float_folder, dtype="fp32", adapter=tmp_path / "lora").logits(ids)
    base = Engine.from_pretrained(float_folder, dtype="fp32").logits(ids)
    engine = Engine.from_pretrained(folder, dtype="fp32", adapter=tmp_path / "lora")
    got = engine.logits(ids)
    assert engine.adapter["kind"] == "lora"
    assert (got - adapted).abs().mean() < 0.25 * (base - adapted).abs().mean()


def test_ptuning_prefix_on_a_quantized_folder_matches_the_float_model_with_it(tmp_path):
    """The adapter dispatch on THUDM's folders: a P-Tuning v2 prefix goes onto the built int4 model."""
    from tests.engine.chatglm_reference import write_ptuning_folder

    config = glm3_config()
    folder, float_folder = thudm_pair(tmp_path, config, 4)
    layers, groups, head_dim = config["num_layers"], config["multi_query_group_num"], config["kv_channels"]
    prefix = 0.5 * torch.randn(2 * layers, groups, 3, head_dim, generator=torch.Generator().manual_seed(4))
    ptuning = write_ptuning_folder(prefix, config, tmp_path / "ptuning")
    ids = torch.tensor([[5, 17, 300, 42, 42, 7]])
    engine = Engine.from_pretrained(folder, dtype="fp32", adapter=ptuning)
    want = Engine.from_pretrained(float_folder, dtype="fp32", adapter=ptuning).logits(ids)
    assert engine.adapter["kind"] == "ptuning"
    assert (engine.logits(ids) - want).abs().max().item() < TOL
    assert (Engine.from_pretrained(float_folder, dtype="fp32").logits(ids) - want).abs().max().item() > 0.01
