#!/usr/bin/env bash
# mine_hard_neg.sh — hard negatives for round 2: encode the train queries with the round-1 model,
# retrieve their top DEPTH from the sharded corpus (round 1's corpus shards, encoded here if
# missing), merge, and build train groups whose negatives are retrieved passages that are not
# positives, skipping the top SKIP ranks (unlabelled positives hide there), N_SAMPLE per query.
#
# Usage: bash mine_hard_neg.sh [--out_dir O] [--depth K] [--skip S] [--n_sample N] [--stage S] ...
# Every setting is an env var of the same name (flags win); all are listed below with their type and
# default (declared in densir/settings.py, which checks them before any work: a SKIP, DEPTH or N_SAMPLE
# that would mine bad groups is refused). The MINE_* filters are tools/build_train_hn.py's flags
# (sentence-transformers' mine_hard_negatives; unset = off); the rescoring cross-encoder runs in
# PRECISION, on the GPU when there is one.
#
# Writes under OUT_DIR/MINE_ROUND (a rerun skips every complete step):
#   enc/queries.<TRAIN_SPLIT>.*  runs/<TRAIN_SPLIT>.<i>.run  <TRAIN_SPLIT>.run
#   train.hn.jsonl + train.hn.stats.json (groups written; queries without positive/negative/hits)
set -euo pipefail
{ # read whole before running: editing this file mid-run cannot derail a running copy
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DENSIR_SCRIPT=mine_hard_neg
USAGE_EXTRA="$DENSIR_HOME/scripts/stages.sh"
source "$DENSIR_HOME/scripts/lib.sh"
source "$DENSIR_HOME/scripts/stages.sh"
load_settings "$@"
pipeline_setup
# each MINE_<NAME> that is set becomes --<name> of tools/build_train_hn.py
MINE_VARS="MINE_RANGE_MIN MINE_RANGE_MAX MINE_MARGIN MINE_RELATIVE_MARGIN MINE_MAX_SCORE MINE_MIN_SCORE
  MINE_SAMPLING MINE_RESCORE_MODEL MINE_RESCORE_MAX_LEN MINE_RESCORE_BATCH_SIZE"
MINE_FLAGS=()
for var in $MINE_VARS; do
  if [ -n "${!var:-}" ]; then
    flag=${var#MINE_}; MINE_FLAGS+=("--${flag,,}" "${!var}")
  fi
done
# the cross-encoder rescores in the pipeline's precision (PRECISION, resolved for this node)
if [ -n "${MINE_RESCORE_MODEL:-}" ]; then MINE_FLAGS+=(--rescore_precision "$PRECISION"); fi
export DENSIR_HOME

MODEL_DIR=$OUT_DIR/$MINE_ROUND/model
[ -f "$MODEL_DIR/densir_config.json" ] || die "no trained model in $MODEL_DIR: run run.sh first"
for f in "queries.$TRAIN_SPLIT.jsonl" "qrels.$TRAIN_SPLIT.tsv"; do
  [ -f "$DATA_DIR/$f" ] || die "no $DATA_DIR/$f to mine for"
done

if want encode-corpus; then encode_corpus "$MINE_ROUND" "$MODEL_DIR"; fi
if want encode-queries; then encode_queries "$MINE_ROUND" "$MODEL_DIR" "$TRAIN_SPLIT"; fi
if want search; then search_shards "$MINE_ROUND" "$TRAIN_SPLIT" "$DEPTH"; fi
if want build; then
  reduce_runs "$MINE_ROUND" "$TRAIN_SPLIT" "$DEPTH"
  step build-hn "$HN_GROUPS" \
    "$PYTHON" "$DENSIR_HOME/tools/build_train_hn.py" --queries "$DATA_DIR/queries.$TRAIN_SPLIT.jsonl" \
      --qrels "$DATA_DIR/qrels.$TRAIN_SPLIT.tsv" --run "$OUT_DIR/$MINE_ROUND/$TRAIN_SPLIT.run" \
      --corpus "$DATA_DIR/corpus.jsonl" --out "$HN_GROUPS" \
      --depth "$DEPTH" --skip "$SKIP" --n_sample "$N_SAMPLE" --seed "$MINE_SEED" ${MINE_FLAGS[@]+"${MINE_FLAGS[@]}"}
  log "done: $HN_GROUPS"
  stats="${HN_GROUPS%.jsonl}.stats.json"
  [ -f "$stats" ] && cat "$stats" >&2
fi
exit 0
}
