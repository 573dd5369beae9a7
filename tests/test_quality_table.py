"""benchmarks/quality_table.py: the study's table from the configurations' metric files, with a row
that this OUT does not hold kept from the saved JSON (marked carried, with its own machine), and a
row measured here named with this machine; test queries refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"round1": "metrics", "round1-hybrid": "hybrid.metrics", "round2": "metrics", "round2-hybrid": "hybrid.metrics"}


def write_config(out: Path, name: str, base: float) -> None:
    for i, (run, stem) in enumerate(RUNS.items()):
        d = out / name / run.split("-")[0]
        d.mkdir(parents=True, exist_ok=True)
        m = {"nDCG@10": base + i / 100, "MRR@10": base, "Recall@100": 0.9, "queries": 100}
        (d / f"heldout.{stem}.json").write_text(json.dumps(m))


def table(out: Path, save: Path, *configs: str, split: str = "heldout"):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality_table.py"), "--out", str(out),
                           "--configs", *configs, "--levers", "base=;new=X=1;", "--split", split, "--save", str(save)],
                          capture_output=True, text=True)


def test_rows_measured_here_and_carried(tmp_path):
    out, save = tmp_path / "study", tmp_path / "table.json"
    write_config(out, "base", 0.70)
    measured = {run: {"nDCG@10": 0.75, "MRR@10": 0.7, "Recall@100": 0.9, "queries": 100} for run in RUNS}
    old = {"split": "heldout", "machine": "Some Other CPU, 2 cores",
           "configs": {"new": {"lever": "X=1", **measured}, "gone": {"lever": "", "missing": True}}}
    save.write_text(json.dumps(old))
    proc = table(out, save, "base", "new", "gone")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(save.read_text())
    base, new, gone = (res["configs"][c] for c in ("base", "new", "gone"))
    assert base["round2"]["nDCG@10"] == 0.72 and base["machine"] == res["written_on"] and "carried" not in base
    assert new == {"lever": "X=1", **measured, "machine": "Some Other CPU, 2 cores", "carried": True}
    assert gone == {"lever": "", "missing": True}
    assert "(carried)" in proc.stdout.splitlines()[2]
    # once measured here, the row is this machine's, not the carried one
    write_config(out, "new", 0.60)
    assert table(out, save, "base", "new").returncode == 0
    new = json.loads(save.read_text())["configs"]["new"]
    assert new["round2"]["nDCG@10"] == 0.62 and "carried" not in new


def test_test_split_refused(tmp_path):
    proc = table(tmp_path, tmp_path / "t.json", "base", split="test")
    assert proc.returncode != 0 and "never on test" in proc.stderr
