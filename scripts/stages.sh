# scripts/stages.sh — the dense-retrieval steps shared by run.sh, mine_hard_neg.sh and
# train_hn.sh (and, through them, by the SLURM jobs in slurm/). Sourced, never run.
#
# Their settings (the shared ones and each script's own) are declared once, in densir/settings.py:
# `bash run.sh --help` lists them with type and default, and load_settings (scripts/lib.sh) fills them
# in and checks them before any work. The hybrid run of run.sh and train_hn.sh fuses each round's
# EVAL_SPLIT run with DATA_DIR/bm25.<EVAL_SPLIT>.run (tools/fuse_runs.py; a changed setting needs
# R/<split>.hybrid.* deleted). HYBRID=auto chooses the fusion per round on DATA_DIR's held-out train
# queries (get_data.sh HOLDOUT), never on test: R/fusion.json.
#
# Layout of one round R under OUT_DIR (every file appears only when complete):
#   R/model/                          trained encoder (HF + sentence-transformers dir; densir_config.json
#                                     is written last), R/model/checkpoint-*/ while training
#   R/enc/corpus.<i>.{npy,ids,json}   corpus shard i of NUM_SHARDS (the .json marks it complete;
#                                     R/enc/corpus.{npy,ids,json} when NUM_SHARDS=1)
#   R/enc/queries.<split>.{npy,ids,json}
#   R/runs/<split>.<i>.run            top-k of one corpus shard for the split's queries
#   R/<split>.run                     merged TREC run       R/<split>.marco.tsv   MS MARCO format
#   R/<split>.metrics.json            MRR@10 nDCG@10 Recall@100 Recall@1000
#   R/<split>.hybrid.run              R/<split>.run fused with BM25 (HYBRID), EVAL_DEPTH hits a query
#   R/<split>.hybrid.metrics.json     its scores (the table's "R-hybrid" row)
#   R/fusion.json                     HYBRID=auto: the fusion sweep on the held-out train queries and
#                                     its "chosen" setting (R/enc/queries.heldout.*, R/runs/heldout.<i>.run,
#                                     R/heldout.run: the round's run of those queries)

# pipeline_setup: after load_settings, what only the node that runs the job can settle: the precision
# (densir.precision resolves PRECISION=auto for this node's device), the data, the output directory
pipeline_setup() {
  HAVE_GPU=0
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; then HAVE_GPU=1; fi
  [ -f "$DATA_DIR/dataset.json" ] || die "DATA_DIR=$DATA_DIR has no dataset.json: run get_data.sh first"
  # the settings whose values read DATA_DIR's held-out train queries (get_data.sh HOLDOUT=N) in this script
  # and STAGE, e.g. "HYBRID=auto": HELDOUT_USERS, from the settings list (densir/settings.py: heldout)
  local who=${HELDOUT_USERS:-} f
  if [ -n "$who" ]; then
    [ "$EVAL_SPLIT" = heldout ] && die "$who chooses on DATA_DIR's held-out train queries, which are EVAL_SPLIT here: evaluate another split, or set HYBRID/VALIDATE otherwise"
    for f in queries.heldout.jsonl qrels.heldout.tsv bm25.heldout.run; do
      [ -f "$DATA_DIR/$f" ] || die "$who: held-out train queries needed, but DATA_DIR=$DATA_DIR has no $f: run get_data.sh with HOLDOUT=N (e.g. 100)"
    done
  fi
  # the one precision policy (densir.precision), resolved on the node that runs the job
  PRECISION=$("$PYTHON" -m densir.precision --device auto --requested "$PRECISION") \
    || die "PRECISION=$PRECISION could not be resolved on this node"
  mkdir -p "$OUT_DIR"
  export PRECISION
}

# want STAGE_NAME: true when this invocation runs that stage
want() { [ "$STAGE" = all ] || [ "$STAGE" = "$1" ]; }

# shard_ids: the shards this invocation handles (SHARD, or all of them)
shard_ids() { if [ -n "$SHARD" ]; then echo "$SHARD"; else seq 0 $((NUM_SHARDS - 1)); fi; }

# ------------------------------------------------------------------ train
# train_round ROUND INIT GROUPS...: contrastive training from INIT on the GROUPS files
train_round() {
  local round=$1 init=$2; shift 2
  local out=$OUT_DIR/$round/model g
  for g in "$@"; do [ -f "$g" ] || die "train groups $g are missing (round $round)"; done
  step "train-$round" "$out/densir_config.json" launch_train "$init" "$out" "$@"
}

# launch_train INIT OUT GROUPS...: densir.driver.train through launch_module
launch_train() {
  local init=$1 out=$2; shift 2
  local args=(--model_name_or_path "$init" --train_dir "$@" --output_dir "$out"
              --q_max_len "$Q_MAX_LEN" --p_max_len "$P_MAX_LEN" --train_n_passages "$TRAIN_N_PASSAGES"
              --per_device_train_batch_size "$BATCH" --learning_rate "$LR" --num_train_epochs "$EPOCHS"
              --max_steps "$MAX_STEPS" --warmup_steps "$WARMUP" --temperature "$TEMPERATURE"
              --save_steps "$SAVE_STEPS" --seed "$SEED")
  [ -n "$POOLING" ] && args+=(--pooling "$POOLING")
  case "$NORMALIZE" in 1|true|True) args+=(--normalize true) ;; 0|false|False) args+=(--normalize false) ;; esac
  # shellcheck disable=SC2207
  args+=($(precision_flags))
  [ -n "$ATTENTION_DROPOUT" ] && args+=(--attention_dropout "$ATTENTION_DROPOUT")
  # VALIDATE=1: the held-out train queries scored once per epoch (each against its judged passages and
  # its BM25 top 100: densir.validation's sample), a checkpoint per epoch, the best one kept at the end
  if [ "${VALIDATE:-0}" = 1 ]; then
    args+=(--eval_queries "$DATA_DIR/queries.heldout.jsonl" --eval_qrels "$DATA_DIR/qrels.heldout.tsv"
           --eval_sample_bm25_run "$DATA_DIR/bm25.heldout.run"
           --eval_sample_depth "$VALIDATE_DEPTH" --eval_strategy epoch --save_strategy epoch
           --load_best_model_at_end true)
  fi
  # resume: the trainer picks up the newest complete checkpoint-* in OUT, if any
  args+=(--resume_from_checkpoint auto)
  compgen -G "$out/checkpoint-*" >/dev/null && log "resuming from the last checkpoint in $out"
  [ "$(train_world_size)" -gt 1 ] && args+=(--negatives_x_device)
  # shellcheck disable=SC2206
  args+=($TRAIN_ARGS)
  launch_module densir.driver.train "${args[@]}"
}

# train_nodes: nodes one training job spans (the allocation's under DENSIR_SRUN=1, else 1)
train_nodes() { if [ "${DENSIR_SRUN:-0}" = 1 ]; then echo "${SLURM_NNODES:-1}"; else echo 1; fi; }
# train_world_size: training processes in all (NPROC per node)
train_world_size() { echo $((NPROC * $(train_nodes))); }

# launch_module MODULE ARGS...: a training driver (densir.driver.train or .train_reranker) as one
# python process, as torchrun with NPROC processes (NPROC > 1), or, under DENSIR_SRUN=1 (set by the
# sbatch scripts), as srun + one torchrun per node of the allocation, rendezvous on the first node.
# Distributed on CPU, the HF Trainer only runs DDP when told the backend: gloo is passed first, so
# a --ddp_backend among ARGS wins.
launch_module() {
  local module=$1; shift
  local nnodes world args=()
  nnodes=$(train_nodes)
  world=$(train_world_size)
  [ "$world" -gt 1 ] && [ "$HAVE_GPU" != 1 ] && args+=(--ddp_backend gloo)
  args+=("$@")
  local cmd=("$PYTHON")
  if [ "$world" -gt 1 ]; then
    if [ "$nnodes" -gt 1 ]; then
      local head
      head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
      cmd+=(-m torch.distributed.run --nnodes "$nnodes" --nproc_per_node "$NPROC" --rdzv_id "$SLURM_JOB_ID"
            --rdzv_backend c10d --rdzv_endpoint "$head:${MASTER_PORT:-29500}")
    else
      cmd+=(-m torch.distributed.run --standalone --nproc_per_node "$NPROC")
    fi
  fi
  cmd+=(-m "$module" "${args[@]}")
  if [ "${DENSIR_SRUN:-0}" = 1 ]; then
    # srun (SLURM >= 22.05) does not inherit --cpus-per-task from the batch job: pass it on
    cmd=(srun --nodes "$nnodes" --ntasks-per-node 1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task "$SLURM_CPUS_PER_TASK"}
         --kill-on-bad-exit=1 "${cmd[@]}")
  fi
  log "${cmd[*]}"
  "${cmd[@]}"
}

# ------------------------------------------------------------------ encode
# precision_flags: the HF Trainer's / densir.driver.encode's flag for PRECISION (none for fp32)
precision_flags() { case "$PRECISION" in bf16) echo --bf16 ;; fp16) echo --fp16 ;; esac; }
# encode_flags: how densir.driver.encode runs the model: PRECISION on torch, else BACKEND/QUANTIZE
encode_flags() {
  if [ "$BACKEND" = torch ]; then precision_flags; else echo --backend "$BACKEND" --quantize "$QUANTIZE"; fi
}

# corpus_shard ROUND i: the name densir.driver.encode gives shard i (corpus.<i>; corpus when NUM_SHARDS=1)
corpus_shard() { if [ "$NUM_SHARDS" -gt 1 ]; then echo "$OUT_DIR/$1/enc/corpus.$2"; else echo "$OUT_DIR/$1/enc/corpus"; fi; }

# encode MODEL ARGS...: densir.driver.encode; a round's model (under OUT_DIR) must be complete first
encode() {
  local model=$1; shift
  case "$model" in
    "$OUT_DIR"/*) [ -f "$model/densir_config.json" ] || { echo "no trained model in $model: run its train stage first" >&2; return 1; } ;;
  esac
  "$PYTHON" -m densir.driver.encode --model_name_or_path "$model" "$@"
}

# encode_corpus ROUND MODEL: corpus shards (SHARD or all) of ROUND with MODEL
encode_corpus() {
  local round=$1 model=$2 i meta
  for i in $(shard_ids); do
    meta="$(corpus_shard "$round" "$i").json"
    # a shard of another NUM_SHARDS would hold other documents: refuse rather than skip it
    if [ -f "$meta" ] && ! grep -q "\"num_shards\": $NUM_SHARDS[,}]" "$meta"; then
      die "$meta was encoded with another NUM_SHARDS than $NUM_SHARDS: delete $OUT_DIR/$round/enc and $OUT_DIR/$round/runs, or set NUM_SHARDS back"
    fi
    # shellcheck disable=SC2046,SC2086
    step "encode-corpus-$round-$i" "$(corpus_shard "$round" "$i").json" \
      encode "$model" --encode_in_path "$DATA_DIR/corpus.jsonl" \
        --encoded_save_path "$OUT_DIR/$round/enc/corpus" --shard_index "$i" --num_shards "$NUM_SHARDS" \
        --per_device_eval_batch_size "$ENCODE_BATCH" --q_max_len "$Q_MAX_LEN" --p_max_len "$P_MAX_LEN" \
        $(encode_flags) $ENCODE_ARGS
  done
}

# encode_queries ROUND MODEL SPLIT
encode_queries() {
  local round=$1 model=$2 split=$3
  [ -f "$DATA_DIR/queries.$split.jsonl" ] || die "no $DATA_DIR/queries.$split.jsonl"
  # shellcheck disable=SC2046,SC2086
  step "encode-queries-$round-$split" "$OUT_DIR/$round/enc/queries.$split.json" \
    encode "$model" --encode_in_path "$DATA_DIR/queries.$split.jsonl" \
      --encode_is_qry --encoded_save_path "$OUT_DIR/$round/enc/queries.$split" \
      --per_device_eval_batch_size "$ENCODE_BATCH" --q_max_len "$Q_MAX_LEN" --p_max_len "$P_MAX_LEN" \
      $(encode_flags) $ENCODE_ARGS
}

# ------------------------------------------------------------------ search, reduce, evaluate
# search_shards ROUND SPLIT DEPTH: one run per corpus shard (SHARD or all)
search_shards() {
  local round=$1 split=$2 depth=$3 i enc=$OUT_DIR/$1/enc
  for i in $(shard_ids); do
    # shellcheck disable=SC2086
    step "search-$round-$split-$i" "$OUT_DIR/$round/runs/$split.$i.run" \
      "$PYTHON" -m densir.faiss_retriever --query_reps "$enc/queries.$split" --passage_reps "$(corpus_shard "$round" "$i")" \
        --depth "$depth" --save_ranking_to "$OUT_DIR/$round/runs/$split.$i.run" $SEARCH_ARGS
  done
}

# reduce_runs ROUND SPLIT DEPTH: merge the NUM_SHARDS shard runs into ROUND/SPLIT.run
reduce_runs() {
  local round=$1 split=$2 depth=$3
  step "reduce-$round-$split" "$OUT_DIR/$round/$split.run" \
    "$PYTHON" -m densir.faiss_retriever.reducer --runs "$OUT_DIR/$round/runs/$split.*.run" \
      --num_shards "$NUM_SHARDS" --depth "$depth" --save_ranking_to "$OUT_DIR/$round/$split.run"
}

# evaluate_round ROUND SPLIT NAME: MS MARCO copy of the run, metrics JSON
evaluate_round() {
  local round=$1 split=$2 name=$3 dir=$OUT_DIR/$1
  step "marco-$round-$split" "$dir/$split.marco.tsv" \
    "$PYTHON" "$DENSIR_HOME/tools/score_to_marco.py" "$dir/$split.run" --out "$dir/$split.marco.tsv"
  evaluate_run "evaluate-$round-$split" "$dir/$split.run" "$dir/$split.metrics.json" "$name" "$split"
}

# evaluate_run STEP RUN METRICS NAME SPLIT: score RUN on DATA_DIR/qrels.SPLIT.tsv into METRICS (a
# split without qrels is only logged)
evaluate_run() {
  local name=$1 run=$2 metrics=$3 system=$4 split=$5
  if [ -f "$DATA_DIR/qrels.$split.tsv" ]; then
    step "$name" "$metrics" "$PYTHON" "$DENSIR_HOME/tools/evaluate.py" "$DATA_DIR/qrels.$split.tsv" "$run" \
      --name "$system" --save "$metrics"
  else
    log "no qrels for $split: $run is not scored"
  fi
}

# choose_fusion_round ROUND: with HYBRID=auto, the fusion of ROUND chosen on DATA_DIR's held-out train
# queries: ROUND's heldout.run (encoded, searched and reduced by the stages above, split heldout) fused
# with DATA_DIR/bm25.heldout.run every way (tools/choose_fusion.py), the sweep and the best by nDCG@10
# ("chosen") in ROUND/fusion.json; it refuses qrels that share a query with the EVAL_SPLIT's
choose_fusion_round() {
  local round=$1 dir=$OUT_DIR/$1
  [ "$HYBRID" = auto ] || return 0
  step "choose-fusion-$round" "$dir/fusion.json" "$PYTHON" "$DENSIR_HOME/tools/choose_fusion.py" \
    --dense "$dir/heldout.run" --bm25 "$DATA_DIR/bm25.heldout.run" --qrels "$DATA_DIR/qrels.heldout.tsv" \
    --eval_qrels "$DATA_DIR/qrels.$EVAL_SPLIT.tsv" --depth "$EVAL_DEPTH" --label "$round" --out "$dir/fusion.json"
}

# with_heldout SPLIT: SPLIT, and heldout after it with HYBRID=auto (the splits a round encodes and searches)
with_heldout() { echo "$1"; if [ "$HYBRID" = auto ]; then echo heldout; fi; }

# hybrid_round ROUND SPLIT: ROUND's SPLIT run fused with DATA_DIR's BM25 run of SPLIT (HYBRID) into
# ROUND/SPLIT.hybrid.run, then scored as ROUND-hybrid; nothing with HYBRID=none or without that BM25 run.
# HYBRID=auto fuses by ROUND/fusion.json's chosen setting
hybrid_round() {
  local round=$1 split=$2 dir=$OUT_DIR/$1 bm25=$DATA_DIR/bm25.$2.run
  local out=$dir/$split.hybrid.run args
  [ "$HYBRID" = none ] && return 0
  if [ ! -f "$bm25" ]; then log "no $bm25: no hybrid run for $round"; return 0; fi
  args=(--runs "$dir/$split.run" "$bm25" --depth "$EVAL_DEPTH" --out "$out" --tag densir-hybrid)
  case "$HYBRID" in
    rrf) args+=(--method rrf --rrf_k "$HYBRID_K") ;;
    weighted) args+=(--method weighted --weights "$HYBRID_WEIGHT" "$(awk -v w="$HYBRID_WEIGHT" 'BEGIN { print 1 - w }')"
                     --norm "$HYBRID_NORM") ;;
    auto) # this round's own choice (choose_fusion_round)
      [ -f "$dir/fusion.json" ] || die "HYBRID=auto: no $dir/fusion.json (run the reduce stage of $round)"
      local chosen
      chosen=$("$PYTHON" "$DENSIR_HOME/tools/choose_fusion.py" --fuse_args "$dir/fusion.json") || exit 1
      # shellcheck disable=SC2206
      args+=($chosen) ;;
  esac
  step "hybrid-$round-$split" "$out" "$PYTHON" "$DENSIR_HOME/tools/fuse_runs.py" "${args[@]}"
  evaluate_run "evaluate-$round-hybrid-$split" "$out" "$dir/$split.hybrid.metrics.json" "$round-hybrid" "$split"
}

# with_hybrid ROUND...: the ROUNDs for print_table, each followed by its hybrid row when that is scored
with_hybrid() {
  local r m
  for r in "$@"; do
    echo "$r"
    m=$OUT_DIR/$r/$EVAL_SPLIT.hybrid.metrics.json
    if [ "$HYBRID" != none ] && [ -f "$m" ]; then echo "$r-hybrid=$m"; fi
  done
}

# print_table [ROUND | NAME=METRICS.json ...]: BM25 and each round (default: zeroshot round1 round2)
# that has metrics for EVAL_SPLIT, one row each; also saved as OUT_DIR/EVAL_SPLIT.table.txt
print_table() {
  local rows=() r
  [ -f "$DATA_DIR/bm25.$EVAL_SPLIT.metrics.json" ] && rows+=("BM25=$DATA_DIR/bm25.$EVAL_SPLIT.metrics.json")
  [ $# -gt 0 ] || set -- zeroshot round1 round2
  for r in "$@"; do
    case "$r" in
      *=*) rows+=("$r") ;;  # NAME=metrics.json as it is
      *) [ -f "$OUT_DIR/$r/$EVAL_SPLIT.metrics.json" ] && rows+=("$r=$OUT_DIR/$r/$EVAL_SPLIT.metrics.json") ;;
    esac
  done
  "$PYTHON" "$DENSIR_HOME/tools/metrics_table.py" "${rows[@]}" --save "$OUT_DIR/$EVAL_SPLIT.table.txt"
}
