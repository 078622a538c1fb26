#!/usr/bin/env bash
# make bench-retrieval: one run that writes its section at the top of "## Retrieval" in
# bench/RESULTS.md (newest first), headed by machine, date, commit and load average:
#   1. embedding throughput of lode's encoder against sentence-transformers on PyTorch
#      CPU (.cache/venv-st; see scripts/make-embed-fixtures.py), same chunks of the SQLite
#      documentation, 1 and 2 threads, in wall time and per CPU-second of the process;
#   2. full ingest of the SQLite documentation with embeddings (wall and CPU time);
#   3. retrieval quality: `lode eval retrieval` on tests/data/eval/sqlite-dev.jsonl,
#      lexical vs dense vs hybrid, with each mode's query latency at the real corpus
#      (query embedding included);
#   4. query latency at LODE_BENCH_BIG (default 100000) synthetic chunks: text drawn from
#      the documentation's words (bench/make_chunks.py --corpus), random unit vectors.
# The box may be shared: each part records the load average and process CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${LODE_BUILD:-build}
EMBED_BIN=${1:-$B/bench/bench_embed}
LODE=$B/lode
MODEL=${LODE_EMBED_MODEL:-models/all-MiniLM-L6-v2}
N=${LODE_BENCH_CHUNKS:-64}
BIG=${LODE_BENCH_BIG:-100000}
DOCS=${LODE_BENCH_DOCS:-/usr/share/doc/sqlite3}
EVAL=tests/data/eval/sqlite-dev.jsonl
PY=.cache/venv-st/bin/python
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
TIMEFORMAT='%R %U %S'
load() { cut -d' ' -f1-3 /proc/loadavg; }
OUT=$W/section.md

python3 bench/make_chunks.py "$W/chunks.txt" "$N" 1000
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- engine kernels common retrieval ingest cli 2>/dev/null || commit="$commit+local changes"
{
  echo "### $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
  echo
  echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME")."
  echo "Load average at the start: $(load)."
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

# 2. ingest with embeddings
before=$(load)
{ time "$LODE" ingest --db "$W/sqlite.db" --quiet --json "$DOCS" >"$W/ingest.json"; } 2>"$W/ingest.time"
read -r wall user sys <"$W/ingest.time"
python3 - "$W/ingest.json" "$wall" "$user" "$sys" "$before" "$(load)" "$DOCS" >>"$OUT" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
wall, user, sys_ = (float(x) for x in sys.argv[2:5])
cpu = user + sys_
print("Ingest of %s with embeddings (`lode ingest`, fresh store, default threads): %d files, "
      "%.1f MB -> %d chunks, %d embedded: **%.1f s** wall (%.1f MB/s, %.1f chunks/s), "
      "%.1f s of process CPU (%.1f chunks per CPU-second); embedding %.1f s of the run. "
      "Load average %s before, %s after." % (
          sys.argv[7], j.get("files_seen", 0), j.get("mb", 0), j.get("chunks", 0),
          j.get("chunks_embedded", 0), wall, j.get("mb", 0) / wall, j.get("chunks", 0) / wall,
          cpu, j.get("chunks_embedded", 0) / cpu if cpu else 0, j.get("embed_seconds", 0),
          sys.argv[5], sys.argv[6]))
print()
EOF

# 3. quality and latency at the real corpus
{
  echo "Retrieval quality and query latency on the SQLite documentation (\`lode eval retrieval\`,"
  echo "$(grep -c . "$EVAL") questions of $EVAL; recall and nDCG over documents; latency per"
  echo "search of 50 chunks, query embedding included; load average $(load)):"
  echo
  "$LODE" eval retrieval --db "$W/sqlite.db" "$EVAL" 2>/dev/null | grep '^|'
  echo
} >>"$OUT"

# 4. latency at BIG synthetic chunks
python3 bench/make_chunks.py --corpus "$W/big" "$BIG" 700
"$LODE" ingest --db "$W/big.db" --quiet --lexical-only "$W/big" >/dev/null
PYV=python3
[ -x "$PY" ] && PYV=$PY
"$PYV" - "$W/big.db" "$(basename "$MODEL")" "$MODEL" <<'EOF'
import random, sqlite3, struct, sys
db = sqlite3.connect(sys.argv[1])
ids = [r[0] for r in db.execute("SELECT id FROM chunks")]
try:
    import numpy as np
    v = np.random.default_rng(7).standard_normal((len(ids), 384)).astype("<f4")
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = ((i, sys.argv[2], 384, v[k].tobytes()) for k, i in enumerate(ids))
except ImportError:
    rng = random.Random(7)
    def vec():
        x = [rng.gauss(0, 1) for _ in range(384)]
        n = sum(a * a for a in x) ** 0.5
        return struct.pack("<384f", *(a / n for a in x))
    rows = ((i, sys.argv[2], 384, vec()) for i in ids)
with db:
    db.executemany("INSERT INTO vectors(chunk_id, model, dim, vec) VALUES (?, ?, ?, ?)", rows)
    db.executemany("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)",
                   [("embed_model", sys.argv[2]), ("embed_dim", "384"), ("embed_path", sys.argv[3])])
EOF
chunks=$(sqlite3 "$W/big.db" "SELECT count(*) FROM chunks")
{ time "$LODE" eval retrieval --db "$W/big.db" --json "$EVAL" >"$W/big.json" 2>"$W/big.err"; } 2>"$W/big.time"
{
  echo "Query latency at $chunks synthetic chunks (words of the documentation drawn at random,"
  echo "random unit vectors, so only the times mean something; the FAISS index is built"
  echo "when the store is opened, $(cut -d' ' -f1 "$W/big.time") s for that and all searches; load average $(load)):"
  echo
  echo "| mode | p50 ms | p99 ms |"
  echo "| --- | --- | --- |"
  python3 -c '
import json, sys
for m in json.load(open(sys.argv[1]))["modes"]:
    print("| %s | %.1f | %.1f |" % (m["mode"], m["p50_ms"], m["p99_ms"]))' "$W/big.json"
  echo
} >>"$OUT"

cat "$OUT"
awk -v f="$OUT" '
  { print }
  /^## Retrieval/ && !done { print ""; while ((getline l < f) > 0) print l; done = 1 }
' bench/RESULTS.md >"$W/results.new"
cat -s "$W/results.new" >bench/RESULTS.md
echo "bench-retrieval: added to bench/RESULTS.md"
