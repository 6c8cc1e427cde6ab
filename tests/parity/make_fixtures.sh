#!/usr/bin/env bash
# Writes the Hugging Face transformers reference outputs that tests/test_parity.cpp compares with.
# Run on a machine with torch and transformers (the GPU machine):
#   tests/parity/make_fixtures.sh ABRIDGE_BINARY HF_REFERENCE_PY OUT_DIR
# HF_REFERENCE_PY takes MODEL_DIR OUT.json --ids "..." [--ids ...] --new N --topk K and writes, per prompt,
# the top-k logits at every position (float32) and the greedy continuation.
# The checkpoints are made here by `abridge model make-random` with the same presets and seeds the test
# uses, so the test regenerates identical bytes.
set -euo pipefail
bin=$1 ref=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# Each prompt file is tokenized with added tokens matched (prompt0 is a rendered ChatML prompt).
ids=()
for p in "$here"/prompt0.txt "$here"/prompt1.txt "$here"/prompt2.txt; do ids+=(--ids "$("$bin" tokenize "$p")"); done

"$bin" model make-random "$tmp/tiny" --preset tiny --seed 7 --dtype bf16
python3 "$ref" "$tmp/tiny" "$out/hf_tiny_seed7.json" "${ids[@]}" --new 32 --topk 20

"$bin" model make-random "$tmp/m06" --preset 0.6b --seed 7 --dtype bf16
python3 "$ref" "$tmp/m06" "$out/hf_0.6b_seed7.json" --ids "$("$bin" tokenize "$here/prompt2.txt")" --new 8 --topk 20
