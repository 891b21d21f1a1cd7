"""Engine: a loaded model, its tokenizer and chat format, and generation over them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from ragglm.engine.chat_format import ChatFormat
from ragglm.engine.compiled_decode import compile_decode
from ragglm.engine.fused_decode import attach_fused_decode, native_step_available
from ragglm.engine.generate import GenerationResult, generate_tokens
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.engine.packed_linear import (
    Bf16Linear,
    PackedLinear,
    packing_supported,
    use_bf16_linears,
)
from ragglm.engine.prefix_cache import PrefixCache, model_fingerprint
from ragglm.engine.quant_loader import (
    build_quantized,
    drain,
    is_quantized_checkpoint,
    load_quantized,
)
from ragglm.engine.quantize import QuantConfig, QuantizationError, kernel_paths, quantized_bytes
from ragglm.engine.sources import resolve_model_path
from ragglm.engine.tokenizer import BPETokenizer, Tokenizer
from ragglm.errors import ConfigError, ModelNotFoundError

__all__ = ["Engine", "finish_bf16_linears", "resolve_dtype", "save_quantized_checkpoint"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str = "cpu") -> tuple[torch.dtype, bool]:
    """(model dtype, whether linear layers compute in bf16).

    "auto" (or None): on CUDA, bf16 throughout; on CPUs with bf16 units (AVX512-BF16/AMX), float32
    with bf16 linear layers; elsewhere float32.
    """
    device_type = torch.device(device).type
    if dtype in (None, "auto"):
        if device_type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16, False
        return torch.float32, packing_supported(torch.bfloat16, device_type)
    if not isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    return dtype, packing_supported(dtype, device_type)


def finish_bf16_linears(model: Transformer, compile: bool = False) -> None:
    """Give a loaded model the bf16 linear layers of its dtype: a float32 model that is not to be
    compiled decodes through the native step (plain bf16 rows for its float layers, its int8 and
    int4 layers read as they are); a compiled one uses oneDNN's packed layout. Quantized layers take
    bf16 inputs either way."""
    fused = not compile and model.tok_embeddings.weight.dtype == torch.float32 and native_step_available()
    use_bf16_linears(model, Bf16Linear if fused else PackedLinear)
    if fused:
        attach_fused_decode(model)


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, chat_format: ChatFormat, name: str,
                 languages: tuple[str, ...] = ("en", "zh")):
        self.model = model
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.name = name
        self.languages = languages  # languages the model answers well in
        # KV of recent prompt prefixes (system prompt + documents), reused by later prompts; None disables
        self.prefix_cache: PrefixCache | None = PrefixCache.for_model(model)
        self.quant: str | None = None  # e.g. "int8", "int4:g64"; None for float weights
        # how many linear layers run each path: a packed kernel or the dequantize-then-matmul fallback
        self.quant_paths: dict[str, int] = {}
        self.compile_seconds: float | None = None  # time spent compiling the decode step, when compiled

    @property
    def args(self) -> ModelArgs:
        return self.model.args

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    @classmethod
    def from_pretrained(cls, src: str | Path = "smollm2", quant: str | QuantConfig | None = None,
                        device: str = "cpu", dtype: str | torch.dtype | None = "auto", *,
                        cache_dir: str | Path | None = None, prefix_cache_bytes: int | None = None,
                        compile: bool = False) -> Engine:
        """Load a model.

        quant="int8" | "int4" (or "int4:g32" etc.) quantizes its linear layers while loading; a folder
        written by `ragglm quantize` loads as stored, without quantizing again. dtype="auto" is bf16 on
        CUDA, float32 with bf16 linear layers on CPUs with bf16 units (see resolve_dtype), float32
        elsewhere; "fp32" | "bf16" | "fp16" ask for one dtype throughout. Unquantized "auto" models
        on CPU decode through a native step built with the system's C++ compiler (see fused_decode).
        cache_dir keeps prefix KV on disk for later processes (see enable_disk_cache). compile=True
        compiles the decode step with torch.compile instead (tens of seconds at load, then faster
        tokens for the dtypes and quantizations the native step does not cover; see compiled_decode).
        """
        config = QuantConfig.parse(quant)
        torch_dtype, bf16_linears = resolve_dtype(dtype, device)
        path = resolve_model_path(src)
        if is_quantized_checkpoint(path):
            engine = cls._from_quantized(path, config, device, torch_dtype, name=str(src))
        else:
            # linear layers that become bf16 are read as stored: a bf16 6B checkpoint never exists in float32
            engine = cls._from_checkpoint(path, config, device, torch_dtype, name=str(src),
                                          linears_as_stored=bf16_linears)
        if bf16_linears:
            finish_bf16_linears(engine.model, compile)
            engine._set_quant(engine.quant)
        if compile:
            engine.compile_seconds = compile_decode(engine.model)
        if prefix_cache_bytes is not None:
            engine.prefix_cache = PrefixCache.for_model(engine.model, budget_bytes=prefix_cache_bytes)
        if cache_dir is not None:
            engine.enable_disk_cache(cache_dir)
        return engine

    @classmethod
    def _from_checkpoint(cls, path: Path, config: QuantConfig | None, device, torch_dtype, name: str,
                         linears_as_stored: bool = False) -> Engine:
        as_stored = False
        if path.suffix == ".gguf":
            args, state_dict, tokenizer, chat_format, languages = _load_gguf(path, torch_dtype)
        elif path.is_dir():
            # quantized layers are built from a stream in the checkpoint's dtype (each weight is
            # converted block by block while quantized), so the float model is never whole in memory
            as_stored = config is not None or linears_as_stored
            args, state_dict, tokenizer, chat_format, languages = _load_folder(
                path, None if as_stored else torch_dtype, stream=config is not None)
        else:
            raise ModelNotFoundError(f"{path}: expected a .gguf file or a model folder")
        if config is None:
            model = _build(args, state_dict, device)
            if as_stored:
                _cast_all_but_linears(model, torch_dtype)
        else:
            model = build_quantized(args, drain(state_dict), device, torch_dtype, config)
        engine = cls(model, tokenizer, chat_format, name=name, languages=languages)
        engine._set_quant(config.name if config else None)
        return engine

    @classmethod
    def _from_quantized(cls, path: Path, config: QuantConfig | None, device, dtype, name: str) -> Engine:
        model, meta = load_quantized(path, device, dtype)
        if config is not None and config.scheme != meta["scheme"]:
            raise ModelNotFoundError(f"{path} holds {meta['scheme']} weights, not {config.scheme}; "
                                     f"drop --quant or quantize the original model again")
        tokenizer, chat_format, languages = _tokenizer_of_quantized(path, meta)
        engine = cls(model, tokenizer, chat_format, name=name, languages=languages)
        engine._set_quant(QuantConfig(meta["scheme"], meta["group_size"]).name)
        return engine

    def _set_quant(self, name: str | None) -> None:
        self.quant = name
        self.quant_paths = kernel_paths(self.model)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of linear-layer weights (with their scales) and of everything else (embeddings, norms)."""
        return quantized_bytes(self.model)

    def enable_disk_cache(self, folder: str | Path) -> Path:
        """Keep prompt-prefix KV as files under folder, shared by every process using this model.

        Files live in a subfolder named for the model, quantization, dtype and a weight fingerprint,
        which is returned.
        """
        if self.prefix_cache is None:
            self.prefix_cache = PrefixCache.for_model(self.model)
        fingerprint = model_fingerprint(self.model, self.name, self.quant)
        fingerprint["linear_paths"] = kernel_paths(self.model)  # bf16 linears give slightly other KV
        return self.prefix_cache.enable_disk(folder, fingerprint)

    def cached_prefix_length(self, prompt_ids: list[int]) -> int:
        """How many leading tokens of this prompt have their KV cached, in memory or on disk."""
        return 0 if self.prefix_cache is None else self.prefix_cache.cached_length(prompt_ids)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] -> float logits [B, T, V]; does not read or write the KV cache."""
        return self.model(input_ids.to(self.device))

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of messages in the checkpoint's own chat format, ending with the assistant cue."""
        return self.chat_format.ids(messages, self.tokenizer)

    def chat(self, messages: list[dict], **kwargs):
        """generate() on messages rendered in the checkpoint's chat format (the Generator seam)."""
        return self.generate(self.chat_ids(messages), **kwargs)

    def generate(self, prompt_ids: list[int] | torch.Tensor, max_new_tokens: int = 256,
                 temperature: float = 0.0, stream: bool = False, seed: int | None = None,
                 result: GenerationResult | None = None, *, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0,
                 stop: str | list[str] | None = None, stop_token_ids: list[int] | None = None,
                 use_prefix_cache: bool = True):
        """A GenerationResult, or with stream=True an iterator of text pieces.

        `stop` strings end generation and are cut from the text; `stop_token_ids` add to the
        checkpoint's own end tokens. When streaming, pass `result` to receive the token ids,
        text and timings once done. use_prefix_cache=False prefills the whole prompt and leaves
        the prefix cache untouched.
        """
        if isinstance(prompt_ids, torch.Tensor):
            prompt_ids = prompt_ids.reshape(-1).tolist()
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        if seed is not None and temperature > 0:
            torch.manual_seed(seed)
        result = result if result is not None else GenerationResult([])
        stop_ids = set(self.tokenizer.eos_token_ids) | set(stop_token_ids or ())
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        tokens = generate_tokens(self.model, list(prompt_ids), max_new_tokens, stop_ids, temperature, generator,
                                 result, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                                 prefix_cache=self.prefix_cache if use_prefix_cache else None)
        pieces = self._stream_text(tokens, result, stops)
        if stream:
            return pieces
        for _ in pieces:
            pass
        return result

    def _stream_text(self, tokens: Iterator[int], result: GenerationResult, stops: list[str]) -> Iterator[str]:
        """Yield text as it becomes printable and safe: a split multi-byte character, or a tail that
        may be the start of a stop string, is held back until the next token settles it."""
        ids: list[int] = []
        emitted = ""
        hold = max((len(s) for s in stops), default=1) - 1
        text = ""
        for token in tokens:
            ids.append(token)
            text = self.tokenizer.decode(ids)
            if stops:
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    text = text[:cut]
                    result.finish_reason = "stop"
                    tokens.close()
                    break
            if text.endswith("\ufffd"):  # a multi-byte character split across tokens
                continue
            safe = text[:len(text) - hold] if stops and hold else text
            if len(safe) > len(emitted):
                yield safe[len(emitted):]
                emitted = safe
        else:
            text = self.tokenizer.decode(ids)
        result.text = text
        if len(text) > len(emitted):
            yield text[len(emitted):]


def _build(args: ModelArgs, state_dict: dict, device: str) -> Transformer:
    with torch.device("meta"):
        model = Transformer(args)
    missing = set(model.state_dict()) - set(state_dict)
    if missing:
        raise ModelNotFoundError(f"checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    model.load_state_dict(state_dict, assign=True, strict=True)
    return model.to(device).eval()


def _cast_all_but_linears(model: Transformer, dtype: torch.dtype) -> None:
    """Embeddings and norms to dtype, one tensor at a time; linear weights stay as loaded."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            continue
        for param in module.parameters(recurse=False):
            param.data = param.data.to(dtype)


def _load_gguf(path: Path, dtype):
    from ragglm.engine.gguf_loader import read_gguf
    from ragglm.engine.tokenizer import bpe_from_gguf

    checkpoint = read_gguf(path, dtype)
    tokenizer = bpe_from_gguf(checkpoint.metadata)
    template = checkpoint.metadata.get("tokenizer.chat_template") or _PLAIN_TEMPLATE
    languages = tuple(checkpoint.metadata.get("general.languages") or ("en", "zh"))
    return checkpoint.args, checkpoint.state_dict, tokenizer, ChatFormat(template, tokenizer.bos_token, tokenizer.eos_token), languages


def _load_folder(path: Path, dtype, stream: bool = False):
    """With stream=True the weights come as an iterator of (name, tensor) rather than a dict,
    read one tensor at a time; dtype None keeps each tensor in the checkpoint's dtype."""
    from ragglm.engine.hf_loader import (
        iter_checkpoint_tensors,
        iter_llama_state,
        llama_args,
        read_config,
    )

    config = read_config(path)
    model_type = config.get("model_type")
    if model_type in ("chatglm", "glm"):
        return _load_glm_folder(path, config, dtype, stream)
    if model_type not in ("llama", "qwen2", "mistral"):
        raise ModelNotFoundError(
            f"{path}: model_type {model_type!r} is not supported (chatglm, glm, llama, qwen2, mistral are)"
        )
    args = llama_args(config)
    tensors = iter_llama_state(iter_checkpoint_tensors(path), args, dtype)
    state_dict = tensors if stream else dict(tensors)
    return (args, state_dict, *_folder_tokenizer(path))


def _folder_tokenizer(path: Path):
    config_path = path / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if config.get("model_type") in ("chatglm", "glm"):
        from ragglm.engine.glm_tokenizer import load_glm_tokenizer

        return (*load_glm_tokenizer(path, config), ("zh", "en"))
    tok_config_path = path / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8")) if tok_config_path.is_file() else {}
    eos = tok_config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    tokenizer = BPETokenizer.from_file(path / "tokenizer.json", [t for t in (eos, "<|im_end|>", "<|endoftext|>") if t])
    template = tok_config.get("chat_template") or _PLAIN_TEMPLATE
    return tokenizer, ChatFormat(template, tok_config.get("bos_token"), eos), ("en", "zh")


_GGUF_TOKENIZER = "tokenizer_gguf.json"  # the tokenizer fields of a GGUF source, kept beside its quantized weights
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")


def save_quantized_checkpoint(src: str | Path, out: str | Path, quant: str | QuantConfig) -> dict:
    """Quantize SRC (alias, .gguf file or model folder) into the folder OUT; returns quantization.json."""
    import shutil

    from ragglm.engine.quant_loader import save_quantized

    config = QuantConfig.parse(quant)
    if config is None:
        raise QuantizationError("give a quantization to save: int8 or int4")
    path, out = resolve_model_path(src), Path(out)
    if is_quantized_checkpoint(path):
        raise ModelNotFoundError(f"{path} is already quantized; quantize the original model instead")
    if path.suffix == ".gguf":
        from ragglm.engine.gguf_loader import read_gguf

        checkpoint = read_gguf(path, torch.float32)
        args, tensors = checkpoint.args, drain(checkpoint.state_dict)
        fields = {k: v for k, v in checkpoint.metadata.items()
                  if k.startswith("tokenizer.") or k == "general.languages"}
        out.mkdir(parents=True, exist_ok=True)
        (out / _GGUF_TOKENIZER).write_text(json.dumps(fields, ensure_ascii=False), encoding="utf-8")
        kind = "gguf"
    elif path.is_dir():
        args, tensors, *_ = _load_folder(path, None, stream=True)
        out.mkdir(parents=True, exist_ok=True)
        for item in path.iterdir():  # config, tokenizer and chat template files travel along
            if item.is_file() and not item.name.endswith(_WEIGHT_SUFFIXES):
                shutil.copy2(item, out / item.name)
        kind = "folder"
    else:
        raise ModelNotFoundError(f"{path}: expected a .gguf file or a model folder")
    return save_quantized(out, args, tensors, config, {"tokenizer": kind, "source": str(src)})


def _tokenizer_of_quantized(path: Path, meta: dict):
    if meta.get("tokenizer") == "gguf":
        from ragglm.engine.tokenizer import bpe_from_gguf

        fields = json.loads((path / _GGUF_TOKENIZER).read_text(encoding="utf-8"))
        tokenizer = bpe_from_gguf(fields)
        template = fields.get("tokenizer.chat_template") or _PLAIN_TEMPLATE
        languages = tuple(fields.get("general.languages") or ("en", "zh"))
        return tokenizer, ChatFormat(template, tokenizer.bos_token, tokenizer.eos_token), languages
    return _folder_tokenizer(path)


def _load_glm_folder(path: Path, config: dict, dtype, stream: bool = False):
    from ragglm.engine.glm_loader import chatglm_args, glm_args, iter_chatglm_state, iter_glm_state
    from ragglm.engine.glm_tokenizer import load_glm_tokenizer
    from ragglm.engine.hf_loader import iter_checkpoint_tensors

    if config["model_type"] == "chatglm":
        args = chatglm_args(config)
        tensors = iter_chatglm_state(iter_checkpoint_tensors(path), args, dtype)
    else:
        args = glm_args(config)
        tensors = iter_glm_state(iter_checkpoint_tensors(path), args, dtype)
    tokenizer, chat_format = load_glm_tokenizer(path, config)
    return args, tensors if stream else dict(tensors), tokenizer, chat_format, ("zh", "en")


# For checkpoints without a chat template: plain role-prefixed turns.
_PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
