#!/usr/bin/env bash
# make bench-retrieval: one run that writes its section at the top of "## Retrieval" in
# bench/RESULTS.md (newest first), headed by machine, date, commit and load average:
#   1. embedding throughput of lode's encoder against sentence-transformers on PyTorch
#      CPU (.cache/venv-st; see scripts/make-embed-fixtures.py), same chunks of the SQLite
#      documentation, 1 and 2 threads, in wall time and per CPU-second of the process;
#   2. ingest of the SQLite documentation with embeddings (wall and CPU time): the whole
#      documentation when the cached store below is (re)built, else a fixed sixth of its
#      files into a fresh store, with the full ingest's figures from when the cache was built;
#   3. retrieval quality: `lode eval retrieval` on tests/data/eval/sqlite-dev.jsonl,
#      lexical vs dense vs hybrid, with each mode's query latency at the real corpus
#      (query embedding included);
#   4. query latency at LODE_BENCH_BIG (default 100000) synthetic chunks: text drawn from
#      the documentation's words (bench/make_chunks.py --corpus), vectors from the real
#      store's plus noise (bench/synth_vectors.py); and the approximate FAISS index's recall
#      against exact search on them (bench_vindex).
# Stores that take long to build are cached between runs in $LODE_BENCH_CACHE (default
# .cache/bench-retrieval, ignored by git), each under a key of what it is made from (the
# sources of ingest, store and schema, the documents, the model, the generators):
# the documentation with embeddings (a full ingest: minutes), and the 100k-chunk store with
# its FAISS index. LODE_BENCH_FRESH=1 rebuilds them. A warm run takes a few minutes.
# The box may be shared: each part records the load average and process CPU time; run it
# under `chrt -f 10` for figures worth recording.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${LODE_BUILD:-build}
EMBED_BIN=${1:-$B/bench/bench_embed}
VINDEX_BIN=${2:-$B/bench/bench_vindex}
LODE=$B/lode
MODEL=${LODE_EMBED_MODEL:-models/all-MiniLM-L6-v2}
N=${LODE_BENCH_CHUNKS:-32}
BIG=${LODE_BENCH_BIG:-100000}
DOCS=${LODE_BENCH_DOCS:-/usr/share/doc/sqlite3}
CACHE=${LODE_BENCH_CACHE:-.cache/bench-retrieval}
EVAL=tests/data/eval/sqlite-dev.jsonl
PY=.cache/venv-st/bin/python
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
TIMEFORMAT='%R %U %S'
load() { cut -d' ' -f1-3 /proc/loadavg; }
OUT=$W/section.md
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
flock 9 # one run at a time uses the cache

# A key for what a cached store is made from: the named files and folders as committed,
# plus any uncommitted change to them, plus the extra words given.
key() {
  local words=$1
  shift
  {
    echo "$words"
    for p in "$@"; do git rev-parse "HEAD:$p" 2>/dev/null || sha256sum "$p" 2>/dev/null || echo "$p"; done
    git diff HEAD -- "$@" 2>/dev/null || true
  } | sha256sum | cut -c1-16
}
STORE_SRC=(ingest retrieval/store.c retrieval/store.h retrieval/dense.c sql)
REAL=$CACHE/real-$(key "$DOCS $(basename "$MODEL") $(ls -l --time-style=+%s "$DOCS" | sha256sum)" \
  "${STORE_SRC[@]}")
BIGK=$CACHE/big-$BIG-$(key "$REAL" bench/make_chunks.py bench/synth_vectors.py "${STORE_SRC[@]}")
if [ -n "${LODE_BENCH_FRESH:-}" ]; then rm -rf "$REAL" "$BIGK"; fi
# keep only the current stores
for d in "$CACHE"/real-* "$CACHE"/big-*; do
  [ -d "$d" ] && [ "$d" != "$REAL" ] && [ "$d" != "$BIGK" ] && rm -rf "$d"
done

python3 bench/make_chunks.py "$W/chunks.txt" "$N" 1000
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- engine kernels common retrieval ingest cli 2>/dev/null || commit="$commit+local changes"
{
  echo "### $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME")."
  echo "Scheduling: $(chrt -p $$ 2>/dev/null | sed -n 's/.*current scheduling policy: //p' | head -1) (run it under \`chrt -f 10\` on a shared box). Load average at the start: $(load)."
  echo
  echo "Embedding throughput: model $(basename "$MODEL"), $N chunks of about 1000 characters of the"
  echo "SQLite documentation ($(wc -w <"$W/chunks.txt") words), best of 2 runs after a warm-up."
  echo "Chunks per CPU-second is the rate per second of CPU the process actually got (all its"
  echo "threads), the fair figure when other processes share the cores."
  echo
  echo "| embedder | threads | chunks/s | chunks per CPU-s | tokens/s |"
  echo "| --- | --- | --- | --- | --- |"
} >"$OUT"
"$EMBED_BIN" "$MODEL" "$W/chunks.txt" 1 2 >"$W/lode.txt"
grep '^| lode' "$W/lode.txt" >>"$OUT"
if [ -x "$PY" ]; then
  "$PY" bench/st_embed.py "$MODEL" "$W/chunks.txt" 1 2 2>/dev/null >"$W/st.txt"
  cat "$W/st.txt" >>"$OUT"
  awk -F'|' 'FNR == NR { w[$3 + 0] = $4; c[$3 + 0] = $5; next }
    { t = $3 + 0; if (w[t] > 0 && c[t] > 0)
        printf "\nlode / sentence-transformers at %d thread%s: %.2fx in wall time, %.2fx per CPU-second.", t, (t > 1 ? "s" : ""), $4 / w[t], $5 / c[t] }
    END { print "" }' "$W/st.txt" "$W/lode.txt" >>"$OUT"
else
  echo "| sentence-transformers | - | not run: no .cache/venv-st | | |" >>"$OUT"
fi
{
  echo "Load average after the embedding runs: $(load)."
  echo
  echo "| projection | lode GEMM | row-dot krn_matmul | speed-up |"
  echo "| --- | --- | --- | --- |"
  grep '^| f32\|^| q16' "$W/lode.txt"
  echo
} >>"$OUT"

# 2. ingest with embeddings: prints one paragraph on the run of "$@" into db $1
ingest() {
  local db=$1 what=$2
  shift 2
  local before
  before=$(load)
  { time "$LODE" ingest --db "$db" --quiet --json "$@" >"$W/ingest.json"; } 2>"$W/ingest.time"
  read -r wall user sys <"$W/ingest.time"
  python3 - "$W/ingest.json" "$wall" "$user" "$sys" "$before" "$(load)" "$what" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
wall, user, sys_ = (float(x) for x in sys.argv[2:5])
cpu = user + sys_
print("Ingest of %s with embeddings (`lode ingest`, fresh store, default threads): %d files, "
      "%.1f MB -> %d chunks, %d embedded: **%.1f s** wall (%.2f MB/s, **%.1f chunks/s**), "
      "%.1f s of process CPU (%.1f chunks per CPU-second); embedding %.1f s of the run. "
      "Load average %s before, %s after." % (
          sys.argv[7], j.get("files_seen", 0), j.get("mb", 0), j.get("chunks", 0),
          j.get("chunks_embedded", 0), wall, j.get("mb", 0) / wall, j.get("chunks", 0) / wall,
          cpu, j.get("chunks_embedded", 0) / cpu if cpu else 0, j.get("embed_seconds", 0),
          sys.argv[5], sys.argv[6]))
EOF
}
if [ ! -f "$REAL/done" ]; then
  rm -rf "$REAL" && mkdir -p "$REAL"
  { ingest "$REAL/sqlite.db" "all of $DOCS" "$DOCS"
    echo "(Run of $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, when this store was built.)"
  } >"$REAL/ingest.md"
  touch "$REAL/done"
  { cat "$REAL/ingest.md"; echo; } >>"$OUT"
else
  # every sixth file of the documentation, into a fresh store: the current code's rate
  mapfile -t files < <(find "$DOCS" -maxdepth 1 -type f \( -name '*.html' -o -name '*.txt' \) | sort | awk 'NR % 6 == 1')
  { ingest "$W/part.db" "every sixth file of $DOCS" "${files[@]}"; echo; } >>"$OUT"
  {
    echo "The whole documentation was not ingested again: its store comes from the cache"
    echo "(\`LODE_BENCH_FRESH=1\` rebuilds it). Its ingest, when it was built:"
    echo
    cat "$REAL/ingest.md"
    echo
  } >>"$OUT"
fi

# 3. quality and latency at the real corpus
{
  echo "Retrieval quality and query latency on the SQLite documentation (\`lode eval retrieval\`,"
  echo "$(grep -c . "$EVAL") questions of $EVAL; recall and nDCG over documents; latency per"
  echo "search of 50 chunks, query embedding included; load average $(load)):"
  echo
  "$LODE" eval retrieval --db "$REAL/sqlite.db" "$EVAL" 2>/dev/null | grep '^|'
  echo
  echo "The same questions as \`lode search\` runs them (k = 10: fusion of 200 candidates from each"
  echo "list), through ret_hybrid_search (bench_vindex):"
  echo
  "$VINDEX_BIN" "$REAL/sqlite.db" "$EVAL" | sed -n '/^| mode/,$p'
  echo
} >>"$OUT"

# 4. latency at BIG synthetic chunks
if [ ! -f "$BIGK/done" ]; then
  rm -rf "$BIGK" && mkdir -p "$BIGK"
  python3 bench/make_chunks.py --corpus "$W/big" "$BIG" 700
  "$LODE" ingest --db "$BIGK/big.db" --quiet --lexical-only "$W/big" >/dev/null
  PYV=python3
  [ -x "$PY" ] && PYV=$PY
  "$PYV" bench/synth_vectors.py "$BIGK/big.db" "$REAL/sqlite.db" "$MODEL" >/dev/null
  touch "$BIGK/done"
fi
chunks=$(sqlite3 "$BIGK/big.db" "SELECT count(*) FROM chunks")
# builds and saves the FAISS index when the cache has none yet
{ time "$VINDEX_BIN" "$BIGK/big.db" "$EVAL" 16 128 >"$W/vindex.txt"; } 2>"$W/vindex.time"
{ time "$LODE" eval retrieval --db "$BIGK/big.db" --json "$EVAL" >"$W/big.json" 2>"$W/big.err"; } 2>"$W/big.time"
{
  echo "Query latency at $chunks synthetic chunks (words of the documentation drawn at random;"
  echo "each vector a real chunk's vector plus noise, so only the times and the index's recall"
  echo "mean something; searches of 50 chunks, query embedding included; the eval's"
  echo "$(grep -c . "$EVAL") questions, $(cut -d' ' -f1 "$W/big.time") s in all with opening the store and its index; load average $(load)):"
  echo
  echo "| mode | p50 ms | p99 ms |"
  echo "| --- | --- | --- |"
  python3 -c '
import json, sys
for m in json.load(open(sys.argv[1]))["modes"]:
    print("| %s | %.1f | %.1f |" % (m["mode"], m["p50_ms"], m["p99_ms"]))' "$W/big.json"
  echo
  echo "Approximate against exact search on those vectors (bench_vindex: the same questions"
  echo "embedded, 50 nearest; recall = share of the exact neighbours the index returns;"
  echo "$(head -1 "$W/vindex.txt"); $(sed -n 2p "$W/vindex.txt")):"
  echo
  sed -n '/^| index/,/^$/p' "$W/vindex.txt"
  echo "The same questions as \`lode search\` runs them (k = 10: fusion of 200 candidates from each"
  echo "list), through ret_hybrid_search (bench_vindex):"
  echo
  sed -n '/^| mode/,$p' "$W/vindex.txt"
  echo
} >>"$OUT"

cat "$OUT"
awk -v f="$OUT" '
  { print }
  /^## Retrieval/ && !done { print ""; while ((getline l < f) > 0) print l; done = 1 }
' bench/RESULTS.md >"$W/results.new"
cat -s "$W/results.new" >bench/RESULTS.md
echo "bench-retrieval: added to bench/RESULTS.md"
