"""Engine: a loaded model, its tokenizer and chat format, and generation over them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from ragglm.engine.chat_format import ChatFormat
from ragglm.engine.generate import GenerationResult, generate_tokens
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.engine.prefix_cache import PrefixCache, model_fingerprint
from ragglm.engine.sources import resolve_model_path
from ragglm.engine.tokenizer import BPETokenizer, Tokenizer
from ragglm.errors import ModelNotFoundError

__all__ = ["Engine"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


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

    @property
    def args(self) -> ModelArgs:
        return self.model.args

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    @classmethod
    def from_pretrained(cls, src: str | Path = "smollm2", quant: str | None = None, device: str = "cpu",
                        dtype: str | torch.dtype | None = None, *, cache_dir: str | Path | None = None,
                        prefix_cache_bytes: int | None = None) -> Engine:
        """Load a model; cache_dir keeps prefix KV on disk for later processes (see enable_disk_cache)."""
        if quant is not None:
            raise NotImplementedError("quantization is not available yet; use quant=None")
        torch_dtype = _DTYPES[dtype] if isinstance(dtype, str) else (dtype or torch.float32)
        path = resolve_model_path(src)
        if path.suffix == ".gguf":
            args, state_dict, tokenizer, chat_format, languages = _load_gguf(path, torch_dtype)
        elif path.is_dir():
            args, state_dict, tokenizer, chat_format, languages = _load_folder(path, torch_dtype)
        else:
            raise ModelNotFoundError(f"{path}: expected a .gguf file or a model folder")
        model = _build(args, state_dict, device)
        engine = cls(model, tokenizer, chat_format, name=str(src), languages=languages)
        if prefix_cache_bytes is not None:
            engine.prefix_cache = PrefixCache.for_model(model, budget_bytes=prefix_cache_bytes)
        if cache_dir is not None:
            engine.enable_disk_cache(cache_dir)
        return engine

    def enable_disk_cache(self, folder: str | Path) -> Path:
        """Keep prompt-prefix KV as files under folder, shared by every process using this model.

        Files live in a subfolder named for the model, quantization, dtype and a weight fingerprint,
        which is returned.
        """
        if self.prefix_cache is None:
            self.prefix_cache = PrefixCache.for_model(self.model)
        fingerprint = model_fingerprint(self.model, self.name, getattr(self, "quant", None))
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


def _load_gguf(path: Path, dtype):
    from ragglm.engine.gguf_loader import read_gguf
    from ragglm.engine.tokenizer import bpe_from_gguf

    checkpoint = read_gguf(path, dtype)
    tokenizer = bpe_from_gguf(checkpoint.metadata)
    template = checkpoint.metadata.get("tokenizer.chat_template") or _PLAIN_TEMPLATE
    languages = tuple(checkpoint.metadata.get("general.languages") or ("en", "zh"))
    return checkpoint.args, checkpoint.state_dict, tokenizer, ChatFormat(template, tokenizer.bos_token, tokenizer.eos_token), languages


def _load_folder(path: Path, dtype):
    from ragglm.engine.hf_loader import (
        iter_checkpoint_tensors,
        llama_args,
        llama_state_dict,
        read_config,
    )

    config = read_config(path)
    model_type = config.get("model_type")
    if model_type in ("chatglm", "glm"):
        return _load_glm_folder(path, config, dtype)
    if model_type not in ("llama", "qwen2", "mistral"):
        raise ModelNotFoundError(
            f"{path}: model_type {model_type!r} is not supported (chatglm, glm, llama, qwen2, mistral are)"
        )
    args = llama_args(config)
    state_dict = llama_state_dict(iter_checkpoint_tensors(path), args, dtype)
    tok_config_path = path / "tokenizer_config.json"
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8")) if tok_config_path.is_file() else {}
    eos = tok_config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    tokenizer = BPETokenizer.from_file(path / "tokenizer.json", [t for t in (eos, "<|im_end|>", "<|endoftext|>") if t])
    template = tok_config.get("chat_template") or _PLAIN_TEMPLATE
    return args, state_dict, tokenizer, ChatFormat(template, tok_config.get("bos_token"), eos), ("en", "zh")


def _load_glm_folder(path: Path, config: dict, dtype):
    from ragglm.engine.glm_loader import chatglm_args, chatglm_state_dict, glm_args, glm_state_dict
    from ragglm.engine.glm_tokenizer import load_glm_tokenizer
    from ragglm.engine.hf_loader import iter_checkpoint_tensors

    if config["model_type"] == "chatglm":
        args = chatglm_args(config)
        state_dict = chatglm_state_dict(iter_checkpoint_tensors(path), args, dtype)
    else:
        args = glm_args(config)
        state_dict = glm_state_dict(iter_checkpoint_tensors(path), args, dtype)
    tokenizer, chat_format = load_glm_tokenizer(path, config)
    return args, state_dict, tokenizer, chat_format, ("zh", "en")


# For checkpoints without a chat template: plain role-prefixed turns.
_PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
