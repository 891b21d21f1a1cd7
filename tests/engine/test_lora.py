"""LoRA adapters in PEFT's format merged while loading, against PEFT's own merged models.

Each family is checked in fp32 against the model PEFT builds with merge_and_unload(): Llama
(transformers naming, q/k/v and gate/up fused by us, rsLoRA and per-module ranks), GLM-4 in
transformers naming, and ChatGLM3 in its original naming (query_key_value, dense_h_to_4h). Then
int8/int4 with the adapter: the adapter is merged before quantization, so the quantized adapted
model sits as close to the fp32 adapted one as the quantized base model sits to the fp32 base.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ragglm.engine import Engine
from ragglm.engine.loading.adapters import AdapterError, read_adapter
from tests.engine.glm_fixtures import (
    PROMPT,
    VOCAB,
    chatglm_config,
    glm4_tokenizer_json,
    save_chatglm_folder,
    tiny_glm_config,
    tiny_glm_model,
)

TOL = 1e-4
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                    rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=0, eos_token_id=None)
    config = LlamaConfig(**{**settings, **overrides})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(1.0 + 0.1 * torch.randn_like(param) if "norm" in name else 0.2 * torch.randn_like(param))
    return model


def randomize_lora(peft_model, seed: int = 1, std: float = 0.3) -> None:
    """PEFT starts lora_B at zero (no change); random trained values (the factors, and whole modules
    or biases where the config trains them) make the update visible."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, param in peft_model.named_parameters():
            if param.requires_grad:
                param.add_(std * torch.randn_like(param))


def peft_adapter(base, folder, seed: int = 1, safe: bool = True, std: float = 0.3, **config):
    """Save a random PEFT LoRA of `base` to folder; returns PEFT's merged model."""
    from peft import LoraConfig, get_peft_model

    trained_for = config.pop("base_model_name_or_path", "tiny-base")
    peft_model = get_peft_model(base, LoraConfig(**{"r": 4, "lora_alpha": 8, **config}))
    randomize_lora(peft_model, seed, std)
    peft_model.save_pretrained(folder, safe_serialization=safe)
    name_base(folder, trained_for)
    return peft_model.merge_and_unload().eval()


def name_base(folder, name: str) -> None:
    """Record the base model's name as training on a hub model would (PEFT clears a name it did not load)."""
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": name}))


def logits_of(model, ids=PROMPT):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def llama_case(tmp_path_factory):
    """A tiny Llama folder, a LoRA on every projection and the embeddings, PEFT's merged logits."""
    root = tmp_path_factory.mktemp("llama-lora")
    base = tiny_llama()
    base.save_pretrained(root / "base")
    glm4_tokenizer_json(root / "base" / "tokenizer.json")
    merged = peft_adapter(base, root / "lora", target_modules=LLAMA_TARGETS + ["embed_tokens"],
                          use_rslora=True, rank_pattern={"down_proj": 2}, alpha_pattern={"layers.1.self_attn.q_proj": 3})
    return root / "base", root / "lora", logits_of(merged)


def test_llama_lora_matches_peft_merged_model(llama_case):
    base, lora, want = llama_case
    engine = Engine.from_pretrained(base, dtype="fp32", adapter=lora)
    got = engine.logits(PROMPT)
    assert (got - want).abs().max().item() < TOL
    assert (Engine.from_pretrained(base, dtype="fp32").logits(PROMPT) - want).abs().max().item() > 0.1
    assert engine.adapter["kind"] == "lora" and engine.adapter["path"] == str(lora.resolve())


def test_lora_saved_as_bin_loads_alike(tmp_path):
    base = tiny_llama(seed=3)
    base.save_pretrained(tmp_path / "base")
    glm4_tokenizer_json(tmp_path / "base" / "tokenizer.json")
    merged = peft_adapter(base, tmp_path / "lora", safe=False, target_modules=["q_proj", "v_proj"])
    assert (tmp_path / "lora" / "adapter_model.bin").is_file()
    # fan_in_fan_out describes [in, out] base weights (GPT-2's Conv1D); PEFT turns it off for the
    # nn.Linear layers of these families, and so do we
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({**config, "fan_in_fan_out": True}))
    got = Engine.from_pretrained(tmp_path / "base", dtype="fp32", adapter=tmp_path / "lora").logits(PROMPT)
    assert (got - logits_of(merged)).abs().max().item() < TOL


def test_glm4_lora_matches_peft_merged_model(tmp_path):
    base = tiny_glm_model(tiny_glm_config())
    base.save_pretrained(tmp_path / "base")
    glm4_tokenizer_json(tmp_path / "base" / "tokenizer.json")
    merged = peft_adapter(base, tmp_path / "lora", target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                   "gate_up_proj", "down_proj"])
    got = Engine.from_pretrained(tmp_path / "base", dtype="fp32", adapter=tmp_path / "lora").logits(PROMPT)
    assert (got - logits_of(merged)).abs().max().item() < TOL


class _Named(nn.Module):
    """A bare module tree with a checkpoint's tensor names: nn.Linear where the name ends a linear."""

    def __init__(self, state: dict[str, torch.Tensor], linears: set[str]):
        super().__init__()
        for name, tensor in state.items():
            module = self
            *path, leaf = name.split(".")
            for part in path[:-1] if ".".join(path) in linears else path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            if ".".join(path) in linears:
                if not hasattr(module, path[-1]):
                    module.add_module(path[-1], nn.Linear(tensor.shape[1] if leaf == "weight" else 1, 1))
                linear = getattr(module, path[-1])
                setattr(linear, leaf, nn.Parameter(tensor.clone()))
                if leaf == "weight":
                    linear.in_features, linear.out_features = tensor.shape[1], tensor.shape[0]
            else:
                module.register_parameter(leaf, nn.Parameter(tensor.clone()))


def test_chatglm3_lora_in_original_naming_matches_peft(tmp_path):
    """ChatGLM3's own module names (no transformers class here): PEFT adapts a module tree carrying
    those names, and its merged weights are loaded as a plain checkpoint for the reference."""
    from peft import LoraConfig, get_peft_model

    from ragglm.engine.loading.weight_names import CHATGLM_NAMES, to_their_names

    glm = tiny_glm_config()
    config = chatglm_config(glm)
    ours = Engine.from_pretrained(save_chatglm_folder(_our_state(glm), config, tmp_path / "base"), dtype="fp32")
    theirs = to_their_names({k: v for k, v in ours.model.state_dict().items()}, CHATGLM_NAMES)
    linears = {name.rpartition(".")[0] for name, t in theirs.items()
               if name.endswith(".weight") and t.dim() == 2 and "embedding" not in name}
    tree = _Named(theirs, linears)
    peft_model = get_peft_model(tree, LoraConfig(r=4, lora_alpha=16, base_model_name_or_path="THUDM/chatglm3-6b",
                                                 target_modules=["query_key_value", "dense", "dense_h_to_4h",
                                                                 "dense_4h_to_h"]))
    randomize_lora(peft_model)
    peft_model.save_pretrained(tmp_path / "lora")
    merged = {k: v.detach() for k, v in peft_model.merge_and_unload().state_dict().items()}
    assert not torch.equal(merged["transformer.encoder.layers.0.self_attention.query_key_value.weight"],
                           theirs["transformer.encoder.layers.0.self_attention.query_key_value.weight"])
    from ragglm.engine.loading.weight_names import rename_weights

    want_state = dict(rename_weights(merged.items(), CHATGLM_NAMES, ours.args, torch.float32))
    save_chatglm_folder(want_state, config, tmp_path / "merged")
    want = Engine.from_pretrained(tmp_path / "merged", dtype="fp32").logits(PROMPT)
    got = Engine.from_pretrained(tmp_path / "base", dtype="fp32", adapter=tmp_path / "lora").logits(PROMPT)
    assert (got - want).abs().max().item() < TOL


def test_chatglm6b_lora_follows_its_per_head_qkv_layout(tmp_path):
    """ChatGLM-6B stores QKV head by head and we regroup its rows on load: the update is regrouped alike."""
    from peft import LoraConfig, get_peft_model

    from tests.engine.chatglm_reference import glm6b_config
    from tests.engine.test_thudm_quant import random_checkpoint, save_folder

    config = glm6b_config(num_layers=2)
    theirs = random_checkpoint(config, seed=3)
    linears = {name.rpartition(".")[0] for name, t in theirs.items()
               if name.endswith(".weight") and t.dim() == 2 and "embeddings" not in name}
    peft_model = get_peft_model(_Named(theirs, linears), LoraConfig(
        r=4, lora_alpha=8, target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]))
    randomize_lora(peft_model)
    peft_model.save_pretrained(tmp_path / "lora")
    merged = {k: v.detach() for k, v in peft_model.merge_and_unload().state_dict().items()}
    ids = torch.tensor([[3, 7, 9, 1, 2, 11, 4]])
    want = Engine.from_pretrained(save_folder(merged, config, tmp_path / "merged"), dtype="fp32").logits(ids)
    base = save_folder(theirs, config, tmp_path / "base")
    got = Engine.from_pretrained(base, dtype="fp32", adapter=tmp_path / "lora").logits(ids)
    assert (got - want).abs().max().item() < TOL
    assert (Engine.from_pretrained(base, dtype="fp32").logits(ids) - want).abs().max().item() > 0.01


def _our_state(glm_config) -> dict[str, torch.Tensor]:
    """A random tiny GLM's weights in our naming (via the transformers GLM checkpoint)."""
    from ragglm.engine.loading.weight_names import GLM_NAMES, rename_weights
    from ragglm.engine.model import ModelArgs

    hf = tiny_glm_model(glm_config, seed=5)
    args = ModelArgs(family="glm", vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                     intermediate_size=96, qkv_bias=True)
    return dict(rename_weights(hf.state_dict().items(), GLM_NAMES, args, torch.float32))


def perplexity(engine, ids: torch.Tensor) -> float:
    logits = engine.logits(ids)[0, :-1].float()
    return math.exp(torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item())


# A random tiny model's quantized perplexity moves by chance either way; one band holds both (measured:
# int8 x0.998 base, x0.995 adapted; int4:g32 x0.898 base, x1.118 adapted)
@pytest.mark.parametrize("scheme, band", [("int8", 1.01), ("int4:g32", 1.2)])
def test_quantized_with_adapter_keeps_the_bounds_of_the_quantized_base(llama_case, tmp_path, scheme, band):
    base, _, _ = llama_case
    # updates a fifth the size of the weights, as a fine-tune's are (not the loud ones above)
    lora = tmp_path / "lora"
    peft_adapter(tiny_llama(), lora, std=0.1, target_modules=LLAMA_TARGETS)
    ids = torch.randint(0, VOCAB, (1, 64), generator=torch.Generator().manual_seed(0))
    ratios = {}
    fp32_base = Engine.from_pretrained(base, dtype="fp32").logits(ids)
    for adapter in (None, lora):
        fp32 = Engine.from_pretrained(base, dtype="fp32", adapter=adapter)
        quantized = Engine.from_pretrained(base, dtype="fp32", quant=scheme, adapter=adapter)
        ratios["adapted" if adapter else "base"] = perplexity(quantized, ids) / perplexity(fp32, ids)
        if adapter is not None:  # merged before quantizing: the quantized model is the adapted one
            to_adapted = (quantized.logits(ids) - fp32.logits(ids)).abs().mean()
            assert to_adapted < 0.7 * (quantized.logits(ids) - fp32_base).abs().mean()
    assert all(abs(math.log(r)) < math.log(band) for r in ratios.values()), ratios


def test_adapter_for_another_shape_names_both(tmp_path, llama_case):
    base, _, _ = llama_case
    other = tiny_glm_model(tiny_glm_config(hidden_size=32, head_dim=8))
    peft_adapter(other, tmp_path / "glm-lora", target_modules=["q_proj"], base_model_name_or_path="THUDM/glm-4-9b")
    with pytest.raises(AdapterError) as caught:
        Engine.from_pretrained(base, dtype="fp32", adapter=tmp_path / "glm-lora")
    message = str(caught.value)
    assert str(tmp_path / "glm-lora") in message and str(base) in message and "THUDM/glm-4-9b" in message


def test_adapter_targeting_a_module_the_model_lacks_is_refused(tmp_path, llama_case):
    base, lora, _ = llama_case
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((lora / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps(config))
    from safetensors.torch import save_file

    save_file({"base_model.model.model.layers.0.self_attn.qkv.lora_A.weight": torch.zeros(4, 64),
               "base_model.model.model.layers.0.self_attn.qkv.lora_B.weight": torch.zeros(64, 4)},
              str(bad / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match="self_attn.qkv"):
        Engine.from_pretrained(base, dtype="fp32", adapter=bad)


def test_whole_modules_and_biases_the_adapter_trained_replace_the_checkpoints(tmp_path):
    """modules_to_save (the head, a norm) and bias="lora_only" (GLM's q/k/v biases, fused by us)."""
    base = tiny_glm_model(tiny_glm_config())
    base.save_pretrained(tmp_path / "base")
    glm4_tokenizer_json(tmp_path / "base" / "tokenizer.json")
    merged = peft_adapter(base, tmp_path / "lora", target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
                          bias="lora_only", modules_to_save=["lm_head", "input_layernorm"])
    got = Engine.from_pretrained(tmp_path / "base", dtype="fp32", adapter=tmp_path / "lora").logits(PROMPT)
    assert (got - logits_of(merged)).abs().max().item() < TOL


def test_adapter_kind_is_read_from_its_files(tmp_path, llama_case):
    _, lora, _ = llama_case
    assert read_adapter(lora).kind == "lora"
    ptuning = tmp_path / "ptuning"
    ptuning.mkdir()
    (ptuning / "config.json").write_text(json.dumps({"model_type": "chatglm", "pre_seq_len": 8}))
    assert read_adapter(ptuning).kind == "ptuning"
    with pytest.raises(AdapterError, match="adapter_config.json"):
        read_adapter(tmp_path)
    with pytest.raises(AdapterError, match="no such folder"):
        read_adapter(tmp_path / "missing")


def test_lora_where_it_cannot_merge_says_what_to_load_instead(tmp_path, llama_case):
    from ragglm.engine.loading.quantize_checkpoint import save_quantized_checkpoint

    base, lora, _ = llama_case
    save_quantized_checkpoint(base, tmp_path / "int8", "int8")
    with pytest.raises(AdapterError, match="quantize the original model with the adapter"):
        Engine.from_pretrained(tmp_path / "int8", adapter=lora)
    ptuning = tmp_path / "ptuning"
    ptuning.mkdir()
    (ptuning / "config.json").write_text(json.dumps({"model_type": "chatglm", "pre_seq_len": 4}))
    with pytest.raises(AdapterError, match="not saved with them"):
        save_quantized_checkpoint(base, tmp_path / "int8-pt", "int8", adapter=ptuning)


def test_lora_merges_into_a_gguf_file_in_the_transformers_naming(tmp_path):
    """A llama GGUF (Q/K rows permuted in the file, fused by us) with an adapter named as PEFT names the
    transformers Llama: each update lands on its rows of wqkv / w_gate_up."""
    import copy

    from safetensors.torch import save_file

    from ragglm.engine.loading.gguf_synthetic import TINY, write_random_gguf

    path = write_random_gguf(tmp_path / "tiny.gguf", TINY, 2)  # Q4_0 blocks
    base = Engine.from_pretrained(path, dtype="fp32")
    args = base.args
    q, kv, ffn = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim, args.intermediate_size
    targets = {"model.layers.0.self_attn.q_proj": (q, args.dim, "layers.0.attention.wqkv.weight", 0),
               "model.layers.0.self_attn.k_proj": (kv, args.dim, "layers.0.attention.wqkv.weight", q),
               "model.layers.1.mlp.up_proj": (ffn, args.dim, "layers.1.feed_forward.w_gate_up.weight", ffn),
               "model.layers.1.mlp.down_proj": (args.dim, ffn, "layers.1.feed_forward.w_down.weight", 0)}
    generator = torch.Generator().manual_seed(0)
    tensors, reference = {}, copy.deepcopy(base.model)
    for module, (out, inp, ours, row) in targets.items():
        a, b = 0.1 * torch.randn(4, inp, generator=generator), 0.1 * torch.randn(out, 4, generator=generator)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
        with torch.no_grad():
            reference.get_parameter(ours)[row:row + out] += 2.0 * b @ a  # lora_alpha 8 / r 4
    (tmp_path / "lora").mkdir()
    save_file(tensors, str(tmp_path / "lora" / "adapter_model.safetensors"))
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    ids = PROMPT % args.vocab_size
    got = Engine.from_pretrained(path, dtype="fp32", adapter=tmp_path / "lora").logits(ids)
    with torch.no_grad():
        want = reference(ids)
    assert (got - want).abs().max().item() < TOL
    assert (base.logits(ids) - want).abs().max().item() > 0.01
