"""Engine speed, side by side in one run; prints one JSON line.

SmolLM2-135M (the packaged GGUF): prefill and decode tokens/s of our engine (fp32; auto, the
default: fp32 with bf16 linear layers where the CPU has bf16 units, decoding through the native
step; bf16 throughout; auto and bf16 again with the decode step compiled by torch.compile, with the
seconds compiling took), the decode speed that reading the bf16 weights once a token allows at the
memory bandwidth measured in the same process, transformers
`generate` (LlamaForCausalLM from the same GGUF, fp32) and llama.cpp (llama-cpp-python, same GGUF,
2 threads). Then a full-size ChatGLM3-6B shape with random weights in bf16, written as an original
ChatGLM checkpoint and loaded through Engine.from_pretrained in a child process, once in bf16
throughout and once with the default dtype (auto: the native decode step): load time, peak RSS,
prefill tokens/s and decode ms/token. The 6B part holds /tmp/ragglm-bigmem.lock.

    python benchmarks/engine_speed.py [--prompt 256] [--new 64] [--rounds 3] [--skip-6b] [--glm-prompt 128]

Every SmolLM2 runner is measured once a round, in turn, and keeps its best figures.

llama.cpp is optional (a 4-minute build). On virtual machines whose CPU reports AMX, its native
build can crash on the first evaluation; build it for AVX-512 without AMX:

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install llama-cpp-python
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from llama_cpp_peer import llama_cpp_greedy
from memory_bandwidth import read_bandwidth_gb_s

from ragglm.engine.cache.prefix_cache import common_prefix_length

THREADS = 2
# (row, dtype, compiled decode step); "auto" is the default dtype
VARIANTS = [("ours_fp32", "fp32", False), ("ours_auto", "auto", False), ("ours_bf16", "bf16", False),
            ("ours_auto_compiled", "auto", True), ("ours_bf16_compiled", "bf16", True)]
CHATGLM3_6B = {
    "_name_or_path": "THUDM/chatglm3-6b", "model_type": "chatglm", "num_layers": 28, "padded_vocab_size": 65024,
    "hidden_size": 4096, "ffn_hidden_size": 13696, "kv_channels": 128, "num_attention_heads": 32,
    "seq_length": 8192, "multi_query_attention": True, "multi_query_group_num": 2, "layernorm_epsilon": 1e-5,
    "add_qkv_bias": True, "rmsnorm": True, "rope_ratio": 1, "torch_dtype": "bfloat16",
}


def prompt_ids(engine, n: int) -> list[int]:
    text = " ".join(f"Section {i}: the filter cartridge must be replaced every six months." for i in range(n))
    return engine.tokenizer.encode(text)[:n]


def ours(engine, ids: list[int], new: int) -> dict:
    from ragglm.engine.generate import GenerationResult, generate_tokens

    stats = GenerationResult([])
    tokens = list(generate_tokens(engine.model, ids, new, set(), stats=stats))
    return {"prefill_tok_s": round(stats.prefill_tok_s, 1), "decode_tok_s": round(stats.decode_tok_s, 1),
            "tokens": tokens}


def transformers_peer(path: Path, ids: list[int], new: int):
    """A runner for transformers `generate`; the model loads once, here."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    x = torch.tensor([ids])
    with torch.inference_mode():
        model(x[:, :16])  # warm up

    def run() -> dict:
        with torch.inference_mode():
            started = time.perf_counter()
            model(x)
            prefill_s = time.perf_counter() - started
            started = time.perf_counter()
            out = model.generate(x, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
            total_s = time.perf_counter() - started
        return {"prefill_tok_s": round(len(ids) / prefill_s, 1),
                "decode_tok_s": round((new - 1) / max(total_s - prefill_s, 1e-9), 1),
                "tokens": out[0, len(ids):].tolist()}

    return run


def llama_cpp_peer(path: Path, ids: list[int], new: int) -> dict:
    """In a child process: a crash of the native library must not end the benchmark."""
    child = subprocess.run([sys.executable, __file__, "--llama-cpp-child", str(path), "--ids", json.dumps(ids),
                            "--new", str(new)], capture_output=True, text=True)
    if child.returncode != 0:
        tail = child.stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
        return {"available": False, "reason": f"llama-cpp-python failed (status {child.returncode}): {tail[0]}"}
    return json.loads(child.stdout.strip().splitlines()[-1])


def best_of_rounds(runners: dict, rounds: int) -> dict:
    """Each runner once a round, in turn, keeping its best prefill and decode: a burst of load on a
    shared machine then costs one round of every runner rather than all the runs of one."""
    best: dict = {}
    for _ in range(rounds):
        for name, run in runners.items():
            figures = run()
            if name not in best:
                best[name] = figures
                continue
            if not figures.get("available", True):
                continue
            for key in ("prefill_tok_s", "decode_tok_s"):
                best[name][key] = max(best[name][key], figures[key])
    return best


def smollm2_part(prompt: int, new: int, rounds: int) -> dict:
    from ragglm.engine import Engine
    from ragglm.engine.generate import generate_tokens
    from ragglm.engine.linear.packed_linear import Bf16Linear
    from ragglm.engine.loading.sources import resolve_model_path

    path = resolve_model_path("smollm2")
    figures: dict = {"prompt_tokens": prompt, "new_tokens": new, "rounds": rounds}
    engines, runners = {}, {}
    for name, dtype, compiled in VARIANTS:
        engines[name] = engine = Engine.from_pretrained("smollm2", dtype=dtype, compile=compiled)
        ids = prompt_ids(engine, prompt)
        list(generate_tokens(engine.model, ids[:16], 4, set()))  # warm up
        runners[name] = partial(ours, engine, ids, new)
    runners["transformers_fp32"] = transformers_peer(path, ids, new)
    runners["llama_cpp"] = partial(llama_cpp_peer, path, ids, new)
    figures |= best_of_rounds(runners, rounds)
    # a yardstick, not a ceiling: the decode rate if a token took as long as torch.sum needs to read the
    # bf16 weights (every linear layer and the head) once; a hand-written read loop beats torch.sum by ~8%
    weight_bytes = sum(m.weight.numel() * 2 for m in engines["ours_auto"].model.modules()
                       if isinstance(m, (Bf16Linear, torch.nn.Linear)))
    bandwidth = read_bandwidth_gb_s()
    figures["bf16_weight_read_rate"] = {"weight_bytes_per_token": weight_bytes, "read_gb_s": round(bandwidth, 1),
                                    "decode_tok_s": round(bandwidth * 1e9 / weight_bytes, 1)}
    for name, engine in engines.items():
        if engine.compile_seconds is not None:
            figures[name]["compile_s"] = round(engine.compile_seconds, 1)
    reference = figures["transformers_fp32"].pop("tokens")
    for name in [name for name, _, _ in VARIANTS] + ["llama_cpp"]:
        tokens = figures[name].pop("tokens", None)
        if tokens is not None:
            figures[name]["greedy_tokens_agreeing_with_transformers"] = common_prefix_length(tokens, reference)
    tf, lc = figures["transformers_fp32"], figures["llama_cpp"]
    figures["bf16_weight_read_rate"]["x_transformers"] = round(figures["bf16_weight_read_rate"]["decode_tok_s"]
                                                              / tf["decode_tok_s"], 2)
    for suffix, rows in (("", [n for n, _, c in VARIANTS if not c]), ("_compiled", [n for n, _, c in VARIANTS if c])):
        best = max((figures[n] for n in rows), key=lambda f: f["decode_tok_s"])
        figures[f"decode_x_transformers{suffix}"] = round(best["decode_tok_s"] / tf["decode_tok_s"], 2)
        if lc.get("available"):
            figures[f"decode_x_llama_cpp{suffix}"] = round(best["decode_tok_s"] / lc["decode_tok_s"], 2)
    if lc.get("available"):
        prefill = max(figures[n]["prefill_tok_s"] for n, _, _ in VARIANTS)
        figures["prefill_x_llama_cpp"] = round(prefill / lc["prefill_tok_s"], 2)
    return figures


def write_random_chatglm(folder: Path, config: dict, layers_per_shard: int = 4) -> None:
    """An original-naming ChatGLM checkpoint of random bf16 weights, written shard by shard.

    Laid out like the published ones: the embedding in the first shard and the output layer in
    the last, so a loader meets the largest tensor when the rest of the model is already built.
    """
    from safetensors.torch import save_file

    dim, ffn, heads, kv, hd = (config[k] for k in ("hidden_size", "ffn_hidden_size", "num_attention_heads",
                                                   "multi_query_group_num", "kv_channels"))
    qkv = heads * hd + 2 * kv * hd
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.rand(shape, generator=generator, dtype=torch.float32) - 0.5).mul_(0.04).to(torch.bfloat16)

    folder.mkdir(parents=True, exist_ok=True)
    firsts = range(0, config["num_layers"], layers_per_shard)
    count = len(firsts) + 2

    def shard_path(index: int) -> str:
        return str(folder / f"model-{index:05d}-of-{count:05d}.safetensors")

    embedding = {"transformer.embedding.word_embeddings.weight": rand(config["padded_vocab_size"], dim)}
    save_file(embedding, shard_path(1))
    del embedding
    head = {"transformer.output_layer.weight": rand(config["padded_vocab_size"], dim),
            "transformer.encoder.final_layernorm.weight": torch.ones(dim, dtype=torch.bfloat16)}
    save_file(head, shard_path(count))
    del head
    for index, first in enumerate(firsts, start=2):
        shard = {}
        for i in range(first, min(first + layers_per_shard, config["num_layers"])):
            p = f"transformer.encoder.layers.{i}."
            shard |= {p + "input_layernorm.weight": torch.ones(dim, dtype=torch.bfloat16),
                      p + "post_attention_layernorm.weight": torch.ones(dim, dtype=torch.bfloat16),
                      p + "self_attention.query_key_value.weight": rand(qkv, dim),
                      p + "self_attention.query_key_value.bias": rand(qkv),
                      p + "self_attention.dense.weight": rand(dim, heads * hd),
                      p + "mlp.dense_h_to_4h.weight": rand(2 * ffn, dim),
                      p + "mlp.dense_4h_to_h.weight": rand(dim, ffn)}
        save_file(shard, shard_path(index))
        del shard
    (folder / "config.json").write_text(json.dumps(config))
    _write_sentencepiece(folder / "tokenizer.model")


RANDOM_CHATGLM_FOLDER = Path(tempfile.gettempdir()) / "ragglm-random-chatglm3-6b-bf16"
RANDOM_CHATGLM_LAYOUT = 2  # changes when write_random_chatglm writes different files


def cached_random_chatglm(folder: Path = RANDOM_CHATGLM_FOLDER, config: dict = CHATGLM3_6B) -> Path:
    """The random checkpoint (~12 GB) is written once and reused by later runs.

    A marker holding the config is written last, so a run cut short leaves no folder that looks complete.
    """
    marker = folder / "complete.json"
    expected = {"config": config, "layout": RANDOM_CHATGLM_LAYOUT}
    if marker.is_file() and json.loads(marker.read_text()) == expected:
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_random_chatglm(partial, config)
    (partial / "complete.json").write_text(json.dumps(expected))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def _write_sentencepiece(path: Path) -> None:
    import io

    import sentencepiece as spm

    out = io.BytesIO()
    lines = ["滤芯的使用寿命大约是六个月。", "The filter lasts about six months."] * 50
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, vocab_size=300,
                                   byte_fallback=True, minloglevel=2, hard_vocab_limit=False)
    path.write_bytes(out.getvalue())


def glm6b_child(folder: str, prompt: int, new: int, dtype: str) -> None:
    """Runs in a fresh process so that ru_maxrss is this model's peak alone."""
    from ragglm.engine import Engine
    from ragglm.engine.generate import GenerationResult, generate_tokens

    started = time.perf_counter()
    engine = Engine.from_pretrained(folder, dtype=dtype)
    load_s = time.perf_counter() - started
    ids = [(i * 7919) % 60000 + 100 for i in range(prompt)]
    stats = GenerationResult([])
    list(generate_tokens(engine.model, ids, new, set(), stats=stats))
    weight_bytes = sum(engine.weight_bytes().values())
    print(json.dumps({"params_b": round(weight_bytes / 2 / 1e9, 2), "load_s": round(load_s, 1),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                      "weights_gb": round(weight_bytes / 2**30, 2), "linear_paths": engine.quant_paths,
                      "prompt_tokens": prompt,
                      "prefill_tok_s": round(stats.prefill_tok_s, 1),
                      "decode_ms_per_token": round(1000 / stats.decode_tok_s, 1) if stats.decode_tok_s else None}))


def glm6b_part(prompt: int, new: int, dtype: str) -> dict:
    with open("/tmp/ragglm-bigmem.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.perf_counter()
        folder = cached_random_chatglm()  # written by the first run, reused by later ones
        write_s = time.perf_counter() - started
        child = subprocess.run([sys.executable, __file__, "--glm6b-child", str(folder), "--glm-prompt", str(prompt),
                                "--glm-new", str(new), "--glm-dtype", dtype], capture_output=True, text=True)
        if child.returncode != 0:
            return {"error": child.stderr.strip().splitlines()[-1] if child.stderr.strip() else "failed"}
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        figures["write_checkpoint_s"] = round(write_s, 1)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-6b", action="store_true")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--glm-prompt", type=int, default=128)
    parser.add_argument("--glm-new", type=int, default=4)
    parser.add_argument("--glm-dtype", default="bf16")
    parser.add_argument("--glm6b-child")
    parser.add_argument("--llama-cpp-child")
    parser.add_argument("--ids")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.llama_cpp_child:
        print(json.dumps(llama_cpp_greedy(Path(args.llama_cpp_child), json.loads(args.ids), args.new, THREADS)))
        return
    if args.glm6b_child:
        glm6b_child(args.glm6b_child, args.glm_prompt, args.glm_new, args.glm_dtype)
        return
    result = {"benchmark": "engine_speed", "threads": THREADS, "torch": torch.__version__,
              "load_average_1m": round(os.getloadavg()[0], 1)}
    if not args.skip_smollm2:
        result["smollm2_135m"] = smollm2_part(args.prompt, args.new, args.rounds)
    if not args.skip_6b:
        result["chatglm3_6b_shape_bf16"] = glm6b_part(args.glm_prompt, args.glm_new, "bf16")
        # the default dtype: float32 norms and KV cache, bf16 linear layers, the native decode step
        result["chatglm3_6b_shape_auto"] = glm6b_part(args.glm_prompt, args.glm_new, "auto")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
