"""Peak memory of loading a THUDM pre-quantized folder (chatglm2-6b-int4 layout) into our int4/int8 layers.

A ChatGLM2-shaped folder with random weights (hidden 2048, 16 heads in 2 KV groups, FFN 5632, --layers
layers: ~180M linear weights, 0.7 GB in float32) is written in THUDM's layout (int8 weights with
per-row fp16 scales; 4 bits as two nibbles a byte), then loaded by Engine.from_pretrained in a fresh
process: its peak RSS (VmHWM: ru_maxrss would carry the parent's peak over exec) against the same process's RSS before loading (once torch's
meta-device machinery is in), the loaded weight bytes, and what a float32 copy of the quantized
layers would take. Prints one JSON line.

    python benchmarks/thudm_quant_memory.py [--bits 4] [--layers 4] [--format bin|safetensors]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
HIDDEN, FFN, HEADS, GROUPS, HEAD_DIM, VOCAB = 2048, 5632, 16, 2, 128, 8192


def config(layers: int, bits: int) -> dict:
    return {"model_type": "chatglm", "_name_or_path": "THUDM/chatglm2-6b-int4", "num_layers": layers,
            "padded_vocab_size": VOCAB, "hidden_size": HIDDEN, "ffn_hidden_size": FFN, "kv_channels": HEAD_DIM,
            "num_attention_heads": HEADS, "multi_query_attention": True, "multi_query_group_num": GROUPS,
            "seq_length": 2048, "layernorm_epsilon": 1e-5, "add_qkv_bias": True, "rmsnorm": True,
            "quantization_bit": bits, "torch_dtype": "float16"}


def quantized(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (weight.abs().amax(dim=-1) / (2 ** (bits - 1) - 1)).half()
    q = torch.round(weight / scale.float()[:, None]).to(torch.int8)
    if bits == 4:
        high, low = q[:, 0::2].to(torch.int16) & 0x0F, q[:, 1::2].to(torch.int16) & 0x0F
        q = ((high << 4) | low).to(torch.uint8).view(torch.int8)
    return q.contiguous(), scale


def write_folder(folder: Path, layers: int, bits: int, fmt: str = "bin") -> int:
    """The folder in THUDM's naming; returns the number of quantized linear weights."""
    generator = torch.Generator().manual_seed(0)
    qkv = HEADS * HEAD_DIM + 2 * GROUPS * HEAD_DIM
    shapes = {"self_attention.query_key_value": (qkv, HIDDEN), "self_attention.dense": (HIDDEN, HEADS * HEAD_DIM),
              "mlp.dense_h_to_4h": (2 * FFN, HIDDEN), "mlp.dense_4h_to_h": (HIDDEN, FFN)}
    tensors = {"transformer.embedding.word_embeddings.weight": torch.randn(VOCAB, HIDDEN).half(),
               "transformer.encoder.final_layernorm.weight": torch.ones(HIDDEN).half(),
               "transformer.output_layer.weight": (0.02 * torch.randn(VOCAB, HIDDEN)).half()}
    count = 0
    for i in range(layers):
        prefix = f"transformer.encoder.layers.{i}."
        tensors[prefix + "input_layernorm.weight"] = torch.ones(HIDDEN).half()
        tensors[prefix + "post_attention_layernorm.weight"] = torch.ones(HIDDEN).half()
        tensors[prefix + "self_attention.query_key_value.bias"] = torch.zeros(qkv).half()
        for name, shape in shapes.items():
            weight = 0.02 * torch.randn(*shape, generator=generator)
            tensors[prefix + name + ".weight"], tensors[prefix + name + ".weight_scale"] = quantized(weight, bits)
            count += weight.numel()
            del weight
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "bin":  # as THUDM ships them
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config(layers, bits)))
    return count


CHILD = """
import json, sys
from pathlib import Path
def rss_mb(field="VmRSS"):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
import torch
from ragglm.engine import Engine
from ragglm.engine.model import ModelArgs, Transformer
with torch.device("meta"):  # torch's meta-device machinery loads once (~170 MB, any model): before the baseline
    Transformer(ModelArgs(vocab_size=8, dim=8, n_layers=1, n_heads=1, n_kv_heads=1, intermediate_size=8))
before = rss_mb()
engine = Engine.from_pretrained(sys.argv[1], dtype="fp32")
print(json.dumps({"rss_before_load_mb": round(before, 1), "peak_rss_mb": round(rss_mb("VmHWM"), 1),
    "rss_after_load_mb": round(rss_mb(), 1),
    "quant": engine.quant, "linear_weight_mb": round(engine.weight_bytes()["linear"] / 2**20, 1),
    "other_weight_mb": round(engine.weight_bytes()["other"] / 2**20, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, choices=(4, 8), default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--format", choices=("bin", "safetensors"), default="bin",
                        help="bin (memory-mapped: its touched pages count towards RSS until loading ends)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragglm-thudm-") as tmp:
        folder = Path(tmp) / f"int{args.bits}"
        linears = write_folder(folder, args.layers, args.bits, args.format)
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True,
                              cwd=REPO, check=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        folder_mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    print(json.dumps({"benchmark": "thudm_quant_memory", "bits": args.bits, "layers": args.layers,
                      "format": args.format,
                      "linear_weights": linears, "linears_float32_mb": round(linears * 4 / 2**20, 1),
                      "folder_mb": round(folder_mb, 1), **measured,
                      "peak_over_before_mb": round(measured["peak_rss_mb"] - measured["rss_before_load_mb"], 1)}))


if __name__ == "__main__":
    main()
