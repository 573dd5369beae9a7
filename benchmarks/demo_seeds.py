"""Join demo runs of several seeds (benchmarks/demo_seeds.sh): every run's demo_summary.json as it
is, and per system the mean over the runs of each metric, into one JSON.

    python benchmarks/demo_seeds.py runs/demo-seeds/seed-42/demo_summary.json ... --save benchmarks/results/demo.json
"""
from __future__ import annotations

import argparse
from statistics import mean

from densir.io import InputError, cli_errors, read_json, write_json


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", nargs="+", help="demo_summary.json of each seed's run")
    ap.add_argument("--save", required=True)
    args = ap.parse_args()
    runs = {}
    for path in args.summaries:
        s = read_json(path)
        seed = s.get("settings", {}).get("SEED")
        if seed is None:
            raise InputError(path, None, "field 'settings.SEED': missing (not a demo_summary.json of demo.sh)")
        runs[seed] = s
    splits = {s["split"] for s in runs.values()}
    if len(splits) != 1:
        raise InputError(args.summaries[0], None, f"the runs score different splits: {sorted(splits)}")
    systems = set.intersection(*(set(s["systems"]) for s in runs.values()))
    means = {}
    for name in sorted(systems):
        metrics = set.intersection(*(set(k for k, v in s["systems"][name].items() if isinstance(v, float))
                                     for s in runs.values()))
        means[name] = {m: mean(s["systems"][name][m] for s in runs.values()) for m in sorted(metrics)}
    write_json(args.save, {"split": splits.pop(), "seeds": list(runs), "mean": means, "runs": runs})
    print(f"{args.save}: {len(runs)} seeds; mean nDCG@10 " +
          ", ".join(f"{k} {v['nDCG@10']:.4f}" for k, v in means.items() if "nDCG@10" in v))


if __name__ == "__main__":
    main()
