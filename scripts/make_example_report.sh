#!/usr/bin/env bash
# Regenerate reports/example/: the report of the default embedded run (`python -m glidebench run coco-fid`),
# and reports/compare-plugin/: that run beside the same protocol sampled by the example plug-in
# (examples/glide_sampler_plugin.py: the embedded GLIDE with DDIM, 25 steps) and scored from a folder
# (the default run's images enlarged to 48 px, one file per line of `glidebench prompts`).
# Each report is a folder: index.html and report.md link the PNGs beside them (both committed in full).
# Sampled images are byte-identical only at equal CPU thread counts: the default run's images committed on
# 2026-12-03 were sampled with 2 torch threads (OMP_NUM_THREADS=2; 1 thread moves the last digits of the metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=$(mktemp -d)
$PY -m glidebench run coco-fid --out "$out" --no-report
run_dir=$(ls -d "$out"/coco-fid/*/ | head -n 1)
rm -rf reports/example
$PY -m glidebench report "$run_dir" --out reports/example --title "glidebench: default embedded run"
cp "$run_dir"/results.csv "$run_dir"/spec.json "$run_dir"/provenance.json reports/example/
echo "wrote reports/example/ from $run_dir"

# the same protocol with the example plug-in as a second model (it samples with its own sampler=ddim,steps=25;
# GLIDE's --sampler/--steps are refused with it)
$PY -m glidebench run coco-fid --generator examples.glide_sampler_plugin:make \
  --generator-args sampler=ddim,steps=25 --out "$out" --no-report
plugin_dir=$(ls -d "$out"/coco-fid/*-ddim25-*/ | head -n 1)
# images made elsewhere: the default run's images at 48 px, scored against the protocol's prompts file
$PY -m glidebench prompts coco-fid --out "$out/prompts.jsonl"
$PY - "$run_dir" "$out" <<'EOF'
import json, sys
from pathlib import Path
from PIL import Image

run, out = Path(sys.argv[1]), Path(sys.argv[2])
for line in open(out / "prompts.jsonl"):
    p = json.loads(line)
    im = Image.open(run / "images" / p["setting"] / f"{p['index']:06d}.png").convert("RGB")
    dest = out / "folder-48px" / p["file"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.resize((48, 48), Image.BICUBIC).save(dest)
EOF
$PY -m glidebench run coco-fid --prompts "$out/prompts.jsonl" --images "$out/folder-48px" --out "$out" --no-report
folder_dir=$(ls -d "$out"/coco-fid/folder-48px-*/ | head -n 1)
rm -rf reports/compare-plugin
$PY -m glidebench report "$run_dir" "$plugin_dir" "$folder_dir" --out reports/compare-plugin \
  --title "Embedded GLIDE: DPM-Solver++(2M) SDE quad20 vs DDIM 25 (plug-in) vs its images at 48 px (folder)"
echo "wrote reports/compare-plugin/ from $run_dir, $plugin_dir and $folder_dir"
