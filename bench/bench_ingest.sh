#!/usr/bin/env bash
# Runs bench_ingest and puts its figures, with machine, date and commit, at the top of the
# "Ingest and lexical search" section of bench/RESULTS.md (newest first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bench/bench_ingest}
shift || true
out=$("$BIN" "$@")
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
load=$(cut -d' ' -f1-3 /proc/loadavg)
block="### $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit
$(nproc)-core $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"); load average before the run: $load

$out
"
echo "$block"
f=bench/RESULTS.md
head='## Ingest and lexical search (`make bench-ingest`)'
if [ -f "$f" ] && grep -qF "$head" "$f"; then
  awk -v head="$head" -v block="$block" '
    { print }
    $0 == head && !done { print ""; printf "%s", block; done = 1 }
  ' "$f" >"$f.tmp" && mv "$f.tmp" "$f"
else
  printf '\n%s\n\n%s' "$head" "$block" >>"$f"
fi
echo "bench-ingest: added to $f"
