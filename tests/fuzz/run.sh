#!/usr/bin/env bash
# Builds the libFuzzer targets with clang in build-fuzz/ and fuzzes one of them.
#   tests/fuzz/run.sh [TARGET] [SECONDS]    TARGET: safetensors (default), chunker, reading, tokenizer_json or
#                                           config_json; SECONDS: 60
#   tests/fuzz/run.sh SECONDS               (safetensors, as before)
# Exits non-zero if the fuzzer finds a crash; the reproducer is left in build-fuzz/artifacts/
# (replay it with: build-fuzz/bin/fuzz_TARGET FILE).
set -euo pipefail

target=safetensors
if [[ $# -gt 0 && ! "$1" =~ ^[0-9]+$ ]]; then
  target="$1"
  shift
fi
seconds="${1:-60}"
case "$target" in
  safetensors | chunker | reading | tokenizer_json | config_json) ;;
  *) echo "run.sh: unknown target '$target' (safetensors, chunker, reading, tokenizer_json or config_json)" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${ABRIDGE_FUZZ_BUILD:-$root/build-fuzz}"

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DABRIDGE_FUZZ=ON -DABRIDGE_CUDA=OFF -DABRIDGE_TESTS=OFF -DABRIDGE_BENCH=OFF >/dev/null
cmake --build "$build" --target "fuzz_$target"
artifacts="$build/artifacts"
mkdir -p "$artifacts"

if [[ "$target" == chunker ]]; then
  # Seeds: two option bytes, then slices of the real texts (PDF text with form feeds, CRLF, escape
  # codes, Chinese) and a few hand-made structures.
  corpus="$build/corpus/chunker"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  i=0
  for f in "$root"/tests/data/texts/*.txt; do
    for offset in 0 20000 60000; do
      { printf '\x18\x05'; head -c "$((offset + 3000))" "$f" | tail -c 3000; } >"$corpus/text$i"
      i=$((i + 1))
    done
  done
  printf '\x10\x00# Title\n\n## A\n\n1. one\n2. two\n\n```\ncode\n```\n| a | b |\n\n第一章 总则\n一、目的\n' >"$corpus/md"
  printf '\x08\x10Page 1\nText goes on\n\f Page 2\nmore- \nover\n\f Page 3\nend.\xff\xc3(' >"$corpus/pages"
  "$build/bin/fuzz_chunker" "$corpus" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1
  echo "fuzz_chunker: no crash in ${seconds}s"
  exit 0
fi

if [[ "$target" == tokenizer_json || "$target" == config_json ]]; then
  # Seeds: a first byte that picks the form (the whole file, or the value of one member of a valid
  # document), then JSON values: the real members, deep nesting, huge numbers, long strings.
  corpus="$build/corpus/$target"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  i=0
  for value in '[["a","b"],["ab","c"]]' '[{"id":259,"content":"<x>","special":false}]' '{"type":"NFC"}' \
      '{"type":"ByteLevel"}' 'null' '1099511627776' '-1' '1e400' '"qwen3"' '[1,2,3]' '{"rope_type":"default","rope_theta":5e6}' \
      "$(head -c 300 /dev/zero | tr '\0' '[')" '"a\nb"' 'true' '0.5'; do
    for form in 0 1 2 3 4 5 6 7 9 13 14 15 16 20 21; do
      { printf "\\$(printf '%03o' "$form")"; printf '%s' "$value"; } >"$corpus/seed$i"
      i=$((i + 1))
    done
  done
  # The whole of a real config.json (Qwen3-4B-Instruct-2507's shape; form 21 for config_json).
  printf '\x15{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"bos_token_id":151643,"eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":2560,"intermediate_size":9728,"max_position_embeddings":262144,"max_window_layers":36,"model_type":"qwen3","num_attention_heads":32,"num_hidden_layers":36,"num_key_value_heads":8,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":5000000,"sliding_window":null,"tie_word_embeddings":true,"torch_dtype":"bfloat16","use_sliding_window":false,"vocab_size":151936}' >"$corpus/real"
  "$build/bin/fuzz_$target" "$corpus" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1
  echo "fuzz_$target: no crash in ${seconds}s"
  exit 0
fi

if [[ "$target" == reading ]]; then
  # Seeds: one option byte, then slices of the real texts, the same in legacy encodings and UTF-16 (made
  # with iconv), and a few hand-made line ends.
  corpus="$build/corpus/reading"
  rm -rf "$corpus"
  mkdir -p "$corpus"
  i=0
  for f in "$root"/tests/data/texts/*.txt "$root"/tests/data/encodings/*.txt; do
    head -c 2000 "$f" >"$build/corpus/slice"
    for enc in UTF-8 UTF-16LE UTF-16BE GB18030 BIG5-HKSCS CP932 CP949 WINDOWS-1251 WINDOWS-1252; do
      if iconv -f UTF-8 -t "$enc" "$build/corpus/slice" >"$build/corpus/enc" 2>/dev/null; then
        { printf '\x00'; cat "$build/corpus/enc"; } >"$corpus/text$i"
        i=$((i + 1))
      fi
    done
  done
  printf '\x00infor\xc2\xad\nmation well-\nknown\vDate\xc2\x85x\xe2\x80\xa8y\f\xef\xac\x83ce \xe5\xb8\x82 \xe5\x9b\xbe a-\nb-\nc' >"$corpus/hand"
  "$build/bin/fuzz_reading" "$corpus" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1
  echo "fuzz_reading: no crash in ${seconds}s"
  exit 0
fi

# A fresh seed corpus each run: a few valid files, as raw bytes (le64 length + header + data) and in
# the target's second form (one byte of data length + header).
corpus="$build/corpus/safetensors"
rm -rf "$corpus"
mkdir -p "$corpus"

le64() {  # the 8 little-endian bytes of $1
  local i
  for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf '%03o' $((($1 >> (8 * i)) & 255)))"; done
}
seed() {  # seed NAME HEADER DATA_BYTES
  local header="$2" n="$3"
  { le64 "${#header}"; printf '%s' "$header"; head -c "$n" /dev/zero; } >"$corpus/$1.raw"
  { printf "\\$(printf '%03o' "$n")"; printf '%s' "$header"; } >"$corpus/$1.hdr"
}
seed one '{"w":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}' 8
seed meta '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F16","shape":[1,2],"data_offsets":[12,16]}}    ' 16
seed zero '{"z":{"dtype":"F16","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}' 4
seed empty '{}' 0

dict="$build/corpus/safetensors.dict"
cat >"$dict" <<'DICT'
"{"
"}"
"["
"]"
":"
","
"\""
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"BF16\""
"\"F16\""
"\"F32\""
"\"F64\""
"\"format\""
"\"pt\""
"18446744073709551615"
"4294967296"
"-1"
"1e400"
DICT

# libFuzzer exits non-zero on a crash, a leak, a timeout or an out-of-memory; set -e passes that on.
"$build/bin/fuzz_safetensors" "$corpus" -dict="$dict" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
  -rss_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1
echo "fuzz_safetensors: no crash in ${seconds}s"
