#!/usr/bin/env bash
# Makes the reference fixtures of tests/data/{smollm2,spm,bpe}/ with llama.cpp, through the
# llama-cpp-python package at a pinned version. The package lives in its own venv under
# .cache/ and is never a dependency of lode: only this script uses it. The fixtures are
# committed, so this is needed only to re-make them (after a model or version change).
#
#   scripts/make-fixtures.sh              install (once, ~15 min on 2 cores) and write
#   LODE_FIXTURE_MODEL=path scripts/make-fixtures.sh   another GGUF
#
# llama-cpp-python compiles llama.cpp from source with its default CMake settings (CPU,
# GGML_NATIVE on); the version of llama.cpp it carries is written to the README.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_CPP_PYTHON_VERSION=0.3.16
# the llama.cpp commit that llama-cpp-python 0.3.16 vendors
export LLAMA_CPP_COMMIT=4227c9be4268ac844921b90f31595f81236bd317
CACHE=${LODE_CACHE_DIR:-.cache}
VENV="$CACHE/venv-fixtures"
MODEL=${LODE_FIXTURE_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
OUTDIR=${LODE_FIXTURE_DIR:-tests/data/smollm2}

if [ ! -f "$MODEL" ]; then
  scripts/models.sh
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
  "$VENV/bin/pip" install -q --upgrade pip
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "$VENV/bin/pip" install --no-cache-dir -v "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
fi
mkdir -p "$OUTDIR"
"$VENV/bin/python" scripts/make-fixtures.py --model "$MODEL" --out "$OUTDIR"
