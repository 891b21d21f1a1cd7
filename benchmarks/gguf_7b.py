"""Our engine and llama.cpp on the same 7B-shape GGUF file, one run, one model in memory at a time.

A random-weight Llama-2-7B-shape file (dim 4096, 32 layers, FFN 11008; the packaged SmolLM2's
tokenizer, so a 49,152 vocabulary) is written once per type under --dir (never into the repo). Each
engine then runs in its own child process, alternating ours and llama.cpp, and reports: load time,
peak RSS (VmHWM), decode ms/token after 128 and 2,048 tokens of context, prefill tokens/s for a
512- and a 2,048-token prompt. A last child holds both engines and alternates blocks of decode
steps between them (--pairs): the host's bandwidth drifts, so those paired ratios are the decode
comparison, each pair with the bandwidth read after it. The parent measures memory read bandwidth,
and from it each engine's decode floor at each context: the bytes a token reads (the weights it
streams, the embedding aside, and the KV cache so far: float16 in both) over the bandwidth.
--bf16-layers N also compares int4 with bf16 prefill on an N-layer slice of the same shape (a whole
7B in bf16 would take 13.5 GB).

    PYTHONPATH=. .venv/bin/python benchmarks/gguf_7b.py --kinds Q4_0,Q8_0

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = {"Q4_0": 2, "Q8_0": 8}
THREADS = 2


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _ids(n: int, seed: int, vocab: int = 49152) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(100, vocab) for _ in range(n)]


def write_file(folder: Path, kind: str, layers: int | None = None) -> Path:
    from ragglm.engine.loading.gguf_loader import describe_gguf
    from ragglm.engine.loading.gguf_synthetic import LLAMA2_7B, SyntheticShape, write_random_gguf
    from ragglm.engine.loading.sources import resolve_model_path

    shape = LLAMA2_7B if layers is None else SyntheticShape(**{**LLAMA2_7B.__dict__, "n_layers": layers})
    path = folder / f"llama2-7b-shape{'' if layers is None else f'-{layers}l'}-{kind}.gguf"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    meta = describe_gguf(resolve_model_path("smollm2")).metadata
    tokenizer = {k: v for k, v in meta.items() if k.startswith("tokenizer.") and v is not None}
    partial = path.with_suffix(".partial")
    write_random_gguf(partial, shape, KINDS[kind], tokenizer=tokenizer)
    partial.rename(path)
    return path


# -- children: one engine each ----------------------------------------------------------------------

def decode_bytes(model) -> tuple[int, int]:
    """What our decode step reads a token: the weights it streams, and the KV cache's bytes a position."""
    from ragglm.engine.kernels.fused_decode import streamed_weights

    weights = sum(getattr(module, name).nbytes for module, name in streamed_weights(model))
    return weights, model.kv_bytes_per_position


def ours_child(path: str, new: int, contexts: list[int], prompts: list[int], quant: str | None) -> dict:
    import torch

    from ragglm.engine import Engine
    from ragglm.engine.generate import GenerationResult

    torch.set_num_threads(THREADS)
    torch.zeros(1) @ torch.zeros(1)
    base = _status_kb("VmRSS")
    started = time.perf_counter()
    engine = Engine.from_pretrained(path, quant=quant)
    figures: dict = {"load_s": round(time.perf_counter() - started, 1), "quant": engine.quant,
                     "paths": engine.quant_paths, "weight_bytes": sum(engine.weight_bytes().values())}
    figures["decode_weight_bytes"], figures["kv_bytes_per_token"] = decode_bytes(engine.model)
    figures["load_peak_rss_gb"] = round((_status_kb("VmHWM") - base) / 2**20, 2)

    def run(n_prompt: int, n_new: int, seed: int) -> GenerationResult:
        result = GenerationResult([])
        engine.generate(_ids(n_prompt, seed), max_new_tokens=n_new, result=result, use_prefix_cache=False,
                        stop_token_ids=[])
        return result

    run(16, 2, 0)  # warm up
    for n in prompts:
        if n not in contexts:
            figures[f"prefill_{n}_tok_s"] = round(run(n, 1, n).prefill_tok_s, 1)
    for n in contexts:
        result = run(n, new, n + 1)
        figures[f"decode_{n}_ms"] = round(1000 / result.decode_tok_s, 1) if result.decode_tok_s else None
        if n in prompts:
            figures[f"prefill_{n}_tok_s"] = round(result.prefill_tok_s, 1)
    figures["peak_rss_gb"] = round(_status_kb("VmHWM") / 2**20, 2)
    return figures


def llama_cpp_child(path: str, new: int, contexts: list[int], prompts: list[int]) -> dict:
    try:
        import llama_cpp
    except ImportError:
        return {"available": False, "reason": "llama-cpp-python is not installed"}
    import numpy as np

    base = _status_kb("VmRSS")
    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_threads=THREADS, n_threads_batch=THREADS,
                          n_ctx=max(contexts + prompts) + new + 8, n_batch=512, verbose=False)
    figures: dict = {"available": True, "load_s": round(time.perf_counter() - started, 1)}
    figures["load_peak_rss_gb"] = round((_status_kb("VmHWM") - base) / 2**20, 2)

    def next_token() -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        return int(np.argmax(logits))

    def run(n_prompt: int, n_new: int, seed: int) -> tuple[float, float]:
        llm.reset()
        ids = _ids(n_prompt, seed)
        started = time.perf_counter()
        llm.eval(ids)
        prefill = n_prompt / (time.perf_counter() - started)
        token = next_token()
        started = time.perf_counter()
        for _ in range(n_new - 1):
            llm.eval([token])
            token = next_token()
        decode_ms = (time.perf_counter() - started) * 1000 / max(n_new - 1, 1)
        return prefill, decode_ms

    run(16, 2, 0)
    for n in prompts:
        if n not in contexts:
            figures[f"prefill_{n}_tok_s"] = round(run(n, 1, n)[0], 1)
    for n in contexts:
        prefill, decode_ms = run(n, new, n + 1)
        figures[f"decode_{n}_ms"] = round(decode_ms, 1)
        if n in prompts:
            figures[f"prefill_{n}_tok_s"] = round(prefill, 1)
    figures["peak_rss_gb"] = round(_status_kb("VmHWM") / 2**20, 2)
    return figures


def paired_child(path: str, new: int, contexts: list[int], pairs: int) -> dict:
    """Decode ms/token of both engines in one process, alternating blocks of `new` steps.

    The host's memory bandwidth drifts by half within minutes (other tenants), and batch-1 decode
    follows it; figures taken in separate processes minutes apart compare two machines. Each pair
    here is two blocks a few seconds apart, and the ratio is the median over the pairs; the
    bandwidth read after each pair gives our floor at that moment (ours_vs_floor).
    """
    import statistics

    import llama_cpp
    import torch

    from benchmarks.memory_bandwidth import read_bandwidth_gb_s
    from ragglm.engine import Engine

    torch.set_num_threads(THREADS)
    engine = Engine.from_pretrained(path)
    llm = llama_cpp.Llama(model_path=path, n_threads=THREADS, n_threads_batch=THREADS,
                          n_ctx=max(contexts) + new + 8, n_batch=512, verbose=False)
    model = engine.model
    model.setup_cache(1, max(contexts) + new)
    weight_bytes, kv_bytes = decode_bytes(model)

    def ours_ms(n: int, token: int) -> float:
        step = torch.tensor([[token]])
        with torch.inference_mode():
            started = time.perf_counter()
            for position in range(n, n + new):
                model.decode(step, position)
        return (time.perf_counter() - started) * 1000 / new

    def llama_cpp_ms(n: int, token: int) -> float:
        llm.n_tokens = n  # back to the prompt: its KV past n is dropped by the next eval
        started = time.perf_counter()
        for _ in range(new):
            llm.eval([token])
        return (time.perf_counter() - started) * 1000 / new

    report = {}
    for n in contexts:
        ids = _ids(n, n + 2)
        engine.generate(ids, max_new_tokens=1, use_prefix_cache=False, stop_token_ids=[])
        llm.reset()
        llm.eval(ids)
        ours_ms(n, ids[-1]), llama_cpp_ms(n, ids[-1])  # warm up
        # each pair with the bandwidth read right after it, and our floor at that bandwidth
        timings = [(ours_ms(n, ids[-1]), llama_cpp_ms(n, ids[-1]), read_bandwidth_gb_s()) for _ in range(pairs)]
        token_bytes = weight_bytes + kv_bytes * n
        report[n] = {"ours_ms": [round(a, 1) for a, _, _ in timings],
                     "llama_cpp_ms": [round(b, 1) for _, b, _ in timings],
                     "bandwidth_gb_s": [round(bw, 1) for _, _, bw in timings],
                     "ours_vs_floor": [round(a / (token_bytes / bw / 1e6), 2) for a, _, bw in timings],
                     "ratio_median": round(statistics.median(b / a for a, b, _ in timings), 2)}
    return report


def prefill_child(path: str, prompt: int, quant: str | None) -> dict:
    """Prefill tokens/s of one prompt on a slice, for int4 against bf16."""
    import torch

    from ragglm.engine import Engine
    from ragglm.engine.generate import GenerationResult

    torch.set_num_threads(THREADS)
    engine = Engine.from_pretrained(path, quant=quant)
    engine.generate(_ids(16, 0), max_new_tokens=1, use_prefix_cache=False)
    result = GenerationResult([])
    engine.generate(_ids(prompt, 1), max_new_tokens=1, result=result, use_prefix_cache=False)
    return {"quant": engine.quant, "paths": engine.quant_paths, "prefill_tok_s": round(result.prefill_tok_s, 1)}


def _child(args: list[str], timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def llama_cpp_decode_bytes(path: Path) -> tuple[int, int]:
    """(bytes of the tensors llama.cpp reads each token, KV bytes per token in its default f16 cache)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def number(key: str) -> int:
        field = reader.fields[f"llama.{key}"]
        return int(field.parts[field.data[0]][0])

    weights = sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")
    kv_dim = number("embedding_length") // number("attention.head_count") * number("attention.head_count_kv")
    return weights, 2 * number("block_count") * kv_dim * 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kinds", default="Q4_0,Q8_0")
    parser.add_argument("--dir", default="/tmp/ragglm-gguf-7b")
    parser.add_argument("--new", type=int, default=16)
    parser.add_argument("--contexts", default="128,2048")
    parser.add_argument("--prompts", default="512,2048")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bf16-layers", type=int, default=2)
    parser.add_argument("--layers", type=int, help="fewer layers than the 7B's 32 (a quick check of the script)")
    parser.add_argument("--skip-llama-cpp", action="store_true")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--pairs", type=int, default=5, help="alternating decode blocks per engine and context")
    parser.add_argument("--child", choices=["ours", "llama_cpp", "prefill", "paired"])
    parser.add_argument("--file")
    parser.add_argument("--quant")
    args = parser.parse_args()
    contexts = [int(n) for n in args.contexts.split(",")]
    prompts = [int(n) for n in args.prompts.split(",")]
    if args.child == "ours":
        print(json.dumps(ours_child(args.file, args.new, contexts, prompts, args.quant)))
        return
    if args.child == "llama_cpp":
        print(json.dumps(llama_cpp_child(args.file, args.new, contexts, prompts)))
        return
    if args.child == "paired":
        print(json.dumps(paired_child(args.file, args.new, contexts, args.pairs)))
        return
    if args.child == "prefill":
        print(json.dumps(prefill_child(args.file, prompts[0], args.quant)))
        return

    from benchmarks.memory_bandwidth import read_bandwidth_gb_s

    report: dict = {"shape": f"llama2-7b (vocab 49152{f', {args.layers} layers' if args.layers else ''})",
                    "threads": THREADS, "new_tokens": args.new}
    # the machine may be shared: the load average says how much of it the figures had
    report["load_average_start"] = [round(x, 1) for x in os.getloadavg()]
    report["bandwidth_gb_s"] = round(read_bandwidth_gb_s(), 1)
    common = ["--new", str(args.new), "--contexts", args.contexts, "--prompts", args.prompts]
    for kind in args.kinds.split(","):
        started = time.perf_counter()
        path = write_file(Path(args.dir), kind, args.layers)
        part: dict = {"file_gb": round(path.stat().st_size / 1e9, 2), "write_s": round(time.perf_counter() - started, 1)}
        for _ in range(args.rounds):  # interleaved: ours, then llama.cpp, then again
            part.setdefault("ours", []).append(_child(["--child", "ours", "--file", str(path), *common], args.timeout))
            if not args.skip_llama_cpp:
                part.setdefault("llama_cpp", []).append(
                    _child(["--child", "llama_cpp", "--file", str(path), *common], args.timeout))
        if not args.skip_llama_cpp and args.pairs:
            part["paired_decode"] = _child(["--child", "paired", "--file", str(path), "--pairs", str(args.pairs),
                                            *common], args.timeout)
        ours, peer = part["ours"][0], (part.get("llama_cpp") or [{}])[0]
        per_ms = report["bandwidth_gb_s"] * 1e6  # bytes read in a millisecond
        peer_weights, peer_kv = llama_cpp_decode_bytes(path)
        floors = {n: (ours.get("decode_weight_bytes", 0) + ours.get("kv_bytes_per_token", 0) * n) / per_ms
                  for n in contexts}
        peer_floors = {n: (peer_weights + peer_kv * n) / per_ms for n in contexts}
        part["decode_floor_ms"] = {n: round(ms, 1) for n, ms in floors.items()}
        part["llama_cpp_decode_floor_ms"] = {n: round(ms, 1) for n, ms in peer_floors.items()}
        part["ratios"] = {
            **{f"decode_{n}_vs_llama_cpp": _ratio(peer.get(f"decode_{n}_ms"), ours.get(f"decode_{n}_ms"))
               for n in contexts},
            **{f"decode_{n}_vs_llama_cpp_paired": part.get("paired_decode", {}).get(str(n), {}).get("ratio_median")
               for n in contexts},
            **{f"decode_{n}_vs_floor": _ratio(ours.get(f"decode_{n}_ms"), floors[n]) for n in contexts},
            # the most any engine reading llama.cpp's bytes could gain on it at this bandwidth
            **{f"decode_{n}_llama_cpp_vs_its_floor": _ratio(peer.get(f"decode_{n}_ms"), peer_floors[n])
               for n in contexts},
            **{f"prefill_{n}_vs_llama_cpp": _ratio(ours.get(f"prefill_{n}_tok_s"), peer.get(f"prefill_{n}_tok_s"))
               for n in prompts},
        }
        report[kind] = part
    if args.bf16_layers:
        path = write_file(Path(args.dir), "Q4_0", layers=args.bf16_layers)
        one = ["--prompts", str(prompts[0])]
        slice_part = {"layers": args.bf16_layers, "prompt": prompts[0]}
        for name, quant in (("int4", "int4:g32"), ("bf16", "none")):
            slice_part[name] = _child(["--child", "prefill", "--file", str(path), "--quant", quant, *one], args.timeout)
        slice_part["int4_vs_bf16"] = _ratio(slice_part["int4"].get("prefill_tok_s"),
                                            slice_part["bf16"].get("prefill_tok_s"))
        report["prefill_int4_vs_bf16_slice"] = slice_part
    report["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    report["bandwidth_end_gb_s"] = round(read_bandwidth_gb_s(), 1)  # memory bandwidth varies on a shared host
    print(json.dumps(report))


if __name__ == "__main__":
    main()
