# scripts/lib.sh — bash helpers shared by densir's stage scripts (get_data.sh, run.sh,
# mine_hard_neg.sh, train_hn.sh) and the SLURM jobs in slurm/. Sourced, never run.
#
#   DENSIR_SCRIPT              name used in messages (default: the calling script's name)
#   log MSG...                 "[name HH:MM:SS] MSG" on stderr
#   die MSG...                 "name.sh: MSG" on stderr, exit 1
#   step NAME OUTPUT CMD...    skip when OUTPUT exists, else run CMD. Every densir stage writes its
#                              output atomically (temp name, renamed last), so an OUTPUT that exists
#                              is complete and a killed step leaves nothing that looks finished.
#                              A failing CMD, or one that exits 0 without writing OUTPUT, ends the
#                              script with "name.sh: step 'NAME' failed ...". With TIMINGS=FILE, each
#                              step that ran appends "script<TAB>NAME<TAB>seconds" to FILE.
#   load_settings "$@"         the calling script's settings (densir/settings.py, the one list): each
#                              from its --flag, else its env var, else its default, checked and exported
#                              before any work (a bad one: one line "error: ...", exit 1; an unknown
#                              option: exit 2); -h/--help prints usage and exits.
#   densir_settings ARGS...    python -m densir.settings ARGS, from this checkout
#   usage                      the calling script's header comment, its settings (name, type, default,
#                              help), and USAGE_EXTRA's header, if set

DENSIR_SCRIPT=${DENSIR_SCRIPT:-$(basename "$0" .sh)}
DENSIR_LIB_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "[$DENSIR_SCRIPT $(date +%H:%M:%S)] $*" >&2; }
die() { echo "$DENSIR_SCRIPT.sh: $*" >&2; exit 1; }

step() {
  local name=$1 out=$2 rc t0=$SECONDS; shift 2
  if [ -e "$out" ]; then log "skip $name: $out is complete"; return 0; fi
  log "step $name -> $out"
  # a subshell outside any '||' list, so that 'set -e' still holds inside a CMD that is a function
  set +e; ( set -e; "$@" ); rc=$?; set -e
  if [ "$rc" -ne 0 ]; then
    echo "$DENSIR_SCRIPT.sh: step '$name' failed (exit $rc; output $out not written)" >&2; exit 1
  fi
  [ -e "$out" ] || { echo "$DENSIR_SCRIPT.sh: step '$name' exited 0 but did not write $out" >&2; exit 1; }
  if [ -n "${TIMINGS:-}" ]; then
    mkdir -p "$(dirname "$TIMINGS")"
    printf '%s\t%s\t%d\n' "$DENSIR_SCRIPT" "$name" $((SECONDS - t0)) >> "$TIMINGS"
  fi
  return 0
}

# score_groups_step TEACHER GROUPS OUT [MAX_LEN]: the step that writes GROUPS with the teacher's score on
# every passage to OUT (tools/score_groups.py): the teacher scores of distillation. TEACHER is a cross-encoder
# dir (run at PRECISION; MAX_LEN: query + passage tokens, default the length it was trained at; TEACHER_ARGS:
# more flags, e.g. --backend openvino --quantize int8) or a scored TREC run file (each passage gets its
# pair's score; TEACHER_MISSING=drop leaves out the passages the run lacks, default error)
score_groups_step() {
  local teacher
  if [ -f "$1" ]; then teacher=(--run "$1" --missing "${TEACHER_MISSING:-error}")
  else
    # shellcheck disable=SC2206
    teacher=(--model_name_or_path "$1" --precision "${PRECISION:-auto}" ${4:+--max_len "$4"} ${TEACHER_ARGS:-})
  fi
  mkdir -p "$(dirname "$3")"
  step "score-$(basename "$2" .jsonl)" "$3" "${PYTHON:-python}" "$DENSIR_HOME/tools/score_groups.py" \
    --groups "$2" --out "$3" "${teacher[@]}"
}

# densir_settings ARGS...: densir/settings.py of this checkout (the scripts and their list go together)
densir_settings() {
  PYTHONPATH="$DENSIR_LIB_HOME${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python}" -m densir.settings "$@"
}

usage() {
  local f
  sed -n '2,/^set -euo\|^$/p' "$0" | sed '/^set -euo/d; /^$/d; s/^# \{0,1\}//'
  echo; densir_settings help "$DENSIR_SCRIPT.sh"
  for f in ${USAGE_EXTRA:-}; do
    echo; sed -n '1,/^$/p' "$f" | sed '/^$/d; s/^# \{0,1\}//'
  done
}

load_settings() {
  local out
  out=$(densir_settings export "$DENSIR_SCRIPT.sh" -- "$@") || exit $?
  eval "$out"
}
