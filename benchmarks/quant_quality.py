"""Quantization figures in one JSON line: quality, memory and speed of fp32 vs int8 vs int4.

SmolLM2-135M (the packaged GGUF): perplexity on examples/manuals and on SQuAD articles from the
shared data, linear-layer weight bytes, decode and prefill tokens/s, and llama.cpp decoding the
same GGUF in the same run (llama-cpp-python; reported unavailable when not installed); int8 and
int4 decode again with the decode step compiled (compile=True), with the seconds compiling took.

ChatGLM3-6B shape with random weights (--glm6b, or --glm6b-only): a random bf16 checkpoint in the
original ChatGLM naming (~12 GB, written once under /tmp and reused) loaded with
Engine.from_pretrained(quant=int4), each weight quantized as it streams in; load seconds, peak RSS
after loading and after a short prefill + decode, decode ms/token, and the memory-bandwidth bound
(weight bytes read per token / read bandwidth measured in the same process). That part runs in a
child process (its own peak RSS) holding /tmp/ragglm-bigmem.lock.

    python benchmarks/quant_quality.py [--glm6b | --glm6b-only] [--glm-quant int4:g128] [--ppl-tokens 4096]
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import html
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from llama_cpp_peer import llama_cpp_greedy
from memory_bandwidth import read_bandwidth_gb_s
from shared_data import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
# "fp32": float32 throughout, the quality baseline; "auto": the default, float32 with bf16 matmuls on
# CPUs with bf16 units. The quantized variants compute as auto does.
SCHEMES = ("fp32", "auto", "int8", "int4:g32", "int4:g64")
COMPILED = ("int8", "int4:g32")  # also timed with the decode step compiled (Engine(compile=True))


def manuals_text() -> str:
    from ragglm.connectors import load_file

    parts = []
    for path in sorted((REPO / "examples" / "manuals").iterdir()):
        try:
            document = load_file(path)
        except Exception:  # a manual the connectors cannot read is left out, not fatal
            continue
        parts.extend(page.text for page in document.pages)
    return html.unescape("\n\n".join(parts))


def squad_text() -> str | None:
    folder = shared_data_dir()
    if folder is None or not (folder / "squad2_dev_articles1-8.json").is_file():
        return None
    data = json.loads((folder / "squad2_dev_articles1-8.json").read_text(encoding="utf-8"))
    return "\n\n".join(p["context"] for article in data["data"] for p in article["paragraphs"])


@torch.inference_mode()
def perplexity(engine, ids: list[int], window: int = 512) -> float:
    """exp(mean next-token NLL) over consecutive windows of the text."""
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor([ids[start:start + window + 1]])
        if chunk.shape[1] < 2:
            break
        logits = engine.logits(chunk[:, :-1])[0]
        nll += float(torch.nn.functional.cross_entropy(logits, chunk[0, 1:], reduction="sum"))
        count += chunk.shape[1] - 1
    return float(torch.exp(torch.tensor(nll / count)))


def engine_speed(engine, prompt_ids: list[int], new_tokens: int) -> dict:
    # prefill: one forward over the prompt; decode: greedy tokens with the KV cache (best of 2 runs)
    best = {}
    for _ in range(2):
        result = engine.generate(prompt_ids, max_new_tokens=new_tokens, use_prefix_cache=False)
        if result.decode_tok_s > best.get("decode_tok_s", 0):
            best["decode_tok_s"] = result.decode_tok_s
        if result.prefill_tok_s > best.get("prefill_tok_s", 0):
            best["prefill_tok_s"] = result.prefill_tok_s
    return {k: round(v, 1) for k, v in best.items()}


def smollm2(ppl_tokens: int, new_tokens: int, speed: bool = True) -> dict:
    from ragglm.engine import Engine
    from ragglm.engine.kernels.bf16_decode import finish_bf16_linears
    from ragglm.engine.kernels.compiled_decode import compile_decode
    from ragglm.engine.linear.dtypes import resolve_dtype
    from ragglm.engine.linear.quantize import QuantConfig
    from ragglm.engine.loading.quant_loader import build_quantized
    from ragglm.engine.loading.sources import resolve_model_path

    texts = {"manuals": manuals_text(), "squad": squad_text()}
    out: dict = {"model": "SmolLM2-135M-Instruct Q4_1 GGUF", "ppl_tokens_per_text": ppl_tokens, "variants": {}}
    fp32 = Engine.from_pretrained("smollm2", dtype="fp32")
    bf16_linears = resolve_dtype("auto")[1]
    out["bf16_linears"] = bf16_linears
    prompt_ids = fp32.tokenizer.encode(texts["manuals"])[:256]
    token_ids = {k: fp32.tokenizer.encode(v)[:ppl_tokens] for k, v in texts.items() if v}

    def variant(spec: str, compile: bool = False) -> Engine:
        """The GGUF is read once; each variant quantizes the same float weights and gets the linear
        layers Engine.from_pretrained would give it (read by the native step, or packed when compiled)."""
        if spec == "fp32":
            return fp32
        config = QuantConfig.parse(None if spec == "auto" else spec)
        model = copy.deepcopy(fp32.model) if config is None else build_quantized(
            fp32.args, {k: v.clone() for k, v in fp32.model.state_dict().items()}, config=config)
        if bf16_linears:
            finish_bf16_linears(model, compile=compile)
        return Engine(model, fp32.tokenizer, fp32.chat_format, name="smollm2", languages=fp32.languages,
                      quant=config.name if config else None)

    for spec in SCHEMES:
        engine = variant(spec)
        row = {"quant": engine.quant or spec, "paths": engine.quant_paths, "weight_bytes": engine.weight_bytes()}
        row["ppl"] = {k: round(perplexity(engine, ids), 4) for k, ids in token_ids.items()}
        if speed:
            row.update(engine_speed(engine, prompt_ids, new_tokens))
            if spec in COMPILED:
                compiled = variant(spec, compile=True)
                compile_s = compile_decode(compiled.model)
                row["compiled"] = {"compile_s": round(compile_s, 1),
                                   **engine_speed(compiled, prompt_ids, new_tokens)}
        out["variants"][row["quant"]] = row
        print(json.dumps(row), file=sys.stderr, flush=True)  # progress; the result is the one line on stdout
    base = out["variants"]["fp32"]
    for row in out["variants"].values():
        row["linear_bytes_ratio"] = round(row["weight_bytes"]["linear"] / base["weight_bytes"]["linear"], 4)
        row["ppl_ratio"] = {k: round(v / base["ppl"][k], 4) for k, v in row["ppl"].items()}
    if not speed:
        return out
    peer = llama_cpp_greedy(resolve_model_path("smollm2"), prompt_ids, new_tokens, torch.get_num_threads(), runs=2)
    peer.pop("tokens", None)
    out["llama_cpp_q4_1"] = peer
    if out["llama_cpp_q4_1"].get("available"):
        for row in out["variants"].values():
            for speeds in (row, row.get("compiled", {})):
                if speeds:
                    speeds["decode_vs_llama_cpp"] = round(
                        speeds["decode_tok_s"] / out["llama_cpp_q4_1"]["decode_tok_s"], 3)
    return out


# ---- full-size ChatGLM3-6B shape, random weights, int4 --------------------------------------------

def _status_bytes(field: str) -> int:
    """A kB field of /proc/self/status (VmHWM: peak RSS, VmRSS: RSS now) in bytes; 0 where absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def glm6b_child(folder: str, spec: str, dtype_name: str, new_tokens: int) -> dict:
    """Loads the random ChatGLM3-6B checkpoint through Engine.from_pretrained (quantizing as it
    streams in), then prefills and decodes; a fresh process, so ru_maxrss is this model's alone."""
    from ragglm.engine import Engine
    from ragglm.engine.generate import GenerationResult, generate_tokens

    started = time.perf_counter()
    engine = Engine.from_pretrained(folder, quant=spec, dtype=dtype_name)
    load_s = time.perf_counter() - started
    rss_after_load = _status_bytes("VmHWM")
    rss_now_after_load = _status_bytes("VmRSS")
    model = engine.model
    sizes = engine.weight_bytes()
    prompt = [(i * 7919) % 60000 + 100 for i in range(16)]
    stats = GenerationResult([])
    for _ in generate_tokens(model, prompt, new_tokens, set(), 0.0, None, stats):
        pass
    peak_rss = _status_bytes("VmHWM")  # before the bandwidth probe allocates its own buffer
    bandwidth = read_bandwidth_gb_s()
    # each decoded token reads every linear weight once (the embedding only one row)
    bytes_per_token = sizes["linear"] + sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                                            if "norm" in n)
    bound_ms = bytes_per_token / (bandwidth * 1e9) * 1e3
    decode_ms = 1e3 / stats.decode_tok_s if stats.decode_tok_s else None
    return {
        "shape": "ChatGLM3-6B (dim 4096, 28 layers, ffn 13696, vocab 65024, 2 KV groups)",
        "source": "random bf16 checkpoint, original chatglm naming, 9 safetensors shards, output layer last",
        "quant": engine.quant, "activations": dtype_name, "paths": engine.quant_paths, "load_s": round(load_s, 1),
        "weight_bytes": sizes, "peak_rss_after_load_gb": round(rss_after_load / 1e9, 3),
        "rss_after_load_gb": round(rss_now_after_load / 1e9, 3),
        "peak_rss_gb": round(peak_rss / 1e9, 3), "goal_peak_rss_gb": 5.0,
        "prompt_tokens": len(prompt), "new_tokens": new_tokens,
        "decode_ms_per_token": round(decode_ms, 1) if decode_ms else None,
        "prefill_tok_s": round(stats.prefill_tok_s, 2), "read_bandwidth_gb_s": round(bandwidth, 2),
        "bytes_read_per_token": bytes_per_token,
        "bandwidth_bound_ms_per_token": round(bound_ms, 1),
        "decode_vs_bound": round(decode_ms / bound_ms, 2) if decode_ms else None,
        "threads": torch.get_num_threads(),
    }


def glm6b(spec: str, dtype_name: str, new_tokens: int) -> dict:
    """Runs the 6B part in a fresh process (own peak RSS) while holding the big-memory lock.

    The random checkpoint (~12 GB under /tmp) is written by the first run and reused by later ones.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_speed import RANDOM_CHATGLM_FOLDER

    with open("/tmp/ragglm-bigmem.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        written = subprocess.run([sys.executable, __file__, "--write-glm6b-checkpoint"],
                                 capture_output=True, text=True)
        if written.returncode != 0:
            return {"error": f"writing the random checkpoint failed: {written.stderr.strip()[-300:]}"}
        write = json.loads(written.stdout.strip().splitlines()[-1])
        done = subprocess.run(
            [sys.executable, __file__, "--glm6b-child", str(RANDOM_CHATGLM_FOLDER), "--glm-quant", spec,
             "--glm-dtype", dtype_name, "--new-tokens", str(new_tokens)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), **write}


def write_glm6b_checkpoint() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_speed import RANDOM_CHATGLM_FOLDER, cached_random_chatglm

    started = time.perf_counter()
    reused = (RANDOM_CHATGLM_FOLDER / "complete.json").is_file()
    cached_random_chatglm()
    return {"checkpoint": str(RANDOM_CHATGLM_FOLDER), "checkpoint_reused": reused,
            "write_checkpoint_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppl-tokens", type=int, default=4096, help="tokens of each text scored")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--glm6b", action="store_true", help="also measure the ChatGLM3-6B shape (needs ~5 GB)")
    parser.add_argument("--no-smollm2", action="store_true")
    parser.add_argument("--no-speed", action="store_true", help="quality and bytes only (no timing)")
    parser.add_argument("--glm-quant", default="int4:g128")
    parser.add_argument("--glm-dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--glm6b-only", action="store_true", help="only the ChatGLM3-6B shape")
    parser.add_argument("--glm6b-child", help=argparse.SUPPRESS)
    parser.add_argument("--write-glm6b-checkpoint", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.glm6b_child:
        print(json.dumps(glm6b_child(opts.glm6b_child, opts.glm_quant, opts.glm_dtype, opts.new_tokens)))
        return
    if opts.write_glm6b_checkpoint:
        print(json.dumps(write_glm6b_checkpoint()))
        return
    report: dict = {"benchmark": "quant_quality", "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if not (opts.no_smollm2 or opts.glm6b_only):
        report["smollm2"] = smollm2(opts.ppl_tokens, opts.new_tokens, speed=not opts.no_speed)
    if opts.glm6b or opts.glm6b_only:
        report["glm6b"] = glm6b(opts.glm_quant, opts.glm_dtype, min(opts.new_tokens, 8))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
