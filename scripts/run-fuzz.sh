#!/usr/bin/env bash
# Runs each libFuzzer binary for SECONDS with its seed corpus (tests/fuzz/corpus/NAME/,
# if present) and fails if any finds a crash, leak or sanitizer error.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=$1; shift
bad=0
for bin in "$@"; do
  name=$(basename "$bin")
  work=build-fuzz/corpus-$name
  mkdir -p "$work"
  seeds=tests/fuzz/corpus/$name
  [ -d "$seeds" ] || seeds=
  echo "fuzz: $name for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix=build-fuzz/"$name"- "$work" $seeds >build-fuzz/"$name".log 2>&1; then
    echo "fuzz: $name FAILED"; tail -n 40 build-fuzz/"$name".log; bad=1
  else
    grep -E 'stat::number_of_executed_units' build-fuzz/"$name".log | sed "s/^/fuzz: $name /"
  fi
done
exit $bad
