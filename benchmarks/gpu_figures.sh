#!/usr/bin/env bash
# The GPU figures in one pass (run by hand on a CUDA machine; not a test): the gpu-marked tests, the
# throughput suite over the full-size models (batch sizes x fp32/fp16/bf16 x einsum/SDPA, channels_last,
# torch.compile) and end-to-end sampler throughput (benchmarks/bench_sampler.py) for the full-size and the
# embedded models. Each part has its own time limit and its table is written as rows come, so a part that
# runs out of time costs only its remaining rows. The limits add up to 580 s, inside a 10-minute device call
# (on an H200 on 2026-11-27 the sampler part ran out at 130 s and the compile part at 110 s; both have more now).
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
timeout 80 "$py" -m pytest -q -m gpu -rs tests/glide/test_cuda.py tests/glide/test_clip.py > "$out/tests.log" 2>&1
tail -4 "$out/tests.log"

tp() {  # tp NAME LIMIT_S ARGS...: one throughput sweep, its CSV copied to OUTDIR/tp-NAME.csv
  local name=$1 limit=$2; shift 2
  log "throughput $name"
  timeout "$limit" "$py" -m glidebench run throughput --device cuda --out "$work/$name" "$@" 2>&1 | tail -30
  cp "$work/$name/throughput/cuda-full/throughput.csv" "$out/tp-$name.csv" 2>/dev/null || echo "no table for $name"
}
tp base 100 --models base --batch-sizes 1,4,16 --dtypes fp32,fp16,bf16 --attention einsum,sdpa --repeats 5

log "sampler, full-size models"
timeout 160 "$py" benchmarks/bench_sampler.py --device cuda --size full --dtypes fp16,bf16 --attention sdpa \
  --batch-sizes 16,64 --repeats 1 --warm-steps 2 --out "$work/sampler-full" \
  --settings "cfg/ancestral/100;cfg/dpm++2m-sde/quad16/71,639;clip/ancestral/100;up/ddim/fast27" 2>&1 | tail -20
cp "$work/sampler-full/sampler.csv" "$out/sampler-full.csv" 2>/dev/null || echo "no sampler table"

tp other 60 --models upsample,clip-step --batch-sizes 1,8 --dtypes fp32,bf16 --attention sdpa --repeats 5
# compile last: over a minute per compiled model on an H200 (compile x CUDA graph is not crossed)
tp compile 150 --models base --batch-sizes 16 --dtypes bf16 --attention sdpa --compile off,on --channels-last off,on \
  --cuda-graph off,on --repeats 5

log "sampler, embedded models"
timeout 30 "$py" benchmarks/bench_sampler.py --device cuda --size embedded --dtypes fp32,bf16 --tf32 off \
  --attention sdpa --batch-sizes 100 --repeats 2 --out "$work/sampler-emb" \
  --settings "cfg/dpm++2m-sde/quad20;cfg/ancestral/250;up/ddim/fast27" 2>&1 | tail -8
cp "$work/sampler-emb/sampler.csv" "$out/sampler-embedded.csv" 2>/dev/null || echo "no embedded table"
log "done"
