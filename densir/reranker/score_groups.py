"""Labels on train groups: a teacher's scores (:func:`score_groups_file`, the stage behind
``tools/score_groups.py``) and qrels grades (:func:`grade_groups`).

:func:`score_groups_file` reads train groups (JSONL, Tevatron's layout; strings or pre-tokenized
ids) and writes the same groups, record by record in input order, each passage, positive or
negative, carrying ``"score"``: the cross-encoder's raw logit for (query, passage), exactly
:meth:`densir.reranker.modeling.CrossEncoderReranker.predict` on the pair the re-ranker trains
on (``densir.dataset.passage_input``: title and text joined as training joins them), the
cross-encoder loaded by `densir.loading.load_model` (any it takes; on a CPU backend
too). A score already on a passage is overwritten; every other field is kept. The groups stream
through (chunks of ``batch_size * 16`` pairs) and the output appears only when complete
(:func:`densir.io.atomic_write`). The distillation losses (``margin_mse``, ``kl``) train on these scores.

The teacher may instead be a scored run (:func:`score_groups_from_run_file`: a TREC run whose
scores are the teacher's): each passage gets the score its (``query_id``, ``docid``) has in the
run. A passage the run lacks is an error naming the group's line (``missing="error"``) or is
dropped (``missing="drop"``; a group left without a positive is dropped too, and both are
counted). Only the pairs the groups hold are kept while the run streams through.

:func:`grade_groups` puts qrels grades (e.g. TREC DL's 0-3 judgements) on groups as each
passage's ``"relevance"``, for the graded losses (``lambda``, ``listmle``, ``plistmle``,
``ranknet``, ``listwise``): apply it to what :func:`densir.train_groups.build_train_groups`
yields before writing.
"""
from __future__ import annotations

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

    ``device``/``precision``/``backend``/``quantize``/``recipe``: `densir.loading.load_model`'s
    (``onnx`` or ``openvino``: fp32 or int8, on the CPU), as ``densir.driver.rerank`` runs the
    teacher; a calibrated recipe calibrates on the file's first pairs. ValueError names the parameter."""
    import torch

    from densir.dataset import passage_input
    from densir.formats import iter_train_groups
    from densir.loading import check_backend, load_model

    if not Path(groups_path).is_file():  # before loading a model
        raise FileNotFoundError(f"{groups_path}: no such train-group file")
    check_backend(backend, quantize, recipe, precision, task="cross-encoder")
    reranker = load_model(model_name_or_path, "cross-encoder", device, precision, backend, quantize, recipe,
                          max_len=max_len, calibration=lambda: ((g["query"], passage_input(p))
                                                                for _, g in iter_train_groups(groups_path)
                                                                for p in _passages(g)))
    precision = reranker.inference.precision
    stats = {"groups": 0, "passages": 0, "model": str(model_name_or_path), "max_len": reranker.max_len,
             "precision": precision, "recipe": reranker.inference.recipe}
    with torch.inference_mode():
        groups = score_groups(reranker, (g for _, g in iter_train_groups(groups_path)), batch_size, precision)
        return _write_groups(out, groups, stats, groups_path, "no train group in the file")


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

    for path, what in ((groups_path, "train-group"), (run_path, "run")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such {what} file")
    scores = run_scores(groups_path, run_path)
    stats = {"groups": 0, "passages": 0, "run": str(run_path)}
    groups = score_groups_from_run(iter_train_groups(groups_path), scores, groups_path, run_path, missing, stats)
    return _write_groups(out, groups, stats, groups_path, f"no train group left with a score from {run_path}")


def _write_groups(out, groups: Iterable[dict], stats: dict, groups_path, if_none: str) -> dict:
    """Write ``groups`` to ``out`` (atomic), counting ``stats["groups"]`` and ``["passages"]``; none
    is an InputError (``if_none``) raised inside the atomic write, so no output file appears."""
    from densir.io import InputError, write_jsonl

    def counted():
        for g in groups:
            stats["groups"] += 1
            stats["passages"] += sum(1 for _ in _passages(g))
            yield g
        if not stats["groups"]:
            raise InputError(groups_path, None, if_none)

    write_jsonl(out, counted())
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
