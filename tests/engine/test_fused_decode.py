"""The native decode step against the same model run by PyTorch in float32."""

from __future__ import annotations

import copy

import pytest
import torch

from ragglm.engine import Engine
from ragglm.engine.generate import generate_tokens
from ragglm.engine.kernels.bf16_decode import finish_bf16_linears
from ragglm.engine.kernels.fused_decode import (
    KernelBuildError,
    attach_fused_decode,
    build_library,
    load_library,
    native_step_available,
    streamed_weights,
)
from ragglm.engine.kernels.huge_pages import HUGE_PAGE, huge_pages_available
from ragglm.engine.linear.packed_linear import Bf16Linear, packing_supported, use_bf16_linears
from ragglm.engine.linear.quantize import (
    Int4Linear,
    Int8Linear,
    QuantConfig,
    QuantizedWeight,
    cpu_int4_blocks,
    linear_names,
    quantize_int4,
)
from ragglm.engine.loading.quant_loader import build_quantized
from ragglm.engine.model import ModelArgs, Transformer
from tests.engine.glm_fixtures import (
    PROMPT,
    chatglm_config,
    save_chatglm_folder,
    save_glm_folder,
    tiny_glm_config,
    tiny_glm_model,
)

needs_native_step = pytest.mark.skipif(not native_step_available(), reason="no C++ compiler to build the native step")

LLAMA = ModelArgs(vocab_size=160, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=96,
                  tie_embeddings=True, max_seq_len=128, rope_theta=100000.0)
# GLM: bias on QKV, rotary on half of each head in interleaved pairs, its own output layer; the
# odd sizes take the kernel's row-at-a-time path as well
GLM = ModelArgs(family="glm", vocab_size=150, dim=72, n_layers=2, n_heads=6, n_kv_heads=2, intermediate_size=100,
                qkv_bias=True, rope_fraction=0.5, rope_interleaved=True, rope_position_scale=2.0, max_seq_len=128)
# int4 needs input widths in multiples of 32 and reads output rows in blocks of 64
INT4_LLAMA = ModelArgs(vocab_size=160, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                       tie_embeddings=True, max_seq_len=128, rope_theta=100000.0)
INT4_GLM = ModelArgs(family="glm", vocab_size=192, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=192,
                     qkv_bias=True, rope_fraction=0.5, rope_interleaved=True, rope_position_scale=2.0, max_seq_len=128)


def models(args: ModelArgs, spread: float = 0.2) -> tuple[Transformer, Transformer]:
    """(model with Bf16Linear layers and the native step, float32 reference holding the same bf16-rounded weights);
    weights are normal with standard deviation `spread`."""
    torch.manual_seed(3)
    reference = Transformer(args)
    with torch.no_grad():
        for param in reference.parameters():
            # values bf16 holds exactly, so that the bf16 layers multiply by the same numbers
            param.copy_(torch.randn_like(param).mul(spread).bfloat16().float())
    reference.eval()
    model = copy.deepcopy(reference)
    use_bf16_linears(model, Bf16Linear)
    assert attach_fused_decode(model)
    return model, reference


def assert_steps_match(model: Transformer, reference: Transformer, length: int) -> None:
    """Decode `length` random tokens one at a time from position 0: each step's logits within 1e-4."""
    vocab = model.args.vocab_size
    model.setup_cache(1, length)
    reference.setup_cache(1, length)
    with torch.inference_mode():
        for position, token in enumerate(torch.randint(0, vocab, (length,)).tolist()):
            step = torch.tensor([[token]])
            got = model.decode(step, position)
            want = reference.forward(step, start=position, last_only=True)
            assert got.shape == want.shape == (1, 1, vocab)
            assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@needs_native_step
@pytest.mark.parametrize("args", [LLAMA, GLM], ids=["llama", "glm"])
# each thread attends to its own slice of the positions, some of them empty at the first positions
@pytest.mark.parametrize("threads", [1, 2, 3], indirect=True)
# weights ten times wider give attention scores hundreds apart, whose softmax underflows
@pytest.mark.parametrize("spread", [0.2, 2.0], ids=["plain", "peaked"])
def test_native_step_matches_float32_token_by_token(args, threads, spread):
    model, reference = models(args, spread)
    assert_steps_match(model, reference, 40)


def dequantized(layer: Int8Linear | Int4Linear) -> torch.Tensor:
    """The float32 weight [out, in] a quantized layer stands for."""
    if isinstance(layer, Int8Linear):
        return layer.qweight.float() * layer.scales.float()[:, None]
    q = cpu_int4_blocks(layer.packed, layer.in_features, torch.float32).permute(0, 2, 1)
    scales, zeros = (part.float().t().repeat_interleave(layer.group_size, dim=1)
                     for part in layer.kernel_scales(torch.float32).unbind(-1))
    return (q.reshape(layer.out_features, layer.in_features) - 8) * scales + zeros


def q4_0_style(args: ModelArgs, state: dict[str, torch.Tensor]) -> list[tuple[str, object]]:
    """The state dict with its linear weights as GGUF's Q4_0 holds them: int4 with float16 scales and no zeros."""
    with torch.device("meta"):
        linears = set(linear_names(Transformer(args)))
    tensors: list[tuple[str, object]] = []
    for name, value in state.items():
        layer, _, leaf = name.rpartition(".")
        if layer in linears and leaf == "weight":
            qw = quantize_int4(value, 32)
            value = QuantizedWeight("int4", qw.qweight, qw.scales.half().float(), torch.zeros_like(qw.zeros), 32)
            name = layer
        tensors.append((name, value))
    return tensors


@needs_native_step
@pytest.mark.parametrize(("quant", "args"), [("int8", LLAMA), ("int8", GLM), ("int4:g32", INT4_LLAMA),
                                             ("int4:g32", INT4_GLM), ("q4_0", INT4_GLM)],
                         ids=["int8-llama", "int8-glm", "int4-llama", "int4-glm", "q4_0-glm"])
def test_quantized_weights_decode_natively_like_their_dequantized_float32(quant, args):
    vnni = load_library().int4_products_round_x_to_int8() == 1
    _, reference = models(args)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    if quant == "q4_0":
        model = build_quantized(args, q4_0_style(args, state))
        assert all(layer.group_scales is not None for layer in model.modules() if isinstance(layer, Int4Linear))
    else:
        model = build_quantized(args, state, config=QuantConfig.parse(quant))
    finish_bf16_linears(model)
    assert model.decode_step is not None
    assert model.kv_dtype == torch.float16  # quantized models keep keys and values in float16
    # ... whose rounding turns the last bits that tell the two paths apart into whole float16 steps;
    # the weights are checked here with a float32 cache, a float16 cache below
    model.kv_dtype = None
    layers = {name: module for name, module in model.named_modules() if isinstance(module, (Int8Linear, Int4Linear))}
    assert len(layers) >= 4 * args.n_layers
    with torch.no_grad():
        for name, layer in layers.items():
            reference.get_submodule(name).weight.copy_(dequantized(layer))
            if isinstance(layer, Int4Linear) and vnni:
                reference.get_submodule(name).register_forward_pre_hook(lambda _, inputs: (rounded_in_blocks(inputs[0]),))
    assert_steps_match(model, reference, 24)


@needs_native_step
@pytest.mark.parametrize("args", [LLAMA, GLM], ids=["llama", "glm"])
def test_a_float16_cache_decodes_natively_like_pytorch_with_a_float16_cache(args):
    model, reference = models(args)
    model.kv_dtype = reference.kv_dtype = torch.float16
    length = 40
    model.setup_cache(1, length)
    reference.setup_cache(1, length)
    cache, reference_cache = model.layers[-1].attention.kv_cache, reference.layers[-1].attention.kv_cache
    assert cache.k.dtype == torch.float16
    with torch.inference_mode():
        for position, token in enumerate(torch.randint(0, args.vocab_size, (length,)).tolist()):
            step = torch.tensor([[token]])
            got = model.decode(step, position)
            want = reference.forward(step, start=position, last_only=True)
            # keys and values as both paths compute them in float32 (within 1e-5 of the head's largest),
            # each then rounded to float16 (a step is at most 2^-10 of the value)
            for mine, theirs in ((cache.k, reference_cache.k), (cache.v, reference_cache.v)):
                a, b = mine[0, :, position].float(), theirs[0, :, position].float()
                assert ((a - b).abs() <= b.abs() * 2**-10 + 1e-5 * b.abs().amax(-1, keepdim=True)).all()
            assert torch.allclose(got, want, rtol=5e-4, atol=5e-4 * want.abs().max().item())


def rounded_in_blocks(x: torch.Tensor) -> torch.Tensor:
    """x as the native step's int4 product on integer units takes it: int8 with one scale per 32 values."""
    blocks = x.unflatten(-1, (-1, 32))
    largest = blocks.abs().amax(-1, keepdim=True)
    a = torch.round(blocks * torch.where(largest > 0, 127.0 / largest, 0.0))
    return (a * (largest / 127.0)).flatten(-2)


@needs_native_step
def test_int4_layers_that_do_not_split_at_a_block_decode_through_pytorch():
    _, reference = models(LLAMA)  # intermediate size 96: gate and up rows part inside a 64-row block
    model = build_quantized(LLAMA, dict(reference.state_dict()), config=QuantConfig.parse("int4:g32"))
    finish_bf16_linears(model)
    assert model.decode_step is None


@needs_native_step
@pytest.mark.parametrize("args", [LLAMA, GLM], ids=["llama", "glm"])
def test_greedy_generation_equals_float32(args):
    model, reference = models(args)
    prompt = torch.randint(0, args.vocab_size, (12,)).tolist()
    # the reference prefills through its float32 linears, the model through bf16 ones: feed the
    # prompt a token at a time so that both caches hold float32 keys and values from the same weights
    want = list(generate_tokens(reference, prompt, 32, set(), prefill_chunk=1))
    got = list(generate_tokens(model, prompt, 32, set(), prefill_chunk=1))
    assert got == want


@needs_native_step
def test_a_larger_cache_is_bound_again():
    model, reference = models(LLAMA)
    prompt = torch.randint(0, LLAMA.vocab_size, (5,)).tolist()
    short = list(generate_tokens(model, prompt, 8, set(), prefill_chunk=1))
    first_cache = model.layers[0].attention.kv_cache
    longer = list(generate_tokens(model, prompt, 100, set(), prefill_chunk=1))  # needs a bigger cache
    assert model.layers[0].attention.kv_cache is not first_cache
    assert longer[:8] == short
    assert longer == list(generate_tokens(reference, prompt, 100, set(), prefill_chunk=1))


@needs_native_step
def test_batches_of_two_fall_back_to_pytorch():
    model, _ = models(LLAMA)
    model.setup_cache(2, 16)
    tokens = torch.tensor([[3], [4]])
    with torch.inference_mode():
        got = model.decode(tokens, 0)
        native = model.decode_step
        model.use_decode_step(None)
        want = model.decode(tokens, 0)
    assert native is not None and got.shape == (2, 1, LLAMA.vocab_size)
    assert torch.equal(got, want)


@needs_native_step
def test_a_token_outside_the_vocabulary_is_refused():
    model, _ = models(LLAMA)
    model.setup_cache(1, 16)
    with pytest.raises(IndexError, match="token id 160 is outside the vocabulary of 160"):
        model.decode(torch.tensor([[LLAMA.vocab_size]]), 0)


def test_models_the_step_does_not_cover_are_left_alone():
    plain = Transformer(LLAMA)  # float32 linear layers: nothing for the step to read
    assert not attach_fused_decode(plain) and plain.decode_step is None


def test_build_errors_name_the_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGGLM_KERNEL_DIR", str(tmp_path))
    with pytest.raises(KernelBuildError, match="false could not build fused_decode.cpp"):
        build_library("false")
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KernelBuildError, match="no C.. compiler on PATH"):
        build_library()


@needs_native_step
@pytest.mark.skipif(not packing_supported(torch.bfloat16, "cpu"), reason="this CPU has no bf16 units")
@pytest.mark.slow
def test_the_default_smollm2_decodes_natively_and_answers_like_float32():
    engine = Engine.from_pretrained("smollm2")
    assert engine.model.decode_step is not None
    assert engine.quant_paths == {"bf16_fused_decode": 4 * 30 + 1}
    if huge_pages_available():  # the streamed weights lie end to end in one huge-page buffer, in read order
        weights = [getattr(module, name) for module, name in streamed_weights(engine.model)]
        starts = [weight.data_ptr() for weight in weights]
        assert starts[0] % HUGE_PAGE == 0 and starts == sorted(starts)
        assert len({weight.untyped_storage().data_ptr() for weight in weights}) == 1
    answer = engine.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=12)
    assert answer.text.startswith("The capital of France is Paris")


@needs_native_step
@pytest.mark.skipif(not packing_supported(torch.bfloat16, "cpu"), reason="this CPU has no bf16 units")
def test_a_bf16_chatglm_folder_loads_its_linears_as_stored(tmp_path, monkeypatch):
    """dtype auto reads linear weights in the checkpoint's bf16 (a 6B model never exists in float32)
    and casts only embeddings and norms to float32."""
    reference = tiny_glm_model(tiny_glm_config())
    fp32 = Engine.from_pretrained(save_glm_folder(reference, tmp_path / "hf"), dtype="fp32")
    bf16_state = {name: tensor.bfloat16() for name, tensor in fp32.model.state_dict().items()}
    folder = save_chatglm_folder(bf16_state, chatglm_config(reference.config), tmp_path / "chatglm")
    arriving = []
    original_init = Bf16Linear.__init__

    def recording_init(self, weight, bias):
        arriving.append(weight.dtype)
        original_init(self, weight, bias)

    monkeypatch.setattr(Bf16Linear, "__init__", recording_init)
    engine = Engine.from_pretrained(folder)
    assert arriving == [torch.bfloat16] * (4 * 2 + 1)
    model = engine.model
    assert model.decode_step is not None and engine.quant_paths == {"bf16_fused_decode": 4 * 2 + 1}
    assert model.layers[0].attention.wqkv.weight.dtype == torch.bfloat16
    assert model.tok_embeddings.weight.dtype == model.layers[1].ffn_norm.weight.dtype == torch.float32
    want = Engine.from_pretrained(folder, dtype="fp32").logits(PROMPT)
    got = engine.logits(PROMPT)
    assert (got - want).abs().max() <= 0.02 * want.abs().max()
