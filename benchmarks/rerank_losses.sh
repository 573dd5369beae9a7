#!/usr/bin/env bash
# benchmarks/rerank_losses.sh — every cross-encoder loss of densir.losses with the same budget,
# on the 100 held-out TRAIN queries of SciFact (the quality study's split: tools/holdout_split.py --n 100
# --seed 0), never on its test split. Each loss trains rerank.sh's cross-encoder (the demo's settings,
# scripts/demo_settings.sh: MiniLM + a fresh one-logit head, 1 positive + 3 negatives, batch 16, 1 epoch
# over round 2's train groups of the 709 other train queries, query + passage cut at 128 tokens, lr 2e-4)
# and re-ranks the top 100 of round 2's held-out run; the table (benchmarks/rerank_table.py) gives its
# nDCG@10 alone and fused with round 2 (RERANK_ALPHA), each with a paired t-test against round 2.
# The distillation losses (margin_mse, kl) learn from teacher scores that TEACHER's trained model writes
# onto the same groups (tools/score_groups.py), so they run after it.
#
#   STUDY     the quality study's output (benchmarks/quality_heldout.sh)   (default runs/quality-heldout)
#   FROM      its configuration whose round 2 is re-ranked (init_r1: the demo's round 2) (default init_r1)
#   LOSSES    losses to run, in order            (default: bce listwise lambda ranknet listmle plistmle mnrl
#             margin_mse kl)
#   TEACHER   the loss whose model scores the groups for margin_mse and kl     (default listwise)
#   OUT       where everything goes                                       (default runs/rerank-losses)
#   SAVE      the table as JSON                   (default benchmarks/results/rerank_losses.json)
#   PRECISION training and re-ranking precision (rerank.sh's own default, auto: bf16 where the CPU
#             has bf16 units)                                                    (default auto)
# Every step skips what is complete; the JSON is rewritten after each loss.
set -euo pipefail
{
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENSIR_SCRIPT=rerank_losses
source "$DENSIR_HOME/scripts/lib.sh"
cd "$DENSIR_HOME"
STUDY=${STUDY:-runs/quality-heldout}
FROM=${FROM:-init_r1}
ALL="bce listwise lambda ranknet listmle plistmle mnrl margin_mse kl"
LOSSES=${LOSSES:-$ALL}
TEACHER=${TEACHER:-listwise}
OUT=${OUT:-runs/rerank-losses}
SAVE=${SAVE:-benchmarks/results/rerank_losses.json}
PYTHON=${PYTHON:-python}
export PRECISION=${PRECISION:-auto}
DATA=$STUDY/data
for f in "$DATA/dataset.json" "$STUDY/$FROM/round2/heldout.run" "$STUDY/$FROM/round1/train.hn.jsonl"; do
  [ -f "$f" ] || die "$f is missing: run benchmarks/quality_heldout.sh (CONFIGS='base $FROM') first"
done
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
export PYTHON EVAL_SPLIT=heldout DATA_DIR=$DATA OUT_DIR=$OUT TIMINGS=$OUT/timings.tsv
mkdir -p "$OUT"
# the first stage's rounds, as rerank.sh finds them under OUT_DIR (its table and default groups)
for r in round1 round2; do [ -e "$OUT/$r" ] || ln -s "$(cd "$STUDY/$FROM/$r" && pwd)" "$OUT/$r"; done
BM25_GROUPS=$DATA/train.bm25.jsonl HN_GROUPS=$OUT/round1/train.hn.jsonl

for loss in $LOSSES; do
  log "=== loss $loss"
  (
    export RERANK_LOSS=$loss RERANK_ROUND=rerank-$loss
    # the held-out queries are the evaluation split here: no validation on them (VALIDATE=1 refuses)
    export VALIDATE=${VALIDATE:-0}
    source "$DENSIR_HOME/scripts/demo_settings.sh"
    export BM25_GROUPS HN_GROUPS
    case "$loss" in
      margin_mse|kl)
        teacher=$OUT/rerank-$TEACHER/model
        [ -f "$teacher/densir_reranker.json" ] || die "$loss needs the teacher: LOSSES='$TEACHER $loss'"
        scored=()
        for g in "$BM25_GROUPS" "$HN_GROUPS"; do
          s=$OUT/teacher-$TEACHER/$(basename "$g" .jsonl).scored.jsonl
          score_groups_step "$teacher" "$g" "$s" "$RERANK_MAX_LEN"
          scored+=("$s")
        done
        export RERANK_GROUPS="${scored[*]}" ;;
    esac
    bash rerank.sh
  ) || die "loss $loss failed (rerun to resume)"
  # shellcheck disable=SC2086
  "$PYTHON" benchmarks/rerank_table.py --out "$OUT" --data "$DATA" --losses $ALL --save "$SAVE"
done
exit 0
}
