"""llama.cpp (through llama-cpp-python) measured as bench_engine.c measures lode.

    python bench_engine_llamacpp.py MODEL THREADS IDS_FILE [DECODE=128] [REPS=3]

The prompt's token ids are evaluated in one call (n_batch = n_ubatch = the prompt
length), the first token is the argmax of the last logits (time to first token), then
DECODE single-token evals with argmax. Best of REPS; peak RSS of the process at the end.
Prints: llama.cpp THREADS PREFILL_TOK_S DECODE_TOK_S TTFT_MS PEAK_RSS_MB
"""

import resource
import sys
import time

import numpy as np
from llama_cpp import Llama


def main():
    model, threads, ids_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n_decode = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    reps = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    ids = [int(t) for t in open(ids_file).read().split()]
    n = len(ids)
    llm = Llama(model_path=model, n_ctx=n + n_decode + 16, n_batch=n, n_ubatch=n,
                n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False)
    best_prefill = best_decode = best_ttft = float("inf")
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t2 = time.perf_counter()
        for _ in range(n_decode):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t3 = time.perf_counter()
        best_prefill = min(best_prefill, t1 - t0)
        best_ttft = min(best_ttft, (t2 - t0) * 1000)
        best_decode = min(best_decode, t3 - t2)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"llama.cpp {threads} {n / best_prefill:.1f} {n_decode / best_decode:.1f} "
          f"{best_ttft:.1f} {rss_mb:.1f}")


if __name__ == "__main__":
    main()
