#!/usr/bin/env bash
# Starts `lode serve` with the default models on a free loopback port, runs bench_serve
# against /v1/chat/completions and (when the server has it) /v1/ask at 1, 4, 16 and 64
# concurrent streaming clients, and puts the table, with machine, load, date and commit, at
# the top of the "HTTP serving" section of bench/RESULTS.md (newest first).
# Environment: SECONDS_PER_LEVEL (default 10), DRAIN (45: seconds a level's last requests
# may run on before they are cut), MAX_TOKENS (16), LEVELS (1,4,16,64).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bench/bench_serve}
LODE=${LODE:-build/lode}
secs=${SECONDS_PER_LEVEL:-10}
drain=${DRAIN:-45}
maxtok=${MAX_TOKENS:-16}
levels=${LEVELS:-1,4,16,64}
dir=$(mktemp -d /tmp/lode-bench-serve-XXXXXX)
trap '[ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }; rm -rf "$dir"; true' EXIT

# A small store so /v1/ask has passages to retrieve.
"$LODE" ingest --lexical-only --db "$dir/lode.db" /usr/share/doc/sqlite3 >/dev/null 2>&1 || true
"$LODE" serve --port 0 --db "$dir/lode.db" --quiet >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 600); do
  grep -q 'listening on' "$dir/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/err" >&2; exit 1; }
  sleep 0.1
done
url=$(grep -o 'http://[0-9.]*:[0-9]*' "$dir/out" | head -1)
model=$(curl -s "$url/v1/models" | sed -n 's/.*"data":\[{"id":"\([^"]*\)".*/\1/p')
[ -n "$model" ] || { echo "bench-serve: the server has no generation model (make model)" >&2; exit 1; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
rows=$("$BIN" --url "$url" --path /v1/chat/completions --model "$model" --seconds "$secs" \
  --drain "$drain" --max-tokens "$maxtok" --concurrency "$levels" --pid "$pid" --label chat)
# GET tells whether the route exists (405: it does, for POST) without generating anything.
ask_status=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$url/v1/ask" || true)
if [ "$ask_status" = 405 ]; then
  rows+=$'\n'$("$BIN" --url "$url" --path /v1/ask --seconds "$secs" --drain "$drain" --max-tokens "$maxtok" \
    --concurrency "$levels" --pid "$pid" --label ask)
  ask_note=""
else
  ask_note="- /v1/ask: not measured (GET /v1/ask answered HTTP $ask_status, not 405)."
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
kill -0 "$pid" 2>/dev/null && alive="the server was still up after the run" || alive="THE SERVER DIED"
kill -TERM "$pid"; wait "$pid" && stopped="and stopped cleanly (exit 0)" || {
  stopped="and exited with $? on SIGTERM"; echo "bench-serve: the server's last lines:" >&2
  tail -n 30 "$dir/err" >&2; }
pid=

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit+changes"
block="### $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit
$(nproc)-core $cpu, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"); load average before: $load, after: $load_after

Model $model, streaming, max_tokens $maxtok (/v1/ask: k 2 over the SQLite docs), ${secs} s
per level, then up to ${drain} s for the requests in flight; each client sends its next
request when the last one ends. TTFT and ITL in ms, latency in s; 429 = turned away by
admission control (handled, not an error); cut = still running when the drain ended
(disconnected by the client, not an error of the server); server CPU = CPU seconds
\`lode serve\` used during the level.

| endpoint | clients | wall s | requests | req/s | tokens/s | TTFT p50 / p99 | ITL p50 / p99 | latency p50 / p99 | 429 | errors | cut | server CPU s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$rows

- $alive $stopped.
$ask_note
"
echo "$block"
f=bench/RESULTS.md
head='## HTTP serving (`make bench-serve`)'
if [ -f "$f" ] && grep -qF "$head" "$f"; then
  awk -v head="$head" -v block="$block" '
    { print }
    $0 == head && !done { print ""; printf "%s", block; done = 1 }
  ' "$f" >"$f.tmp" && mv "$f.tmp" "$f"
else
  printf '\n%s\n\n%s' "$head" "$block" >>"$f"
fi
echo "bench-serve: added to $f"
