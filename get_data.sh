#!/usr/bin/env bash
# get_data.sh — stage 1 of densir: fetch a dataset, convert it, BM25-index it, retrieve BM25
# negatives, score the BM25 baseline and build the round-1 train groups.
#
# Usage: bash get_data.sh [--dataset D] [--source URL|FILE|DIR] [--out_dir DIR] [options]
# Every option is also an env var of the same name in capitals (flags win); all are listed below with
# their type and default (declared in densir/settings.py, which checks them before any work).
#
# Writes under OUT_DIR (each file appears only when complete; a rerun skips finished steps and
# redoes a step whose output is missing):
#   corpus.jsonl queries.<split>.jsonl qrels.<split>.tsv dataset.json   (README "Data formats", string ids)
#   bm25_index/  bm25.<eval>.run  bm25.<eval>.metrics.json  bm25.train.run
#   train.bm25.jsonl (+ .stats.json)   [train.bm25.tok.jsonl corpus.tok.jsonl]
#   [HOLDOUT > 0: queries.heldout.jsonl qrels.heldout.tsv bm25.heldout.run bm25.heldout.metrics.json]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DENSIR_HOME=$HERE
# log, die, load_settings, and step NAME OUTPUT CMD...: skip when OUTPUT exists (outputs are written
# atomically), else run
DENSIR_SCRIPT=get_data
source "$HERE/scripts/lib.sh"
load_settings "$@"

case "$DATASET" in
  msmarco-passage)
    FORMAT=msmarco; TRAIN=train; EVAL=dev
    URL=https://msmarco.z22.web.core.windows.net/msmarcoranking/collectionandqueries.tar.gz ;;
  beir/*)
    FORMAT=beir; TRAIN=train; EVAL=test
    URL="https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/${DATASET#beir/}.zip" ;;
  *) echo "get_data.sh: unknown dataset '$DATASET' (msmarco-passage or beir/<name>)" >&2; exit 2 ;;
esac
SOURCE=${SOURCE:-$URL}
mkdir -p "$OUT_DIR"

# ---- 1. fetch: a URL is downloaded (to a .part name, renamed when done); a local path is used as is
if [[ "$SOURCE" =~ ^https?:// ]]; then
  mkdir -p "$OUT_DIR/download"
  LOCAL="$OUT_DIR/download/$(basename "$SOURCE")"
  step download "$LOCAL" bash -c 'curl -fL --retry 3 -o "$1.part" "$2" && mv "$1.part" "$1"' _ "$LOCAL" "$SOURCE"
else
  [ -e "$SOURCE" ] || { echo "get_data.sh: source '$SOURCE' does not exist" >&2; exit 2; }
  LOCAL=$SOURCE
fi

# ---- 2. convert to densir formats (dataset.json is written last)
step convert "$OUT_DIR/dataset.json" \
  $PYTHON "$HERE/tools/prepare_data.py" --format "$FORMAT" --source "$LOCAL" --out_dir "$OUT_DIR" --name "$DATASET"

# ---- 2b. HOLDOUT > 0: hold out that many train queries here, before any train file is built from them
# (densir.holdout: qrels.heldout.tsv, queries.heldout.jsonl, then the train files lose them, then
# dataset.json's "heldout"; a rerun finds it complete; another HOLDOUT or HOLDOUT_SEED is refused)
holdout() {
  $PYTHON "$HERE/tools/holdout_split.py" --data_dir "$OUT_DIR" --in_place --n "$HOLDOUT" --seed "$HOLDOUT_SEED" \
    --split "$TRAIN" >&2
}
if [ "$HOLDOUT" -gt 0 ]; then
  [ -f "$OUT_DIR/qrels.$TRAIN.tsv" ] || die "HOLDOUT=$HOLDOUT but $DATASET has no $TRAIN split to hold queries out of"
  log "holdout: $HOLDOUT $TRAIN queries (seed $HOLDOUT_SEED)"
  holdout
fi

# ---- 3. BM25 index (title + text in one field) and the evaluation-split baseline
step bm25-index "$OUT_DIR/bm25_index" \
  $PYTHON "$HERE/tools/bm25.py" index --corpus "$OUT_DIR/corpus.jsonl" --index "$OUT_DIR/bm25_index" --threads "$THREADS"
if [ -f "$OUT_DIR/qrels.$EVAL.tsv" ]; then
  step bm25-search-$EVAL "$OUT_DIR/bm25.$EVAL.run" \
    $PYTHON "$HERE/tools/bm25.py" search --index "$OUT_DIR/bm25_index" --queries "$OUT_DIR/queries.$EVAL.jsonl" \
      --run "$OUT_DIR/bm25.$EVAL.run" --depth "$EVAL_DEPTH" --threads "$THREADS"
  step bm25-evaluate "$OUT_DIR/bm25.$EVAL.metrics.json" \
    $PYTHON "$HERE/tools/evaluate.py" "$OUT_DIR/qrels.$EVAL.tsv" "$OUT_DIR/bm25.$EVAL.run" --name "BM25 ($EVAL)" \
      --save "$OUT_DIR/bm25.$EVAL.metrics.json"
else
  log "no $EVAL split in $DATASET: no baseline scores"
fi
# the held-out queries' BM25 run, at the evaluation depth (the hybrid choice fuses it with a dense run)
if [ -f "$OUT_DIR/queries.heldout.jsonl" ]; then
  step bm25-search-heldout "$OUT_DIR/bm25.heldout.run" \
    $PYTHON "$HERE/tools/bm25.py" search --index "$OUT_DIR/bm25_index" --queries "$OUT_DIR/queries.heldout.jsonl" \
      --run "$OUT_DIR/bm25.heldout.run" --depth "$EVAL_DEPTH" --threads "$THREADS"
  step bm25-evaluate-heldout "$OUT_DIR/bm25.heldout.metrics.json" \
    $PYTHON "$HERE/tools/evaluate.py" "$OUT_DIR/qrels.heldout.tsv" "$OUT_DIR/bm25.heldout.run" --name "BM25 (heldout)" \
      --save "$OUT_DIR/bm25.heldout.metrics.json"
fi

# ---- 4. BM25 negatives for the train queries, and the round-1 train groups
if [ -f "$OUT_DIR/qrels.$TRAIN.tsv" ]; then
  step bm25-search-$TRAIN "$OUT_DIR/bm25.$TRAIN.run" \
    $PYTHON "$HERE/tools/bm25.py" search --index "$OUT_DIR/bm25_index" --queries "$OUT_DIR/queries.$TRAIN.jsonl" \
      --run "$OUT_DIR/bm25.$TRAIN.run" --depth "$DEPTH" --threads "$THREADS"
  step build-train "$OUT_DIR/train.bm25.jsonl" \
    $PYTHON "$HERE/tools/build_train.py" --queries "$OUT_DIR/queries.$TRAIN.jsonl" --qrels "$OUT_DIR/qrels.$TRAIN.tsv" \
      --run "$OUT_DIR/bm25.$TRAIN.run" --corpus "$OUT_DIR/corpus.jsonl" --out "$OUT_DIR/train.bm25.jsonl" \
      --depth "$DEPTH" --n_sample "$N_SAMPLE" --seed "$SEED"
  if [ -n "$TOKENIZE" ]; then
    step pretokenize "$OUT_DIR/train.bm25.tok.jsonl" \
      $PYTHON "$HERE/tools/pretokenize.py" --tokenizer "$TOKENIZE" --q_max_len "$Q_MAX_LEN" --p_max_len "$P_MAX_LEN" \
        --groups "$OUT_DIR/train.bm25.jsonl" "$OUT_DIR/train.bm25.tok.jsonl"
  fi
else
  log "no $TRAIN split in $DATASET: no train groups"
fi
# dataset.json's "heldout" gets the train groups left
if [ "$HOLDOUT" -gt 0 ]; then holdout; fi
if [ -n "$TOKENIZE" ]; then
  step pretokenize-corpus "$OUT_DIR/corpus.tok.jsonl" \
    $PYTHON "$HERE/tools/pretokenize.py" --tokenizer "$TOKENIZE" --p_max_len "$P_MAX_LEN" \
      --corpus "$OUT_DIR/corpus.jsonl" "$OUT_DIR/corpus.tok.jsonl"
fi

log "done: $OUT_DIR"
[ -f "$OUT_DIR/bm25.$EVAL.metrics.json" ] && $PYTHON - "$OUT_DIR/bm25.$EVAL.metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print("BM25 " + "  ".join(f"{k} {m[k]:.4f}" for k in ("MRR@10", "nDCG@10", "Recall@100", "Recall@1000")))
PY
[ -f "$OUT_DIR/train.bm25.stats.json" ] && cat "$OUT_DIR/train.bm25.stats.json" >&2
exit 0
