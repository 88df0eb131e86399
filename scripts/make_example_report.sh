#!/usr/bin/env bash
# Regenerate reports/example/: the report of the default embedded run (`python -m glidebench run coco-fid`),
# and reports/compare-plugin/: that run beside the same protocol sampled by the example plug-in
# (examples/glide_sampler_plugin.py: the embedded GLIDE with DDIM, 25 steps).
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
rm -rf reports/compare-plugin
$PY -m glidebench report "$run_dir" "$plugin_dir" --out reports/compare-plugin \
  --title "Embedded GLIDE: DPM-Solver++(2M) SDE quad20 vs DDIM 25 (plug-in)"
echo "wrote reports/compare-plugin/ from $run_dir and $plugin_dir"
