#!/usr/bin/env bash
# The batch-throughput rows of docs/PERFORMANCE.md: `abridge bench summarize` on the 64-document corpus
# of bench/make_corpus.sh (4.1M tokens, 8K-215K tokens a document), 256 tokens per summary.
#   bench/summarize_rows.sh ABRIDGE MODEL_DIR WORK_DIR [ROW...]
# Rows: all64 (one pass each), first32 (the 32 shortest), mapreduce (--context-tokens 32768),
# small (a KV cache of 81,920 tokens, what a 24 GB card holds beside bf16 weights). The first row run
# times its own TTFT probes; the later rows reuse that fit (--ttft), so every row has the same floor rule.
set -euo pipefail
abridge=$1 model=$2 work=$3
shift 3
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(all64 first32 mapreduce small)
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$work/corpus" ] || bash "$here/make_corpus.sh" "$work/corpus" >/dev/null
ttft=()
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
  if [ "$row" = first32 ]; then
    ls "$work"/corpus/doc*.txt | sort | head -n 32 | "$abridge" bench summarize "${inputs[@]}" "${args[@]}" "${ttft[@]}" | tee "$work/$row.md"
  else
    "$abridge" bench summarize "${inputs[@]}" "${args[@]}" "${ttft[@]}" | tee "$work/$row.md"
  fi
  if [ ${#ttft[@]} -eq 0 ]; then
    fit=$(sed -n 's/^TTFT(n) = \([^*]*\)\*n + \([^*]*\)\*n^2 s.*/\1,\2/p' "$work/$row.md")
    [ -n "$fit" ] && ttft=(--ttft "$fit")
  fi
done
