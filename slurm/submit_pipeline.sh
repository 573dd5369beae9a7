#!/usr/bin/env bash
# slurm/submit_pipeline.sh — submit the whole densir pipeline to SLURM as jobs chained with
# --dependency=afterok (a failed job cancels everything after it: --kill-on-invalid-dep=yes):
#   get_data -> train round1 -> encode corpus (array, one shard per task) + encode eval queries
#   -> search (array) -> reduce + evaluate
#   train round1 -> encode train queries -> search (array, round-1 shards) -> reduce + build_train_hn
#   -> train round2 -> encode (array) + queries -> search (array) -> reduce + evaluate + table
# Jobs run the same bash stage scripts (--stage/--shard), so outputs, skipping of complete steps
# and results are those of run.sh / mine_hard_neg.sh / train_hn.sh.
#
# Usage: bash slurm/submit_pipeline.sh [--partition P] [--account A] [--gpus_per_node G] [--nodes N]
#            [--time T] [--mem M] [--dataset D --source S] [--<setting> V]...
# Its cluster settings (PARTITION ACCOUNT QOS GPUS_PER_NODE NODES CPUS_PER_TASK TRAIN_CPUS TIME MEM
# TRAIN_TIME TRAIN_MEM SBATCH_ARGS JOB_PREFIX SBATCH; nothing is assumed: unset ones are the cluster's),
# the data (DATASET, SOURCE, GET_DATA_ARGS: the get_data job writes DATA_DIR, its steps skipped when
# DATA_DIR is already complete) and every setting of run.sh / mine_hard_neg.sh / train_hn.sh (MODEL
# DATA_DIR OUT_DIR NUM_SHARDS NPROC BATCH EPOCHS DEPTH INIT TEACHER ...) are env vars or --flags of the
# same name in lower case, all listed below with type and default (densir/settings.py, the one list
# the stage scripts read too). Each is checked here, before anything is submitted, and every stage
# setting that is set is exported to the jobs.
# Prints "NAME JOBID" per job and writes them to OUT_DIR/slurm/jobs.tsv; job logs:
#   OUT_DIR/slurm/<JOB_PREFIX>-<name>_<jobid>.out, arrays _<arrayjobid>_<task>.out
# Resume after a failure: fix the cause and submit again with the same settings; every complete
# step is skipped inside its job, so finished stages cost a few seconds each.
set -euo pipefail
{ # read whole before running: editing this file mid-run cannot derail a running copy
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENSIR_SCRIPT=submit_pipeline
source "$DENSIR_HOME/scripts/lib.sh"
USAGE_EXTRA="$DENSIR_HOME/scripts/stages.sh"
# its own settings with their defaults, and the stage scripts' settings that are set (exported)
load_settings "$@"
[ "$GPUS_PER_NODE" -gt 0 ] && NPROC=${NPROC:-$GPUS_PER_NODE}
NPROC=${NPROC:-1}
TRAIN_CPUS=${TRAIN_CPUS:-$((CPUS_PER_TASK * NPROC))}
command -v "${SBATCH%% *}" >/dev/null || die "'$SBATCH' not found: is this a SLURM login node?"

# jobs run elsewhere: make the paths absolute before exporting them
mkdir -p "$DATA_DIR"; DATA_DIR=$(cd "$DATA_DIR" && pwd)
mkdir -p "$OUT_DIR/slurm"; OUT_DIR=$(cd "$OUT_DIR" && pwd)
if [ -n "${MODEL:-}" ] && [ -d "$MODEL" ]; then MODEL=$(cd "$MODEL" && pwd); fi
if [ -n "$SOURCE" ] && [ -e "$SOURCE" ]; then SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE"); fi
# the jobs use this interpreter (the submitter's python, e.g. the venv's), whatever their PATH
PYTHON=$(command -v "${PYTHON:-python}") || die "no python found (set PYTHON)"
export DENSIR_HOME DATA_DIR OUT_DIR NUM_SHARDS NPROC PYTHON
LOGS=$OUT_DIR/slurm
JOBS=$LOGS/jobs.tsv
: > "$JOBS"

common=(--parsable --kill-on-invalid-dep=yes)
[ -n "$PARTITION" ] && common+=(--partition "$PARTITION")
[ -n "$ACCOUNT" ] && common+=(--account "$ACCOUNT")
[ -n "$QOS" ] && common+=(--qos "$QOS")
# shellcheck disable=SC2206
common+=($SBATCH_ARGS)
small=(--cpus-per-task "$CPUS_PER_TASK")
[ -n "$TIME" ] && small+=(--time "$TIME")
[ -n "$MEM" ] && small+=(--mem "$MEM")
gpu=()
[ "$GPUS_PER_NODE" -gt 0 ] && gpu=(--gpus-per-node 1)
train=(--nodes "$NODES" --ntasks-per-node 1 --cpus-per-task "$TRAIN_CPUS")
[ "$GPUS_PER_NODE" -gt 0 ] && train+=(--gpus-per-node "$GPUS_PER_NODE")
[ -n "$TRAIN_TIME" ] && train+=(--time "$TRAIN_TIME")
[ -n "$TRAIN_MEM" ] && train+=(--mem "$TRAIN_MEM")
ARRAY="--array=0-$((NUM_SHARDS - 1))"

# submit NAME DEPENDENCIES SBATCH-FLAGS... -- JOBSCRIPT ARGS...: prints the job id, records it
submit() {
  local name=$1 deps=$2; shift 2
  local flags=() id out="$LOGS/$JOB_PREFIX-${name}_%j.out"
  while [ "$1" != -- ]; do flags+=("$1"); shift; done; shift
  case " ${flags[*]} " in *" --array="*) out="$LOGS/$JOB_PREFIX-${name}_%A_%a.out" ;; esac
  [ -n "$deps" ] && flags+=(--dependency "afterok:$deps")
  id=$($SBATCH "${common[@]}" --job-name "$JOB_PREFIX-$name" --output "$out" --chdir "$DENSIR_HOME" \
        "${flags[@]}" "$DENSIR_HOME/slurm/$1" "${@:2}") || die "sbatch of job '$name' failed"
  id=${id%%;*}
  printf '%s\t%s\n' "$name" "$id" >> "$JOBS"
  echo "$name $id"
  eval "JOB_${name//[-.]/_}=$id"
}

# submit_retrieval ROUND SCRIPT [DEPS]: after train-ROUND, encode the corpus (array, one task a shard)
# and the eval queries, search every shard (array), then reduce (also after DEPS, e.g. the other
# round's reduce, whose table it prints)
submit_retrieval() {
  local round=$1 script=$2 deps=${3:-} train_job corpus_job queries_job search_job
  train_job=JOB_train_$round
  submit "encode-corpus-$round" "${!train_job}" "$ARRAY" "${small[@]}" "${gpu[@]}" -- encode.sbatch "$script" corpus
  submit "encode-queries-$round" "${!train_job}" "${small[@]}" "${gpu[@]}" -- encode.sbatch "$script" queries
  corpus_job=JOB_encode_corpus_$round queries_job=JOB_encode_queries_$round
  submit "search-$round" "${!corpus_job}:${!queries_job}" "$ARRAY" "${small[@]}" "${gpu[@]}" -- search.sbatch "$script"
  search_job=JOB_search_$round
  submit "reduce-$round" "${!search_job}${deps:+:$deps}" "${small[@]}" -- reduce.sbatch "$script"
}

gd_args=(--dataset "$DATASET" --out_dir "$DATA_DIR")
[ -n "$SOURCE" ] && gd_args+=(--source "$SOURCE")
# shellcheck disable=SC2206
gd_args+=($GET_DATA_ARGS)
submit get_data "" "${small[@]}" -- get_data.sbatch "${gd_args[@]}"
# round 1
submit train-round1 "$JOB_get_data" "${train[@]}" -- train.sbatch run.sh
submit_retrieval round1 run.sh
# hard negatives with the round-1 model (its corpus shards are reused)
submit encode-queries-mine "$JOB_train_round1" "${small[@]}" "${gpu[@]}" -- encode.sbatch mine_hard_neg.sh queries
submit search-mine "$JOB_encode_corpus_round1:$JOB_encode_queries_mine" "$ARRAY" "${small[@]}" "${gpu[@]}" \
  -- search.sbatch mine_hard_neg.sh
submit build-hn "$JOB_search_mine" "${small[@]}" -- reduce.sbatch mine_hard_neg.sh
# round 2
submit train-round2 "$JOB_build_hn" "${train[@]}" -- train.sbatch train_hn.sh
submit_retrieval round2 train_hn.sh "$JOB_reduce_round1"
log "submitted $(wc -l < "$JOBS") jobs (ids in $JOBS, logs in $LOGS); final run: $OUT_DIR/${ROUND:-round2}/<eval split>.run"
exit 0
}
