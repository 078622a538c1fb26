#!/usr/bin/env bash
# gpu-check.sh: one call on the GPU machine: build (make CUDA=1; the engine alone when the
# service libraries are absent; binaries prebuilt elsewhere in prebuilt/, or packed by `make
# gpu-prebuilt` into prebuilt.tar.xz, are used when they
# run), the CUDA tests, the HF comparison, `lode bench` on the issue's shapes, the two peers
# (../shared/peers/torch_graphs.py or peers/torch_graphs.py, and HF transformers eager) in
# the same run, where decode time goes (per-op profile of decode and of a 2048-token prefill,
# and the decode step without programmatic launch, LODE_CUDA_PDL=0) for the target shapes,
# the kernel timeline of their decode step inside its CUDA graph (the trace build, make CUDA=1
# KTRACE=1: each kernel's span against its weights' time at the copy rate) and the kernels'
# registers, stack frames and local memory (cuobjdump, where the CUDA toolkit has it), and a
# table printed last. Logs and JSON go to $OUT (default /tmp/gpu-check).
#   scripts/gpu-check.sh [quick|hf|serve]  quick: tests and two small benches only; hf: only the
#                                    HF peer and comparison (after a run without them); serve:
#                                    the tests and the serving benchmark only
# The serving benchmark (bench/bench_gpu_serve.c: the scheduler's batches on the GPU,
# llama3-8b BF16, 128 prompt + 128 output tokens at 1..256 concurrent) runs in full and serve.
# Environment: GPU_CHECK_SKIP_HF=1 skips the HF peer and comparison; GPU_CHECK_BENCH="shape:type ...";
# GPU_CHECK_VARIANTS="label:VAR=v,VAR=v ..." times batch-1 decode of the detail shapes per setting;
# GPU_CHECK_BENCH_ARGS adds `lode bench` arguments (e.g. "--batch 1"); GPU_CHECK_SKIP_SERVE=1
# leaves the serving benchmark out of full (to fit one call of limited time); GPU_CHECK_SKIP_PEER=1
# skips the torch CUDA-graph peer. Full also times the quantized matrix product by token count
# (bench/bench_qmm.c) and serves llama3-8b Q4_0 to 1..64 streams (GPU_CHECK_SKIP_QMM=1: not).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
MODE=${1:-full}
export PYTHONUNBUFFERED=1
if [ -f prebuilt.tar.xz ] && [ ! -x prebuilt/lode ]; then
  mkdir -p prebuilt && tar -C prebuilt -xJf prebuilt.tar.xz
fi
[ -d prebuilt/lib ] && export LD_LIBRARY_PATH="$PWD/prebuilt/lib:${LD_LIBRARY_PATH:-}"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
log() { echo "== $(date -u +%H:%M:%S) $*"; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
git log -1 --format='commit %H %cd' 2>/dev/null | tee -a "$OUT/gpu.txt" || true
[ -f COMMIT ] && cat COMMIT | tee -a "$OUT/gpu.txt"
[ -f prebuilt/COMMIT ] && cat prebuilt/COMMIT | tee -a "$OUT/gpu.txt"

# ---- build ----------------------------------------------------------------------------
LODE=build-cuda/lode
TEST=build-cuda/tests/test_cuda
TEST2=build-cuda/tests/test_cuda_synth
SERVE=build-cuda/bench/bench_gpu_serve
QMM=build-cuda/bench/bench_qmm
KTR=build-cuda-ktrace/lode
if [ -x prebuilt/lode ] && prebuilt/lode --version >/dev/null 2>&1 && ! ldd prebuilt/test_cuda | grep -q "not found"; then
  log "using prebuilt binaries"
  LODE=prebuilt/lode TEST=prebuilt/test_cuda TEST2=prebuilt/test_cuda_synth SERVE=prebuilt/bench_gpu_serve
  QMM=prebuilt/bench_qmm KTR=prebuilt/lode-ktrace
else
  log "building"
  if pkg-config --exists sqlite3 libmicrohttpd jansson 2>/dev/null; then EO=0; else EO=1; fi
  make CUDA=1 ENGINE_ONLY=$EO -j"$(nproc)" build-cuda/lode build-cuda/tests/test_cuda build-cuda/tests/test_cuda_synth "$SERVE" "$QMM" >"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
  make CUDA=1 KTRACE=1 ENGINE_ONLY=$EO -j"$(nproc)" "$KTR" >>"$OUT/build.log" 2>&1 \
    || echo "the trace build failed (build.log); the kernel timeline is left out"
fi
[ -x "$KTR" ] || KTR=

# the kernels' registers, stack frames and local memory (where spills show), from the binary itself
rm -f "$OUT/resources.txt"
CUOBJDUMP=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null || true)
if [ -n "$CUOBJDUMP" ]; then
  "$CUOBJDUMP" --dump-resource-usage "$LODE" 2>/dev/null | python3 scripts/cuda-resources.py >"$OUT/resources.txt" \
    || echo "cuobjdump: no resource report"
fi

if [ "$MODE" != hf ]; then
# ---- tests ----------------------------------------------------------------------------
rm -f "$OUT/hf_eager.jsonl"
log "CUDA tests"
CMOCKA_MESSAGE_OUTPUT=stdout timeout 600 "$TEST" 2>&1 | tee "$OUT/test_cuda.log"
TEST_RC=${PIPESTATUS[0]}
LODE_BUILD=$(dirname "$LODE") CMOCKA_MESSAGE_OUTPUT=stdout timeout 300 "$TEST2" 2>&1 | tee -a "$OUT/test_cuda.log"
[ "${PIPESTATUS[0]}" = 0 ] || TEST_RC=1

# ---- the engine on the cuda backend (lode generate / chat on a synthetic model) --------
log "engine: generate and chat with --backend cuda"
SYN=${TMPDIR:-/tmp}/lode-gpu-check-s.gguf
"$LODE" synth --shape smollm2-135m --type q8_0 -o "$SYN" >/dev/null
for be in cuda cpu; do
  timeout 300 "$LODE" generate -m "$SYN" --backend $be -p "The quick brown fox" -n 48 --temp 0 --json \
    >"$OUT/generate_$be.json" 2>"$OUT/generate_$be.err" || { echo "generate --backend $be failed"; cat "$OUT/generate_$be.err"; }
done
python3 - "$OUT" <<'PY' | tee "$OUT/engine_cuda.txt"
import json, sys
d = sys.argv[1]
try:
    a, b = (json.load(open(f"{d}/generate_{x}.json")) for x in ("cuda", "cpu"))
    ta, tb = a["tokens"], b["tokens"]
    same = sum(x == y for x, y in zip(ta, tb))
    print(f"engine generate, smollm2-135m q8_0 synthetic, greedy 48 tokens: cuda vs cpu backend agree on {same}/{min(len(ta), len(tb))} tokens "
          f"(first divergence at {next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), None)}); "
          f"cuda {a.get('timings', {})}")
except Exception as e:
    print("engine generate comparison failed:", repr(e))
PY
printf 'Hello there\nWhat is two plus two?\n' | timeout 120 "$LODE" chat -m "$SYN" --backend cuda -n 16 --temp 0 \
  >"$OUT/chat_cuda.txt" 2>&1 && echo "lode chat --backend cuda: ok ($(wc -c <"$OUT/chat_cuda.txt") bytes of answers)" \
  || { echo "lode chat --backend cuda FAILED"; tail -5 "$OUT/chat_cuda.txt"; }

# ---- the serving core on the GPU --------------------------------------------------------
rm -f "$OUT/serve.log" "$OUT/serve_slack.log"
if { [ "$MODE" = full ] && [ "${GPU_CHECK_SKIP_SERVE:-0}" != 1 ]; } || [ "$MODE" = serve ]; then
  log "serving: llama3-8b bf16, 128 prompt + 128 output tokens at 1, 4, 16, 64, 256 concurrent"
  SYN8=${TMPDIR:-/tmp}/lode-gpu-check-8b.gguf
  "$LODE" synth --shape llama3-8b --type bf16 -o "$SYN8" >/dev/null \
    && timeout 420 "$SERVE" "$SYN8" 128 128 1,4,16,64,256,256 2>&1 | tee "$OUT/serve.log" \
    && { log "serving: 256 concurrent with the latency-aware prompt chunking on (slack 1.6, the CPU default)"
         timeout 240 "$SERVE" "$SYN8" 128 128 256 2048 1.6 2>&1 | tee "$OUT/serve_slack.log"; }
  rm -f "$SYN8"
fi

# ---- quantized weights times a few tokens: qmm.cu against dequantize + cuBLAS and the GEMV,
# and a quantized model served to many streams (full; GPU_CHECK_SKIP_QMM=1 leaves it out) --
rm -f "$OUT/qmm.log" "$OUT/serve_q.log"
if [ "$MODE" = full ] && [ "${GPU_CHECK_SKIP_QMM:-0}" != 1 ] && [ -x "$QMM" ]; then
  log "quantized matrix product by tokens: llama3-8b q4_0"
  timeout 240 "$QMM" --shape llama3-8b --type q4_0 --m 1,2,4,8,16,32,64,128 2>&1 | grep -v "^RESULT" | tee "$OUT/qmm.log"
  log "serving: llama3-8b q4_0, 128 prompt + 128 output tokens at 1, 2, 4, 8, 16, 64 concurrent"
  SYNQ=${TMPDIR:-/tmp}/lode-gpu-check-8b-q4_0.gguf
  "$LODE" synth --shape llama3-8b --type q4_0 -o "$SYNQ" >/dev/null \
    && timeout 300 "$SERVE" "$SYNQ" 128 128 1,2,4,8,16,64 2>&1 | tee "$OUT/serve_q.log"
  rm -f "$SYNQ"
fi

# ---- benchmarks -----------------------------------------------------------------------
rm -f "$OUT/bench.jsonl"
if [ "$MODE" != serve ]; then
if [ "$MODE" = quick ]; then
  BENCH=${GPU_CHECK_BENCH:-"smollm2-135m:q4_1 llama3.2-1b:bf16"}
else
  BENCH=${GPU_CHECK_BENCH:-"smollm2-135m:q4_1 smollm2-135m:bf16 llama3.2-1b:bf16 llama3.2-1b:q4_0 llama3-8b:bf16 llama3-8b:q4_0"}
fi
for sb in $BENCH; do
  log "lode bench $sb"
  timeout 300 "$LODE" bench --shape "${sb%%:*}" --type "${sb##*:}" ${GPU_CHECK_BENCH_ARGS:-} --json "$OUT/bench.jsonl" 2>&1 | tee -a "$OUT/bench.log"
done

# ---- where decode time goes: per-op profile and the same step without programmatic launch --
DETAIL=${GPU_CHECK_DETAIL:-"smollm2-135m:q4_1 llama3-8b:q4_0 llama3-8b:bf16"}
rm -f "$OUT/detail.log"
for sb in $DETAIL; do
  case " $BENCH " in *" $sb "*) ;; *) continue ;; esac
  log "decode detail $sb"
  timeout 120 "$LODE" bench --shape "${sb%%:*}" --type "${sb##*:}" --prefill 2048 --batch 1 --reps 3 --profile \
    >>"$OUT/detail.log" 2>&1
  LODE_CUDA_PDL=0 timeout 120 "$LODE" bench --shape "${sb%%:*}" --type "${sb##*:}" --prefill 512 --batch 1 --reps 3 \
    | sed 's/^RESULT /RESULT(no PDL) /' >>"$OUT/detail.log" 2>&1
  # the kernel timeline of the captured decode step (128-token prompt, as the bench's decode)
  if [ -n "$KTR" ]; then
    LODE_CUDA_KTRACE=1 timeout 120 "$KTR" bench --shape "${sb%%:*}" --type "${sb##*:}" --prefill 128 --batch 1 \
      --reps 1 >/dev/null 2>"$OUT/ktrace_${sb%%:*}_${sb##*:}.txt" || echo "trace run of $sb failed"
  fi
done
[ -f "$OUT/detail.log" ] && grep -v "^bench:" "$OUT/detail.log" | grep -v "^RESULT.* prefill"

# ---- variants: the decode step of the DETAIL shapes under environment settings -----------
# GPU_CHECK_VARIANTS="label:VAR=v,VAR=v label2:..." (e.g. LODE_CUDA_PDL=0, or BIN=path for
# another build of lode), each label run in turn, all in the same run, on one card.
if [ -n "${GPU_CHECK_VARIANTS:-}" ]; then
  rm -f "$OUT/variants.log"
  for round in $(seq "${GPU_CHECK_VARIANT_ROUNDS:-1}"); do
    for v in $GPU_CHECK_VARIANTS; do
      label=${v%%:*}
      envs=$(echo "${v#*:}" | tr ',' ' ')
      bin=$LODE # BIN=path runs another build of lode (a baseline) under the label
      for e in $envs; do case $e in BIN=*) bin=${e#BIN=} ;; esac; done
      for sb in $DETAIL; do
        case " $BENCH " in *" $sb "*) ;; *) continue ;; esac
        env $envs timeout 120 "$bin" bench --shape "${sb%%:*}" --type "${sb##*:}" --prefill 128 --batch 1 --reps 5 2>&1 \
          | grep "decode_b1" | sed "s/^RESULT /VARIANT $label round$round /" | tee -a "$OUT/variants.log"
      done
    done
  done
fi

# ---- peers ----------------------------------------------------------------------------
PEER=../shared/peers/torch_graphs.py
[ -f "$PEER" ] || PEER=peers/torch_graphs.py
[ -f "$PEER" ] || PEER=prebuilt/peers/torch_graphs.py
[ -f "$PEER" ] && PEER=$(realpath "$PEER")
SHAPES=$(for sb in $BENCH; do echo "${sb%%:*}"; done | sort -u)
if [ -f "$PEER" ] && [ "${GPU_CHECK_SKIP_PEER:-0}" != 1 ]; then
  ARGS=""
  for s in $SHAPES; do ARGS="$ARGS $s:1 $s:16"; done
  log "peer torch_graphs $ARGS"
  (cd "$OUT" && OUT="$OUT" timeout 600 python3 "$PEER" $ARGS) 2>&1 | tail -30 | tee "$OUT/peer_graphs.log"
fi
fi # MODE != serve
fi # MODE != hf
if [ "$MODE" = hf ]; then
  SHAPES=${GPU_CHECK_HF_SHAPES:-"smollm2-135m llama3.2-1b llama3-8b"}
  TEST_RC=0
fi
if [ "${GPU_CHECK_SKIP_HF:-0}" != 1 ] && [ "$MODE" != serve ]; then
  for s in $SHAPES; do
    log "peer HF eager $s"
    timeout 600 python3 bench/hf_eager.py --shape "$s" --json "$OUT/hf_eager.jsonl" 2>&1 | grep -v Warning | tail -8
  done
  if [ -f scripts/hf_compare.py ] && [ "$MODE" != quick ]; then
    log "HF comparison"
    timeout 600 python3 scripts/hf_compare.py --lode "$LODE" --out "$OUT" 2>&1 | tee "$OUT/hf_compare.log"
  fi
fi

log "table"
python3 scripts/gpu_table.py "$OUT" | tee "$OUT/table.txt"
[ -f "$OUT/variants.log" ] && { log "variants (decode b1)"; awk '{printf "%-14s %-7s %-13s %-5s %9s tok/s %s\n", $2, $3, $4, $5, $8, $14}' "$OUT/variants.log"; }
[ -f "$OUT/qmm.log" ] && grep -E "^(bench_qmm|\|)" "$OUT/qmm.log"
[ -f "$OUT/serve_q.log" ] && grep -E "^(model|\|)" "$OUT/serve_q.log"
[ -f "$OUT/serve.log" ] && grep -E "^(model|\|)" "$OUT/serve.log"
[ -f "$OUT/serve_slack.log" ] && grep -E "^(model|\| 256)" "$OUT/serve_slack.log"
echo "CUDA tests exit status: $TEST_RC"
