#!/usr/bin/env bash
# benchmarks/demo_heldout.sh — how the demo's settings (scripts/demo_settings.sh) were chosen: on
# 100 held-out TRAIN queries of SciFact, never on its test split.
#   1. tools/holdout_split.py --n 100 --seed 0 -> OUT/data: the held-out queries as split "heldout";
#      the other 709 train queries (and their BM25 groups) as split "train"
#   2. for each LR of LRS: run.sh, mine_hard_neg.sh and train_hn.sh with the demo's settings and
#      EVAL_SPLIT=heldout -> OUT/lr-<LR>/ (round 1 and round 2 on the held-out queries)
#   3. RERANK=1: rerank.sh (the demo's re-ranker settings, RERANK_ALPHA=0: the cross-encoder alone) on
#      the round 2 with the best held-out nDCG@10, then tools/fuse_runs.py sweeps ALPHAS
# Every step skips what is complete, so a rerun only prints the tables.
#
#   DATA_DIR  get_data.sh output for beir/scifact           (default data/beir-scifact)
#   OUT       where everything goes                          (default runs/demo-heldout)
#   LRS       bi-encoder learning rates to compare           (default "2e-5 5e-5")
#   ALPHAS    interpolation weights of the first stage       (default "0 0.1 ... 1")
#   RERANK    1 = step 3                                     (default 1)
# Writes OUT/summary.txt (every table); the demo's other settings can be overridden as in demo.sh.
set -euo pipefail
{
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENSIR_SCRIPT=demo_heldout
source "$DENSIR_HOME/scripts/lib.sh"
cd "$DENSIR_HOME"
SRC=${DATA_DIR:-data/beir-scifact}
OUT=${OUT:-runs/demo-heldout}
LRS=${LRS:-2e-5 5e-5}
ALPHAS=${ALPHAS:-0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1}
RERANK=${RERANK:-1}
PYTHON=${PYTHON:-python}
[ -f "$SRC/dataset.json" ] || die "DATA_DIR=$SRC has no dataset.json: run get_data.sh (or make demo) first"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
export PYTHON EVAL_SPLIT=heldout DATA_DIR=$OUT/data
# the held-out queries are the evaluation split here, so no fusion can be chosen on them (HYBRID=auto
# refuses): the fixed setting the demo had before HYBRID=auto
export HYBRID=${HYBRID:-weighted} HYBRID_NORM=${HYBRID_NORM:-minmax} HYBRID_WEIGHT=${HYBRID_WEIGHT:-0.5}
unset LR  # compared below
# the held-out queries are the evaluation split here: no validation on them (VALIDATE=1 refuses)
export VALIDATE=${VALIDATE:-0}
source "$DENSIR_HOME/scripts/demo_settings.sh"

mkdir -p "$OUT"
[ -f "$OUT/data/dataset.json" ] || \
  "$PYTHON" tools/holdout_split.py --data_dir "$SRC" --out_dir "$OUT/data" --n 100 --seed 0
: > "$OUT/summary.txt.tmp"
for lr in $LRS; do
  export LR=$lr OUT_DIR=$OUT/lr-$lr
  export TIMINGS=$OUT_DIR/timings.tsv
  bash run.sh && bash mine_hard_neg.sh && bash train_hn.sh
  { echo "held-out train queries, bi-encoder lr $lr"; cat "$OUT_DIR/heldout.table.txt"; echo; } >> "$OUT/summary.txt.tmp"
done
# shellcheck disable=SC2086
best_lr=$("$PYTHON" - "$OUT" $LRS 2>> "$OUT/summary.txt.tmp" <<'PY'
import json, sys
out, lrs = sys.argv[1], sys.argv[2:]
n = {lr: json.load(open(f"{out}/lr-{lr}/round2/heldout.metrics.json"))["nDCG@10"] for lr in lrs}
best = max(lrs, key=n.get)  # the first of equals
print(best)
print(f"best bi-encoder lr on held-out round 2: {best} (nDCG@10 {n[best]})", file=sys.stderr)
PY
)
if [ "$RERANK" = 1 ]; then
  export LR=$best_lr OUT_DIR=$OUT/lr-$best_lr RERANK_ALPHA=0
  export TIMINGS=$OUT_DIR/timings.tsv
  bash rerank.sh
  { echo; echo "re-ranking round 2's held-out top $RERANK_DEPTH: alpha * z(round 2) + (1 - alpha) * z(cross-encoder)"
    "$PYTHON" tools/fuse_runs.py --first "$OUT_DIR/round2/heldout.run" --rerank "$OUT_DIR/rerank/heldout.ce.run" \
      --alpha $ALPHAS --qrels "$OUT/data/qrels.heldout.tsv" --save "$OUT/alpha_sweep.json"; } >> "$OUT/summary.txt.tmp"
fi
mv "$OUT/summary.txt.tmp" "$OUT/summary.txt"
cat "$OUT/summary.txt"
exit 0
}
