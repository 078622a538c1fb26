#!/usr/bin/env python3
"""ktrace-summary.py: where each kernel of a batch-1 decode step spends its time.

Reads the "KT" lines that a trace build prints at exit (make CUDA=1 KTRACE=1, run with
LODE_CUDA_KTRACE=1, e.g. `build-cuda-ktrace/lode bench --shape llama3-8b --type q4_0 --prefill
128 --batch 1 2> trace.txt`) and prints, for each kind of kernel of a layer, the medians over
the middle layers of:

  resident  how long before the previous kernel's last block ended this kernel's median block
            started (negative: after it)
  released  when its wait for the previous kernel returned, after that same moment
  staged    from the release to the median block's input staged (attention: its tiles done)
  to end    from there to the median block's end
  tail      the last block's end after the median block's
  span      from the previous kernel's end to this kernel's end
  MB        the weights the kernel reads (a KV cache's bytes are not counted)
  at copy   the time those bytes take at the copy rate given by --copy GBPS (the card's device
            copy bandwidth, measured in the same run), and
  of span   that time as a fraction of the span: how close the kernel runs to the memory floor

Kernels are named by the trace (gemv-rms, attn, gemv-attn, attn-o, gemv-swiglu, gemv-plain) and
grouped into layers by position: the RMS-normalized GEMVs before a layer's o projection are its
QKV, the GEMV that reads the attention (or the attention + o kernel) is o, the RMS-normalized
GEMVs after it gate/up, the
GEMV after those down (SwiGLU input, or plain where gate/up wrote h); a last RMS-normalized GEMV after the final layer is the head.
"""
import statistics
import sys


def parse(path):
    recs = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("KT ") or line.startswith("KT idx"):
                continue
            head, *events = line.rstrip("\n").split("|")
            h = head.split()
            ev = []
            for e in events:
                x = e.split()
                ev.append(None if not x or x[0] == "-" else tuple(int(v) for v in x))
            nbytes = int(h[4]) if len(h) > 4 else 0
            recs.append({"name": h[2], "blocks": int(h[3]), "bytes": nbytes, "ev": ev})
    return recs


def label(recs):
    """Kind of each launch, and the index of the layer it belongs to. RMS-normalized GEMVs are
    the QKV (one or three launches) until the layer's o projection, gate/up (one or two) after
    it; the one after the last layer is the head."""
    out, layer, seen_o = [], 0, False
    for i, r in enumerate(recs):
        n = r["name"]
        if n == "attn":
            kind = "attention"
        elif n == "gemv-attn":
            kind, seen_o = "o", True
        elif n == "attn-o":
            kind, seen_o = "attention + o", True
        elif n == "gemv-swiglu" or (n == "gemv-plain" and seen_o):
            kind = "down"  # gemv-plain: h written by the gate/up kernel (KRN_Y_SWIGLU)
        elif n == "gemv-rms":
            if i + 1 == len(recs):
                kind = "head"
            else:
                kind = "gate/up" if seen_o else "qkv"
        else:
            kind = n
        out.append((kind, layer))
        if kind == "down":
            layer, seen_o = layer + 1, False
    return out


def ev(r, e, i):
    v = r["ev"][e] if e < len(r["ev"]) else None
    return None if v is None else v[i]


def main():
    args, copy = sys.argv[1:], 0.0
    if len(args) == 3 and args[0] == "--copy":
        copy, args = float(args[1]), args[2:]
    if len(args) != 1:
        sys.exit("usage: ktrace-summary.py [--copy GBPS] TRACE (the stderr of a LODE_CUDA_KTRACE=1 run)")
    recs = parse(args[0])
    if len(recs) < 2:
        sys.exit("ktrace-summary: no KT lines (a trace build, LODE_CUDA_KTRACE=1, and a "
                 "captured decode step are needed)")
    labels = label(recs)
    n_layers = sum(1 for k, _ in labels if k == "down")
    lo, hi = (1, n_layers - 1) if n_layers > 3 else (0, n_layers)
    order, rows = [], {}
    for i in range(1, len(recs)):
        kind, layer = labels[i]
        if not lo <= layer < hi and kind != "head":
            continue
        r, prev_end = recs[i], ev(recs[i - 1], 3, 2)
        entry, wait, staged = ev(r, 0, 1), ev(r, 1, 1), ev(r, 2, 1)
        end, end_max = ev(r, 3, 1), ev(r, 3, 2)
        if None in (prev_end, entry, end, end_max):
            continue
        m = {"blocks": r["blocks"], "bytes": r["bytes"], "resident": prev_end - entry,
             "tail": end_max - end, "span": end_max - prev_end}
        if wait is not None:
            m["released"] = wait - prev_end
            if staged is not None:
                m["staged"], m["to end"] = staged - wait, end - staged
        if kind not in rows:
            order.append(kind)
        for k, v in m.items():
            rows.setdefault(kind, {}).setdefault(k, []).append(v)
    spans, lbytes = [], []
    for layer in range(lo, hi):
        idx = [i for i, (k, l) in enumerate(labels) if l == layer and k != "head"]
        if idx and idx[0] > 0:
            a, b = ev(recs[idx[0] - 1], 3, 2), ev(recs[idx[-1]], 3, 2)
            if a is not None and b is not None:
                spans.append(b - a)
                lbytes.append(sum(recs[i]["bytes"] for i in idx))
    # the time a kernel's weights take at the copy rate, us (GB/s = bytes/ns)
    floor_us = (lambda nbytes: nbytes / copy / 1000) if copy > 0 else None
    print(f"{len(recs)} launches, {n_layers} layers; medians over layers {lo}..{hi - 1}, us")
    if spans:
        span, nb = statistics.median(spans) / 1000, statistics.median(lbytes)
        line = f"layer span {span:.1f} us"
        if nb:
            line += f"; its weights {nb / 1e6:.1f} MB"
            if floor_us:
                f = floor_us(nb)
                line += f", {f:.1f} us at the copy rate ({copy:.0f} GB/s): {100 * f / span:.0f}% of the span"
        print(line)
    cols = ["blocks", "resident", "released", "staged", "to end", "tail", "span", "MB"]
    if floor_us:
        cols += ["at copy", "of span"]
    print("| kernel | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for kind in order:
        cells = []
        for c in cols:
            v = rows[kind].get("bytes" if c in ("MB", "at copy", "of span") else c)
            if not v or (c in ("MB", "at copy", "of span") and not statistics.median(v)):
                cells.append("")
            elif c == "MB":
                cells.append(f"{statistics.median(v) / 1e6:.1f}")
            elif c == "at copy":
                cells.append(f"{floor_us(statistics.median(v)):.2f}")
            elif c == "of span":
                sp = statistics.median(rows[kind]["span"]) / 1000
                cells.append(f"{100 * floor_us(statistics.median(v)) / sp:.0f}%" if sp > 0 else "")
            elif c == "blocks":
                cells.append(str(int(statistics.median(v))))
            else:
                cells.append(f"{statistics.median(v) / 1000:.2f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
