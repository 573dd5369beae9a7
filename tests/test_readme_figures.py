"""Every figure in README.md is bound to its own key in a script's saved JSON, and this test compares them.

Fences. A README section that quotes measurements is fenced by ``<!-- figures: PATH [PATH ...] -->``
and ``<!-- /figures -->``; each PATH is a JSON file a script wrote under benchmarks/results/. Inside
the fence, ``<!-- keys: ... -->`` comments bind the figures: each lists, in reading order, one key per
figure written between the previous keys comment (or the fence's start) and itself, so a keys
comment stands right under the table or paragraph it covers, and no figure may follow a fence's
last one. Each figure must equal its key's value rounded to the decimals written. A swapped row or
column, a changed digit, a figure without a key and a key without a figure all fail, each with the
README line of its keys comment. Outside the fences the README quotes no decimal figure. The
"MS MARCO on a cluster" section is such a fence too, and tests/test_scale_readme.py also checks that
it quotes the plan's key figures; the expected-figures table is checked against the real data by
tests/test_readme.py.

Reading figures (the rules of tests/test_scale_readme.py, shared): every number outside code spans,
code blocks and HTML comments is a figure, at the precision written: ``0.7809`` has 4 decimals,
``1,000`` is 1000, ``8.8M`` is 8.8 millions and ``100k`` 100 thousands (the key holds the plain
number), ``1.92x`` reads 1.92. A number inside a word is a name, not a figure (``fp16``, ``round1``,
``MiniLM-L6``), and so is a metric name (``nDCG@10``, ``Recall@100``). A ``-`` or ``−`` after a space
makes the figure negative (``2.25-2.48`` is two positive figures, a range).

Keys, separated by white space (line breaks are free):

- ``demo.json:mean.round2.nDCG@10``: the value at a dotted path in one of the fence's files, named by
  its file name. An entry without ``FILE:`` reads the file of the entry before it; ``demo.json:``
  alone only names that file. A segment holding dots, spaces or colons is quoted
  (``weighted.minmax."0.5".nDCG@10``, ``encode.results."densir onnx int8".tokens_per_s``); a whole
  number indexes a list (``seeds.0``). A number or a numeric string (``"42"``) is a value; anything
  else (text, true, null, a list) fails.
- ``rrf.20~``: a trailing ``~`` reads the name of the path's last key, which must exist: a sweep's
  setting (``20``), written beside its result.
- ``{a,b}``: brace expansion as in bash: ``runs.{42,43}.total_work_seconds`` is two entries. Several
  braces expand the leftmost outermost, so ``{r1,r2}.{x,y}`` reads row by row; ``"{0.3,0.4}"{~,.p}``
  reads each setting, then its result.
- ``[ROW ROW ... | COLUMN COLUMN ...]``: a table in reading order, for each ROW each COLUMN with its
  ``*`` replaced by the ROW: ``demo.json:[bm25 round2 | runs.{42,43}.systems.*.nDCG@10 mean.*.MRR@10]``.
  An empty cell has no figure, so a row with one is written out on its own.
- ``=0.99``: a constant the text states that is no measurement (a goal, a threshold, the number in a
  name such as "Zen 5"); the figure must read it. Never for a measured value.
- ``diff(A,B)`` (A - B), ``sum(A,B,...)``, ``mean(A,B,...)``, ``ratio(A,B)`` (A / B), ``pct(A)``
  (100 A, for "12%" of a fraction): a derived figure, computed by the named rule from keys and
  constants, e.g. ``diff(args.steps,args.warmup_steps)`` for "6 timed steps after 2". A derived
  figure is a key of the JSON or one of these rules, never left unchecked.

A new section (its JSON written by its script first) needs nothing else; the test finds every fence
and fails until each figure in it has its key. For example::

    <!-- figures: benchmarks/results/serve_latency.json -->
    | requests | p50 ms | p90 ms |
    |---|---|---|
    | dense | 12.10 | 15.3 |
    | hybrid | 14.2 | 18.3 |

    <!-- keys: serve_latency.json:[dense hybrid | ms.*.{p50,p90}] -->

    Served from 2 workers, 1,000 requests each.

    <!-- keys: workers requests_per_worker -->
    <!-- /figures -->

Here ``12.10`` must be 12.10 at 2 decimals: written zeros count.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import REPO
from test_scale_readme import figures as _figures

README = REPO / "README.md"
FENCE = re.compile(r"<!-- figures: (?P<paths>[^>]+?) -->(?P<body>.*?)<!-- /figures -->", re.DOTALL)
KEYS = re.compile(r"<!-- keys:(?P<spec>.*?)-->", re.DOTALL)
OTHER_FENCES = (("<!-- scale:begin -->", "<!-- scale:end -->"), ("<!-- expected:begin -->", "<!-- expected:end -->"))
RULES = {"diff": lambda a, b: a - b, "sum": lambda *a: sum(a), "mean": lambda *a: sum(a) / len(a),
         "ratio": lambda a, b: a / b, "pct": lambda a: 100 * a}
FILE = re.compile(r"(?P<file>[\w.-]+\.json):")
RULE = re.compile(r"(?P<name>\w+)\((?P<args>.*)\)", re.DOTALL)


def figures(text: str):
    """The figures of a text, signed: numbers outside code, metric names (nDCG@10, R@100) and model names left out."""
    return _figures(re.sub(r"\w*@\d+", " ", text), signed=True)


class BadKey(ValueError):
    """A keys entry that does not parse or does not resolve."""


def split_top(text: str, seps: str | None = None, keep_empty: bool = False) -> list[str]:
    """Split at ``seps`` (white space when None) standing outside quotes, braces, brackets and parentheses."""
    parts, cur, depth, quoted = [], [], 0, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "([{":
            depth += 1
        elif not quoted and ch in ")]}":
            depth -= 1
            if depth < 0:
                raise BadKey(f"unbalanced {ch!r} in {text.strip()!r}")
        if not quoted and depth == 0 and (ch.isspace() if seps is None else ch in seps):
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth or quoted:
        raise BadKey(f"unbalanced brackets or quotes in {text.strip()!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts if keep_empty or p.strip()]


def expand_braces(entry: str) -> list[str]:
    """Bash's brace expansion, leftmost brace outermost: ``a{1,2}b{x,y}`` -> a1bx a1by a2bx a2by."""
    start = entry.find("{")
    if start < 0:
        return [entry]
    depth = 0
    for end in range(start, len(entry)):
        depth += {"{": 1, "}": -1}.get(entry[end], 0)
        if depth == 0:
            break
    else:
        raise BadKey(f"unbalanced '{{' in {entry!r}")
    head, tail = entry[:start], entry[end + 1:]
    return [e for alt in split_top(entry[start + 1:end], ",", keep_empty=True)
            for e in expand_braces(head + alt + tail)]


def expand(spec: str) -> list[str]:
    """A keys comment's entries, in reading order (tables and braces expanded)."""
    out = []
    for token in split_top(spec):
        m = FILE.match(token)
        if m and token[m.end():].startswith("["):  # FILE:[table]
            out.append(m.group(0))
            token = token[m.end():]
        if token.startswith("["):
            if not token.endswith("]"):
                raise BadKey(f"a table must end with ']': {token!r}")
            halves = split_top(token[1:-1], "|", keep_empty=True)
            if len(halves) != 2 or not halves[0] or not halves[1]:
                raise BadKey(f"a table is [ROW ... | COLUMN ...]: {token!r}")
            rows = [r for row in split_top(halves[0]) for r in expand_braces(row)]
            cols = split_top(halves[1])
            if not all("*" in c for c in cols):
                raise BadKey(f"each column of a table holds a '*' for its row: {token!r}")
            out += [e for row in rows for col in cols for e in expand_braces(col.replace("*", row))]
        else:
            out += expand_braces(token)
    return out


def lookup(doc, name: str, path: str):
    """The number at ``path`` in ``doc`` (a trailing ``~``: the last key's name as a number)."""
    by_name = path.endswith("~")
    segments = split_top(path[:-1] if by_name else path, ".", keep_empty=True)
    node = doc
    for i, raw in enumerate(segments):
        seg = raw[1:-1] if len(raw) > 1 and raw[0] == raw[-1] == '"' else raw
        where = f"{name}:{'.'.join(segments[:i + 1])}"
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        else:
            raise BadKey(f"{where} does not exist")
    if by_name:
        node = seg
    if isinstance(node, bool) or not isinstance(node, (int, float, str)):
        raise BadKey(f"{name}:{path} is {json.dumps(node)[:40]}, not a number")
    try:
        return float(node)
    except ValueError:
        raise BadKey(f"{name}:{path} is {node!r}, not a number") from None


def resolve(entry: str, docs: dict, current: str | None) -> tuple[float | None, str | None]:
    """``(value, file)`` of one expanded entry; value None for a bare ``FILE:``."""
    if entry.startswith("="):
        try:
            return float(entry[1:]), current
        except ValueError:
            raise BadKey(f"{entry!r} is no constant") from None
    rule = RULE.fullmatch(entry)
    if rule:
        if rule["name"] not in RULES:
            raise BadKey(f"{entry!r}: no rule {rule['name']!r} (rules: {', '.join(RULES)})")
        args = []
        for arg in split_top(rule["args"], ","):
            value, current = resolve(arg, docs, current)
            args.append(value)
        try:
            return float(RULES[rule["name"]](*args)), current
        except (TypeError, ZeroDivisionError) as e:
            raise BadKey(f"{entry!r}: {e}") from None
    m = FILE.match(entry)
    if m:
        current = m.group("file")
        if current not in docs:
            raise BadKey(f"{entry!r} names {current}, which the fence does not cite ({', '.join(docs)})")
        if m.end() == len(entry):
            return None, current
        entry = entry[m.end():]
    if current is None:
        raise BadKey(f"{entry!r} names no file: write FILE.json:{entry}")
    return lookup(docs[current], current, entry), current


def check_fence(body: str, docs: dict, line: int = 1) -> list[str]:
    """Every disagreement between a fence's figures and its keys (empty: they agree). ``docs`` maps
    each cited JSON's file name to its contents; ``line`` is the fence's line in README.md."""
    problems, start, current = [], 0, None
    comments = list(KEYS.finditer(body))
    if not comments:
        return [f"README.md:{line}: the fence has no <!-- keys: ... --> comment"]
    for c in comments:
        at = f"README.md:{line + body.count(chr(10), 0, c.start())}"
        found = figures(body[start:c.start()])
        start = c.end()
        keys = []
        try:
            for entry in expand(c.group("spec")):
                value, current = resolve(entry, docs, current)
                if value is not None:
                    plain = not (entry.startswith("=") or FILE.match(entry) or RULE.fullmatch(entry))
                    keys.append((f"{current}:{entry}" if plain else entry, value))
        except BadKey as e:
            problems.append(f"{at}: {e}")
            continue
        for (written, value, decimals, mult), (entry, v) in zip(found, keys):
            if round(v / mult, decimals) != value:
                problems.append(f"{at}: {written!r} should read {round(v / mult, decimals):.{decimals}f} ({entry})")
        problems += [f"{at}: {f[0]!r} has no key" for f in found[len(keys):]]
        problems += [f"{at}: key {e} has no figure" for e, _ in keys[len(found):]]
    problems += [f"README.md:{line}: {f[0]!r} after the fence's last keys comment has no key"
                 for f in figures(body[start:])]
    return problems


def load(paths: list[str]) -> dict:
    docs = {}
    for p in paths:
        path = REPO / p
        if not path.exists():
            raise FileNotFoundError(f"README.md cites {p}, which does not exist: run the script that writes it")
        if Path(p).name in docs:
            raise ValueError(f"README.md cites two files named {Path(p).name} in one fence")
        docs[Path(p).name] = json.loads(path.read_text())
    return docs


def check_readme(text: str) -> list[str]:
    problems = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        problems += check_fence(m.group("body"), load(m.group("paths").split()), line)
    outside = re.sub(r"```.*?```|`[^`\n]*`", " ", FENCE.sub(" ", text), flags=re.DOTALL)  # code may name it
    if KEYS.search(outside):
        problems.append("a <!-- keys: ... --> comment outside a <!-- figures --> fence binds nothing")
    return problems


def test_every_fenced_section_quotes_its_json():
    text = README.read_text(encoding="utf-8")
    assert FENCE.search(text), "README.md has no <!-- figures: ... --> section"
    problems = check_readme(text)
    assert not problems, "README figures disagree with their keys:\n" + "\n".join(problems)


def test_no_decimal_figure_outside_the_fences():
    text = README.read_text(encoding="utf-8")
    text = FENCE.sub(" ", text)
    for begin, end in OTHER_FENCES:
        if begin in text:
            text = text[:text.index(begin)] + text[text.index(end) + len(end):]
    loose = [w for w, _, decimals, _ in figures(text) if decimals > 0]
    assert not loose, f"decimal figures outside a <!-- figures --> fence (where do they come from?): {loose}"


DOCS = {"r.json": {"ndcg": 0.71234, "qps": [12.5], "queries": 300, "delta": -0.00441},
        "t.json": {"rows": {"a": {"x": 0.1234, "y": 5.0}, "b": {"x": 0.4321, "y": 7.0}},
                   "sweep": {"0.3": {"p": 0.5}, "0.4": {"p": 0.25}}, "steps": 8, "warm": 2, "seed": "42"}}
TABLE = """
| row | x | y |
|---|---|---|
| a | 0.1234 | 5 |
| b | 0.4321 | 7 |
<!-- keys: t.json: [a b | rows.*.x rows.*.y] -->
"""


def test_the_fence_checker_catches_a_stale_figure():
    keys = "<!-- keys: r.json:ndcg qps.0 queries -->"
    assert check_fence("nDCG@10 0.7123 at 12.5 q/s over 300 queries" + keys, DOCS) == []
    assert check_fence("nDCG@10 0.7124 at 12.5 q/s over 300 queries" + keys, DOCS) == [
        "README.md:1: '0.7124' should read 0.7123 (r.json:ndcg)"]


def test_a_swapped_row_a_swapped_column_and_a_changed_digit_each_fail():
    assert check_fence(TABLE, DOCS) == []
    swapped_row = TABLE.replace("| a | 0.1234 | 5 |\n| b | 0.4321 | 7 |", "| b | 0.4321 | 7 |\n| a | 0.1234 | 5 |")
    assert len(check_fence(swapped_row, DOCS)) == 4
    swapped_col = TABLE.replace("| 0.1234 | 5 |", "| 5 | 0.1234 |").replace("| 0.4321 | 7 |", "| 7 | 0.4321 |")
    assert len(check_fence(swapped_col, DOCS)) == 4
    assert check_fence(TABLE.replace("0.4321", "0.4322"), DOCS) == [
        "README.md:6: '0.4322' should read 0.4321 (t.json:rows.b.x)"]


def test_the_readme_fails_with_the_demo_rows_or_columns_swapped_or_a_digit_changed():
    text = README.read_text(encoding="utf-8")
    lines = text.split("\n")
    r1 = [i for i, s in enumerate(lines) if s.startswith("| `round1` | ")]
    r2 = [i for i, s in enumerate(lines) if s.startswith("| `round2` | ")]
    assert len(r1) == len(r2) == 1, "the demo table's round1 and round2 rows are not where this test looks"
    swapped = list(lines)
    swapped[r1[0]], swapped[r2[0]] = lines[r2[0]], lines[r1[0]]
    problems = check_readme("\n".join(swapped))
    assert problems and all("demo.json" in p for p in problems), problems
    seeds = list(lines)
    for i in (r1[0], r2[0]):  # the seed 42 and seed 43 columns
        cells = lines[i].split("|")
        cells[2], cells[3] = cells[3], cells[2]
        seeds[i] = "|".join(cells)
    problems = check_readme("\n".join(seeds))
    assert len(problems) == 4 and all("demo.json:runs.4" in p for p in problems), problems
    digit = list(lines)
    cell = lines[r2[0]].split("|")[2].strip()  # round2's nDCG@10, seed 42
    changed = f"{float(cell) + 0.0001:.4f}"
    digit[r2[0]] = digit[r2[0]].replace(f"| {cell} |", f"| {changed} |", 1)
    assert check_readme("\n".join(digit)) == [
        f"README.md:{text.count(chr(10), 0, text.index('<!-- keys:', text.index(lines[r2[0]]))) + 1}: "
        f"'{changed}' should read {cell} (demo.json:runs.42.systems.round2.nDCG@10)"]


def test_the_docstring_example():
    example = __doc__.split("For example::")[1].split("Here ")[0]
    docs = {"serve_latency.json": {"ms": {"dense": {"p50": 12.1, "p90": 15.27}, "hybrid": {"p50": 14.24, "p90": 18.3}},
                                   "workers": 2, "requests_per_worker": 1000}}
    assert check_fence(FENCE.search(example)["body"], docs) == []
    docs["serve_latency.json"]["ms"]["dense"]["p50"] = 12.13  # 12.1 at one decimal, not 12.10 at two
    assert check_fence(FENCE.search(example)["body"], docs) == [
        "README.md:7: '12.10' should read 12.13 (serve_latency.json:ms.dense.p50)"]
    assert check_fence(FENCE.search(example.replace("12.10", "12.1"))["body"], docs) == []


def test_the_key_syntax():
    assert expand("a.{1,2}.b{~,.p}") == ["a.1.b~", "a.1.b.p", "a.2.b~", "a.2.b.p"]
    assert expand('[a "b c" | x.*.y z.*] t') == ["x.a.y", "z.a", 'x."b c".y', 'z."b c"', "t"]
    assert expand("t.json:[a | x.*]") == ["t.json:", "x.a"]
    assert expand("diff(a, b) =0.99") == ["diff(a, b)", "=0.99"]
    text = ('sweep 0.3: 0.50 / 0.4: 0.25; 6 timed steps after 2, seed 42, -0.0044 and +0.0044, at least 0.99'
            '<!-- keys: t.json:sweep."{0.3,0.4}"{~,.p} diff(steps,warm) warm seed r.json:delta =0.0044 =0.99 -->')
    assert check_fence(text, DOCS) == []
    assert check_fence("0.0044 <!-- keys: r.json:delta -->", DOCS) == [
        "README.md:1: '0.0044' should read -0.0044 (r.json:delta)"]
    assert check_fence("0.5 and 7 <!-- keys: t.json:sweep.\"0.3\".p -->", DOCS) == ["README.md:1: '7' has no key"]
    assert check_fence("0.5 <!-- keys: t.json:sweep.\"0.3\".p steps --> 8", DOCS) == [
        "README.md:1: key t.json:steps has no figure", "README.md:1: '8' after the fence's last keys comment has no key"]
    assert check_fence("5 <!-- keys: rows.a.y -->", DOCS) == ["README.md:1: 'rows.a.y' names no file: write FILE.json:rows.a.y"]
    assert check_fence("5 <!-- keys: t.json:rows.c.y -->", DOCS) == ["README.md:1: t.json:rows.c does not exist"]
    assert check_fence("5 <!-- keys: x.json:rows.a.y -->", DOCS) == [
        "README.md:1: 'x.json:rows.a.y' names x.json, which the fence does not cite (r.json, t.json)"]
    assert check_fence("5 <!-- keys: t.json:rows.a -->", DOCS) == [
        'README.md:1: t.json:rows.a is {"x": 0.1234, "y": 5.0}, not a number']
    assert check_fence("5 <!-- keys: t.json: max(steps) -->", DOCS) == [
        "README.md:1: 'max(steps)': no rule 'max' (rules: diff, sum, mean, ratio, pct)"]
    assert check_fence("nothing here", DOCS) == ["README.md:1: the fence has no <!-- keys: ... --> comment"]
    assert check_readme("0.5 <!-- keys: t.json:x -->") == [
        "a <!-- keys: ... --> comment outside a <!-- figures --> fence binds nothing"]
    assert check_readme("the syntax: `<!-- keys: ... -->`") == []
