#!/usr/bin/env bash
# `make bench-engine`: lode's engine and llama.cpp (the llama-cpp-python build of
# scripts/make-fixtures.sh, installed into its venv when missing) on the same GGUF and the
# same 512-token prompt, in the same run: prefill tokens/s, decode tokens/s (128 tokens),
# time to first token and peak RSS at 1 and 2 threads, each measurement in its own process
# (best of 3 repetitions inside it). The table and the lode/llama.cpp ratios go to the top
# of the "Engine on the CPU" section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bench/bench_engine}
MODEL=${LODE_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
N_PROMPT=${BENCH_PROMPT:-512}
N_DECODE=${BENCH_DECODE:-128}
THREADS=${BENCH_THREADS:-1 2}
CACHE=${LODE_CACHE_DIR:-.cache}
VENV="$CACHE/venv-fixtures"
VERSION=$(sed -n 's/^LLAMA_CPP_PYTHON_VERSION=//p' scripts/make-fixtures.sh)
[ -f "$MODEL" ] || scripts/models.sh
if ! "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  echo "bench-engine: installing llama-cpp-python==$VERSION into $VENV (builds llama.cpp, ~15 min)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "$VENV/bin/pip" install --no-cache-dir "llama-cpp-python==$VERSION" numpy
fi
ids=$(mktemp)
trap 'rm -f "$ids"' EXIT
"$BIN" --prompt-ids "$MODEL" "$N_PROMPT" >"$ids"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A R
for t in $THREADS; do
  R[lode,$t]=$("$BIN" "$MODEL" "$t" "$ids" "$N_DECODE" 3)
  R[llama,$t]=$("$VENV/bin/python" bench/bench_engine_llamacpp.py "$MODEL" "$t" "$ids" "$N_DECODE" 3)
  echo "${R[lode,$t]}"; echo "${R[llama,$t]}"
done
table="| threads | engine | prefill tok/s ($N_PROMPT) | decode tok/s ($N_DECODE) | TTFT ms | peak RSS MiB |
|---|---|---|---|---|---|"
ratios="| threads | prefill lode/llama.cpp | decode lode/llama.cpp | TTFT llama.cpp/lode |
|---|---|---|---|"
for t in $THREADS; do
  read -r _ _ lp ld lt lr <<<"${R[lode,$t]}"
  read -r _ _ cp cd ct cr <<<"${R[llama,$t]}"
  table="$table
| $t | lode | $lp | $ld | $lt | $lr |
| $t | llama.cpp $VERSION | $cp | $cd | $ct | $cr |"
  ratios="$ratios
| $t | $(awk -v a="$lp" -v b="$cp" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$ld" -v b="$cd" 'BEGIN{printf "%.2f", a/b}') | $(awk -v a="$ct" -v b="$lt" 'BEGIN{printf "%.2f", a/b}') |"
done
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
block="### $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit
$(nproc)-core $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"); load average before the run: $load_before
Model \`$(basename "$MODEL")\`; prompt of $N_PROMPT tokens in one step, then $N_DECODE greedy
single-token steps; best of 3 in each process. llama.cpp runs through llama-cpp-python
(its RSS includes the Python interpreter and numpy); lode runs bench/bench_engine.c.

$table

$ratios
"
echo "$block"
f=bench/RESULTS.md
head='## Engine on the CPU (`make bench-engine`)'
if [ -f "$f" ] && grep -qF "$head" "$f"; then
  awk -v head="$head" -v block="$block" '
    { print }
    $0 == head && !done { print ""; printf "%s", block; done = 1 }
  ' "$f" >"$f.tmp" && mv "$f.tmp" "$f"
else
  printf '\n%s\n\n%s' "$head" "$block" >>"$f"
fi
echo "bench-engine: added to $f"
