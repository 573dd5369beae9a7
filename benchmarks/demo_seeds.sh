#!/usr/bin/env bash
# benchmarks/demo_seeds.sh — the demo's test figures, measured once with its settings fixed (chosen on
# held-out train queries: README "The demo"): demo.sh once per seed, each in a fresh OUT_DIR, then
# benchmarks/demo_seeds.py writes every run's summary (metrics, stage times, the CPU) and the mean
# over the seeds to benchmarks/results/demo.json. The README's demo figures come from that file.
#
#   SEEDS   training seeds                         (default "42 43")
#   OUT     one OUT_DIR per seed under it            (default runs/demo-seeds)
#   SAVE    (default benchmarks/results/demo.json)
# The data (get_data.sh) is shared: data/beir-scifact, as make demo makes it.
set -euo pipefail
{
DENSIR_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DENSIR_SCRIPT=demo_seeds
source "$DENSIR_HOME/scripts/lib.sh"
cd "$DENSIR_HOME"
SEEDS=${SEEDS:-42 43}
OUT=${OUT:-runs/demo-seeds}
SAVE=${SAVE:-benchmarks/results/demo.json}
PYTHON=${PYTHON:-python}
summaries=()
for s in $SEEDS; do
  log "=== seed $s"
  SEED=$s OUT_DIR=$OUT/seed-$s bash demo.sh
  summaries+=("$OUT/seed-$s/demo_summary.json")
done
"$PYTHON" benchmarks/demo_seeds.py "${summaries[@]}" --save "$SAVE"
exit 0
}
