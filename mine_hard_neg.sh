#!/usr/bin/env bash
# mine_hard_neg.sh — hard negatives for round 2: encode the train queries with the round-1 model,
# retrieve their top DEPTH from the sharded corpus (round 1's corpus shards, encoded here if
# missing), merge, and build train groups whose negatives are retrieved passages that are not
# positives, skipping the top SKIP ranks (unlabelled positives hide there), N_SAMPLE per query.
#
# Usage: bash mine_hard_neg.sh [--out_dir O] [--depth K] [--skip S] [--n_sample N] [--stage S] ...
# Every setting is an env var of the same name (flags win); the shared ones are listed below.
# Settings of this script:
#   MINE_ROUND   round whose model mines                                   (default round1)
#   TRAIN_SPLIT  queries to mine for (DATA_DIR/queries.<split>.jsonl + qrels)  (default train)
#   DEPTH        retrieve (and sample negatives from) the top DEPTH        (default 100)
#   SKIP         leave out the top SKIP ranks                              (default 3)
#   N_SAMPLE     hard negatives per query                                  (default 30)
#   MINE_SEED    sampling seed                                             (default 42)
#   HN_GROUPS    output groups                       (default OUT_DIR/MINE_ROUND/train.hn.jsonl)
#   STAGE        all | encode-corpus | encode-queries | search | build     (default all)
#                (build = merge shard runs, then tools/build_train_hn.py)
# Mining filters (tools/build_train.py's flags, sentence-transformers' mine_hard_negatives; unset = off):
#   MINE_RANGE_MIN / MINE_RANGE_MAX  rank window [MIN, MAX) over the candidates the filters leave
#                                    (best first; positives not counted)   (default 0 / all)
#   MINE_MARGIN           drop a candidate unless score <= positive's score - MARGIN
#   MINE_RELATIVE_MARGIN  drop a candidate unless score <= positive's score - |positive's score| * M
#   MINE_MAX_SCORE / MINE_MIN_SCORE  drop candidates scoring above / below this
#   MINE_SAMPLING         random (N_SAMPLE drawn at random) | top (the best N_SAMPLE)  (default random)
#   MINE_RESCORE_MODEL    a cross-encoder: the filters and ranks use its scores of the positives and
#                         candidates instead of the run's (drops likely false negatives)
#   MINE_RESCORE_MAX_LEN / MINE_RESCORE_BATCH_SIZE  its query+passage tokens / pairs per batch
#                         (it runs in PRECISION, on the GPU when there is one)
#   (a complete HN_GROUPS is never rebuilt: other mining settings want another HN_GROUPS)
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
MINE_VARS="MINE_RANGE_MIN MINE_RANGE_MAX MINE_MARGIN MINE_RELATIVE_MARGIN MINE_MAX_SCORE MINE_MIN_SCORE
  MINE_SAMPLING MINE_RESCORE_MODEL MINE_RESCORE_MAX_LEN MINE_RESCORE_BATCH_SIZE"
FLAG_VARS="$PIPELINE_VARS MINE_ROUND TRAIN_SPLIT DEPTH SKIP N_SAMPLE MINE_SEED HN_GROUPS $MINE_VARS"
parse_flags "$@"
pipeline_defaults
MINE_ROUND=${MINE_ROUND:-round1}
TRAIN_SPLIT=${TRAIN_SPLIT:-train}
DEPTH=${DEPTH:-100}
SKIP=${SKIP:-3}
N_SAMPLE=${N_SAMPLE:-30}
MINE_SEED=${MINE_SEED:-42}
HN_GROUPS=${HN_GROUPS:-$OUT_DIR/$MINE_ROUND/train.hn.jsonl}
check_stage encode-corpus encode-queries search build
# each MINE_<NAME> that is set becomes --<name> of tools/build_train_hn.py
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
