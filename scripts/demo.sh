#!/usr/bin/env bash
# The main job on the defaults: ingest the SQLite documentation (Debian's sqlite3-doc)
# into ./lode.db, then answer a question about it with citations, streaming, on the CPU
# with the default model. Idempotent: a second run skips the unchanged files and only
# asks again (each answer is logged in the store's question log, v_questions).
set -euo pipefail
cd "$(dirname "$0")/.."
LODE=${LODE_BIN:-build/lode}
DB=${LODE_DB:-lode.db}
QUESTION=${LODE_DEMO_QUESTION:-How do I enable foreign key constraints?}
# sqlite3-doc puts its HTML in /usr/share/doc/sqlite3 (its own doc folder holds only the
# changelog); take whichever folder has the pages
DOCS=
for d in /usr/share/doc/sqlite3 /usr/share/doc/sqlite3-doc; do
  [ -f "$d/lang_vacuum.html" ] && { DOCS=$d; break; }
done
[ -n "$DOCS" ] || { echo "demo: the SQLite documentation is missing (make deps installs sqlite3-doc)" >&2; exit 1; }

echo "== lode ingest $DOCS   (into $DB; a second run skips unchanged files)"
"$LODE" ingest --db "$DB" "$DOCS"
echo; echo "== lode search \"foreign key constraints\""
"$LODE" search --db "$DB" -k 3 "foreign key constraints"
echo; echo "== lode ask \"$QUESTION\"   (SmolLM2-135M on the CPU: a tiny model, so a modest answer)"
"$LODE" ask --store "$DB" -k 3 --max-tokens 96 "$QUESTION"
q="SELECT id, created, substr(question, 1, 40) AS question, n_passages, n_cited, total_ms FROM v_questions ORDER BY id DESC LIMIT 3"
echo; echo "== sqlite3 $DB \"$q\""
sqlite3 -header -column "$DB" "$q"
echo; echo "More: $LODE ask --db $DB \"your question\", $LODE search --db $DB \"your words\", $LODE serve --db $DB, sqlite3 $DB < sql/examples.sql"
