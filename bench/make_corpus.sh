#!/usr/bin/env bash
# Writes a benchmark corpus of 64 documents of about 8K to 200K tokens each (English and Chinese),
# cut deterministically from the real texts under tests/data/texts/.
#   bench/make_corpus.sh OUT_DIR
set -eu  # no pipefail: head closing the pipe early is how the cuts are made
out=${1:?usage: make_corpus.sh OUT_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
texts=("$here"/tests/data/texts/sherlock-pg1661.txt "$here"/tests/data/texts/R-intro.txt
       "$here"/tests/data/texts/debian-edu-bookworm-manual.zh-cn.txt "$here"/tests/data/texts/tang300.txt)
pool=$(mktemp)
trap 'rm -f "$pool"' EXIT
for _ in 1 2 3 4 5 6; do cat "${texts[@]}"; done > "$pool"  # ~6.6 MB to cut from
pool_size=$(stat -c %s "$pool")
for i in $(seq 0 63); do
  # Sizes grow geometrically from ~32 KB (~8K tokens) to ~800 KB (~200K tokens).
  size=$(awk -v i="$i" 'BEGIN { printf "%d", 32000 * exp(log(25) * i / 63) }')
  start=$(( (i * 104729) % (pool_size - size) ))
  # Cut at line boundaries so no UTF-8 character is split.
  tail -c +"$((start + 1))" "$pool" | head -c "$size" | sed '1d;$d' > "$out/doc$(printf %02d "$i").txt"
done
du -sh "$out"
