#!/usr/bin/env bash
# Runs the CPU kernel benchmark and inserts its table, headed by machine, date and commit,
# at the top of the "CPU kernels" section of bench/RESULTS.md (newest first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bench/bench_kernels}
shift || true
OUT=$(mktemp)
trap 'rm -f "$OUT" "$OUT.new"' EXIT
{
  echo "### $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- kernels common || echo '+local changes')"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"). Load average when it started: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; figures under load are lower bounds)."
  echo
  "$BIN" "$@"
  echo
} >"$OUT"
cat "$OUT"
awk -v f="$OUT" '
  { print }
  /^## CPU kernels/ && !done { print ""; while ((getline l < f) > 0) print l; done = 1 }
' bench/RESULTS.md >"$OUT.new"
# drop the blank line doubled by the insertion
cat -s "$OUT.new" >bench/RESULTS.md
