#!/usr/bin/env python3
"""cuda-resources.py: the registers, stack frame and local memory of each CUDA kernel of a binary.

Reads `cuobjdump --dump-resource-usage BINARY` on stdin and prints, per kernel template (its
instances grouped), the number of instances, their registers a thread (least-most), static
shared memory, stack frame and local memory a thread. A stack frame holds what ptxas could not
keep in registers, spills or arrays indexed at run time; cuobjdump does not tell which (ptxas
-v does). The instances with a frame or local memory are listed by name, the largest first,
since on a kernel that streams weights those bytes are memory round trips inside the loop.
Names are demangled with cu++filt or c++filt when either is on the PATH or in
/usr/local/cuda/bin.
"""
import os
import re
import shutil
import subprocess
import sys


def demangle(names):
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool and os.access("/usr/local/cuda/bin/cu++filt", os.X_OK):
        tool = "/usr/local/cuda/bin/cu++filt"
    if not tool or not names:
        return {n: n for n in names}
    try:
        out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True,
                             timeout=60, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {n: n for n in names}
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def base(name):
    """The kernel's name without its namespace, template arguments or parameters."""
    depth, cut = 0, []
    for ch in name:  # drop everything inside <...> and (...)
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif depth == 0:
            cut.append(ch)
    s = "".join(cut).split()[-1] if "".join(cut).split() else name
    return s.split("::")[-1]


def main():
    arch, funcs, cur = "?", [], None
    for line in sys.stdin:
        m = re.match(r"\s*arch = (\S+)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            cur = m.group(1)
            continue
        if cur and "REG:" in line:
            kv = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            funcs.append((arch, cur, {k: int(v) for k, v in kv.items()}))
            cur = None
    if not funcs:
        sys.exit("cuda-resources: no kernels in the input (is it cuobjdump --dump-resource-usage?)")
    names = demangle(sorted({f for _, f, _ in funcs}))
    groups = {}
    for a, f, r in funcs:
        groups.setdefault((a, base(names[f])), []).append((names[f], r))
    print("| arch | kernel | instances | registers | shared | stack frame | local |")
    print("|---|---|---|---|---|---|---|")
    framed = []
    for (a, b), inst in sorted(groups.items()):
        col = lambda k: [r.get(k, 0) for _, r in inst]
        rng = lambda v: f"{min(v)}" if min(v) == max(v) else f"{min(v)}-{max(v)}"
        print(f"| {a} | {b} | {len(inst)} | {rng(col('REG'))} | {rng(col('SHARED'))} | "
              f"{rng(col('STACK'))} | {rng(col('LOCAL'))} |")
        framed += [(a, n, r) for n, r in inst if r.get("LOCAL", 0) or r.get("STACK", 0)]
    if not framed:
        print("no instance has a stack frame or local memory")
        return
    framed.sort(key=lambda t: -(t[2].get("STACK", 0) + t[2].get("LOCAL", 0)))
    most = 16
    print(f"instances with a stack frame or local memory (spills or arrays out of registers), "
          f"{len(framed)}; the largest {min(most, len(framed))}:")
    for a, n, r in framed[:most]:
        print(f"  {a} {n[:160]}: REG {r.get('REG', 0)}, STACK {r.get('STACK', 0)}, LOCAL {r.get('LOCAL', 0)}")

if __name__ == "__main__":
    main()
