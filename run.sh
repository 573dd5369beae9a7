#!/usr/bin/env bash
# run.sh — round 1 of densir: train a bi-encoder on get_data.sh's BM25-negative groups, encode the
# corpus in NUM_SHARDS shards and the evaluation queries, search every shard, merge the shard runs,
# write the TREC run and its MS MARCO copy, score it, fuse it with BM25 (the hybrid run, HYBRID) and
# score that, and print both next to BM25.
#
# Usage: bash run.sh [--model M] [--data_dir D] [--out_dir O] [--stage S] [--shard i] [--<setting> V]...
# Every setting is an env var of the same name (flags win); all are listed below with their type and
# default (declared in densir/settings.py, which checks them before any work).
#
# Writes under OUT_DIR (see the round layout below; a rerun skips every complete step and a
# killed training resumes from its last checkpoint):
#   round1/model/  round1/enc/corpus.<i>.*  round1/enc/queries.<EVAL_SPLIT>.*
#   round1/runs/<EVAL_SPLIT>.<i>.run  round1/<EVAL_SPLIT>.run  round1/<EVAL_SPLIT>.marco.tsv
#   round1/<EVAL_SPLIT>.metrics.json  round1/<EVAL_SPLIT>.hybrid.run  round1/<EVAL_SPLIT>.hybrid.metrics.json
#   <EVAL_SPLIT>.table.txt  timings.tsv   [zeroshot/...]
#   [HYBRID=auto: round1/enc/queries.heldout.*  round1/runs/heldout.<i>.run  round1/heldout.run  round1/fusion.json]
set -euo pipefail
{ # read whole before running: editing this file mid-run cannot derail a running copy
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DENSIR_SCRIPT=run
USAGE_EXTRA="$DENSIR_HOME/scripts/stages.sh"
source "$DENSIR_HOME/scripts/lib.sh"
source "$DENSIR_HOME/scripts/stages.sh"
load_settings "$@"
pipeline_setup
export DENSIR_HOME

ROUNDS=(round1)
[ "$ZERO_SHOT" = 1 ] && ROUNDS=(zeroshot round1)
model_of() { if [ "$1" = zeroshot ]; then echo "$MODEL"; else echo "$OUT_DIR/$1/model"; fi; }

# shellcheck disable=SC2086
if want train; then train_round round1 "$MODEL" $TRAIN_GROUPS; fi
for r in "${ROUNDS[@]}"; do
  if want encode-corpus; then encode_corpus "$r" "$(model_of "$r")"; fi
  # the EVAL_SPLIT queries, and with HYBRID=auto the held-out train queries the fusion is chosen on
  for split in $(with_heldout "$EVAL_SPLIT"); do
    if want encode-queries; then encode_queries "$r" "$(model_of "$r")" "$split"; fi
    if want search; then search_shards "$r" "$split" "$EVAL_DEPTH"; fi
    if want reduce; then reduce_runs "$r" "$split" "$EVAL_DEPTH"; fi
  done
  if want reduce; then
    evaluate_round "$r" "$EVAL_SPLIT" "$r"
    choose_fusion_round "$r"
    hybrid_round "$r" "$EVAL_SPLIT"
  fi
done
if want reduce; then
  log "done: $OUT_DIR/round1/$EVAL_SPLIT.run"
  mapfile -t rows < <(with_hybrid zeroshot round1)
  print_table "${rows[@]}"
fi
exit 0
}
