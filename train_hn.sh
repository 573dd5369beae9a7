#!/usr/bin/env bash
# train_hn.sh — round 2 of densir (Tevatron's recipe): train on the BM25 groups and the mined
# hard-negative groups together, from the initial checkpoint (or from the round-1 model), then
# encode, search, merge, score, fuse with BM25 (the hybrid run, HYBRID) and score that, and print
# round 1 vs round 2 vs BM25 (and their hybrids).
#
# Usage: bash train_hn.sh [--init model|round1] [--hn_groups F] [--stage S] [--<setting> V]...
# Every setting is an env var of the same name (flags win); all are listed below with their type and
# default (declared in densir/settings.py, which checks them before any work). TEACHER distils a
# cross-encoder (rerank.sh's model, run at PRECISION) or a scored run into round 2.
#
# Writes under OUT_DIR/ROUND the round layout below (model/, enc/, runs/, <EVAL_SPLIT>.run,
# .marco.tsv, .metrics.json, .hybrid.run, .hybrid.metrics.json; HYBRID=auto: heldout.run, fusion.json),
# and OUT_DIR/<EVAL_SPLIT>.table.txt;
# a rerun skips complete steps.
set -euo pipefail
{ # read whole before running: editing this file mid-run cannot derail a running copy
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DENSIR_SCRIPT=train_hn
USAGE_EXTRA="$DENSIR_HOME/scripts/stages.sh"
source "$DENSIR_HOME/scripts/lib.sh"
source "$DENSIR_HOME/scripts/stages.sh"
load_settings "$@"
pipeline_setup
# round 2's values (HN_*: default the round-1 ones)
EPOCHS=$HN_EPOCHS MAX_STEPS=$HN_MAX_STEPS LR=$HN_LR
export DENSIR_HOME EPOCHS MAX_STEPS LR

case "$INIT" in
  model) INIT_MODEL=$MODEL ;;
  round1) INIT_MODEL=$OUT_DIR/round1/model
          [ -f "$INIT_MODEL/densir_config.json" ] || die "INIT=round1 but $INIT_MODEL is not a trained model" ;;
esac

if [ -n "$TEACHER" ] && want train; then
  # distillation: the teacher's score on every passage of both group files, then the distillation loss
  [ -e "$TEACHER" ] || die "TEACHER=$TEACHER does not exist (a cross-encoder dir, as rerank.sh STAGE=train writes, or a scored run)"
  scored=()
  for g in "$BM25_GROUPS" "$HN_GROUPS"; do
    [ -f "$g" ] || die "train groups $g are missing (round $ROUND)"
    s=$OUT_DIR/$ROUND/teacher/$(basename "$g" .jsonl).scored.jsonl
    score_groups_step "$TEACHER" "$g" "$s" "$TEACHER_MAX_LEN"
    scored+=("$s")
  done
  BM25_GROUPS=${scored[0]} HN_GROUPS=${scored[1]}
  TRAIN_ARGS="$TRAIN_ARGS --distill_loss $DISTILL_LOSS"
fi
if want train; then train_round "$ROUND" "$INIT_MODEL" "$BM25_GROUPS" "$HN_GROUPS"; fi
if want encode-corpus; then encode_corpus "$ROUND" "$OUT_DIR/$ROUND/model"; fi
# the EVAL_SPLIT queries, and with HYBRID=auto the held-out train queries the fusion is chosen on
for split in $(with_heldout "$EVAL_SPLIT"); do
  if want encode-queries; then encode_queries "$ROUND" "$OUT_DIR/$ROUND/model" "$split"; fi
  if want search; then search_shards "$ROUND" "$split" "$EVAL_DEPTH"; fi
  if want reduce; then reduce_runs "$ROUND" "$split" "$EVAL_DEPTH"; fi
done
if want reduce; then
  evaluate_round "$ROUND" "$EVAL_SPLIT" "$ROUND"
  choose_fusion_round "$ROUND"
  hybrid_round "$ROUND" "$EVAL_SPLIT"
  log "done: $OUT_DIR/$ROUND/$EVAL_SPLIT.run"
  mapfile -t rows < <(with_hybrid zeroshot round1 "$ROUND")
  print_table "${rows[@]}"
fi
exit 0
}
