#!/usr/bin/env python3
"""Embedding throughput of sentence-transformers on PyTorch CPU, the reference for
bench/bench_embed.c: the same model folder, the same chunks file, the given thread
counts. Prints one markdown table row per thread count: chunks per wall second and per
CPU second of the process (best of 2 runs each).

  st_embed.py MODEL_DIR CHUNKS_FILE THREADS...
"""
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main():
    model_dir, chunks_file = sys.argv[1], sys.argv[2]
    threads = [int(t) for t in sys.argv[3:]]
    import torch
    from sentence_transformers import SentenceTransformer
    with open(chunks_file, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    model = SentenceTransformer(model_dir, device="cpu")
    for th in threads:
        torch.set_num_threads(th)
        model.encode(texts[:16], batch_size=32)
        best = best_cpu = 0.0
        for _ in range(2):
            t0, c0 = time.perf_counter(), time.process_time()
            model.encode(texts, batch_size=32, normalize_embeddings=True)
            best = max(best, len(texts) / (time.perf_counter() - t0))
            best_cpu = max(best_cpu, len(texts) / (time.process_time() - c0))
        print("| sentence-transformers %s, torch %s | %d | %.1f | %.1f | |" % (
            __import__("sentence_transformers").__version__, torch.__version__, th, best,
            best_cpu))


if __name__ == "__main__":
    main()
