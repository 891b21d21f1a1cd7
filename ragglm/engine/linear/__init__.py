"""Linear layers: weight-only int8/int4 quantization and bf16 layouts for CPUs with bf16 units."""
