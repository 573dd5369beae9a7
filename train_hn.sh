#!/usr/bin/env bash
# train_hn.sh — round 2 of densir (Tevatron's recipe): train on the BM25 groups and the mined
# hard-negative groups together, from the initial checkpoint (or from the round-1 model), then
# encode, search, merge, score, fuse with BM25 (the hybrid run, HYBRID) and score that, and print
# round 1 vs round 2 vs BM25 (and their hybrids).
#
# Usage: bash train_hn.sh [--init model|round1] [--hn_groups F] [--stage S] [--<setting> V]...
# Every setting is an env var of the same name (flags win); the shared ones are listed below.
# Settings of this script:
#   INIT           model = start from MODEL (default); round1 = continue from OUT_DIR/round1/model
#   ROUND          name of this round under OUT_DIR                          (default round2)
#   BM25_GROUPS    BM25-negative groups                   (default DATA_DIR/train.bm25.jsonl)
#   HN_GROUPS      hard-negative groups from mine_hard_neg.sh  (default OUT_DIR/round1/train.hn.jsonl)
#   HN_EPOCHS HN_MAX_STEPS HN_LR   round-2 values of EPOCHS, MAX_STEPS, LR (default: the same)
#   TEACHER        a cross-encoder dir (rerank.sh's model, or any CrossEncoder), or a scored TREC run file
#                  (the teacher's scores): distil it into round 2. Every passage of both group files gets
#                  its score (tools/score_groups.py; a model at PRECISION, TEACHER_ARGS: more flags such as
#                  --backend openvino --quantize int8; a run: TEACHER_MISSING=drop leaves out the passages
#                  it lacks, default error) into OUT_DIR/ROUND/teacher/, and round 2 trains on those groups
#                  with --distill_loss DISTILL_LOSS beside the contrastive loss   (default: none)
#   DISTILL_LOSS   kl (listwise KL to the teacher's softmax over each group) | margin_mse  (default kl)
#   TEACHER_MAX_LEN  query + passage tokens the teacher scores (default: the length it was trained at)
#   STAGE          all | train | encode-corpus | encode-queries | search | reduce   (default all)
#
# Writes under OUT_DIR/ROUND the round layout below (model/, enc/, runs/, <EVAL_SPLIT>.run,
# .marco.tsv, .metrics.json, .hybrid.run, .hybrid.metrics.json), and OUT_DIR/<EVAL_SPLIT>.table.txt;
# a rerun skips complete steps.
set -euo pipefail
{ # read whole before running: editing this file mid-run cannot derail a running copy
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DENSIR_SCRIPT=train_hn
USAGE_EXTRA="$DENSIR_HOME/scripts/stages.sh"
source "$DENSIR_HOME/scripts/lib.sh"
source "$DENSIR_HOME/scripts/stages.sh"
FLAG_VARS="$PIPELINE_VARS $HYBRID_VARS INIT ROUND BM25_GROUPS HN_GROUPS HN_EPOCHS HN_MAX_STEPS HN_LR
  TEACHER DISTILL_LOSS TEACHER_MAX_LEN TEACHER_ARGS TEACHER_MISSING"
parse_flags "$@"
pipeline_defaults
hybrid_defaults
INIT=${INIT:-model}
ROUND=${ROUND:-round2}
BM25_GROUPS=${BM25_GROUPS:-$DATA_DIR/train.bm25.jsonl}
HN_GROUPS=${HN_GROUPS:-$OUT_DIR/round1/train.hn.jsonl}
EPOCHS=${HN_EPOCHS:-$EPOCHS}
MAX_STEPS=${HN_MAX_STEPS:-$MAX_STEPS}
LR=${HN_LR:-$LR}
TEACHER=${TEACHER:-}
DISTILL_LOSS=${DISTILL_LOSS:-kl}
TEACHER_MAX_LEN=${TEACHER_MAX_LEN:-}
check_stage train encode-corpus encode-queries search reduce
export DENSIR_HOME EPOCHS MAX_STEPS LR

case "$INIT" in
  model) INIT_MODEL=$MODEL ;;
  round1) INIT_MODEL=$OUT_DIR/round1/model
          [ -f "$INIT_MODEL/densir_config.json" ] || die "INIT=round1 but $INIT_MODEL is not a trained model" ;;
  *) die "INIT must be 'model' or 'round1', not '$INIT'" ;;
esac

case "$DISTILL_LOSS" in kl|margin_mse) ;; *) die "DISTILL_LOSS must be 'kl' or 'margin_mse', not '$DISTILL_LOSS'" ;; esac
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
if want encode-queries; then encode_queries "$ROUND" "$OUT_DIR/$ROUND/model" "$EVAL_SPLIT"; fi
if want search; then search_shards "$ROUND" "$EVAL_SPLIT" "$EVAL_DEPTH"; fi
if want reduce; then
  reduce_runs "$ROUND" "$EVAL_SPLIT" "$EVAL_DEPTH"
  evaluate_round "$ROUND" "$EVAL_SPLIT" "$ROUND"
  hybrid_round "$ROUND" "$EVAL_SPLIT"
  log "done: $OUT_DIR/$ROUND/$EVAL_SPLIT.run"
  mapfile -t rows < <(with_hybrid zeroshot round1 "$ROUND")
  print_table "${rows[@]}"
fi
exit 0
}
