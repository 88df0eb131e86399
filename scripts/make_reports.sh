#!/usr/bin/env bash
# Rebuild the committed reports other than reports/example and reports/compare-plugin (those two are made by
# scripts/make_example_report.sh and committed in full): reports/attributes, exact-captions, upsampled, nfe and
# nfe-val. Each is its run command(s), then `glidebench report` into reports/NAME (report.md, the PNGs it
# links, results.csv and the manifest; index.html links the same PNGs and is not committed), then the files
# the committed report keeps beside it (the run's spec.json, provenance.json, results; nfe's summary).
#
#   bash scripts/make_reports.sh [--check] [NAME ...]     (default: all five)
#
# --check runs each command with --dry-run only (nothing is sampled or written) and compares every planned
# spec with the shipped one (reports/NAME/spec.json, else the "Resolved run spec" blocks of report.md): "same
# fingerprint", or the fields that differ. exact-captions, upsampled and nfe-val were made by coco-fid version
# 3 (today's is version 5), so their runs are made at V3_COMMIT (default 474d925, the last commit with version
# 3) in a temporary git worktree, where the same commands plan the shipped specs; the report is rendered by
# the current code. The runs take hours on a CPU (attributes: 45 min as two 1-thread shards; nfe: about 3 h;
# upsampled: 27 min at two threads). Runs go under $RUNS (default runs/) and resume there; PYTHON picks the
# interpreter (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(realpath -s "${PYTHON:-.venv/bin/python}")  # absolute (the runs of V3_COMMIT start in its worktree)
RUNS=$(realpath -sm "${RUNS:-runs}")
V3_COMMIT=${V3_COMMIT:-474d925}
v3_tree=""
cleanup() { [[ -z $v3_tree ]] || git worktree remove --force "$v3_tree"; }
trap cleanup EXIT
check=0
if [[ ${1:-} == --check ]]; then
  check=1
  shift
fi
all=(attributes exact-captions upsampled nfe nfe-val)
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${all[@]}")

VAL="--embedded-split val --num-samples 200 --reference-size 400 --cfg 3 --clip="
# nfe-val: the entry chosen on the test captions (quad16 guided at t 71-639) and its neighbours
NFE_VAL=("ancestral 250" "dpm++2m-sde quad20" "dpm++2m-sde quad16" "dpm++2m-sde quad16 71,639"
  "dpm++2m-sde quad12" "dpm++2m-sde quad12 74,528")

commands() {  # NAME -> the arguments of each `glidebench run` that made it, one line each
  case $1 in
    attributes) echo "attributes" ;;
    exact-captions) echo "coco-fid" ;;  # at V3_COMMIT, as the two below
    upsampled) echo "coco-fid --resolution up" ;;
    nfe) echo "nfe" ;;
    nfe-val)
      for entry in "${NFE_VAL[@]}"; do
        read -r sampler steps interval <<<"$entry"
        echo "coco-fid $VAL --sampler $sampler --steps $steps${interval:+ --cfg-interval $interval}"
      done ;;
    *) echo "make_reports.sh: unknown report '$1' (one of: ${all[*]})" >&2; return 2 ;;
  esac
}

title() {  # the title each committed report was rendered with
  case $1 in
    attributes) echo "glidebench: attributes suite (embedded set)" ;;
    exact-captions) echo "glidebench: embedded run with exact captions (coco-fid version 3 default; now --caption-style exact)" ;;
    nfe | nfe-val) echo "Quality against sampling cost (nfe suite)" ;;
  esac
}

compare_specs() {  # NAME PLANNED_LOG: the planned specs of a dry run against the shipped ones
  "$PY" - "reports/$1" "$2" <<'EOF'
import json, re, sys
from pathlib import Path

report, log = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
if (report / "spec.json").is_file():
    shipped = [json.loads((report / "spec.json").read_text())]
else:
    md = (report / "report.md").read_text()
    shipped = [json.loads(b) for b in re.findall(r"Resolved run spec \(spec\.json\):\n\n```json\n(.*?)\n```", md, re.S)]
planned = [json.loads(b) for b in re.findall(r"^\{\n.*?^\}$", log, re.S | re.M)]
by_fp = {s["fingerprint"]: s for s in shipped}
ok = 0
for p in planned:
    name = f"{report.name}: {p['suite']} {p['sampler']} {p['steps']} {p.get('cfg_interval') or ''}".rstrip()
    if p["fingerprint"] in by_fp:
        ok += 1
        print(f"{name}: same fingerprint {p['fingerprint'][:12]}")
        continue
    def diff(s):
        return sorted(k for k in set(s) | set(p) if k != "fingerprint" and s.get(k) != p.get(k))
    best = min(shipped, key=lambda s: len(diff(s)))
    fields = ", ".join(f"{k} {best.get(k)!r} -> {p.get(k)!r}" for k in diff(best))
    print(f"{name}: fingerprint {p['fingerprint'][:12]}, shipped {best['fingerprint'][:12]}; differs in {fields}")
print(f"{report.name}: {ok} of {len(shipped)} shipped specs re-planned to the same fingerprint"
      + (f"; {len(planned)} planned" if len(planned) != len(shipped) else ""))
EOF
}

source_tree() {  # NAME -> src: the folder whose glidebench makes its runs (this one, or a worktree at V3_COMMIT)
  case $1 in
    exact-captions | upsampled | nfe-val)
      if [[ -z $v3_tree ]]; then
        v3_tree=$(mktemp -d)/glidebench-v3
        git worktree add --quiet --detach "$v3_tree" "$V3_COMMIT"
      fi
      src=$v3_tree ;;
    *) src=$PWD ;;
  esac
}

run_dirs() {  # the run directories a log of `glidebench run` names
  grep -o 'run dir [^ ]*' "$1" | cut -d' ' -f3 | awk '!seen[$0]++'
}

for name in "${names[@]}"; do
  commands "$name" >/dev/null
  mapfile -t cmds < <(commands "$name")
  source_tree "$name"
  log=$(mktemp)
  if [[ $check == 1 ]]; then
    for c in "${cmds[@]}"; do
      # shellcheck disable=SC2086  # the commands are plain words
      if ! (cd "$src" && "$PY" -m glidebench run $c --dry-run --out "$RUNS") >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        exit 1
      fi
    done
    compare_specs "$name" "$log"
    rm -f "$log"
    continue
  fi
  for c in "${cmds[@]}"; do
    # shellcheck disable=SC2086
    (cd "$src" && "$PY" -m glidebench run $c --out "$RUNS" --no-report) 2>&1 | tee -a "$log"
  done
  mapfile -t dirs < <(run_dirs "$log")
  out="reports/$name"
  case $name in
    nfe)  # the suite wrote the summary and its report; the committed report is that folder
      summary=$(grep -o '^summary: .*' "$log" | tail -n 1 | cut -d' ' -f2-)
      summary=$(dirname "$summary")
      rm -rf "$out" && mkdir -p "$out"
      cp -r "$summary"/report/. "$out"/
      cp "$summary"/summary.csv "$summary"/summary.md "$out"/ ;;
    nfe-val)  # six coco-fid runs, summarised as the nfe suite does (reference: ancestral 250)
      summary=$("$PY" - "$RUNS" "${dirs[@]}" <<'EOF'
import sys
from pathlib import Path
from glidebench.suites.nfe import summarise

print(summarise([Path(d) for d in sys.argv[2:]], ("ancestral", "250", ""), Path(sys.argv[1])))
EOF
)
      summary=$(tail -n 1 <<<"$summary")
      rm -rf "$out" && mkdir -p "$out"
      cp -r "$summary"/report/. "$out"/
      cp "$summary"/summary.csv "$summary"/summary.md "$out"/ ;;
    *)
      run_dir=${dirs[0]}
      rm -rf "$out"
      t=$(title "$name")
      "$PY" -m glidebench report "$run_dir" --out "$out" ${t:+--title "$t"}
      case $name in  # the run's own files the committed report keeps (upsampled keeps the report's results.csv)
        attributes) cp "$run_dir"/results.csv "$run_dir"/results.md "$run_dir"/spec.json "$run_dir"/provenance.json "$out"/ ;;
        exact-captions) cp "$run_dir"/results.csv "$run_dir"/spec.json "$run_dir"/provenance.json "$out"/ ;;
      esac ;;
  esac
  rm -f "$log"
  echo "wrote $out/ from ${dirs[*]}"
done
