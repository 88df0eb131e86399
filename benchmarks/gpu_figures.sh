#!/usr/bin/env bash
# The GPU figures in one pass (run by hand on a CUDA machine; not a test): the gpu-marked tests, the
# throughput suite over the full-size models (batch sizes x fp32/fp16/bf16 x einsum/SDPA), end-to-end sampler
# throughput (benchmarks/bench_sampler.py) for the full-size and the embedded models, and the fast inference
# path against the official forward (benchmarks/fast_figures.py: ms per evaluation, FLOP/s, utilisation,
# memory, sampling-loop images/s and projected GPU hours at 16/64/128 images x fp16/bf16 x official/fast).
# Each part has its own time limit and its table is written as rows come, so a part that runs out of time
# costs only its remaining rows. The limits add up to 70 + 90 + 110 + 50 + 230 + 30 = 580 s, inside a
# 10-minute device call. To make room for the fast-path part (six torch.compile + CUDA-graph captures, one per
# shape and dtype), two things were dropped: the throughput suite's compile sweep (compile x channels_last x
# CUDA graph, bf16, 16 images; the fast-path rows measure compile + CUDA graphs at three batch sizes in both
# dtypes, and channels_last on an H200 is in glide/fast.py's notes) and batch 16 of the full-size sampler
# part (the fast-path part times the sampling loop at 16). On an H200 on 2026-11-27 the sampler part ran out
# at 130 s with both batch sizes, and the compile sweep took over a minute per compiled model: at that rate
# 230 s may not reach the last fast-path rows (they run fp16 before bf16, official before fast, 16 first).
#
#   bash benchmarks/gpu_figures.sh OUTDIR        (PYTHON=... to pick the interpreter)
#
# The parity tests read the official code's outputs from $GLIDEBENCH_SHARED/reference (default ../shared);
# without them they skip and say so.
set -u
out=${1:?usage: gpu_figures.sh OUTDIR}
py=${PYTHON:-python3}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) $*"; }

log "device"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

log "gpu tests"
timeout 70 "$py" -m pytest -q -m gpu -rs tests/glide/test_cuda.py tests/glide/test_clip.py > "$out/tests.log" 2>&1
tail -4 "$out/tests.log"

tp() {  # tp NAME LIMIT_S ARGS...: one throughput sweep, its CSV copied to OUTDIR/tp-NAME.csv
  local name=$1 limit=$2; shift 2
  log "throughput $name"
  timeout "$limit" "$py" -m glidebench run throughput --device cuda --out "$work/$name" "$@" 2>&1 | tail -30
  cp "$work/$name/throughput/cuda-full/throughput.csv" "$out/tp-$name.csv" 2>/dev/null || echo "no table for $name"
}
tp base 90 --models base --batch-sizes 1,4,16 --dtypes fp32,fp16,bf16 --attention einsum,sdpa --repeats 5

log "sampler, full-size models"
timeout 110 "$py" benchmarks/bench_sampler.py --device cuda --size full --dtypes fp16,bf16 --attention sdpa \
  --batch-sizes 64 --repeats 1 --warm-steps 2 --out "$work/sampler-full" \
  --settings "cfg/ancestral/100;cfg/dpm++2m-sde/quad16/71,639;clip/ancestral/100;up/ddim/fast27" 2>&1 | tail -20
cp "$work/sampler-full/sampler.csv" "$out/sampler-full.csv" 2>/dev/null || echo "no sampler table"

tp other 50 --models upsample,clip-step --batch-sizes 1,8 --dtypes fp32,bf16 --attention sdpa --repeats 5

# the fast path after the sweeps; --row-limit-s keeps one slow compile (or an out-of-memory at 128 images) to
# one row, and the third warm-up call lets the CUDA graphs be recorded before the timed calls
log "fast path, full-size base model"
timeout 230 "$py" benchmarks/fast_figures.py --device cuda --size full --batch-sizes 16,64,128 --dtypes fp16,bf16 \
  --variants official,fast --warmup 3 --repeats 3 --loop-steps 10 --row-limit-s 100 --out "$work/fast" 2>&1 | tail -20
cp "$work/fast/fast_figures.csv" "$out/fast-figures.csv" 2>/dev/null || echo "no fast-path table"
cp "$work/fast/fast_figures.md" "$out/fast-figures.md" 2>/dev/null || true

log "sampler, embedded models"
timeout 30 "$py" benchmarks/bench_sampler.py --device cuda --size embedded --dtypes fp32,bf16 --tf32 off \
  --attention sdpa --batch-sizes 100 --repeats 2 --out "$work/sampler-emb" \
  --settings "cfg/dpm++2m-sde/quad20;cfg/ancestral/250;up/ddim/fast27" 2>&1 | tail -8
cp "$work/sampler-emb/sampler.csv" "$out/sampler-embedded.csv" 2>/dev/null || echo "no embedded table"
log "done"
