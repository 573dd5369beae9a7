"""The table of benchmarks/quality_heldout.sh: every finished configuration's held-out nDCG@10 (and
MRR@10, Recall@100) for round 1, round 2 and their hybrid runs: one JSON and one printed table (no
wall times: the study shares the machine with other work, and its stage times say nothing).
A configuration whose round 2 is not scored yet is listed as missing.

    python benchmarks/quality_table.py --out runs/quality-heldout --configs base p256 \\
        --levers "base=;p256=P_MAX_LEN=256;" --save benchmarks/results/quality_heldout.json

Refuses a split other than the held-out one: the study never reads test queries. A configuration that
OUT does not hold (measured on another machine, whose runs are gone) keeps its row from the JSON
already at --save, marked "carried" with that row's machine; every row names the CPU it was measured on
("machine"), and "written_on" names the CPU that last wrote the table.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

from densir.io import cli_errors, read_json, write_json

RUNS = ("round1", "round1-hybrid", "round2", "round2-hybrid")
METRICS = ("nDCG@10", "MRR@10", "Recall@100")


def config_row(d: Path, split: str) -> dict | None:
    row = {}
    for name in RUNS:
        rnd, _, hybrid = name.partition("-")
        path = d / rnd / f"{split}.{'hybrid.' if hybrid else ''}metrics.json"
        if not path.exists():
            return None
        m = read_json(path)
        row[name] = {k: m[k] for k in METRICS} | {"queries": m["queries"]}
    return row


@cli_errors
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="quality_heldout.sh's OUT")
    ap.add_argument("--configs", nargs="+", required=True)
    ap.add_argument("--levers", default="", help="'name=VAR=v VAR=v;...': what each configuration changes")
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--save", required=True)
    args = ap.parse_args(argv)
    if args.split == "test":
        raise SystemExit("error: the quality study chooses settings on held-out train queries, never on test")
    levers = dict(item.split("=", 1) for item in args.levers.split(";") if item)
    out = Path(args.out)
    machine = _cpu()
    rows = {c: config_row(out / c, args.split) for c in args.configs}
    rows = {c: r and {**r, "machine": machine} for c, r in rows.items()}
    previous = read_json(args.save) if Path(args.save).exists() else {}
    for c, r in rows.items():
        old = previous.get("configs", {}).get(c)
        if r is None and old and not old.get("missing") and previous.get("split") == args.split:
            rows[c] = {k: v for k, v in old.items() if k != "lever"} | {
                "machine": old.get("machine", previous.get("written_on", previous.get("machine"))), "carried": True}
    data = read_json(out / "data" / "dataset.json") if (out / "data" / "dataset.json").exists() else {}
    result = {
        "what": "SciFact, held-out train queries (tools/holdout_split.py --n 100 --seed 0); the demo's settings "
                "as first measured (base) with one lever changed per configuration; benchmarks/quality_heldout.sh",
        "split": args.split, "dataset": data.get("name"), "written_on": machine,
        "configs": {c: {"lever": levers.get(c, ""), **(r or {"missing": True})} for c, r in rows.items()},
    }
    done = {c: r for c, r in rows.items() if r}
    if done:
        for name in RUNS:
            best = max(done, key=lambda c: done[c][name]["nDCG@10"])
            result.setdefault("best", {})[name] = {"config": best, "nDCG@10": done[best][name]["nDCG@10"]}
    write_json(args.save, result)
    print(f"{'config':10} {'lever':28} " + " ".join(f"{n:>14}" for n in RUNS))
    for c, r in rows.items():
        cells = [f"{r[n]['nDCG@10']:14.4f}" for n in RUNS] if r else [f"{'-':>14}"] * len(RUNS)
        note = " (carried)" if r and r.get("carried") else ""
        print(f"{c:10} {levers.get(c, '') or '(demo)':28} " + " ".join(cells) + note)
    print(f"(nDCG@10 on {args.split}; wrote {args.save})")


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {len(__import__('os').sched_getaffinity(0))} cores"
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
