#!/usr/bin/env bash
# The batch-throughput rows of docs/PERFORMANCE.md: `abridge bench summarize` on the 64-document corpus
# of bench/make_corpus.sh (4.1M tokens, 8K-215K tokens a document), 256 tokens per summary.
#   bench/summarize_rows.sh ABRIDGE MODEL_DIR WORK_DIR [ROW...]
# Rows: all64 (one pass each), first32 (the 32 shortest), mapreduce (--context-tokens 32768),
# small (a KV cache of 81,920 tokens, what a 24 GB card holds beside bf16 weights). Every row's floor
# uses the same TTFT points: `abridge bench engine` on this GPU at $TTFT_LENGTHS (default 8K, 32K, 128K
# and 210K tokens), run first.
set -euo pipefail
abridge=$1 model=$2 work=$3
shift 3
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(all64 first32 mapreduce small)
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$work/corpus" ] || bash "$here/make_corpus.sh" "$work/corpus" >/dev/null
points=${TTFT_POINTS:-}  # N:S,... from an earlier bench engine run on this GPU, or measured now
if [ -z "$points" ]; then
  lengths=${TTFT_LENGTHS:-8192,32768,131072,215040}
  "$abridge" bench engine --model "$model" --prefill "$lengths" --decode 1x4096 --steps 16 | tee "$work/bench-engine.md"
  points=$(sed -n 's/^| prefill \([0-9]*\) | TTFT \([0-9.]*\) s .*/\1:\2/p' "$work/bench-engine.md" | paste -sd, -)
  [ -n "$points" ] || { echo "no TTFT rows in bench engine's table" >&2; exit 1; }
fi
ttft=(--ttft-points "$points")
for row in "${rows[@]}"; do
  out="$work/out-$row"
  rm -rf "$out"
  args=(--model "$model" --summary-tokens 256 -q -o "$out" --report "$work/$row.json")
  case $row in
    all64) inputs=("$work/corpus") ;;
    first32) inputs=(-) ;;
    mapreduce) inputs=("$work/corpus"); args+=(--context-tokens 32768) ;;
    small) inputs=("$work/corpus"); args+=(--kv-cache-tokens 81920) ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  echo "## $row"
  code=0
  if [ "$row" = first32 ]; then
    ls "$work"/corpus/doc*.txt | sort | head -n 32 |
      "$abridge" bench summarize "${inputs[@]}" "${args[@]}" "${ttft[@]}" >"$work/$row.md" || code=$?
  else
    "$abridge" bench summarize "${inputs[@]}" "${args[@]}" "${ttft[@]}" >"$work/$row.md" || code=$?
  fi
  cat "$work/$row.md"
  [ $code -le 1 ] || { echo "bench summarize exited with $code" >&2; continue; }  # 1: some documents failed
done
