#!/usr/bin/env bash
# benchmarks/dl19_check.sh — do the demo's settings carry over to another domain? The demo's stage
# scripts with its settings (scripts/demo_settings.sh) on the MS MARCO DL19 pool of ../shared/data
# (msmarco-dl19-mini: 10,852 real MS MARCO passages, 23 train and 20 dev queries, official formats).
#   1. get_data.sh --dataset msmarco-passage on the pool's collectionandqueries.tar.gz -> DATA_DIR
#   2. trained: run.sh (ZERO_SHOT=1: the untrained all-MiniLM-L6-v2 too) on the 23 train queries with
#      the demo's settings -> OUT/trained/{zeroshot,round1}
#   3. transfer: the SciFact demo's round-2 model (SCIFACT_MODEL), untrained here, encoded as the demo
#      encodes (OpenVINO int8, 128 tokens), exact search, and its hybrid with BM25 as run.sh fuses
#   4. every row's dev metrics -> SAVE (and a table on stdout): benchmarks/dl19_table.py
# (Round 2 is left out: mining 23 queries adds little, and each model costs a corpus encoding.)
# 23 train queries cannot spare 100 held out, so the hybrid is the fixed weighted min-max 0.5 (the
# setting before HYBRID=auto) and VALIDATE is off. 20 dev queries: differences under a few points are
# noise. The dev qrels are binary (a DL19 judgement >= 2 is relevant), as get_data.sh converts them; each row
# also gets DL19's own measure, nDCG@10 on the graded (0-3) judgements (the pool's qrels.dev.graded.txt).
#
#   SCIFACT_MODEL  a SciFact round-2 model (default runs/demo-scifact/round2/model, make demo's)
#   DATA_DIR       (default data/msmarco-dl19)      OUT   (default runs/dl19)
#   SAVE           (default benchmarks/results/dl19_check.json)
# A rerun skips every complete step.
set -euo pipefail
{
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENSIR_SCRIPT=dl19_check
source "$DENSIR_HOME/scripts/lib.sh"
cd "$DENSIR_HOME"
SHARED=${DENSIR_SHARED_DATA:-$DENSIR_HOME/../shared/data}
SCIFACT_MODEL=${SCIFACT_MODEL:-runs/demo-scifact/round2/model}
DATA=${DATA_DIR:-data/msmarco-dl19}
OUT=${OUT:-runs/dl19}
SAVE=${SAVE:-benchmarks/results/dl19_check.json}
PYTHON=${PYTHON:-python}
[ -f "$SCIFACT_MODEL/densir_config.json" ] || die "SCIFACT_MODEL=$SCIFACT_MODEL is not a trained densir model: run make demo first"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
env -u OUT_DIR -u DEPTH -u N_SAMPLE -u SEED bash get_data.sh --dataset msmarco-passage \
  --source "$SHARED/msmarco-dl19-mini/collectionandqueries.tar.gz" --out_dir "$DATA" --holdout 0
export PYTHON DATA_DIR=$DATA EVAL_SPLIT=dev
export HYBRID=weighted HYBRID_NORM=minmax HYBRID_WEIGHT=0.5 VALIDATE=0
source "$DENSIR_HOME/scripts/demo_settings.sh"
OUT_DIR=$OUT/trained ZERO_SHOT=1 bash run.sh
"$PYTHON" benchmarks/dl19_table.py --data "$DATA" --out "$OUT" --save "$SAVE" --scifact_model "$SCIFACT_MODEL" \
  --pool "$SHARED/msmarco-dl19-mini"
exit 0
}
