#!/usr/bin/env bash
# `make bench-sched`: the serving core on the CPU (bench/bench_sched.c): output tokens/s at
# 1, 4, 16 and 64 concurrent streams, time to first token with and without the prefix
# cache, and decode inter-token latency while a long prompt is prefilled in chunks (32
# streams and a 4000-token prompt; latency-aware chunks against fixed 32-token ones). The
# tables, with the machine, load average and commit, go to the top of the "Serving core on
# the CPU" section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bench/bench_sched}
MODEL=${LODE_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${BENCH_THREADS:-2}
DECODE=${BENCH_DECODE:-64}
PREFIX=${BENCH_PREFIX:-512}
LONG=${BENCH_LONG:-4000}
STREAMS=${BENCH_STREAMS:-32}
SLACK=${BENCH_SLACK:-1.6}
BUDGET=${BENCH_BUDGET:-256}
[ -f "$MODEL" ] || scripts/models.sh
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
out=$("$BIN" "$MODEL" "$THREADS" "$DECODE" "$PREFIX" "$LONG" "$STREAMS" "$SLACK" "$BUDGET")
secs=$(( $(date +%s) - t0 ))
echo "$out"
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
block="### $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit
$(nproc)-core $cpu, $(. /etc/os-release && echo "$PRETTY_NAME"); $THREADS threads; load average
before the run: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg); run took ${secs} s.
Model \`$(basename "$MODEL")\`, greedy; each stream a different 32-token prompt and up to
$DECODE output tokens (EOS may end one earlier); step budget 256 tokens, 64 running slots.
CPU s is the process's user+system time in that phase (2 threads: at most 2x wall).
Chunked prefill: $STREAMS streams of 16-token prompts decode $DECODE tokens each; the
$LONG-token prompt arrives once they decode.

$out
"
f=bench/RESULTS.md
head='## Serving core on the CPU (`make bench-sched`)'
if [ -f "$f" ] && grep -qF "$head" "$f"; then
  awk -v head="$head" -v block="$block" '
    { print }
    $0 == head && !done { print ""; printf "%s", block; done = 1 }
  ' "$f" >"$f.tmp" && mv "$f.tmp" "$f"
else
  printf '\n%s\n\n%s' "$head" "$block" >>"$f"
fi
echo "bench-sched: added to $f"
