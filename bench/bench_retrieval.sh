#!/usr/bin/env bash
# Embedding throughput of lode's encoder against sentence-transformers on PyTorch CPU, on
# the same chunks of the SQLite documentation, at 1 and 2 threads, in one run; inserts
# the table, headed by machine, date and commit, at the top of the "Retrieval" section
# of bench/RESULTS.md. The reference side needs .cache/venv-st (see
# scripts/make-embed-fixtures.py); without it only lode's rows are written.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bench/bench_embed}
MODEL=${LODE_EMBED_MODEL:-models/all-MiniLM-L6-v2}
N=${LODE_BENCH_CHUNKS:-64}
OUT=$(mktemp)
CHUNKS=$(mktemp)
trap 'rm -f "$OUT" "$OUT.new" "$CHUNKS"' EXIT
python3 bench/make_chunks.py "$CHUNKS" "$N" 1000
PY=.cache/venv-st/bin/python
{
  echo "### Embedding throughput, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine kernels common || echo '+local changes')"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME")."
  echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (compare rows of one run only)."
  echo "Model $(basename "$MODEL"), $N chunks of about 1000 characters of the SQLite documentation"
  echo "($(wc -w <"$CHUNKS") words), best of 2 runs after a warm-up."
  echo
  echo "| embedder | threads | chunks/s | tokens/s |"
  echo "| --- | --- | --- | --- |"
  "$BIN" "$MODEL" "$CHUNKS" 1 2 | tee "$OUT.lode" | grep '^| lode'
  if [ -x "$PY" ]; then
    "$PY" bench/st_embed.py "$MODEL" "$CHUNKS" 1 2 2>/dev/null
  else
    echo "| sentence-transformers | - | not run: no .cache/venv-st | |"
  fi
  echo
  echo "| projection | lode packed GEMM | row-dot krn_matmul | speed-up |"
  echo "| --- | --- | --- | --- |"
  grep '^| f32' "$OUT.lode"
  rm -f "$OUT.lode"
  echo
} >"$OUT"
cat "$OUT"
awk -v f="$OUT" '
  { print }
  /^## Retrieval/ && !done { print ""; while ((getline l < f) > 0) print l; done = 1 }
' bench/RESULTS.md >"$OUT.new"
cat -s "$OUT.new" >bench/RESULTS.md
