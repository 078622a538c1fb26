#!/usr/bin/env python3
"""Writes the reference fixtures for lode's BERT embedding path into tests/data/minilm/:

  sentences.txt  one test sentence a line (UTF-8, tabs allowed, no newlines)
  ids.txt        the Hugging Face tokenizer's ids for each sentence, space-separated,
                 [CLS] ... [SEP], truncated to the model's max_seq_length
  vectors.f32    sentence-transformers embeddings: n x dim little-endian float32, in
                 sentence order (mean pooling, L2-normalized)
  meta.txt       "n dim max_seq_length" and the library versions used

Run once by hand (the outputs are committed); it needs models/all-MiniLM-L6-v2 from
`make model` and a virtual environment with sentence-transformers and torch:

  python3 -m venv .cache/venv-st && .cache/venv-st/bin/pip install sentence-transformers
  .cache/venv-st/bin/python scripts/make-embed-fixtures.py

The model is loaded from the local folder only; nothing is fetched at run time.
"""
import os
import struct
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
OUT = os.path.join(ROOT, "tests", "data", "minilm")

SENTENCES = [
    "SQLite is a C-language library that implements a small, fast, self-contained SQL database engine.",
    "How do I make my database writes faster?",
    "The write-ahead log lets readers and a writer work at the same time.",
    "WAL mode allows concurrent readers while one connection writes.",
    "VACUUM rebuilds the database file, repacking it into a minimal amount of disk space.",
    "How can I shrink the size of the database file after deleting rows?",
    "A transaction is atomic: either all of its changes happen or none do.",
    "PRAGMA journal_mode=WAL;",
    "SELECT count(*) FROM chunks WHERE doc_id = ?1 AND text LIKE '%index%';",
    "CREATE VIRTUAL TABLE docs USING fts5(title, body, tokenize='porter unicode61');",
    "The quick brown fox jumps over the lazy dog.",
    "A fast auburn fox leaped above a sleepy hound.",
    "I love reading books on rainy afternoons.",
    "Rainy days are perfect for curling up with a novel.",
    "The stock market fell sharply after the announcement.",
    "Shares dropped steeply following the news.",
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "Café au lait, crème brûlée and a naïve résumé from Zürich.",
    "Ångström, façade, jalapeño, São Paulo, Kraków, Øresund.",
    "北京是中国的首都。",
    "東京は日本の首都です。",
    "서울은 대한민국의 수도입니다.",
    "Москва — столица России.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "العربية لغة جميلة",
    "Emoji test: 😀🚀🔥 are not in the vocabulary!",
    "Numbers: 3.14159, 2,718, 1e-9, 0x7fffffff and 42%.",
    "Dates like 2026-11-26 and times like 14:05 UTC.",
    "E-mail me at someone@example.com or visit https://www.sqlite.org/wal.html",
    "Don't, won't, can't; they're (mostly) contractions...",
    "Multiple   spaces\tand\ttabs   between words.",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY AN UNCASED MODEL.",
    "MixedCase identifiers like getElementById and XMLHttpRequest.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a" * 120 + " is a very long word",
    "Unbelievably, the reorganization's effectiveness was underestimated.",
    "¿Dónde está la biblioteca? ¡Aquí!",
    "«Guillemets» and “curly quotes” and ‘single’ ones — with dashes – too.",
    "Math: ∑ x² ≤ ∞, α β γ δ, √2 ≈ 1.414.",
    "C++ templates, Rust's borrow checker, and Go's goroutines.",
    "def f(x): return x ** 2 if x > 0 else -x",
    "int main(void) { printf(\"hello\\n\"); return 0; }",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy.",
    "Neural networks learn representations from data.",
    "An index speeds up queries at the cost of slower inserts.",
    "Foreign key constraints enforce referential integrity between tables.",
    "Why does my query not use the index?",
    "The query planner chooses the index with the lowest estimated cost.",
    "x",
    "",
    "?!",
    "hello world",
    "Hello, World!",
    "Thé Ünïcödé nörmälïzätïön tëst wïth äccënts.",
    "Zero\u200bwidth space and soft\u00adhyphen inside words.",
    "Control\u0007char and non-breaking\u00a0space.",
    "Long text: " + " ".join(
        "Sentence number %d talks about databases, indexes, transactions and the write-ahead log." % i
        for i in range(40)),
    "Ideographic\u3000space and full-width ＡＢＣ letters.",
]


def main():
    from sentence_transformers import SentenceTransformer
    import sentence_transformers
    import torch
    import transformers

    model = SentenceTransformer(MODEL, device="cpu")
    tok = model.tokenizer
    msl = model.max_seq_length
    os.makedirs(OUT, exist_ok=True)
    for s in SENTENCES:
        assert "\n" not in s and "\r" not in s
    with open(os.path.join(OUT, "sentences.txt"), "w", encoding="utf-8", newline="\n") as f:
        for s in SENTENCES:
            f.write(s + "\n")
    with open(os.path.join(OUT, "ids.txt"), "w") as f:
        for s in SENTENCES:
            ids = tok(s, truncation=True, max_length=msl)["input_ids"]
            f.write(" ".join(str(i) for i in ids) + "\n")
    vecs = model.encode(SENTENCES, batch_size=16, normalize_embeddings=True,
                        convert_to_numpy=True)
    n, dim = vecs.shape
    with open(os.path.join(OUT, "vectors.f32"), "wb") as f:
        for row in vecs:
            f.write(struct.pack("<%df" % dim, *[float(v) for v in row]))
    with open(os.path.join(OUT, "meta.txt"), "w") as f:
        f.write("%d %d %d\n" % (n, dim, msl))
        f.write("sentence-transformers %s, transformers %s, torch %s\n" % (
            sentence_transformers.__version__, transformers.__version__, torch.__version__))
    print("wrote %d sentences, dim %d, max_seq_length %d into %s" % (n, dim, msl, OUT))


if __name__ == "__main__":
    sys.exit(main())
