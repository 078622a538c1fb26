#!/usr/bin/env bash
# `make bench-embed`: embedding throughput of lode's encoder (bench/bench_embed.c) against
# sentence-transformers on PyTorch CPU (bench/st_embed.py, venv .cache/venv-st, installed
# when missing), on the same chunks of the SQLite documentation (bench/make_chunks.py) at
# 1 and 2 threads, in ROUNDS rounds (default 5) that each run both embedders back to back,
# so each round's ratio compares runs that saw the same machine. Prints every round and
# the median ratios, in wall time and per CPU-second of the process.
# On a shared box run it with real-time priority, which keeps other processes off the
# cores during each run (threads inherit it): chrt -f 10 bench/bench_embed.sh. Another
# process at real-time priority would still hold a core, so each round first waits (up to
# BENCH_WAIT seconds, default 900) until none is running, and the table says when one was.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${LODE_BUILD:-build}/bench/bench_embed}
MODEL=${LODE_EMBED_MODEL:-models/all-MiniLM-L6-v2}
N=${LODE_BENCH_CHUNKS:-64}
ROUNDS=${BENCH_ROUNDS:-5}
WAIT=${BENCH_WAIT:-900}
VENV=${LODE_CACHE_DIR:-.cache}/venv-st
if ! "$VENV/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  echo "bench-embed: installing sentence-transformers into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q sentence-transformers
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
python3 bench/make_chunks.py "$W/chunks.txt" "$N" 1000
echo "model $(basename "$MODEL"), $N chunks of about 1000 characters ($(wc -w <"$W/chunks.txt") words)," \
  "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores;" \
  "scheduling policy: $(chrt -p $$ | sed -n 's/.*policy: //p' | head -1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | threads | lode chunks/s | st chunks/s | wall ratio | lode per CPU-s | st per CPU-s | CPU-s ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
# other user processes at real-time priority (kernel threads run at 50 and above), this
# script and its children not counted
rt_others() {
  ps -eo pid=,ppid=,cls=,rtprio=,args= | awk -v me="$$" '{ up[$1] = $2 }
    ($3 == "FF" || $3 == "RR") && $4 < 50 && substr($5, 1, 1) != "[" { rt[$1] = 1 }
    END { for (p in rt) { q = p; while (q > 1 && q != me) q = up[q]; if (q != me) n++ } print n + 0 }'
}
for r in $(seq "$ROUNDS"); do
  waited=0
  while [ "$(rt_others)" -gt 0 ] && [ "$waited" -lt "$WAIT" ]; do
    sleep 5
    waited=$((waited + 5))
  done
  others=$(rt_others)
  [ "$others" -gt 0 ] && echo "round $r: $others other real-time process(es) running after waiting ${waited} s"
  "$BIN" "$MODEL" "$W/chunks.txt" 1 2 | grep '^| lode' >"$W/lode.txt"
  "$VENV/bin/python" bench/st_embed.py "$MODEL" "$W/chunks.txt" 1 2 2>/dev/null >"$W/st.txt"
  # rows: | name | threads | chunks/s | chunks per CPU-s | ...
  awk -F'|' -v r="$r" 'FNR == NR { w[$3 + 0] = $4; c[$3 + 0] = $5; next }
    { t = $3 + 0; printf "| %d | %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |\n", r, t, w[t], $4, w[t] / $4, c[t], $5, c[t] / $5 }' \
    "$W/lode.txt" "$W/st.txt" | tee -a "$W/rounds.txt"
  others=$(rt_others)
  [ "$others" -gt 0 ] && echo "round $r: $others other real-time process(es) running at its end"
done
echo
head -1 "$W/st.txt" | awk -F'|' '{ gsub(/^ +| +$/, "", $2); print "peer: " $2 }'
for t in 1 2; do
  awk -F'|' -v t="$t" 'BEGIN { n = 0 } $3 + 0 == t { w[n] = $6 + 0; c[n] = $9 + 0; n++ }
    function med(a, n,   i, j, x) { for (i = 1; i < n; i++) { x = a[i]; for (j = i - 1; j >= 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[int(n / 2)] : (a[n / 2 - 1] + a[n / 2]) / 2 }
    END { printf "median lode / sentence-transformers at %d thread%s over %d rounds: %.2fx wall, %.2fx per CPU-second\n", t, (t > 1 ? "s" : ""), n, med(w, n), med(c, n) }' "$W/rounds.txt"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
