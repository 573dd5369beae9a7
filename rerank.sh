#!/usr/bin/env bash
# rerank.sh — stage 7 of densir: train a cross-encoder re-ranker on the round-2 train groups (BM25 +
# mined hard negatives), re-rank the top RERANK_DEPTH of round 2's EVAL_SPLIT run with it, score
# the result, and print BM25 / round 1 / round 2 / re-ranked side by side.
#
# Usage: bash rerank.sh [--rerank_model M] [--rerank_depth K] [--stage S] [--<setting> V]...
# Every setting is an env var of the same name (flags win); all are listed below with their type and
# default (declared in densir/settings.py, which checks them before any work). Of the shared settings
# it uses MODEL DATA_DIR OUT_DIR EVAL_SPLIT PRECISION NPROC BATCH TRAIN_N_PASSAGES WARMUP SAVE_STEPS SEED
# TIMINGS PYTHON (PRECISION also sets the re-ranking autocast); STAGE is all | train | rerank | merge.
#
# Writes under OUT_DIR/RERANK_ROUND (every file appears only when complete; a rerun skips complete
# steps and resumes training from its last checkpoint):
#   model/                              the re-ranker (HF + sentence-transformers CrossEncoder dir;
#                                       densir_reranker.json is written last), model/checkpoint-*/
#   <EVAL_SPLIT>.ce.run.qshard-<i>-of-<n>  one query range's cross-encoder run (NUM_QUERY_SHARDS > 1)
#   <EVAL_SPLIT>.ce.run  <EVAL_SPLIT>.ce.metrics.json   the cross-encoder's scores alone
#   <EVAL_SPLIT>.run  <EVAL_SPLIT>.marco.tsv  <EVAL_SPLIT>.metrics.json   fused with RERANK_ALPHA
# and OUT_DIR/<EVAL_SPLIT>.table.txt (BM25, round1, round2, cross-encoder alone, fused).
set -euo pipefail
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DENSIR_SCRIPT=rerank
USAGE_EXTRA="$DENSIR_HOME/scripts/stages.sh"
source "$DENSIR_HOME/scripts/lib.sh"
source "$DENSIR_HOME/scripts/stages.sh"
load_settings "$@"
# the loss names are the registry's (densir.losses.LOSSES), asked of Python
LOSS_NAMES=$("$PYTHON" -c 'from densir.losses import LOSSES; print(" ".join(LOSSES))') || die "cannot import densir.losses"
case " $LOSS_NAMES " in *" $RERANK_LOSS "*) ;;
  *) die "RERANK_LOSS must be one of ${LOSS_NAMES// /, }, not '$RERANK_LOSS'" ;; esac
pipeline_setup
export DENSIR_HOME

DIR=$OUT_DIR/$RERANK_ROUND
MODEL_DIR=$DIR/model
CE_RUN=$DIR/$EVAL_SPLIT.ce.run   # the cross-encoder's scores alone
OUT_RUN=$DIR/$EVAL_SPLIT.run     # fused with the first stage (RERANK_ALPHA)
# shellcheck disable=SC2206
GROUPS_LIST=($RERANK_GROUPS)

# launch_train_reranker: densir.driver.train_reranker through launch_module (python, torchrun or srun)
launch_train_reranker() {
  local args=(--model_name_or_path "$RERANK_MODEL" --train_dir "${GROUPS_LIST[@]}" --output_dir "$MODEL_DIR"
              --loss "$RERANK_LOSS" --max_len "$RERANK_MAX_LEN" --train_n_passages "$RERANK_N_PASSAGES"
              --per_device_train_batch_size "$RERANK_BATCH" --learning_rate "$RERANK_LR"
              --num_train_epochs "$RERANK_EPOCHS" --max_steps "$RERANK_MAX_STEPS" --warmup_steps "$WARMUP"
              --save_steps "$SAVE_STEPS" --seed "$SEED" --resume_from_checkpoint auto)
  # shellcheck disable=SC2206,SC2207
  args+=($(precision_flags) $RERANK_TRAIN_ARGS)
  compgen -G "$MODEL_DIR/checkpoint-*" >/dev/null && log "resuming from the last checkpoint in $MODEL_DIR"
  launch_module densir.driver.train_reranker "${args[@]}"
}

# rerank_shard I: re-rank query range I of NUM_QUERY_SHARDS (the whole run when there is one)
rerank_shard() {
  [ -f "$MODEL_DIR/densir_reranker.json" ] || { echo "no trained re-ranker in $MODEL_DIR: run the train stage first" >&2; return 1; }
  # shellcheck disable=SC2046,SC2086
  "$PYTHON" -m densir.driver.rerank --model_name_or_path "$MODEL_DIR" --run "$RERANK_RUN" \
    --corpus "$DATA_DIR/corpus.jsonl" --queries "$DATA_DIR/queries.$EVAL_SPLIT.jsonl" --depth "$RERANK_DEPTH" \
    --max_len "$RERANK_MAX_LEN" --batch_size "$RERANK_EVAL_BATCH" --save_ranking_to "$CE_RUN" \
    --query_shard "$1" --num_query_shards "$NUM_QUERY_SHARDS" $(precision_flags) $RERANK_ARGS
}

shard_run() { if [ "$NUM_QUERY_SHARDS" -gt 1 ]; then echo "$CE_RUN.qshard-$1-of-$NUM_QUERY_SHARDS"; else echo "$CE_RUN"; fi; }

if want train; then
  for g in "${GROUPS_LIST[@]}"; do
    [ -f "$g" ] || die "train groups $g are missing (run mine_hard_neg.sh first, or set RERANK_GROUPS)"
  done
  step "train-$RERANK_ROUND" "$MODEL_DIR/densir_reranker.json" launch_train_reranker
fi
if want rerank; then
  [ -f "$RERANK_RUN" ] || die "no run to re-rank at $RERANK_RUN (run train_hn.sh first, or set RERANK_RUN)"
  if [ -n "$QUERY_SHARD" ]; then shards=$QUERY_SHARD; else shards=$(seq 0 $((NUM_QUERY_SHARDS - 1))); fi
  for i in $shards; do
    step "rerank-$EVAL_SPLIT-$i" "$(shard_run "$i")" rerank_shard "$i"
  done
fi
if want merge; then
  if [ "$NUM_QUERY_SHARDS" -gt 1 ]; then
    step "merge-$EVAL_SPLIT" "$CE_RUN" \
      "$PYTHON" -m densir.driver.rerank --save_ranking_to "$CE_RUN" --num_query_shards "$NUM_QUERY_SHARDS" \
        --merge_query_shards
  fi
  [ -f "$CE_RUN" ] || die "no re-ranked run at $CE_RUN (run the rerank stage first)"
  step "fuse-$EVAL_SPLIT" "$OUT_RUN" \
    "$PYTHON" "$DENSIR_HOME/tools/fuse_runs.py" --first "$RERANK_RUN" --rerank "$CE_RUN" --alpha "$RERANK_ALPHA" \
      --out "$OUT_RUN" --tag densir-rerank
  evaluate_run "evaluate-$RERANK_ROUND-ce-$EVAL_SPLIT" "$CE_RUN" "$DIR/$EVAL_SPLIT.ce.metrics.json" \
    "$RERANK_ROUND-ce" "$EVAL_SPLIT"
  evaluate_round "$RERANK_ROUND" "$EVAL_SPLIT" "$RERANK_ROUND"
  log "done: $OUT_RUN"
  rows=(round1 "$FROM_ROUND")
  [ -f "$DIR/$EVAL_SPLIT.ce.metrics.json" ] && rows+=("$RERANK_ROUND-ce=$DIR/$EVAL_SPLIT.ce.metrics.json")
  print_table "${rows[@]}" "$RERANK_ROUND"
fi
exit 0
