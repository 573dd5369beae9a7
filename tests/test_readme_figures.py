"""Every figure in README.md comes from a script's saved JSON, and this test compares them.

A README section that quotes measurements is fenced by ``<!-- figures: PATH [PATH ...] -->`` and
``<!-- /figures -->``; PATH is a JSON file a benchmark (or the demo) wrote, relative to the repo.
Every number in the section's prose and tables (code is commands, not figures; see
tests/test_scale_readme.py for the reading rules, shared here) must be a value of one of its JSON
files at the precision written. The "MS MARCO on a cluster" section has its own, stricter test
(tests/test_scale_readme.py), and the expected-figures table is checked against the real data by
tests/test_readme.py. Outside those fences the README quotes no decimal figure.
"""
from __future__ import annotations

import json
import re

from conftest import REPO
from test_scale_readme import figures as _figures
from test_scale_readme import json_numbers as _json_numbers

README = REPO / "README.md"
FENCE = re.compile(r"<!-- figures: (?P<paths>[^>]+?) -->(?P<body>.*?)<!-- /figures -->", re.DOTALL)
OTHER_FENCES = (("<!-- scale:begin -->", "<!-- scale:end -->"), ("<!-- expected:begin -->", "<!-- expected:end -->"))


def json_numbers(obj) -> list[float]:
    """Every number of a JSON document: values, numeric strings, and numeric keys (a sweep's settings)."""
    return _json_numbers(obj, loose=True)


def figures(text: str):
    """The figures of a text: numbers outside code, metric names (nDCG@10, R@100) and model names left out."""
    text = re.sub(r"\w*@\d+", " ", text)
    return _figures(text)


def stale(body: str, values: list[float], source: str) -> list[str]:
    return [f"{written!r} is no value of {source}" for written, value, decimals, mult in figures(body)
            if not any(round(v / mult, decimals) == value for v in values)]


def check_fence(body: str, paths: list[str]) -> list[str]:
    values = []
    for p in paths:
        path = REPO / p
        if not path.exists():
            return [f"{p} does not exist: run the script that writes it"]
        values += json_numbers(json.loads(path.read_text()))
    return stale(body, values, ", ".join(paths))


def test_every_fenced_section_quotes_its_json():
    text = README.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    assert fences, "README.md has no <!-- figures: ... --> section"
    problems = []
    for m in fences:
        problems += check_fence(m.group("body"), m.group("paths").split())
    assert not problems, "\n".join(problems)


def test_no_decimal_figure_outside_the_fences():
    text = README.read_text(encoding="utf-8")
    text = FENCE.sub(" ", text)
    for begin, end in OTHER_FENCES:
        if begin in text:
            text = text[:text.index(begin)] + text[text.index(end) + len(end):]
    loose = [w for w, _, decimals, _ in figures(text) if decimals > 0]
    assert not loose, f"decimal figures outside a <!-- figures --> fence (where do they come from?): {loose}"


def test_the_fence_checker_catches_a_stale_figure():
    values = json_numbers({"ndcg": 0.71234, "qps": [12.5], "queries": 300})
    assert stale("nDCG@10 0.7123 at 12.5 q/s over 300 queries", values, "r.json") == []
    assert stale("nDCG@10 0.7124 over 300 queries", values, "r.json") == ["'0.7124' is no value of r.json"]
