#!/usr/bin/env bash
# The main job on the defaults: ingest the SQLite documentation (Debian's sqlite3-doc)
# into ./lode.db and search it, lexically, from the CLI and from SQL.
set -euo pipefail
cd "$(dirname "$0")/.."
LODE=${LODE_BIN:-build/lode}
DB=${LODE_DB:-lode.db}
# sqlite3-doc puts its HTML in /usr/share/doc/sqlite3 (its own doc folder holds only the
# changelog); take whichever folder has the pages
DOCS=
for d in /usr/share/doc/sqlite3 /usr/share/doc/sqlite3-doc; do
  [ -f "$d/lang_vacuum.html" ] && { DOCS=$d; break; }
done
[ -n "$DOCS" ] || { echo "demo: the SQLite documentation is missing (make deps installs sqlite3-doc)" >&2; exit 1; }

echo "== lode ingest $DOCS   (into $DB; a second run skips unchanged files)"
"$LODE" ingest --db "$DB" "$DOCS"
for q in "write-ahead logging" "how does VACUUM work" "foreign key constraints"; do
  echo; echo "== lode search \"$q\""
  "$LODE" search --db "$DB" -k 3 "$q"
done
q="SELECT (SELECT count(*) FROM v_documents) AS documents, (SELECT count(*) FROM v_chunks) AS chunks"
echo; echo "== sqlite3 $DB \"$q\""
sqlite3 -header -column "$DB" "$q"
echo; echo "More: $LODE search --db $DB \"your words\", $LODE sql --db $DB, sqlite3 $DB < sql/examples.sql"
