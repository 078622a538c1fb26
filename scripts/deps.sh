#!/usr/bin/env bash
# Installs everything lode needs on Debian 12, idempotently: the Debian packages named in
# DESIGN.md, the FAISS C API (built from Debian's faiss source package against libfaiss.a,
# which Debian ships without its C wrapper) and the default models (scripts/models.sh).
# Prints what it did; a second run does nothing and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=${LODE_DEPS_DIR:-$ROOT/.deps}

PKGS=(build-essential pkg-config clang clang-format python3-venv dpkg-dev
      sqlite3 libsqlite3-dev sqlite3-doc libfaiss-dev libopenblas-dev
      libmicrohttpd-dev libcurl4-openssl-dev libcmocka-dev libjansson-dev
      libmd4c-dev libmd4c-html0-dev libxml2-dev libpoppler-glib-dev
      libutf8proc-dev libpcre2-dev libssl-dev)

SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${#missing[@]} Debian package(s): ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "deps: all ${#PKGS[@]} Debian packages present"
fi

# FAISS C API: Debian ships libfaiss.a and the c_api headers but not libfaiss_c.
FAISS_C=$DEPS/faiss-c
if [ -f "$FAISS_C/lib/libfaiss_c.a" ]; then
  echo "deps: FAISS C API present ($FAISS_C/lib/libfaiss_c.a)"
else
  echo "deps: building the FAISS C API from Debian's faiss source package"
  if ! grep -rqsE '^Types:.*deb-src' /etc/apt/sources.list.d/ && \
     ! grep -qsE '^deb-src' /etc/apt/sources.list; then
    echo "deps: adding a deb-src entry for bookworm"
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $SUDO tee /etc/apt/sources.list.d/lode-src.sources >/dev/null
    $SUDO apt-get update -q
  fi
  src=$DEPS/src
  rm -rf "$src" && mkdir -p "$src"
  (cd "$src" && apt-get source -q --download-only faiss >/dev/null && dpkg-source -x faiss_*.dsc faiss >/dev/null)
  ver=$(dpkg-query -W -f='${Version}' libfaiss-dev)
  echo "deps: compiling faiss c_api against libfaiss-dev $ver"
  mkdir -p "$FAISS_C/obj" "$FAISS_C/lib" "$FAISS_C/include"
  objs=()
  for f in "$src"/faiss/c_api/*.cpp "$src"/faiss/c_api/impl/*.cpp; do
    [ -f "$f" ] || continue
    o="$FAISS_C/obj/$(basename "${f%.cpp}").o"
    objs+=("$o")
    echo "$f -> $o"
  done | xargs -P "$(nproc)" -L 1 sh -c 'g++ -std=c++17 -O2 -fPIC -I"'"$src"'/faiss" -I"'"$src"'/faiss/c_api" -fopenmp -c "$0" -o "$2"'
  ar rcs "$FAISS_C/lib/libfaiss_c.a" "$FAISS_C"/obj/*.o
  rm -rf "$FAISS_C/obj" "$src"
  echo "deps: FAISS C API built ($FAISS_C/lib/libfaiss_c.a)"
fi

scripts/models.sh

# The official `openai` Python client, for tests/test_server's compatibility check
# (scripts/openai-compat.py). Set up here, not inside the timed test; without network the
# test says it is skipped.
VENV=${LODE_CACHE_DIR:-.cache}/venv-openai
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
  echo "deps: openai client present ($VENV)"
elif { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q openai; } >/dev/null 2>&1; then
  echo "deps: openai client installed ($VENV)"
else
  echo "deps: could not install the openai client into $VENV (test_openai_client will skip)"
fi
