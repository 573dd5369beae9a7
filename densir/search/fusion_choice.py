"""Choose a hybrid's fusion on held-out TRAIN queries: the sweep behind ``HYBRID=auto``.

:func:`sweep_fusions` fuses a dense run with a BM25 run of the same queries every way the stage
scripts can (:func:`densir.search.fusion.fuse`: reciprocal rank fusion at each k of ``RRF_KS``, the
weighted sum at each dense weight alpha of ``ALPHAS`` under each normalisation of ``NORMS``; BM25
gets 1 - alpha), scores each on the queries' qrels (:func:`densir.evaluation.evaluate`) and names
the best by nDCG@10 (the first of equals, RRF before weighted), as stage settings::

    {"metric": "nDCG@10", "queries": N, "inputs": {"dense": {...}, "bm25": {...}},
     "rrf": {k: metrics}, "weighted": {norm: {alpha: metrics}},
     "best": {"rrf": {...}, "weighted": {...}, "overall": {"HYBRID": ..., "HYBRID_K" | "HYBRID_WEIGHT",
              "HYBRID_NORM", "nDCG@10": ...}},
     "chosen": {"HYBRID": ..., ...}}          # best.overall's settings (choose_fusion only)

:func:`choose_fusion` reads the three files, refuses qrels of an evaluation split (:func:`tuning_qrels_problem`:
a file named like a test split, or one that shares a query with the qrels the pipeline evaluates on),
and returns the sweep with ``chosen``; :func:`fuse_chosen` applies a chosen setting and
:func:`fuse_runs_args` spells it as ``tools/fuse_runs.py`` flags. CLIs: ``tools/choose_fusion.py``
(run.sh / train_hn.sh ``HYBRID=auto``, one ``R/fusion.json`` a round) and ``benchmarks/hybrid_sweep.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

from densir.evaluation import DEFAULT_METRICS, evaluate, format_table
from densir.formats import read_qrels
from densir.io import ParameterError, UsageError, read_run
from densir.search.fusion import NORMS, fuse

RRF_KS = (1, 5, 10, 20, 30, 40, 60, 80, 100, 150, 200)
ALPHAS = tuple(i / 10 for i in range(11))
KEY = "nDCG@10"


def tuning_qrels_problem(qrels_path, eval_qrels: Iterable = ()) -> str | None:
    """Why ``qrels_path`` must not choose settings, or None: its name says test, it is one of
    ``eval_qrels`` (the qrels the pipeline evaluates on), or it shares a query with one of them."""
    qrels_path = Path(qrels_path)
    if "test" in qrels_path.name:
        return (f"{qrels_path} looks like a test split: choose settings on held-out train queries "
                "(get_data.sh HOLDOUT, tools/holdout_split.py), never on test")
    for other in map(Path, eval_qrels):
        if not other.is_file():
            continue
        if other.resolve() == qrels_path.resolve():
            return f"{qrels_path} is the evaluation split's qrels: choose settings on held-out train queries, never on test"
        shared = set(read_qrels(qrels_path)) & set(read_qrels(other))
        if shared:
            return (f"{qrels_path} shares {len(shared)} queries with the evaluation qrels {other} (e.g. "
                    f"{sorted(shared)[0]!r}): choose settings on held-out train queries, never on test")
    return None


def sweep_fusions(dense: Mapping, bm25: Mapping, qrels: Mapping, ks: Sequence[float] = RRF_KS,
                  alphas: Sequence[float] = ALPHAS, norms: Sequence[str] = NORMS, depth: int = 1000) -> dict:
    """Every fusion of the sweep scored on ``qrels``; ``best`` by nDCG@10 (the first of equals)."""
    inputs = {"dense": evaluate(qrels, dense), "bm25": evaluate(qrels, bm25)}
    rrf = {f"{k:g}": evaluate(qrels, fuse([dense, bm25], "rrf", rrf_k=k, depth=depth)) for k in ks}
    weighted = {norm: {f"{a:g}": evaluate(qrels, fuse([dense, bm25], "weighted", weights=(a, 1.0 - a), norm=norm,
                                                       depth=depth)) for a in alphas} for norm in norms}
    best = {}
    if rrf:
        best_k = max(rrf, key=lambda k: rrf[k][KEY])
        best["rrf"] = {"HYBRID": "rrf", "HYBRID_K": best_k, KEY: rrf[best_k][KEY]}
    pairs = [(n, a) for n in weighted for a in weighted[n]]
    if pairs:
        n, a = max(pairs, key=lambda na: weighted[na[0]][na[1]][KEY])
        best["weighted"] = {"HYBRID": "weighted", "HYBRID_NORM": n, "HYBRID_WEIGHT": a, KEY: weighted[n][a][KEY]}
    if not best:
        raise UsageError("nothing to sweep: give at least one RRF k or one alpha and norm")
    best["overall"] = max(best.values(), key=lambda b: b[KEY])
    return {"metric": KEY, "queries": inputs["dense"]["queries"], "inputs": inputs, "rrf": rrf,
            "weighted": weighted, "best": best}


def chosen_setting(sweep: Mapping) -> dict:
    """The stage settings of the sweep's best fusion (``HYBRID`` and its ``HYBRID_*``), as strings."""
    return {k: str(v) for k, v in sweep["best"]["overall"].items() if k != KEY}


def fuse_chosen(dense: Mapping, bm25: Mapping, setting: Mapping, depth: int = 1000) -> dict:
    """``dense`` fused with ``bm25`` by a chosen setting (:func:`chosen_setting`)."""
    if setting["HYBRID"] == "rrf":
        return fuse([dense, bm25], "rrf", rrf_k=float(setting["HYBRID_K"]), depth=depth)
    alpha = float(setting["HYBRID_WEIGHT"])
    return fuse([dense, bm25], "weighted", weights=(alpha, 1.0 - alpha), norm=setting["HYBRID_NORM"], depth=depth)


def fuse_runs_args(setting: Mapping) -> list[str]:
    """The ``tools/fuse_runs.py`` flags of a chosen setting (the same floats as :func:`fuse_chosen`)."""
    if setting["HYBRID"] == "rrf":
        return ["--method", "rrf", "--rrf_k", repr(float(setting["HYBRID_K"]))]
    alpha = float(setting["HYBRID_WEIGHT"])
    return ["--method", "weighted", "--weights", repr(alpha), repr(1.0 - alpha), "--norm", setting["HYBRID_NORM"]]


def choose_fusion(dense_path, bm25_path, qrels_path, *, eval_qrels: Iterable = (), ks: Sequence[float] = RRF_KS,
                  alphas: Sequence[float] = ALPHAS, norms: Sequence[str] = NORMS, depth: int = 1000) -> dict:
    """The sweep of ``dense_path`` + ``bm25_path`` on ``qrels_path``, with ``chosen`` (the best's
    settings) and the inputs' paths. Refuses (UsageError) qrels of an evaluation split, alphas
    outside [0, 1], and a dense run with queries the qrels do not judge."""
    problem = tuning_qrels_problem(qrels_path, eval_qrels)
    if problem:
        raise UsageError(problem)
    if any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ParameterError("alphas", f"must be in [0, 1], got {list(alphas)}")
    unknown = [n for n in norms if n not in NORMS]
    if unknown:
        raise ParameterError("norms", f"must be among {', '.join(NORMS)}, got {unknown[0]!r}")
    qrels = read_qrels(qrels_path)
    dense, bm25 = read_run(dense_path), read_run(bm25_path)
    unjudged = set(dense) - set(qrels)
    if unjudged:
        raise UsageError(f"{len(unjudged)} queries of {dense_path} have no qrels in {qrels_path} (another query set?)")
    sweep = sweep_fusions(dense, bm25, qrels, ks, alphas, norms, depth)
    sweep["chosen"] = chosen_setting(sweep)
    sweep.update(dense=str(dense_path), bm25=str(bm25_path), qrels=str(qrels_path), depth=depth,
                 dense_depth=max(map(len, dense.values())), bm25_depth=max(map(len, bm25.values())))
    return sweep


def render(sweep: Mapping) -> str:
    """The sweep as a table (one row per fusion) and the chosen stage settings."""
    rows = {"dense alone": sweep["inputs"]["dense"], "BM25 alone": sweep["inputs"]["bm25"]}
    rows.update({f"rrf k={k}": m for k, m in sweep["rrf"].items()})
    for norm, by_alpha in sweep["weighted"].items():
        rows.update({f"{norm} alpha={a}": m for a, m in by_alpha.items()})
    b = sweep["best"]
    best = []
    if "rrf" in b:
        best.append(f"best rrf: k={b['rrf']['HYBRID_K']} ({KEY} {b['rrf'][KEY]:.4f})")
    if "weighted" in b:
        best.append(f"best weighted: {b['weighted']['HYBRID_NORM']} alpha={b['weighted']['HYBRID_WEIGHT']} "
                    f"({KEY} {b['weighted'][KEY]:.4f})")
    return "\n".join([
        f"hybrid sweep on {sweep['queries']} held-out train queries ({sweep.get('label') or sweep.get('dense', '')})",
        format_table(rows, DEFAULT_METRICS),
        "; ".join(best),
        "stage settings: " + " ".join(f"{k}={v}" for k, v in b["overall"].items() if k != KEY)])
