# hf_compare.py: lode's CUDA decoder against HF transformers on the same random weights.
# Writes a synthetic llama model (`lode synth`, default shape llama3.2-1b, BF16) as GGUF and
# as safetensors, lets lode decode greedily 128 tokens after each of 4 prompts (saving the
# logits of every chosen token), then runs HF LlamaForCausalLM (bf16, on the GPU) on prompt +
# generated tokens in one pass and reports, per prompt: top-1 agreement (HF's argmax at each
# step equals lode's choice) and the max relative L2 error of the logits rows.
# usage: python3 scripts/hf_compare.py --lode build-cuda/lode --out DIR [--shape llama3.2-1b]
import argparse, json, os, subprocess, sys, time
import numpy as np
import torch
from transformers import LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--lode", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--work", default="/tmp/hf_compare")
ap.add_argument("--shape", default="llama3.2-1b")
ap.add_argument("--steps", type=int, default=128)
ap.add_argument("--seed", type=int, default=7)
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
gguf, hfdir = os.path.join(a.work, "m.gguf"), os.path.join(a.work, "hf")
t0 = time.time()
subprocess.run([a.lode, "synth", "--shape", a.shape, "--type", "bf16", "--seed", str(a.seed),
                "-o", gguf, "--hf", hfdir], check=True)
print(f"synth: {time.time() - t0:.1f} s", flush=True)

model = LlamaForCausalLM.from_pretrained(hfdir, torch_dtype=torch.bfloat16).cuda().eval()
V = model.config.vocab_size
rng = np.random.default_rng(a.seed)
prompts = [rng.integers(0, V - 3, n).tolist() for n in (8, 16, 32, 64)]
rows = []
for i, p in enumerate(prompts):
    lpath = os.path.join(a.work, f"logits{i}.bin")
    r = subprocess.run([a.lode, "bench", "--model", gguf, "--generate", ",".join(map(str, p)),
                        "--steps", str(a.steps), "--prefill", "64", "--batch", "1",
                        "--logits-out", lpath], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr); sys.exit(1)
    gen = [int(x) for x in next(l for l in r.stdout.splitlines() if l.startswith("GENERATED")).split()[1:]]
    lode = np.fromfile(lpath, dtype=np.float32).reshape(len(gen), V)
    ids = torch.tensor([p + gen[:-1]], device="cuda")
    with torch.no_grad():
        hf = model(ids).logits[0, len(p) - 1:].float().cpu().numpy()
    agree = float(np.mean(hf.argmax(-1) == np.array(gen)))
    rel = np.linalg.norm(lode - hf, axis=-1) / np.linalg.norm(hf, axis=-1)
    rows.append(dict(prompt_len=len(p), steps=len(gen), top1_agree=round(agree, 4),
                     max_rel_logit_err=float(rel.max()), mean_rel_logit_err=float(rel.mean())))
    print(json.dumps(rows[-1]), flush=True)
res = dict(gpu=torch.cuda.get_device_name(0), shape=a.shape, type="bf16", prompts=rows,
           top1_agree=round(float(np.mean([r["top1_agree"] for r in rows])), 4),
           max_rel_logit_err=max(r["max_rel_logit_err"] for r in rows))
print("HF-COMPARE", json.dumps(res))
json.dump(res, open(os.path.join(a.out, "hf_compare.json"), "w"), indent=1)
