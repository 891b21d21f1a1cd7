"""Engine: a loaded model, its tokenizer and chat format, and generation over them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from ragglm.engine.cache.kv_store import default_disk_budget_bytes
from ragglm.engine.cache.prefix_cache import PrefixCache, model_fingerprint, no_reuse_reason
from ragglm.engine.generate import Constraint, GenerationResult, generate_tokens
from ragglm.engine.kernels.bf16_decode import finish_bf16_linears
from ragglm.engine.kernels.compiled_decode import compile_decode
from ragglm.engine.linear.dtypes import resolve_dtype
from ragglm.engine.linear.quantize import QuantConfig, kernel_paths, quantized_bytes
from ragglm.engine.loading.adapters import read_adapter
from ragglm.engine.loading.model_loader import load_model
from ragglm.engine.loading.sources import check_device, resolve_model_path
from ragglm.engine.model import ModelArgs, Transformer
from ragglm.engine.tokenizers.chat_format import ChatFormat
from ragglm.engine.tokenizers.tokenizer import Tokenizer
from ragglm.text.stop_strings import StopStringFilter

__all__ = ["Engine"]


class Engine:
    """A model, its tokenizer and chat format, and its prefix cache: the local Generator."""

    concurrent = False  # one KV cache: callers take turns with `lock`

    def __init__(self, model: Transformer, tokenizer: Tokenizer, chat_format: ChatFormat, name: str,
                 languages: tuple[str, ...] = ("en", "zh"), quant: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.name = name
        self.languages = languages  # languages the model answers well in
        # KV of recent prompt prefixes (system prompt + documents), reused by later prompts; None disables
        self.prefix_cache: PrefixCache | None = PrefixCache.for_model(model)
        self.quant = quant  # e.g. "int8", "int4:g64"; None for float weights
        self.adapter: dict | None = None  # kind, path and digest of the LoRA / P-Tuning v2 adapter loaded with it
        # how many linear layers run each path: a packed kernel or the dequantize-then-matmul fallback
        self.quant_paths: dict[str, int] = kernel_paths(model)
        self.compile_seconds: float | None = None  # time spent compiling the decode step, when compiled
        # the model's KV cache serves one generation at a time: every caller takes this around one
        self.lock = threading.RLock()
        self.window = model.args.max_seq_len  # context length in tokens
        self.parameter_count = model.args.parameter_count

    @property
    def args(self) -> ModelArgs:
        return self.model.args

    @property
    def device(self) -> torch.device:
        return self.model.tok_embeddings.weight.device

    def count_tokens(self, text: str) -> int:
        # as chat_ids will encode it inside a message: control strings count as the text they are
        return len(self.tokenizer.encode_plain(text))

    @classmethod
    def from_pretrained(cls, src: str | Path = "smollm2", quant: str | QuantConfig | None = None,
                        device: str = "cpu", dtype: str | torch.dtype | None = "auto", *,
                        cache_dir: str | Path | None = None, prefix_cache_bytes: int | None = None,
                        disk_cache_limit_mb: int | None = None, compile: bool = False,
                        adapter: str | Path | None = None) -> Engine:
        """Load a model.

        quant="int8" | "int4" (or "int4:g32" etc.) quantizes its linear layers while loading; a folder
        written by `ragglm quantize` loads as stored, without quantizing again. dtype="auto" is bf16 on
        CUDA, float32 with bf16 linear layers on CPUs with bf16 units (see resolve_dtype), float32
        elsewhere; "fp32" | "bf16" | "fp16" ask for one dtype throughout. Unquantized "auto" models
        on CPU decode through a native step built with the system's C++ compiler (see fused_decode).
        cache_dir keeps prefix KV on disk for later processes (see enable_disk_cache), pruned above
        disk_cache_limit_mb (RAGGLM_DISK_CACHE_MB wins; default 8 GiB or a quarter of the free disk). compile=True
        compiles the decode step with torch.compile instead (tens of seconds at load, then faster
        tokens for the dtypes and quantizations the native step does not cover; see compiled_decode).
        adapter is a fine-tuning folder: PEFT LoRA (merged into the weights before quantization) or
        a P-Tuning v2 checkpoint; its kind is read from its files (see ragglm.engine.loading.adapters).
        """
        config = QuantConfig.parse(quant)
        check_device(device)
        torch_dtype, bf16_linears = resolve_dtype(dtype, device)
        tuned = read_adapter(adapter) if adapter is not None else None
        # quant None keeps a GGUF file's own quantization (see gguf_model); "none" asks for float
        loaded = load_model(resolve_model_path(src), config, device, torch_dtype, linears_as_stored=bf16_linears,
                            adapter=tuned, keep_file_quant=quant is None)
        if bf16_linears:
            finish_bf16_linears(loaded.model, compile)
        engine = cls(loaded.model, loaded.tokenizer, loaded.chat_format, name=str(src),
                     languages=loaded.languages, quant=loaded.quant)
        engine.adapter = tuned.describe() if tuned is not None else None
        if compile:
            engine.compile_seconds = compile_decode(engine.model)
        if prefix_cache_bytes is not None:
            engine.prefix_cache = PrefixCache.for_model(engine.model, budget_bytes=prefix_cache_bytes)
        if cache_dir is not None:
            engine.enable_disk_cache(cache_dir, disk_cache_limit_mb)
        return engine

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of linear-layer weights (with their scales) and of everything else (embeddings, norms)."""
        return quantized_bytes(self.model)

    def enable_disk_cache(self, folder: str | Path, limit_mb: int | None = None) -> Path:
        """Keep prompt-prefix KV as files under folder, shared by every process using this model,
        pruned oldest first above limit_mb (see default_disk_budget_bytes).

        Files live in a subfolder named for the model, quantization, dtype and a weight fingerprint,
        which is returned. A model whose prefixes cannot be reused (see no_reuse_reason) keeps nothing.
        """
        if self.prefix_cache is None:
            self.prefix_cache = PrefixCache.for_model(self.model)
        if self.prefix_cache is None:
            return Path(folder).expanduser()
        fingerprint = model_fingerprint(self.model, self.name, self.quant)
        fingerprint["linear_paths"] = kernel_paths(self.model)  # bf16 linears give slightly other KV
        if self.adapter is not None:  # another model's KV: never shared with the base model's files
            fingerprint["adapter"] = self.adapter
        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        budget = None if limit_mb is None else default_disk_budget_bytes(folder, limit_mb * 2**20)
        return self.prefix_cache.enable_disk(folder, fingerprint, budget)

    @property
    def prefix_cache_note(self) -> str | None:
        """Why this model's prompt prefixes are never reused; None when they can be."""
        return no_reuse_reason(self.model)

    def cached_prefix_length(self, prompt_ids: list[int]) -> int:
        """How many leading tokens of this prompt have their KV cached, in memory or on disk."""
        return 0 if self.prefix_cache is None else self.prefix_cache.cached_length(prompt_ids)

    def cached_prompt_tokens(self, messages: list[dict]) -> int:
        """cached_prefix_length of messages in this model's chat format."""
        return self.cached_prefix_length(self.chat_ids(messages))

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] -> float logits [B, T, V]; does not read or write the KV cache."""
        return self.model(input_ids.to(self.device))

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of messages in the checkpoint's own chat format, ending with the assistant cue."""
        return self.chat_format.ids(messages, self.tokenizer)

    def chat(self, messages: list[dict], *, tools: list[dict] | None = None, tool_choice=None,
             response_format: dict | None = None, **kwargs):
        """generate() on messages rendered in the checkpoint's chat format (the Generator seam).

        messages are OpenAI-shaped: system, user, assistant (with `tool_calls`) and tool turns.
        tools (OpenAI function tools) are shown in the model's own tool format; tool_choice
        "required" or {"type": "function", "function": {"name": ...}} forces a call whose arguments
        follow the tool's schema, "auto" lets the model choose, "none" hides the tools. Calls come
        back in result.tool_calls (OpenAI shape) with finish_reason "tool_calls", and text keeps
        the rest. response_format {"type": "json_object" | "json_schema" | "regex", ...} holds the
        output to it by constrained decoding; such output ends complete within max_new_tokens
        (see ragglm.engine.constraints). With tools and stream=True, the text comes in one piece
        at the end, once it is known not to be a call.
        """
        if not tools and response_format is None and tool_choice is None and not _has_tool_turns(messages):
            return self.generate(self.chat_ids(messages), **kwargs)
        from ragglm.engine.constraints.chat import (
            plan_chat,  # xgrammar loads only for a constrained chat
        )

        plan = plan_chat(self, messages, tools=tools, tool_choice=tool_choice, response_format=response_format,
                         max_new_tokens=kwargs.get("max_new_tokens", 256))
        stream = kwargs.pop("stream", False)
        result = kwargs.pop("result", None) or GenerationResult([])
        pieces = self.generate(plan.prompt_ids, stream=True, result=result, constraint=plan.constraint, **kwargs)
        if not plan.tool_names:
            if stream:
                return pieces
            for _ in pieces:
                pass
            return result
        if stream:
            return _parsed_at_end(pieces, plan, result)
        for _ in pieces:
            pass
        plan.finish(result)
        return result

    def generate(self, prompt_ids: list[int] | torch.Tensor, max_new_tokens: int = 256,
                 temperature: float = 0.0, stream: bool = False, seed: int | None = None,
                 result: GenerationResult | None = None, *, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0,
                 stop: str | list[str] | None = None, stop_token_ids: list[int] | None = None,
                 use_prefix_cache: bool = True, constraint: Constraint | None = None):
        """A GenerationResult, or with stream=True an iterator of text pieces.

        `stop` strings end generation and are cut from the text; `stop_token_ids` add to the
        checkpoint's own end tokens. When streaming, pass `result` to receive the token ids,
        text and timings once done. use_prefix_cache=False prefills the whole prompt and leaves
        the prefix cache untouched. constraint masks the logits at every step (a grammar, see
        ragglm.engine.constraints) and may end generation when its output is complete.
        """
        if isinstance(prompt_ids, torch.Tensor):
            prompt_ids = prompt_ids.reshape(-1).tolist()
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        if seed is not None and temperature > 0:
            torch.manual_seed(seed)
        result = result if result is not None else GenerationResult([])
        stop_ids = set(self.tokenizer.eos_token_ids) | set(stop_token_ids or ())
        tokens = generate_tokens(self.model, list(prompt_ids), max_new_tokens, stop_ids, temperature, generator,
                                 result, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                                 prefix_cache=self.prefix_cache if use_prefix_cache else None,
                                 constraint=constraint)
        pieces = self._stream_text(tokens, result, StopStringFilter([stop] if isinstance(stop, str) else stop))
        if stream:
            return pieces
        for _ in pieces:
            pass
        return result

    def _stream_text(self, tokens: Iterator[int], result: GenerationResult,
                     stops: StopStringFilter) -> Iterator[str]:
        """Yield text as it becomes printable and safe: a multi-byte character split across tokens
        waits for its last byte, and the stop filter holds back a tail that may start a stop string."""
        ids: list[int] = []
        settled = ""  # the decoded text up to its last complete character
        for token in tokens:
            ids.append(token)
            text = self.tokenizer.decode(ids).rstrip("\ufffd")
            if len(text) <= len(settled):
                continue
            piece = stops.feed(text[len(settled):])
            settled = text
            if piece:
                yield piece
            if stops.stopped:
                result.finish_reason = "stop"
                tokens.close()
                break
        else:
            tail = stops.feed(self.tokenizer.decode(ids)[len(settled):]) + stops.flush()
            if stops.stopped:
                result.finish_reason = "stop"
            if tail:
                yield tail
        result.text = stops.text


def _has_tool_turns(messages: list[dict]) -> bool:
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def _parsed_at_end(pieces: Iterator[str], plan, result: GenerationResult) -> Iterator[str]:
    """The text once the whole output is read: a tool call's markup is never shown as text."""
    for _ in pieces:
        pass
    plan.finish(result)
    if result.text:
        yield result.text
