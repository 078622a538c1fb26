# gpu_table.py: the table gpu-check.sh prints last: lode bench results beside the peers
# (torch CUDA graphs, HF eager) on the same card, and the targets with pass/miss.
# usage: python3 scripts/gpu_table.py OUTDIR
import json, os, re, subprocess, sys

d = sys.argv[1]
def lines(name):
    p = os.path.join(d, name)
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []

bench, hf = lines("bench.jsonl"), lines("hf_eager.jsonl")
peer = {}
p = os.path.join(d, "peer_graphs.json")
if os.path.exists(p):
    peer = json.load(open(p))
gpu = bench[0]["gpu"] if bench else peer.get("gpu", "?")
copy = next((b["copy_GBps"] for b in bench if b["metric"] == "decode"), 0)

def get(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None

print(f"GPU: {gpu}; device copy (read+write) {copy:.0f} GB/s (lode), {peer.get('copy_TBps_rw', 0)*1000:.0f} GB/s (torch)")
hdr = f"{'shape':13} {'type':5} | {'pf512 t/s':>9} {'pf2048 t/s':>10} | {'dec b1 t/s':>10} {'GB/s':>5} {'%copy':>5} | {'dec b16 t/s':>11}"
print(hdr); print("-" * len(hdr))
keys = []
for b in bench:
    k = (b["shape"], b["type"])
    if k not in keys: keys.append(k)
for s, t in keys:
    p5, p2 = get(bench, shape=s, type=t, metric="prefill", n=512), get(bench, shape=s, type=t, metric="prefill", n=2048)
    d1, d16 = get(bench, shape=s, type=t, metric="decode", batch=1), get(bench, shape=s, type=t, metric="decode", batch=16)
    f = lambda r, k: f"{r[k]:.0f}" if r else "-"
    print(f"{s:13} {t:5} | {f(p5,'tok_s'):>9} {f(p2,'tok_s'):>10} | {f(d1,'tok_s'):>10} {f(d1,'weight_GBps'):>5} "
          f"{(100*d1['copy_frac'] if d1 else 0):5.1f} | {f(d16,'tok_s'):>11}")
print("peers (bf16):")
for s in sorted({k[0] for k in keys}):
    g1, g16 = peer.get(f"{s}:bs1"), peer.get(f"{s}:bs16")
    h5, h2 = get(hf, shape=s, metric="prefill", n=512), get(hf, shape=s, metric="prefill", n=2048)
    h1, h16 = get(hf, shape=s, metric="decode", batch=1), get(hf, shape=s, metric="decode", batch=16)
    gs = lambda g: f"{g['tok_s']:.0f}" if isinstance(g, dict) else "-"
    f = lambda r: f"{r['tok_s']:.0f}" if r else "-"
    print(f"  {s:13} torch-graphs dec b1 {gs(g1):>6} b16 {gs(g16):>6} | HF eager pf512 {f(h5):>7} pf2048 {f(h2):>7} dec b1 {f(h1):>5} b16 {f(h16):>6}")
print("targets:")
missed = []
explain = False  # a decode target was missed: print the kernels' resources too
def target(name, ok, detail):
    print(f"  [{'MET ' if ok else 'MISS' if ok is not None else 'n/a '}] {name}: {detail}")
    return ok
r = get(bench, shape="llama3-8b", type="bf16", metric="decode", batch=1)
missed.append((("llama3-8b", "bf16"), target("llama3-8b bf16 b1 decode >= 85% of copy", r and r["copy_frac"] >= 0.85 if r else None, f"{100*r['copy_frac']:.1f}%" if r else "not run")))
r = get(bench, shape="llama3-8b", type="q4_0", metric="decode", batch=1)
missed.append((("llama3-8b", "q4_0"), target("llama3-8b q4_0 b1 decode >= 70% of copy", r and r["copy_frac"] >= 0.70 if r else None, f"{100*r['copy_frac']:.1f}%" if r else "not run")))
r = get(bench, shape="smollm2-135m", type="q4_1", metric="decode", batch=1)
missed.append((("smollm2-135m", "q4_1"), target("smollm2-135m q4_1 b1 decode >= 3000 tok/s", r and r["tok_s"] >= 3000 if r else None, f"{r['tok_s']:.0f} tok/s" if r else "not run")))
r, h = get(bench, shape="llama3-8b", type="bf16", metric="prefill", n=2048), get(hf, shape="llama3-8b", metric="prefill", n=2048)
target("llama3-8b bf16 prefill@2048 >= HF eager", r["tok_s"] >= h["tok_s"] if r and h else None,
       f"{r['tok_s']:.0f} vs {h['tok_s']:.0f} tok/s" if r and h else "not run")
# Where a missed decode target's time goes: the step against its floor (the weights it reads
# at the copy rate measured in the same run), and the per-op times of one eager step
# (`lode bench --profile` in detail.log; each includes its launch gap, which the graph hides).
prof = {}
p = os.path.join(d, "detail.log")
if os.path.exists(p):
    for l in open(p):
        m = re.match(r"^PROFILE (\S+?)/(\S+?)/b1 (.+?)\s+x(\d+)\s+([\d.]+) ms", l)
        if m:
            prof.setdefault((m.group(1), m.group(2)), []).append((m.group(3).strip(), int(m.group(4)), float(m.group(5))))
for (s, t), ok in missed:
    r = get(bench, shape=s, type=t, metric="decode", batch=1)
    if not r or ok:
        continue
    step_ms = 1e3 / r["tok_s"]
    floor_ms = 1e3 * r["weight_GBps"] / r["tok_s"] / copy if copy else 0
    ops = prof.get((s, t), [])
    nl = max((n for _, n, _ in ops), default=0)
    per = ", ".join(f"{name} {1e3 * ms / n:.1f}" for name, n, ms in ops if n == nl and nl > 1)
    kern = sum(n for _, n, _ in ops)
    print(f"  where the time goes, {s} {t}: {step_ms:.3f} ms a step (graph) against {floor_ms:.3f} ms to read "
          f"its weights at the copy rate" + (f"; eager step, us a layer: {per} ({kern} timed ops a step)" if per else
          "; no per-op profile in this run"))
    # the kernel timeline of the graph's step (trace build), each kernel against its bytes
    kt = os.path.join(d, f"ktrace_{s}_{t}.txt")
    if os.path.exists(kt):
        here = os.path.dirname(os.path.abspath(__file__))
        r2 = subprocess.run([sys.executable, os.path.join(here, "ktrace-summary.py"), "--copy", f"{copy:.0f}", kt],
                            capture_output=True, text=True)
        print(f"    kernel timeline of the decode step in its graph ({s} {t}, 128-token prompt):")
        for l in (r2.stdout or r2.stderr).splitlines():
            print("    " + l)
    explain = True
p = os.path.join(d, "hf_compare.json")
if os.path.exists(p):
    h = json.load(open(p))
    print(f"HF comparison ({h['shape']} {h['type']}, {len(h['prompts'])} prompts x {h['prompts'][0]['steps']} greedy tokens): "
          f"top-1 agreement {100*h['top1_agree']:.1f}%, max relative logit error {h['max_rel_logit_err']:.3e}")
p = os.path.join(d, "resources.txt")
if explain and os.path.exists(p):
    print("the kernels' registers, stack frame and local memory a thread (cuobjdump of the binary):")
    for l in open(p):
        print("  " + l.rstrip())
