"""Labels on train groups: a teacher's scores (:func:`score_groups`, the stage behind
``tools/score_groups.py``) and qrels grades (:func:`grade_groups`).

    python tools/score_groups.py --model_name_or_path CROSS_ENCODER --groups IN.jsonl --out OUT.jsonl \\
        [--batch_size 64] [--max_len 512] [--precision fp32|auto|fp16|bf16] [--device auto|cpu|cuda] \\
        [--backend torch|onnx|openvino --quantize none|int8 --backend_recipe NAME]
    python tools/score_groups.py --run TEACHER.run --groups IN.jsonl --out OUT.jsonl [--missing error|drop]

Reads train groups (JSONL, Tevatron's layout; strings or pre-tokenized ids) and writes the same
groups, record by record in input order, each passage, positive or negative, carrying
``"score"``: the cross-encoder's raw logit for (query, passage), exactly
:meth:`densir.reranker.modeling.CrossEncoderReranker.predict` on the pair the re-ranker trains
on (``densir.dataset.passage_input``: title and text joined as training joins them). Any
cross-encoder ``CrossEncoderReranker.load`` takes: a densir re-ranker, a sentence-transformers
``CrossEncoder``, a HF one-label classifier. A score already on a passage is overwritten; every
other field is kept. The groups stream through (a chunk of ``--batch_size * 16`` pairs at a
time, so a file of MS MARCO size never sits in memory) and OUT appears only when complete
(:func:`densir.io.atomic_write`). The distillation losses (``--loss margin_mse | kl``) train on
these scores.

The teacher may instead be a scored run (``--run RUN``: a TREC run whose scores are the teacher's,
e.g. a cross-encoder's re-ranking or a published teacher's scores): each passage gets the score
its (``query_id``, ``docid``) has in the run (:func:`score_groups_from_run`). A passage the run
lacks is an error naming the group's line (``--missing error``) or is dropped
(``--missing drop``; a group left without a positive is dropped too, and both are counted). Only
the pairs the groups hold are kept while the run streams through, so memory follows the groups,
not the run.

:func:`grade_groups` puts qrels grades (e.g. TREC DL's 0-3 judgements) on groups as each
passage's ``"relevance"``, for the graded losses (``lambda``, ``listmle``, ``plistmle``,
``ranknet``, ``listwise``): apply it to what :func:`densir.train_groups.build_train_groups`
yields before writing.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, Mapping

logger = logging.getLogger(__name__)

CHUNK_BATCHES = 16  # pairs scored per predict call = batch_size * CHUNK_BATCHES (length bucketing inside)


# --------------------------------------------------------------------------- teacher scores
def score_groups(reranker, groups: Iterable[dict], batch_size: int = 64,
                 precision: str | None = None) -> Iterator[dict]:
    """Yield each group with ``"score"`` (float) set on every passage, in input order.

    ``reranker`` is a :class:`densir.reranker.modeling.CrossEncoderReranker`; groups are scored
    in chunks of about ``batch_size * 16`` pairs.
    """
    from densir.dataset import passage_input

    chunk: list[dict] = []
    pairs: list[tuple] = []
    for g in groups:
        chunk.append(g)
        pairs.extend((g["query"], passage_input(p)) for p in _passages(g))
        if len(pairs) >= batch_size * CHUNK_BATCHES:
            yield from _attach(chunk, reranker.predict(pairs, batch_size=batch_size, precision=precision))
            chunk, pairs = [], []
    if chunk:
        yield from _attach(chunk, reranker.predict(pairs, batch_size=batch_size, precision=precision))


def score_groups_file(model_name_or_path: str, groups_path, out, batch_size: int = 64, max_len: int | None = None,
                      precision: str = "fp32", device: str = "auto", backend: str = "torch", quantize: str = "none",
                      recipe: str | None = None) -> dict:
    """``groups_path`` -> ``out`` (atomic) with teacher scores on every passage; returns counts.

    ``backend``/``quantize``/``recipe``: the teacher run by :mod:`densir.backends` (``onnx`` or
    ``openvino``, fp32 or int8, on the CPU), as ``densir.driver.rerank`` runs it; a calibrated recipe
    calibrates on the file's first 300 pairs."""
    import itertools

    import torch

    from densir.backends import RECIPES, recipe_name
    from densir.dataset import passage_input
    from densir.formats import iter_train_groups
    from densir.io import InputError, atomic_write
    from densir.precision import resolve_device, resolve_precision
    from densir.reranker.modeling import CrossEncoderReranker
    from densir.threads import configure_cpu_threads

    if not Path(groups_path).is_file():  # before loading a model
        raise FileNotFoundError(f"{groups_path}: no such train-group file")
    recipe = recipe_name(backend, quantize, recipe, task="cross-encoder")  # ValueError on a bad request
    if backend != "torch":
        if precision not in ("fp32", "auto"):
            raise ValueError(f"--backend {backend} runs in fp32 or int8 (--quantize int8), not {precision}")
        precision, device = "fp32", "cpu"
    device = resolve_device(device)
    if device == "cpu":
        configure_cpu_threads()
    amp = resolve_precision(precision, device).name
    reranker = CrossEncoderReranker.load(model_name_or_path, max_len=max_len).to(device)
    if backend != "torch":
        calibration = None
        if RECIPES[recipe].calibrated:
            pairs = ((g["query"], passage_input(p)) for _, g in iter_train_groups(groups_path) for p in _passages(g))
            calibration = list(itertools.islice(pairs, 300))
        reranker = reranker.with_backend(backend, quantize, recipe=recipe, calibration=calibration)
        logger.info("backend %s", reranker.runtime_info)
    stats = {"groups": 0, "passages": 0, "model": str(model_name_or_path), "max_len": reranker.max_len,
             "precision": amp, "recipe": recipe}
    with torch.inference_mode(), atomic_write(out) as f:
        for g in score_groups(reranker, (g for _, g in iter_train_groups(groups_path)), batch_size, amp):
            f.write(json.dumps(g, ensure_ascii=False))
            f.write("\n")
            stats["groups"] += 1
            stats["passages"] += sum(1 for _ in _passages(g))
        if not stats["groups"]:  # raised inside the atomic write: no output file appears
            raise InputError(groups_path, None, "no train group in the file")
    return stats


def run_scores(groups_path, run_path) -> dict[str, dict[str, float]]:
    """The score in the TREC run ``run_path`` of every (query_id, docid) pair the groups at
    ``groups_path`` hold: ``{query_id: {docid: score}}``, the run streamed (pairs it lacks are absent)."""
    from densir.formats import iter_train_groups
    from densir.io import InputError, iter_run

    wanted: dict[str, set[str]] = {}
    for lineno, g in iter_train_groups(groups_path):
        if g.get("query_id") is None:
            raise InputError(groups_path, lineno, "missing: a scored run is looked up by query_id and docid",
                             "query_id")
        docids = wanted.setdefault(str(g["query_id"]), set())
        for p in _passages(g):
            if p.get("docid") is None:
                raise InputError(groups_path, lineno, "a passage without one: a scored run is looked up by docid",
                                 "docid")
            docids.add(str(p["docid"]))
    scores: dict[str, dict[str, float]] = {}
    for qid, hits in iter_run(run_path):
        docids = wanted.get(qid)
        if docids:
            scores[qid] = {d: s for d, s in hits if d in docids}
    return scores


def score_groups_from_run(groups: Iterable[tuple[int, dict]], scores: Mapping[str, Mapping[str, float]],
                          groups_path="groups", run_path="run", missing: str = "error",
                          stats: dict | None = None) -> Iterator[dict]:
    """Yield each ``(line, group)``'s group with ``"score"`` on every passage from ``scores``
    (:func:`run_scores`). ``missing="error"``: a passage without a score raises InputError at the
    group's line; ``"drop"``: it is left out, and a group left without a positive is skipped
    (``stats["dropped_passages"]``, ``stats["dropped_groups"]``)."""
    from densir.io import InputError

    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', not {missing!r}")
    stats = stats if stats is not None else {}
    stats.setdefault("dropped_passages", 0)
    stats.setdefault("dropped_groups", 0)
    for lineno, g in groups:
        qid = str(g["query_id"])
        table = scores.get(qid, {})
        out = {}
        for field in ("positive_passages", "negative_passages"):
            kept = []
            for p in g[field]:
                score = table.get(str(p["docid"]))
                if score is None:
                    if missing == "error":
                        raise InputError(groups_path, lineno, f"passage {p['docid']!r} of query {qid!r} has no "
                                         f"score in the run {run_path} (--missing drop leaves such passages out)",
                                         field)
                    stats["dropped_passages"] += 1
                    continue
                kept.append({**p, "score": float(score)})
            out[field] = kept
        if not out["positive_passages"]:
            stats["dropped_groups"] += 1
            continue
        yield {**g, **out}


def score_groups_from_run_file(run_path, groups_path, out, missing: str = "error") -> dict:
    """``groups_path`` -> ``out`` (atomic) with the scored run's score on every passage; returns counts."""
    from densir.formats import iter_train_groups
    from densir.io import InputError, atomic_write

    for path, what in ((groups_path, "train-group"), (run_path, "run")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such {what} file")
    scores = run_scores(groups_path, run_path)
    stats = {"groups": 0, "passages": 0, "run": str(run_path)}
    with atomic_write(out) as f:
        for g in score_groups_from_run(iter_train_groups(groups_path), scores, groups_path, run_path, missing, stats):
            f.write(json.dumps(g, ensure_ascii=False))
            f.write("\n")
            stats["groups"] += 1
            stats["passages"] += sum(1 for _ in _passages(g))
        if not stats["groups"]:  # raised inside the atomic write: no output file appears
            raise InputError(groups_path, None, f"no train group left with a score from {run_path}")
    return stats


def score_groups_cli(argv: list[str] | None = None) -> dict:
    """The CLI of ``tools/score_groups.py`` (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    teacher = ap.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--model_name_or_path", help="the teacher: any cross-encoder")
    teacher.add_argument("--run", help="the teacher: a scored TREC run (each passage gets its pair's score)")
    ap.add_argument("--missing", default="error", choices=("error", "drop"),
                    help="with --run: a passage the run lacks is an error, or is left out")
    ap.add_argument("--groups", required=True, help="train-group JSONL to score")
    ap.add_argument("--out", required=True, help="the same groups with 'score' on every passage")
    ap.add_argument("--batch_size", type=int, default=64, help="pairs per forward pass")
    ap.add_argument("--max_len", type=int, default=None,
                    help="query + passage tokens; default: the model's saved max_len, else min(tokenizer, 512)")
    ap.add_argument("--precision", default="fp32", help="fp32 | auto | fp16 | bf16 (densir.precision)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda[:i]")
    ap.add_argument("--backend", default="torch", help="torch | onnx | openvino (densir.backends; CPU only)")
    ap.add_argument("--quantize", default="none", help="none | int8 (with --backend onnx or openvino)")
    ap.add_argument("--backend_recipe", default=None,
                    help="a named recipe of densir.backends.RECIPES (calibrated ones on the file's first 300 pairs)")
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error(f"--batch_size must be positive, got {args.batch_size}")
    from densir.backends import recipe_name

    try:
        recipe_name(args.backend, args.quantize, args.backend_recipe, task="cross-encoder")
    except ValueError as e:
        ap.error(str(e))
    if args.backend != "torch" and args.precision not in ("fp32", "auto"):
        ap.error(f"--backend {args.backend} runs in fp32 or int8 (--quantize int8), not {args.precision}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.run:
        stats = score_groups_from_run_file(args.run, args.groups, args.out, missing=args.missing)
        dropped = f" (left out: {stats['dropped_passages']} passages not in the run, {stats['dropped_groups']} groups " \
            "left without a positive)" if stats["dropped_passages"] else ""
        print(f"{args.out}: {stats['groups']} groups, {stats['passages']} passages scored by {args.run}{dropped}")
        return stats
    stats = score_groups_file(args.model_name_or_path, args.groups, args.out, batch_size=args.batch_size,
                              max_len=args.max_len, precision=args.precision, device=args.device,
                              backend=args.backend, quantize=args.quantize, recipe=args.backend_recipe)
    print(f"{args.out}: {stats['groups']} groups, {stats['passages']} passages scored by {args.model_name_or_path}")
    return stats


# --------------------------------------------------------------------------- qrels grades
def grade_groups(groups: Iterable[dict], qrels: Mapping[str, Mapping[str, int]], relevant_min: int = 1,
                 stats: dict | None = None) -> Iterator[dict]:
    """Yield each group with its qrels grades as every passage's ``"relevance"``.

    A passage's grade is ``qrels[query_id][docid]``, 0 when unjudged. Passages graded at least
    ``relevant_min`` are the positives, the others the negatives, in their order (positives
    first, then negatives). With ``relevant_min=2`` on TREC DL (where 2 = highly relevant, the
    official binary cut), a grade-1 passage ("related") becomes a negative that still ranks
    above the ungraded ones in the listwise losses. A group left without a positive is dropped
    and counted (``stats["no_positive"]``); ``stats`` also counts groups, and passages per grade.
    """
    if relevant_min < 1:
        raise ValueError(f"relevant_min must be >= 1 (a positive's relevance is > 0), got {relevant_min}")
    stats = stats if stats is not None else {}
    stats.update(groups=0, no_positive=0, grades={})
    for g in groups:
        qid = g.get("query_id")
        if qid is None:
            raise ValueError("grade_groups: a group without 'query_id' cannot be matched to the qrels")
        judged = qrels.get(str(qid), {})
        positives, negatives = [], []
        for p in list(g.get("positive_passages", [])) + list(g.get("negative_passages", [])):
            grade = judged.get(str(p.get("docid")), 0)
            stats["grades"][grade] = stats["grades"].get(grade, 0) + 1
            (positives if grade >= relevant_min else negatives).append({**p, "relevance": grade})
        if not positives:
            stats["no_positive"] += 1
            continue
        stats["groups"] += 1
        yield {**g, "positive_passages": positives, "negative_passages": negatives}


# --------------------------------------------------------------------------- helpers
def _passages(g: dict):
    yield from g["positive_passages"]
    yield from g["negative_passages"]


def _attach(groups: list[dict], scores) -> Iterator[dict]:
    k = 0
    for g in groups:
        for p in _passages(g):
            p["score"] = float(scores[k])
            k += 1
        yield g
