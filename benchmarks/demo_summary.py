"""The demo's figures as JSON (demo.sh writes OUT_DIR/demo_summary.json with it): every system's
test metrics, the stage wall times, the per-step timings and the CPU, so the README's demo tables
are rendered from one saved file (copy it to benchmarks/results/demo.json to publish it).

    python benchmarks/demo_summary.py OUT_DIR DATA_DIR --split test --walls get_data=48 run=347 ... --save J
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("data_dir")
    ap.add_argument("--split", default="test")
    ap.add_argument("--walls", nargs="*", default=[], help="STAGE=SECONDS")
    ap.add_argument("--save", required=True)
    args = ap.parse_args()
    out, data, split = Path(args.out_dir), Path(args.data_dir), args.split
    candidates = {"bm25": data / f"bm25.{split}.metrics.json"}
    for r in ("zeroshot", "round1", "round2"):
        candidates[r] = out / r / f"{split}.metrics.json"
        candidates[f"{r}-hybrid"] = out / r / f"{split}.hybrid.metrics.json"
    candidates["rerank-ce"] = out / "rerank" / f"{split}.ce.metrics.json"
    candidates["rerank"] = out / "rerank" / f"{split}.metrics.json"
    systems = {name: json.loads(p.read_text()) for name, p in candidates.items() if p.is_file()}
    timings = []
    if (out / "timings.tsv").is_file():
        for line in (out / "timings.tsv").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                timings.append({"script": parts[0], "step": parts[1], "seconds": float(parts[2])})
    walls = {k: int(v) for k, v in (w.split("=", 1) for w in args.walls)}
    # the seconds of the steps that did the work, per stage script (timings.tsv keeps them across
    # reruns, which skip complete steps: this run's own walls are then only the skipping)
    work: dict[str, float] = {}
    for t in timings:
        work[t["script"]] = work.get(t["script"], 0.0) + t["seconds"]
    summary = {"split": split, "systems": systems, "stage_seconds": walls,
               "total_seconds": sum(walls.values()), "stage_work_seconds": work,
               "total_work_seconds": sum(work.values()), "steps": timings, "cpu": _cpu(),
               "date": time.strftime("%Y-%m-%d"), "settings": _settings(out), "heldout": _heldout(out)}
    Path(args.save).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.save}: {len(systems)} systems, {len(walls)} stages")


def _cpu() -> dict:
    info = {"machine": platform.machine()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Flags"):
                info[key.strip()] = value.strip() if key.strip() != "Flags" else \
                    [f for f in value.split() if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                                                       "amx_bf16", "amx_int8")]
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _settings(out: Path) -> dict:
    import os

    keys = ("MODEL", "PRECISION", "Q_MAX_LEN", "P_MAX_LEN", "BATCH", "TRAIN_N_PASSAGES", "LR", "EPOCHS",
            "TEMPERATURE", "NUM_SHARDS", "HYBRID", "HYBRID_NORM", "HYBRID_WEIGHT", "SEED", "INIT", "BACKEND",
            "QUANTIZE", "ATTENTION_DROPOUT", "SAVE_STEPS", "HOLDOUT", "VALIDATE", "VALIDATE_DEPTH",
            "DEPTH", "SKIP", "N_SAMPLE", "DISTILL", "TEACHER", "DISTILL_LOSS",
            "RERANK_LOSS", "RERANK_LR", "RERANK_MAX_LEN", "RERANK_N_PASSAGES", "RERANK_BATCH", "RERANK_EPOCHS",
            "RERANK_ALPHA")
    settings = {k: os.environ[k] for k in keys if k in os.environ}
    if settings.get("HYBRID") == "auto":  # each round chose its own fusion: record those, not the unused fixed ones
        settings.pop("HYBRID_NORM", None)
        settings.pop("HYBRID_WEIGHT", None)
        for fusion in sorted(out.glob("*/fusion.json")):
            settings[f"HYBRID_{fusion.parent.name}"] = json.loads(fusion.read_text()).get("chosen")
    return settings


def _heldout(out: Path) -> dict:
    """Each round's figures on the held-out train queries (HYBRID=auto's OUT_DIR/<round>/fusion.json: the
    dense run and the chosen hybrid), and, with VALIDATE=1, its nDCG@10 per epoch and the epoch kept."""
    rounds = {}
    for fusion in sorted(out.glob("*/fusion.json")):
        sweep = json.loads(fusion.read_text())
        rounds[fusion.parent.name] = {"queries": sweep["queries"], "dense": sweep["inputs"]["dense"]["nDCG@10"],
                                      "hybrid": sweep["best"]["overall"]["nDCG@10"]}
    last = {}  # round -> its last checkpoint's trainer state (the whole log)
    for state in out.glob("*/model/checkpoint-*/trainer_state.json"):
        step, name = int(state.parent.name.split("-")[1]), state.parents[2].name
        if step > last.get(name, (-1, None))[0]:
            last[name] = (step, state)
    for name, (_, state) in sorted(last.items()):
        log = json.loads(state.read_text())
        r = rounds.setdefault(name, {})
        r["validation"] = {f"{e['epoch']:g}": e["eval_nDCG@10"] for e in log["log_history"] if "eval_nDCG@10" in e}
        if log.get("best_model_checkpoint"):
            r["kept"] = Path(log["best_model_checkpoint"]).name
    return rounds


if __name__ == "__main__":
    main()
