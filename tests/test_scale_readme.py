"""README's "MS MARCO on a cluster" section quotes benchmarks/results/scale.json, and only it.

The section lies between ``<!-- scale:begin -->`` and ``<!-- scale:end -->`` in README.md. Every
number in its prose and tables (code spans and code blocks are commands, not figures) must be a
value of the JSON at the precision written (``8.8M`` = 8.8 millions, ``6.2 GiB`` = 6.2, ``1,000`` =
1000), and the key figures of the JSON's ``plan`` must appear in it, so a rerun of
benchmarks/scale.py that changes them fails here until the section is updated. Without the
markers the test skips; with them, any disagreement fails. The section is also a
``<!-- figures -->`` fence whose keys comments bind each figure to its own key
(tests/test_readme_figures.py); this module holds the figure-reading rules both tests use.
"""
from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import REPO, run_cmd

README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results" / "scale.json"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
# plan figures the section must quote (benchmarks/scale.py's plan())
REQUIRED = ("num_shards", "rows_per_shard", "slurm_tasks", "search_job_peak_rss_gib", "search_job_cpu_s_measured",
            "eval_search_task_core_h", "mine_search_task_core_h", "reduce_peak_rss_mib", "eval_reduce_core_min",
            "mine_reduce_core_min", "encode_passages_per_cpu_s", "encode_task_core_h_minilm",
            "build_train_peak_rss_gib", "build_train_hn_peak_rss_gib", "build_train_hn_core_min", "shard_gib",
            "mine_search_task_peak_rss_gib")
# a number not inside a word (fp16, MiniLM-L6, round1); after '-' only as the end of a range (2.25-2.48)
NUMBER = re.compile(r"(?<![\w.])(?<![^\d\s]-)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(k|M)?(?![\w.]*\d)")


def section(text: str) -> str | None:
    if BEGIN not in text and END not in text:
        return None
    assert text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END), \
        f"README.md must hold exactly one {BEGIN} ... {END} pair"
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)]


def figures(text: str, signed: bool = False) -> list[tuple[str, float, int, float]]:
    """``(as written, value, decimals, multiplier)`` of every number outside code. ``signed``: a ``-`` or
    ``−`` right before a number, after a space, makes it negative (after a digit it is a range)."""
    prose = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", " ", prose)
    prose = re.sub(r"<!--.*?-->", " ", prose, flags=re.DOTALL)
    out = []
    for m in NUMBER.finditer(prose):
        whole, frac, suffix = m.groups()
        decimals = len(frac) - 1 if frac else 0
        value = float(whole.replace(",", "") + (frac or ""))
        at = m.start()
        if signed and at and prose[at - 1] in "-\u2212" and (at < 2 or not prose[at - 2].isdigit()):
            value = -value
        out.append((m.group(0), value, decimals, {"k": 1e3, "M": 1e6}.get(suffix or "", 1.0)))
    return out


def json_numbers(obj) -> list[float]:
    """Every numeric value of a JSON document (numeric strings and keys are not values here)."""
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return json_numbers(list(obj.values()))
    if isinstance(obj, list):
        return [v for item in obj for v in json_numbers(item)]
    return []


def check_section(text: str, results: dict) -> list[str]:
    """Every disagreement between the section and the results, as messages (empty: they agree)."""
    problems = []
    values = json_numbers(results)
    found = figures(text)
    for written, value, decimals, mult in found:
        if not any(round(v / mult, decimals) == value for v in values):
            problems.append(f"{written!r} in the section is no value of {RESULTS.name}")
    plan = results.get("plan") or {}
    for key in REQUIRED:
        if plan.get(key) is None:
            problems.append(f"{RESULTS.name} has no plan figure {key!r}")
            continue
        v = float(plan[key])
        if not any(mult == 1.0 and decimals >= _decimals(plan[key]) and round(v, decimals) == value
                   for _, value, decimals, mult in found):
            problems.append(f"plan figure {key}={plan[key]} is not quoted in the section")
    for phrase in ("not measured", "GPU"):
        if phrase not in text:
            problems.append(f"the section must say which rates were measured where ({phrase!r} is missing)")
    return problems


def _decimals(value) -> int:
    s = repr(float(value)) if isinstance(value, float) else str(value)
    return 0 if isinstance(value, int) or s.endswith(".0") else len(s.split(".")[1])


def test_readme_scale_section_quotes_the_benchmark():
    text = section(README.read_text(encoding="utf-8"))
    if text is None:
        pytest.skip(f"README.md has no {BEGIN} section yet")
    assert RESULTS.exists(), f"README.md quotes {RESULTS} but it does not exist: run benchmarks/scale.py"
    problems = check_section(text, json.loads(RESULTS.read_text()))
    assert not problems, "README's scale section disagrees with benchmarks/results/scale.json:\n" + "\n".join(problems)


def test_the_checker_catches_a_stale_figure():
    results = {"plan": {k: 1.5 for k in REQUIRED}, "search": [{"passages": 8_841_823, "wall_s": 12.34}]}
    ok = ("8.8M passages; " + ", ".join("1.5" for _ in REQUIRED) + " GiB; 12.3 s; GPU rates are not measured; "
          "`--depth 4096` and fp16 and MiniLM-L6 are no figures")
    assert check_section(ok, results) == []
    stale = ok.replace("12.3 s", "12.9 s")
    assert check_section(stale, results) == ["'12.9' in the section is no value of scale.json"]
    results["plan"]["num_shards"] = 2.5  # a rerun changed a plan figure the section quotes
    assert "plan figure num_shards=2.5 is not quoted in the section" in check_section(ok, results)
    assert [f[0] for f in figures("MiniLM-L6-v2 fp16 round1 x86 2.25-2.48 s, (3) |7|")] == ["2.25", "2.48", "3", "7"]
    assert figures("1,000 queries, 6.2 GiB, 4M rows, 100k") == [
        ("1,000", 1000.0, 0, 1.0), ("6.2", 6.2, 1, 1.0), ("4M", 4.0, 0, 1e6), ("100k", 100.0, 0, 1e3)]


def test_scale_benchmark_writes_the_plan_figures(tmp_path):
    """benchmarks/scale.py end to end at toy sizes (no encode): the JSON has every figure the README quotes."""
    out = tmp_path / "scale.json"
    run_cmd([sys.executable, "benchmarks/scale.py", "--sizes", "1500,3000", "--dims", "8,16", "--queries", "10",
             "--depth", "5", "--shard_rows", "1000", "--data_points", "300:40,600:40,600:20", "--skip_encode",
             "--memory_queries", "50,100",
             "--work_dir", str(tmp_path / "work"), "--save", str(out)])
    r = json.loads(out.read_text())
    assert [e["shards"] for e in r["search"]] == [2, 3, 2, 3]
    assert all(len(e["jobs"]) == e["shards"] and e["reduce"]["run_lines_in"] == 10 * 5 * e["shards"]
               for e in r["search"])
    assert all(j["peak_rss_mib"] > 0 and j["cpu_s"] >= 0 for e in r["search"] for j in e["jobs"])
    assert {x["tool"] for x in r["data"]["runs"]} == {"tools/build_train.py", "tools/build_train_hn.py"}
    assert all(x["groups"] == x["queries"] for x in r["data"]["runs"])
    assert r["plan"]["num_shards"] == 8842 and r["plan"]["slurm_tasks"] == 5 * 8842 + 9
    assert set(REQUIRED) - {"encode_passages_per_cpu_s", "encode_task_core_h_minilm"} <= set(r["plan"])
    assert r["plan"]["mine_search_task_peak_rss_gib"] is not None
    assert not (tmp_path / "work" / "search").exists() and not (tmp_path / "work" / "data").exists()
