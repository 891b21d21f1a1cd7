"""Generation on an OpenAI-compatible server (vLLM, SGLang, Xinference serving GLM, or `ragglm serve`).

Retrieval, prompts and citations stay local; only the chat completion goes over HTTP. The object
offers the same seam as Engine: `chat(messages, max_new_tokens=, temperature=, stream=, result=)`,
`.name` and `.languages`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator

from ragglm.engine.generate import GenerationResult
from ragglm.errors import RemoteGeneratorError
from ragglm.text.chunker import count_tokens

__all__ = ["REMOTE_PREFIX", "RemoteGenerator", "is_remote_spec"]

REMOTE_PREFIX = "openai:"
_DEFAULT_LANGUAGES = ("en", "zh")  # what the GLM chat models served this way speak


def is_remote_spec(model: str | os.PathLike | None) -> bool:
    return str(model or "").startswith(REMOTE_PREFIX)


class RemoteGenerator:
    """A chat model behind `<base_url>/chat/completions`.

    `model=None` picks the first model the server lists (skipping ragglm's own retrieval model,
    which would search its documents again). The API key comes from the argument, else
    RAGGLM_REMOTE_API_KEY, else OPENAI_API_KEY.
    """

    concurrent = True  # the server schedules its own batch: callers need not take turns
    device = "remote"
    quant = None  # the server's business
    window = 8192  # a server does not say; a common size for the GLM models served this way
    parameter_count = None  # unknown: a remote model is never taken for a small one

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 300.0, languages: tuple[str, ...] | None = None):
        import httpx

        self.base_url = base_url.rstrip("/")
        self._model = model
        self._languages = tuple(languages) if languages else None
        key = api_key or os.environ.get("RAGGLM_REMOTE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                  timeout=httpx.Timeout(timeout_s, connect=10.0))
        # the same seam as Engine; the server batches requests itself, so few callers need it
        self.lock = threading.RLock()

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> RemoteGenerator:
        """`openai:http://host:port/v1` or `openai:http://host:port/v1#served-model-name`."""
        if not is_remote_spec(spec):
            raise RemoteGeneratorError(f"{spec!r}: a remote model is written {REMOTE_PREFIX}http://host:port/v1")
        url, _, model = spec[len(REMOTE_PREFIX):].partition("#")
        if not url.startswith(("http://", "https://")):
            raise RemoteGeneratorError(
                f"{spec!r}: the server address must start with http:// or https:// "
                f"(e.g. {REMOTE_PREFIX}http://127.0.0.1:8000/v1)")
        return cls(url, model or None, **kwargs)

    @property
    def name(self) -> str:
        return self.model

    @property
    def model(self) -> str:
        if self._model is None:
            self._discover()
        return self._model

    @property
    def languages(self) -> tuple[str, ...]:
        if self._languages is None:
            self._discover()
        return self._languages

    def close(self) -> None:
        self._http.close()

    def count_tokens(self, text: str) -> int:
        """jieba words: a close, slightly low, estimate of the server's token count."""
        return count_tokens(text)

    def cached_prompt_tokens(self, messages: list[dict]) -> int:
        return 0  # whatever the server caches, its prefill time is not ours to plan with

    def chat(self, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.0,
             stream: bool = False, seed: int | None = None, result: GenerationResult | None = None,
             stop: list[str] | None = None, use_prefix_cache: bool = True):
        """A GenerationResult, or with stream=True an iterator of text pieces (then `result` is filled).

        use_prefix_cache is the Generator seam's; the server decides for itself."""
        result = result if result is not None else GenerationResult([])
        body = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                "temperature": temperature, "stream": stream}
        if seed is not None:
            body["seed"] = seed
        if stop:
            body["stop"] = list(stop)
        if stream:
            body["stream_options"] = {"include_usage": True}
            return self._stream(body, result)
        started = time.perf_counter()
        data = self._post(body)
        elapsed = time.perf_counter() - started
        choice = (data.get("choices") or [{}])[0]
        result.text = (choice.get("message") or {}).get("content") or ""
        _finish(result, choice.get("finish_reason"), data.get("usage"), elapsed, elapsed)
        return result

    def _stream(self, body: dict, result: GenerationResult) -> Iterator[str]:
        import httpx

        started = time.perf_counter()
        first_piece_at = None
        finish_reason, usage, pieces = None, None, []
        try:
            with self._http.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refused(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names and keep-alives
                    payload = line[len("data:"):].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if "error" in event:
                        raise RemoteGeneratorError(f"{self.base_url}: {_error_message(event)}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        finish_reason = choice.get("finish_reason") or finish_reason
                        if piece:
                            first_piece_at = first_piece_at or time.perf_counter()
                            pieces.append(piece)
                            yield piece
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        result.text = "".join(pieces)
        now = time.perf_counter()
        _finish(result, finish_reason, usage, (first_piece_at or now) - started, now - started)

    def _post(self, body: dict) -> dict:
        import httpx

        try:
            response = self._http.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise self._refused(response)
        return response.json()

    def _discover(self) -> None:
        import httpx

        try:
            response = self._http.get("/models")
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise self._refused(response)
        listed = [m for m in response.json().get("data") or [] if isinstance(m, dict) and m.get("id")]
        plain = [m for m in listed if not m.get("knowledge_base")]
        if self._model is None:
            if not plain:
                raise RemoteGeneratorError(f"{self.base_url}/models lists no model to generate with; "
                                           f"name one as {REMOTE_PREFIX}{self.base_url}#MODEL")
            self._model = plain[0]["id"]
        if self._languages is None:
            entry = next((m for m in listed if m["id"] == self._model), {})
            self._languages = tuple(entry.get("languages") or _DEFAULT_LANGUAGES)

    def _unreachable(self, exc: Exception) -> RemoteGeneratorError:
        return RemoteGeneratorError(
            f"{self.base_url}: cannot reach the generation server ({exc.__class__.__name__}: {exc}); "
            "check that it is running and that the address ends with /v1")

    def _refused(self, response) -> RemoteGeneratorError:
        try:
            detail = _error_message(response.json())
        except ValueError:
            detail = response.text[:200]
        fix = " (set RAGGLM_REMOTE_API_KEY)" if response.status_code == 401 else ""
        return RemoteGeneratorError(
            f"{self.base_url}: the server answered {response.status_code}: {detail}{fix}")


def _finish(result: GenerationResult, finish_reason, usage, ttft_s: float, total_s: float) -> None:
    usage = usage or {}
    result.finish_reason = "stop" if finish_reason in (None, "stop") else "length"
    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    result.ttft_s = ttft_s
    decode_s = total_s - ttft_s
    result.decode_tok_s = (completion_tokens - 1) / decode_s if completion_tokens > 1 and decode_s > 0 else 0.0
    result.timings.update({"remote_s": round(total_s, 4), "completion_tokens": completion_tokens})


def _error_message(body) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)
        return str(error)
    return str(body)
