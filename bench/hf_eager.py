# hf_eager.py: the HF transformers peer for `lode bench`: LlamaForCausalLM of a named shape
# with random bf16 weights, run eagerly (no compile, no CUDA graphs; default attention,
# i.e. SDPA), timed with CUDA synchronization: prefill tokens/s at given prompt lengths
# (logits of the last position only) and greedy decode tokens/s of 128 new tokens at given
# batch sizes. Writes one JSON line per measurement to --json.
# usage: python3 bench/hf_eager.py --shape llama3-8b [--prefill 512,2048] [--batch 1,16]
import argparse, json, os, time, torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                         tie_word_embeddings=True, rope_theta=100000.0),
    "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                        tie_word_embeddings=True, rope_theta=500000.0),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                      tie_word_embeddings=False, rope_theta=500000.0),
}

ap = argparse.ArgumentParser()
ap.add_argument("--shape", required=True)
ap.add_argument("--prefill", default="512,2048")
ap.add_argument("--batch", default="1,16")
ap.add_argument("--steps", type=int, default=128)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "hf_eager.jsonl"))
a = ap.parse_args()

cfg = LlamaConfig(**SHAPES[a.shape], rms_norm_eps=1e-5, max_position_embeddings=8192)
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg)
model.eval()
gpu = torch.cuda.get_device_name(0)
out = open(a.json, "a")

def timed(fn, reps):
    fn(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]

with torch.no_grad():
    for L in [int(x) for x in a.prefill.split(",") if x]:
        ids = torch.randint(0, cfg.vocab_size, (1, L), device="cuda")
        def pf():
            try:
                model(ids, use_cache=False, logits_to_keep=1)
            except TypeError:
                model(ids, use_cache=False)
        t = timed(pf, a.reps)
        r = dict(gpu=gpu, peer="hf_eager", shape=a.shape, metric="prefill", n=L, tok_s=round(L / t, 1), ms=round(t * 1e3, 3))
        print(json.dumps(r), flush=True); out.write(json.dumps(r) + "\n")
    for B in [int(x) for x in a.batch.split(",") if x]:
        ids = torch.randint(0, cfg.vocab_size, (B, 128), device="cuda")
        def gen():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=a.steps,
                           min_new_tokens=a.steps, do_sample=False, pad_token_id=0)
        t = timed(gen, a.reps)
        # prefill of the 128-token prompt is inside; it is small next to 128 decode steps
        r = dict(gpu=gpu, peer="hf_eager", shape=a.shape, metric="decode", batch=B, tok_s=round(B * a.steps / t, 1), ms_step=round(t / a.steps * 1e3, 3))
        print(json.dumps(r), flush=True); out.write(json.dumps(r) + "\n")
