#!/usr/bin/env python3
"""Gives every chunk of a synthetic store (bench/make_chunks.py --corpus, ingested with
--lexical-only) a vector, so that dense and hybrid search can be timed at a size the real
documentation does not reach without embedding 100k chunks (hours on two cores).

  synth_vectors.py BIG_DB SOURCE_DB MODEL_PATH

Chunk i gets the embedding of a chunk of SOURCE_DB (the SQLite documentation ingested with
embeddings by the same model), drawn at random, plus Gaussian noise of norm 0.5,
normalized again (cosine about 0.9 to its source): the vectors cluster the way real
embeddings do, which is what an approximate index's recall depends on (uniform random
vectors are its worst case and nothing like text). With SOURCE_DB "-" the vectors are
uniform on the sphere instead. The store's embedding settings name the model, so that
`lode search` and `lode eval` embed queries with it.
"""
import sqlite3
import sys

import numpy as np


def main():
    big, source, model_path = sys.argv[1:4]
    db = sqlite3.connect(big)
    ids = np.array([r[0] for r in db.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)
    rng = np.random.default_rng(7)
    if source != "-":
        src = sqlite3.connect(source)
        model, dim = src.execute(
            "SELECT (SELECT value FROM settings WHERE key = 'embed_model'), "
            "(SELECT value FROM settings WHERE key = 'embed_dim')").fetchone()
        dim = int(dim)
        base = np.frombuffer(b"".join(r[0] for r in src.execute(
            "SELECT vec FROM vectors WHERE model = ?", (model,))), dtype="<f4").reshape(-1, dim)
        if len(base) == 0:
            sys.exit("synth_vectors: %s has no vectors" % source)
        v = base[rng.integers(0, len(base), len(ids))]
        noise = rng.standard_normal((len(ids), dim)).astype("<f4")
        noise *= 0.5 / np.linalg.norm(noise, axis=1, keepdims=True)
        v = v + noise
    else:
        model, dim = "all-MiniLM-L6-v2", 384
        v = rng.standard_normal((len(ids), dim)).astype("<f4")
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v = v.astype("<f4")
    with db:
        db.execute("DELETE FROM vectors")
        db.executemany("INSERT INTO vectors(chunk_id, model, dim, vec) VALUES (?, ?, ?, ?)",
                       ((int(i), model, dim, v[k].tobytes()) for k, i in enumerate(ids)))
        db.executemany("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)",
                       [("embed_model", model), ("embed_dim", str(dim)), ("embed_path", model_path)])
    print("synth_vectors: %d vectors (%s, %d dimensions) from %s" %
          (len(ids), model, dim, source if source != "-" else "uniform noise"))


if __name__ == "__main__":
    main()
