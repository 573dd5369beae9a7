# scripts/stages.sh — the dense-retrieval steps shared by run.sh, mine_hard_neg.sh and
# train_hn.sh (and, through them, by the SLURM jobs in slurm/). Sourced, never run.
#
# Settings shared by all three scripts (env vars, or --flags of the same name in lower case;
# flags win). Defaults serve the real job (MS MARCO on GPUs); small runs pass their own.
#   MODEL             initial checkpoint: HF hub name or local dir          (default bert-base-uncased)
#   DATA_DIR          get_data.sh's output directory                        (default data/msmarco-passage)
#   OUT_DIR           where the rounds are written                         (default runs/<basename DATA_DIR>)
#   EVAL_SPLIT        split to evaluate   (default: dev if DATA_DIR/qrels.dev.tsv exists, else test)
#   NUM_SHARDS        corpus shards: one encode job and one search job each (default 8)
#   Q_MAX_LEN P_MAX_LEN  token limits for queries / passages                (default 32 / 128)
#   POOLING           cls | mean | last               (default: what MODEL's config says, else cls)
#   NORMALIZE         1 = L2-normalise embeddings, 0 = not (default: what MODEL's config says, else 0)
#   TEMPERATURE       contrastive softmax temperature                       (default 1.0)
#   PRECISION         auto | bf16 | fp16 | fp32 for training, encoding and re-ranking; auto = bf16
#                     where the device has it (GPU sm_80+, CPU avx512_bf16/AMX), else fp16 on a GPU,
#                     else fp32 (python -m densir.precision)                 (default auto)
#   NPROC             training processes per node; > 1 runs torchrun with --negatives_x_device
#                     (gloo on CPU, NCCL on GPUs)                           (default 1)
#   BATCH             queries per device per training step                 (default 8)
#   TRAIN_N_PASSAGES  passages per query: 1 positive + n-1 negatives        (default 8)
#   LR                learning rate                                         (default 5e-6)
#   EPOCHS            training epochs                                       (default 3)
#   MAX_STEPS         > 0: train this many steps instead of EPOCHS         (default -1)
#   WARMUP            linear warm-up: a share of the steps if < 1, else a step count (default 0.1)
#   SAVE_STEPS        checkpoint every N steps; a rerun resumes from the last (default 500)
#   SEED              training seed                                         (default 42)
#   ATTENTION_DROPOUT training: attention-probability dropout; 0 runs torch's fused attention kernel
#                     on the CPU, 1.3x faster per step (benchmarks/train_throughput.py) (default: MODEL's)
#   ENCODE_BATCH      encoding batch size                                   (default 128)
#   BACKEND QUANTIZE  what runs the encoder when encoding: torch | onnx | openvino, none | int8
#                     (densir.backends; onnx/openvino run on the CPU, exported once beside the
#                     model; PRECISION then applies to training only)   (default torch / none)
#   EVAL_DEPTH        retrieval depth of the evaluation run                 (default 1000)
#   TRAIN_ARGS ENCODE_ARGS SEARCH_ARGS   extra flags for densir.driver.train / densir.driver.encode /
#                     densir.faiss_retriever, e.g. SEARCH_ARGS="--index_factory HNSW32"
#   STAGE             only this stage (the SLURM jobs use it): see each script (default all)
#   SHARD             with STAGE=encode-corpus or search: only this shard (a SLURM array task)
#   TIMINGS           each step that ran appends "script step seconds" here (default OUT_DIR/timings.tsv)
#   PYTHON            python interpreter                                   (default python)
# Settings of the hybrid run of run.sh and train_hn.sh (each round's EVAL_SPLIT run fused with
# DATA_DIR/bm25.<EVAL_SPLIT>.run by tools/fuse_runs.py; chosen on held-out train queries by
# benchmarks/hybrid_sweep.py, never on test; a changed setting needs R/<split>.hybrid.* deleted):
#   HYBRID            rrf (reciprocal rank fusion) | weighted (sum of per-query normalised
#                     scores) | none                                        (default rrf)
#   HYBRID_K          rrf: each run adds 1 / (HYBRID_K + rank)              (default 60)
#   HYBRID_WEIGHT     weighted: weight of the dense run; BM25 gets 1 - it   (default 0.5)
#                     (min-max 0.5 was the best weighted setting on 100 held-out SciFact train
#                     queries, zero-shot MiniLM: benchmarks/results/hybrid_sweep.json)
#   HYBRID_NORM       weighted: minmax | zscore, per query and run          (default minmax)
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

PIPELINE_VARS="MODEL DATA_DIR OUT_DIR EVAL_SPLIT NUM_SHARDS Q_MAX_LEN P_MAX_LEN POOLING NORMALIZE
  TEMPERATURE PRECISION NPROC BATCH TRAIN_N_PASSAGES LR EPOCHS MAX_STEPS WARMUP SAVE_STEPS SEED
  ATTENTION_DROPOUT ENCODE_BATCH BACKEND QUANTIZE EVAL_DEPTH TRAIN_ARGS ENCODE_ARGS SEARCH_ARGS STAGE SHARD TIMINGS PYTHON"

# pipeline_defaults: fill in every shared setting the caller left unset, check them, export them
pipeline_defaults() {
  MODEL=${MODEL:-bert-base-uncased}
  DATA_DIR=${DATA_DIR:-data/msmarco-passage}
  OUT_DIR=${OUT_DIR:-runs/$(basename "$DATA_DIR")}
  if [ -z "${EVAL_SPLIT:-}" ]; then
    if [ -f "$DATA_DIR/qrels.dev.tsv" ]; then EVAL_SPLIT=dev; else EVAL_SPLIT=test; fi
  fi
  NUM_SHARDS=${NUM_SHARDS:-8}
  Q_MAX_LEN=${Q_MAX_LEN:-32}
  P_MAX_LEN=${P_MAX_LEN:-128}
  POOLING=${POOLING:-}
  NORMALIZE=${NORMALIZE:-}
  TEMPERATURE=${TEMPERATURE:-1.0}
  PRECISION=${PRECISION:-auto}
  HAVE_GPU=0
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; then HAVE_GPU=1; fi
  # the one precision policy (densir.precision), resolved on the node that runs the job
  PRECISION=$("${PYTHON:-python}" -m densir.precision --device auto --requested "$PRECISION") \
    || die "PRECISION must be auto, bf16, fp16 or fp32, not '$PRECISION'"
  NPROC=${NPROC:-1}
  BATCH=${BATCH:-8}
  TRAIN_N_PASSAGES=${TRAIN_N_PASSAGES:-8}
  LR=${LR:-5e-6}
  EPOCHS=${EPOCHS:-3}
  MAX_STEPS=${MAX_STEPS:--1}
  WARMUP=${WARMUP:-0.1}
  SAVE_STEPS=${SAVE_STEPS:-500}
  SEED=${SEED:-42}
  ENCODE_BATCH=${ENCODE_BATCH:-128}
  BACKEND=${BACKEND:-torch}
  QUANTIZE=${QUANTIZE:-none}
  case "$BACKEND" in torch|onnx|openvino) ;; *) die "BACKEND must be torch, onnx or openvino, not '$BACKEND'" ;; esac
  case "$QUANTIZE" in none|int8) ;; *) die "QUANTIZE must be none or int8, not '$QUANTIZE'" ;; esac
  [ "$BACKEND" = torch ] && [ "$QUANTIZE" = int8 ] && die "QUANTIZE=int8 needs BACKEND=onnx or openvino"
  EVAL_DEPTH=${EVAL_DEPTH:-1000}
  TRAIN_ARGS=${TRAIN_ARGS:-}
  ATTENTION_DROPOUT=${ATTENTION_DROPOUT:-}
  ENCODE_ARGS=${ENCODE_ARGS:-}
  SEARCH_ARGS=${SEARCH_ARGS:-}
  STAGE=${STAGE:-all}
  SHARD=${SHARD:-}
  TIMINGS=${TIMINGS-$OUT_DIR/timings.tsv}
  PYTHON=${PYTHON:-python}
  case "$PRECISION" in bf16|fp16|fp32) ;; *) die "PRECISION must be bf16, fp16 or fp32, not '$PRECISION'" ;; esac
  case "$NUM_SHARDS" in ''|*[!0-9]*|0) die "NUM_SHARDS must be a positive integer, not '$NUM_SHARDS'" ;; esac
  case "$NPROC" in ''|*[!0-9]*|0) die "NPROC must be a positive integer, not '$NPROC'" ;; esac
  if [ -n "$SHARD" ]; then
    case "$SHARD" in *[!0-9]*) die "SHARD must be an integer, not '$SHARD'" ;; esac
    [ "$SHARD" -lt "$NUM_SHARDS" ] || die "SHARD=$SHARD is out of range for NUM_SHARDS=$NUM_SHARDS"
  fi
  [ -f "$DATA_DIR/dataset.json" ] || die "DATA_DIR=$DATA_DIR has no dataset.json: run get_data.sh first"
  mkdir -p "$OUT_DIR"
  # shellcheck disable=SC2086
  export $PIPELINE_VARS
}

HYBRID_VARS="HYBRID HYBRID_K HYBRID_WEIGHT HYBRID_NORM"

# hybrid_defaults: fill in, check and export the hybrid settings (run.sh, train_hn.sh)
hybrid_defaults() {
  HYBRID=${HYBRID:-rrf}
  HYBRID_K=${HYBRID_K:-60}
  HYBRID_WEIGHT=${HYBRID_WEIGHT:-0.5}
  HYBRID_NORM=${HYBRID_NORM:-minmax}
  case "$HYBRID" in rrf|weighted|none) ;; *) die "HYBRID must be rrf, weighted or none, not '$HYBRID'" ;; esac
  case "$HYBRID_NORM" in minmax|zscore) ;; *) die "HYBRID_NORM must be minmax or zscore, not '$HYBRID_NORM'" ;; esac
  awk -v k="$HYBRID_K" 'BEGIN { exit !(k ~ /^[0-9]+([.][0-9]*)?$/) }' || die "HYBRID_K must be a number >= 0, not '$HYBRID_K'"
  awk -v w="$HYBRID_WEIGHT" 'BEGIN { exit !(w ~ /^[0-9]*([.][0-9]*)?$/ && w != "" && w + 0 <= 1) }' ||
    die "HYBRID_WEIGHT must be a number in [0, 1], not '$HYBRID_WEIGHT'"
  # shellcheck disable=SC2086
  export $HYBRID_VARS
}

# want STAGE_NAME: true when this invocation runs that stage
want() { [ "$STAGE" = all ] || [ "$STAGE" = "$1" ]; }

# check_stage NAME...: STAGE must be 'all' or one of NAMES
check_stage() {
  local s
  for s in all "$@"; do [ "$STAGE" = "$s" ] && return 0; done
  die "unknown STAGE '$STAGE' (one of: all $*)"
}

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
  case "$PRECISION" in bf16) args+=(--bf16) ;; fp16) args+=(--fp16) ;; esac
  [ -n "$ATTENTION_DROPOUT" ] && args+=(--attention_dropout "$ATTENTION_DROPOUT")
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

# hybrid_round ROUND SPLIT: ROUND's SPLIT run fused with DATA_DIR's BM25 run of SPLIT (HYBRID) into
# ROUND/SPLIT.hybrid.run, then scored as ROUND-hybrid; nothing with HYBRID=none or without that BM25 run
hybrid_round() {
  local round=$1 split=$2 dir=$OUT_DIR/$1 bm25=$DATA_DIR/bm25.$2.run
  local out=$dir/$split.hybrid.run args
  [ "$HYBRID" = none ] && return 0
  if [ ! -f "$bm25" ]; then log "no $bm25: no hybrid run for $round"; return 0; fi
  args=(--runs "$dir/$split.run" "$bm25" --method "$HYBRID" --depth "$EVAL_DEPTH" --out "$out" --tag densir-hybrid)
  case "$HYBRID" in
    rrf) args+=(--rrf_k "$HYBRID_K") ;;
    weighted) args+=(--weights "$HYBRID_WEIGHT" "$(awk -v w="$HYBRID_WEIGHT" 'BEGIN { print 1 - w }')"
                     --norm "$HYBRID_NORM") ;;
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
