"""Prefix cache: the KV of a token prefix, computed once and reused by later prompts that start alike.

Prompts are cut into blocks of `block_size` tokens. A block is keyed by a hash of its parent's key and
its own token ids, so one key names a whole prefix (the vLLM scheme) and a lookup walks the prompt
block by block. Only whole blocks are kept and reused: generation prefills every prompt in pieces of
one block aligned to absolute positions (see generate.py), so a block's KV is computed by the same
kernel calls on the same inputs whether the block is prefilled now or came from the cache, and greedy
output is identical token for token at every cached length. Reusing part of a block would prefill
the rest of it in a shorter piece, whose matrix products may round differently.

Memory is bounded by a byte budget with least-recently-used eviction of leaf blocks that no generation
holds; an inner block is never evicted before its descendants, so every cached block stays reachable.
With a disk store attached (see kv_store.py) blocks are also written to files and read back by later
processes.

A model with a KV prefix (P-Tuning v2) roots its keys at that prefix's name, so KV computed with
another prefix or none is never reused. A model whose prompt context attends both ways (ChatGLM-6B)
gets no cache: the KV of its documents depends on the question after them.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from ragglm.engine.cache.keys import ROOT, block_key
from ragglm.engine.cache.kv_store import KVFileStore

__all__ = ["DEFAULT_BLOCK_SIZE", "PrefixCache", "ROOT", "block_key", "common_prefix_length", "default_budget_bytes",
           "model_fingerprint", "no_reuse_reason"]

# Reuse and prefill go by whole blocks at absolute positions (identical output at every cached
# length); 128 tokens prefill at full speed on CPU (512 tokens: 0.91 s in 128s against 1.40 s in 32s)
DEFAULT_BLOCK_SIZE = 128
_BUDGET_SHARE = 0.25  # of the memory available when the cache is created


@dataclass(eq=False)
class _Block:
    key: bytes
    parent: bytes
    tokens: tuple[int, ...]
    kv: Tensor  # [L, 2, H_kv, n, D]: keys then values of every layer, for this block's n tokens
    refs: int = 0  # generations holding it; a held block is never evicted
    on_disk: bool = False

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()


class _OnDisk:
    """Stand-in for a block found on disk by a lookup that does not load it."""


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items a and b share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def no_reuse_reason(model) -> str | None:
    """Why no prompt prefix of this model can be reused; None when one can."""
    if getattr(model.args, "bidirectional_context", False):
        return ("off: the prompt's context attends both ways (ChatGLM-6B), so the KV of the documents "
                "depends on the question after them")
    return None


def _root(model) -> bytes:
    """The key of the empty prefix: a KV prefix (P-Tuning) is part of every prompt's prefix."""
    name = getattr(model, "kv_prefix_id", None)
    return ROOT if name is None else block_key(ROOT, list(name.encode()))


def _layer_caches(model) -> list:
    caches = [layer.attention.kv_cache for layer in model.layers]
    if any(cache is None for cache in caches):
        raise RuntimeError("the model has no KV cache; call model.setup_cache() first")
    return caches


class PrefixCache:
    """KV blocks of token prefixes for one model, in memory and optionally on disk."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu", budget_bytes: int | None = None,
                 block_size: int = DEFAULT_BLOCK_SIZE):
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, not {block_size}")
        self.layout = (n_layers, n_kv_heads, head_dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.block_size = block_size
        self.budget_bytes = default_budget_bytes(self.device) if budget_bytes is None else int(budget_bytes)
        self.used_bytes = 0
        self.evictions = 0
        self.disk: KVFileStore | None = None
        self._blocks: OrderedDict[bytes, _Block] = OrderedDict()  # least recently used first
        self._children: dict[bytes, set[bytes]] = {}  # parent key -> child keys, in memory
        self._lock = threading.RLock()
        self.root = ROOT  # follows the KV prefix of the model last loaded into or stored from

    @classmethod
    def for_model(cls, model, budget_bytes: int | None = None,
                  block_size: int = DEFAULT_BLOCK_SIZE) -> PrefixCache | None:
        """A cache for model; None when its prefixes cannot be reused (see no_reuse_reason)."""
        if no_reuse_reason(model) is not None:
            return None
        args = model.args
        weight = model.tok_embeddings.weight
        dtype = model.cache_dtype
        if budget_bytes is None:
            budget_bytes = default_budget_bytes(weight.device, model.kv_bytes_per_position * args.max_seq_len)
        cache = cls(args.n_layers, args.n_kv_heads, args.head_dim, dtype, weight.device, budget_bytes, block_size)
        cache.root = _root(model)
        return cache

    def __len__(self) -> int:
        return len(self._blocks)

    def enable_disk(self, folder: str | Path, fingerprint: dict,
                    budget_bytes: int | None = None) -> Path:
        """Also keep blocks as files under folder/<model id>/; returns that folder. budget_bytes bounds
        the files of every model under folder together."""
        root = Path(folder).expanduser()
        subfolder = root / _folder_name(fingerprint)
        self.disk = KVFileStore(subfolder, fingerprint, self.layout, self.dtype, budget_bytes,
                                block_size=self.block_size, root=root)
        return subfolder

    def flush(self) -> None:
        """Wait until every block scheduled for disk is written."""
        if self.disk is not None:
            self.disk.flush()

    def clear(self) -> None:
        """Forget every unheld block in memory (files on disk stay)."""
        with self._lock:
            budget, self.budget_bytes = self.budget_bytes, 0
            self._evict()
            self.budget_bytes = budget

    def cached_length(self, tokens: Sequence[int]) -> int:
        """How many leading tokens have their KV in memory or on disk, in whole blocks (nothing is
        loaded; a file whose payload turns out bad when loaded is rebuilt then)."""
        with self._lock:
            return sum(used for _, used in self._walk(list(tokens), load=False))

    def load_into(self, model, tokens: Sequence[int], limit: int | None = None) -> int:
        """Copy the KV of the longest cached prefix of whole blocks (at most limit tokens) into the
        model's KV cache.

        Returns its length, a multiple of block_size: the model then prefills tokens[length:] at
        start=length.
        """
        tokens = list(tokens if limit is None else tokens[:max(limit, 0)])
        with self._lock:
            self.root = _root(model)
            steps = self._walk(tokens, load=True)
            try:
                position = 0
                caches = _layer_caches(model)
                for block, used in steps:
                    end = position + used
                    for layer, cache in enumerate(caches):
                        slots = slice(cache.offset + position, cache.offset + end)  # after any KV prefix
                        cache.k[:, :, slots] = block.kv[layer, 0, :, :used]
                        cache.v[:, :, slots] = block.kv[layer, 1, :, :used]
                    position = end
                return position
            finally:
                self._release([block for block, _ in steps])

    def store(self, model, tokens: Sequence[int]) -> int:
        """Keep the KV of the whole blocks of tokens, which the model's KV cache holds at positions
        0..len-1 (a trailing partial block is never reused, so it is not kept).

        Blocks already cached are only marked as used; returns the number of new blocks.
        """
        tokens = list(tokens)
        caches = _layer_caches(model)
        created = 0
        with self._lock:
            self.root = _root(model)
            held: list[_Block] = []
            parent = self.root
            try:
                for start in range(0, len(tokens) - self.block_size + 1, self.block_size):
                    chunk = tuple(tokens[start:start + self.block_size])
                    key = block_key(parent, chunk)
                    block = self._blocks.get(key)
                    if block is None:
                        block = self._insert(key, parent, chunk, _gather(caches, start, len(chunk)))
                        created += 1
                    if self.disk is not None and not block.on_disk:
                        self.disk.write(block.parent, block.key, block.tokens, block.kv)
                        block.on_disk = True
                    block.refs += 1
                    held.append(block)
                    parent = key
            finally:
                self._release(held)
        return created

    @contextmanager
    def hold(self, tokens: Sequence[int]) -> Iterator[int]:
        """Within the `with` statement, the cached prefix of tokens is never evicted; yields its length."""
        with self._lock:
            steps = self._walk(list(tokens), load=True)
        try:
            yield sum(used for _, used in steps)
        finally:
            with self._lock:
                self._release([block for block, _ in steps])

    # -- internals -----------------------------------------------------------------------------

    def _walk(self, tokens: list[int], load: bool) -> list[tuple[_Block | _OnDisk, int]]:
        """The cached whole blocks covering the longest prefix of tokens, with the tokens each gives.

        With load=True, blocks found only on disk are read into memory, and every returned block
        is held (refs + 1) until _release.
        """
        steps: list[tuple[_Block | _OnDisk, int]] = []
        parent = self.root
        for start in range(0, len(tokens) - self.block_size + 1, self.block_size):
            chunk = tuple(tokens[start:start + self.block_size])
            key = block_key(parent, chunk)
            block = self._blocks.get(key) or self._from_disk(parent, key, chunk, load)
            if block is None:
                break
            if load:
                block.refs += 1
            steps.append((block, len(chunk)))
            parent = key
        if load:
            self._touch([block for block, _ in steps])
        return steps

    def _from_disk(self, parent: bytes, key: bytes, tokens: tuple[int, ...], load: bool):
        if self.disk is None:
            return None
        if not load:
            return _OnDisk() if self.disk.contains(parent, key, tokens) else None
        kv = self.disk.read(parent, key, tokens)
        if kv is None:
            return None
        block = self._insert(key, parent, tokens, kv.to(self.device, self.dtype))
        block.on_disk = True
        return block

    def _insert(self, key: bytes, parent: bytes, tokens: tuple[int, ...], kv: Tensor) -> _Block:
        block = _Block(key, parent, tokens, kv)
        self._blocks[key] = block
        self._children.setdefault(parent, set()).add(key)
        self.used_bytes += block.nbytes
        return block

    def _touch(self, path: list[_Block]) -> None:
        # Leaf first, root last: the oldest end of the order then offers leaves before their parents.
        for block in reversed(path):
            if block.key in self._blocks:
                self._blocks.move_to_end(block.key)

    def _release(self, blocks: list) -> None:
        for block in blocks:
            block.refs -= 1
        self._touch(blocks)
        self._evict()

    def _evict(self) -> None:
        while self.used_bytes > self.budget_bytes:
            # The oldest unheld leaf; removing it may turn its parent into a leaf, so look again.
            victim = next((b for b in self._blocks.values() if b.refs == 0 and b.key not in self._children),
                          None)
            if victim is None:
                return  # all that is left is held
            self._remove(victim)

    def _remove(self, block: _Block) -> None:
        del self._blocks[block.key]
        self._children.pop(block.key, None)
        siblings = self._children.get(block.parent)
        if siblings is not None:
            siblings.discard(block.key)
            if not siblings:
                del self._children[block.parent]
        self.used_bytes -= block.nbytes
        self.evictions += 1


def _gather(caches: list, start: int, length: int) -> Tensor:
    """[L, 2, H_kv, length, D] copy of positions start..start+length of every layer's cache."""
    first = caches[0].k
    kv = torch.empty((len(caches), 2, first.shape[1], length, first.shape[3]), dtype=first.dtype,
                     device=first.device)
    for layer, cache in enumerate(caches):
        slots = slice(cache.offset + start, cache.offset + start + length)  # after any KV prefix
        kv[layer, 0] = cache.k[0, :, slots]
        kv[layer, 1] = cache.v[0, :, slots]
    return kv


def default_budget_bytes(device: torch.device | str = "cpu", window_kv_bytes: int | None = None) -> int:
    """RAGGLM_PREFIX_CACHE_MB if set, else the KV of one full window (documents stuffed into it are
    what the cache is for; more only holds old questions, and a server's memory would grow with
    every distinct prompt), at most a quarter of the free GPU memory or available RAM."""
    configured = os.environ.get("RAGGLM_PREFIX_CACHE_MB")
    if configured:
        return int(float(configured) * 2**20)
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        share = int(free * _BUDGET_SHARE)
    else:
        share = int(_available_ram() * _BUDGET_SHARE)
    return share if window_kv_bytes is None else min(share, window_kv_bytes)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


def model_fingerprint(model, name: str, quant: str | None = None) -> dict:
    """What the KV depends on: model name, quantization, dtype, config and a sample of the weights.

    The sample (the first values of every tensor) tells apart two checkpoints saved under one name.
    """
    weights = hashlib.blake2b(digest_size=16)
    for tensor_name, tensor in model.state_dict().items():
        if tensor.numel() and tensor.device.type != "meta":
            sample = tensor.detach().flatten()[:64].contiguous()
            weights.update(tensor_name.encode())
            weights.update(sample.view(torch.uint8).cpu().numpy().tobytes())
    return {
        "model": str(name),
        "quant": quant or "none",
        "dtype": str(model.tok_embeddings.weight.dtype).removeprefix("torch."),
        "kv_dtype": str(model.cache_dtype).removeprefix("torch."),
        "args": asdict(model.args),
        "weights": weights.hexdigest(),
    }


def _folder_name(fingerprint: dict) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(fingerprint["model"]).name)[:48] or "model"
    return f"{slug}-{fingerprint['quant']}-{fingerprint['dtype']}-{KVFileStore.fingerprint_id(fingerprint)[:16]}"
