#!/usr/bin/env bash
# Regenerate reports/example/: the report of the default embedded run (`python -m glidebench run coco-fid`).
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
