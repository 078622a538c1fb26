#!/usr/bin/env bash
# gpu-prebuilt.sh: packs the CUDA build of this machine for scripts/gpu-check.sh on a GPU
# machine that lacks this one's libraries (sqlite, libmicrohttpd, cmocka, ...) or its time to
# build. Writes prebuilt.tar.xz in the repository root (ignored by git), which holds:
#   lode, test_cuda, test_cuda_synth, bench_gpu_serve, bench_qmm   stripped, from build-cuda/
#   lode-ktrace              lode with the kernel timeline trace (make CUDA=1 KTRACE=1)
#   lib/                     the shared libraries they link beyond libc and the CUDA runtime
#   peers/torch_graphs.py    the CUDA-graph peer, when ../shared/peers has it
#   COMMIT                   the commit, its date and the nvcc release they were built from
# scripts/gpu-check.sh unpacks it into prebuilt/ and uses those binaries when they run.
# Run through `make gpu-prebuilt`, which builds them first (make CUDA=1 ENGINE_ONLY=1).
set -euo pipefail
cd "$(dirname "$0")/.."
BINS="build-cuda/lode build-cuda/tests/test_cuda build-cuda/tests/test_cuda_synth build-cuda/bench/bench_gpu_serve build-cuda/bench/bench_qmm"
for b in $BINS; do
  [ -x "$b" ] || { echo "gpu-prebuilt: $b is missing (make gpu-prebuilt builds it)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lib"
for b in $BINS; do
  strip -o "$tmp/$(basename "$b")" "$b"
done
[ -x build-cuda-ktrace/lode ] || { echo "gpu-prebuilt: build-cuda-ktrace/lode is missing" >&2; exit 1; }
strip -o "$tmp/lode-ktrace" build-cuda-ktrace/lode
# libraries the binaries need that a bare GPU machine may not have: everything ldd resolves
# but the C runtime and CUDA's own
for b in $BINS; do
  ldd "$b" | awk '$3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  case "$name" in
    libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libstdc++.so* | \
      libgcc_s.so* | libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so*) ;;
    *) cp -L "$path" "$tmp/lib/$name" ;;
  esac
done
if [ -f ../shared/peers/torch_graphs.py ]; then
  mkdir -p "$tmp/peers"
  cp ../shared/peers/torch_graphs.py "$tmp/peers/"
fi
echo "binaries of commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')" \
  "($(git log -1 --format=%cd --date=iso)), built with make CUDA=1 ENGINE_ONLY=1 (lode-ktrace: KTRACE=1)," \
  "nvcc $(nvcc --version | grep -o 'release [0-9.]*')" >"$tmp/COMMIT"
tar -C "$tmp" -cJf prebuilt.tar.xz .
size=$(stat -c %s prebuilt.tar.xz)
echo "gpu-prebuilt: prebuilt.tar.xz, $((size / 1048576)) MiB: $(cd "$tmp" && ls | tr '\n' ' ')"
cat "$tmp/COMMIT"
