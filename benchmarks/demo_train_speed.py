"""The demo's own training command, timed: round 1 of `make demo` as run.sh runs it, for a few steps,
with one lever changed per variant, in one run (so the variants compare on this CPU).

    python benchmarks/demo_train_speed.py [--data_dir data/beir-scifact] [--steps 21] \\
        [--variants demo no_checkpoints attn0 bf16] [--out runs/demo-train-speed] \\
        [--save benchmarks/results/demo_train_speed.json]

Each variant runs ``bash run.sh --stage train`` with scripts/demo_settings.sh's settings (the demo's
model, batch 16 x 4 passages, 64/128 tokens, lr, warm-up, PRECISION fp32) as they were when this
study chose the levers (BEFORE: SAVE_STEPS 20, the model's attention dropout, no validation; the demo
has since adopted attn0 and a checkpoint per epoch) and ``MAX_STEPS=--steps`` in a fresh OUT_DIR,
so it times what `make demo` runs: the stage script, the launcher, the driver, data loading and
collation, checkpoint writes. Variants:

    demo            the demo's settings before the study (BEFORE)
    no_checkpoints  SAVE_STEPS past the last step: no checkpoint (model + optimizer state) is written
    attn0           ATTENTION_DROPOUT=0: torch's fused attention kernel runs in training
    bf16            PRECISION=bf16: only on a CPU with bf16 units (avx512_bf16 or AMX), else skipped

Reported per variant: the trainer's seconds per step (train_summary.json: train_seconds / steps,
first step included) and the command's wall seconds (start-up, model load and the final save
included). Quality is not measured here: a lever that changes the trained model (attn0, bf16) is
adopted only after the held-out study scores it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_common import environment  # noqa: E402  (the machine's description, as every CPU benchmark records it)

BEFORE = {"SAVE_STEPS": "20", "ATTENTION_DROPOUT": "", "VALIDATE": "0"}
VARIANTS = {"demo": {}, "no_checkpoints": {"SAVE_STEPS": "100000"}, "attn0": {"ATTENTION_DROPOUT": "0"},
            "bf16": {"PRECISION": "bf16"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="data/beir-scifact")
    ap.add_argument("--steps", type=int, default=21, help="21: one checkpoint (step 20), the demo's rate")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="runs/demo-train-speed")
    ap.add_argument("--save", default="benchmarks/results/demo_train_speed.json")
    args = ap.parse_args()
    machine = environment(len(os.sched_getaffinity(0)))
    bf16_units = bool({"avx512_bf16", "amx_bf16"} & set(machine["cpu_flags"]))
    result = {"cpu": machine["cpu"], "bf16_units": bf16_units, "cores": len(os.sched_getaffinity(0)),
              "steps": args.steps, "command": "bash run.sh --stage train (scripts/demo_settings.sh, MAX_STEPS=steps)",
              "variants": {}}
    for name in args.variants:
        if name == "bf16" and not bf16_units:
            result["variants"][name] = {"skipped": "no bf16 units on this CPU (avx512_bf16 / AMX)"}
            continue
        out = Path(args.out) / name
        shutil.rmtree(out, ignore_errors=True)
        env = dict(os.environ, DATA_DIR=str(Path(args.data_dir).resolve()), OUT_DIR=str(out.resolve()),
                   PYTHON=sys.executable, EVAL_SPLIT="test", MAX_STEPS=str(args.steps),
                   HF_HUB_OFFLINE="1", **{**BEFORE, **VARIANTS[name]})
        t0 = time.time()
        subprocess.run(["bash", "-c", "source scripts/demo_settings.sh && exec bash run.sh --stage train"],
                       cwd=REPO, env=env, check=True)
        wall = time.time() - t0
        summary = json.loads((out / "round1" / "model" / "train_summary.json").read_text())
        result["variants"][name] = {"settings": VARIANTS[name], "steps": summary["global_step"],
                                    "train_seconds": summary["train_seconds"],
                                    "seconds_per_step": round(summary["train_seconds"] / summary["global_step"], 2),
                                    "wall_seconds": round(wall, 1)}
        print(name, json.dumps(result["variants"][name]), flush=True)
    base = result["variants"].get("demo", {}).get("seconds_per_step")
    for v in result["variants"].values():
        if base and "seconds_per_step" in v:
            v["speedup_vs_demo"] = round(base / v["seconds_per_step"], 3)
    save = Path(args.save)
    save.parent.mkdir(parents=True, exist_ok=True)
    save.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
