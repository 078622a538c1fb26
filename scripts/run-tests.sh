#!/usr/bin/env bash
# Runs cmocka test binaries in parallel, one log each under $LODE_BUILD/test-logs/, and
# prints one line per binary and a closing "N passed, N failed, N skipped" line. A binary
# that dies without cmocka's summary (a crash, a sanitizer report) counts as failed.
# Exit status: 0 when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
B=${LODE_BUILD:-build}
LOGS=$B/test-logs
mkdir -p "$LOGS"
JOBS=${LODE_TEST_JOBS:-$(nproc)}
[ $# -gt 0 ] || { echo "run-tests: no test binaries" >&2; exit 1; }

run_one() {
  local bin=$1 log=$2
  local t0=$(date +%s.%N)
  CMOCKA_MESSAGE_OUTPUT=stdout timeout "${LODE_TEST_TIMEOUT:-900}" "$bin" >"$log" 2>&1
  local rc=$?
  echo "rc=$rc secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')" >>"$log"
}
export -f run_one

for b in "$@"; do echo "$b $LOGS/$(basename "$b").log"; done \
  | xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"'

tp=0 tf=0 ts=0 bad=0
for b in "$@"; do
  log=$LOGS/$(basename "$b").log
  p=$(grep -aE '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{s+=$4} END{print s+0}')
  f=$(grep -aE '^\[  FAILED  \] [0-9]+ test' "$log" | awk '{s+=$4} END{print s+0}')
  s=$(grep -aE '^\[  SKIPPED \] [0-9]+ test' "$log" | awk '{s+=$4} END{print s+0}')
  rc=$(grep -a '^rc=' "$log" | tail -n 1 | sed 's/rc=\([0-9]*\).*/\1/')
  secs=$(grep -a '^rc=' "$log" | tail -n 1 | sed 's/.*secs=//')
  status=ok
  if [ "${rc:-1}" != 0 ] && [ "$f" = 0 ]; then f=1; status="CRASHED (rc=$rc)"; fi
  [ "$f" != 0 ] && [ "$status" = ok ] && status=FAILED
  printf '%-40s %4d passed %3d failed %3d skipped  %6.1fs  %s\n' "$(basename "$b")" "$p" "$f" "$s" "${secs:-0}" "$status"
  if [ "$status" != ok ]; then
    bad=1
    echo "---- $log: failed assertions ----"
    grep -a -B1 -E '^\[ +(ERROR|LINE|FAILED) +\] ---|: error: ' "$log" | head -n 40
    echo "---- $log (last 40 lines) ----"; tail -n 40 "$log"; echo "----"
  fi
  grep -a '^\[  SKIPPED \] [a-z]' "$log" | sed 's/^/    skipped: /' | sort -u
  tp=$((tp + p)); tf=$((tf + f)); ts=$((ts + s))
done
echo "$tp passed, $tf failed, $ts skipped"
exit $bad
