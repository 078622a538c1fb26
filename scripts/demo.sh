#!/usr/bin/env bash
# The main job on the defaults: ingest the SQLite documentation (Debian's sqlite3-doc)
# into ./lode.db and search it, lexically, from the CLI and from SQL.
set -euo pipefail
cd "$(dirname "$0")/.."
LODE=${LODE_BIN:-build/lode}
DB=${LODE_DB:-lode.db}
DOCS=/usr/share/doc/sqlite3-doc
[ -d "$DOCS" ] || { echo "demo: $DOCS is missing (make deps installs sqlite3-doc)" >&2; exit 1; }

echo "== lode ingest $DOCS"
"$LODE" ingest --db "$DB" "$DOCS"
for q in "write-ahead logging" "how does VACUUM work" "foreign key constraints"; do
  echo; echo "== lode search \"$q\""
  "$LODE" search --db "$DB" -k 3 "$q"
done
echo; echo "== sqlite3 $DB \"SELECT count(*) FROM v_chunks\""
sqlite3 "$DB" "SELECT count(*) AS documents FROM v_documents; SELECT count(*) AS chunks FROM v_chunks;"
