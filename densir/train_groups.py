"""Build train groups (Tevatron layout) from qrels + a retrieval run: BM25 or dense hard negatives.

One builder serves both rounds (and the cross-encoder's groups): round 1 samples negatives from a
BM25 run, round 2 from the round-1 model's run with the top ``skip`` ranks left out (a guard
against unlabelled positives).

For each query with at least one positive (rel > 0) in the qrels:
    positives = the judged relevant docs
    candidates = run hits at ranks (skip, depth] that are not judged relevant, in run order
    negatives = ``n_sample`` of the candidates, drawn without replacement by a RNG seeded with
                (seed, qid), so a query's sample does not depend on file order or on other queries.
Queries without a positive, without any negative, or absent from the run are counted and
reported in the stats, never silently dropped.

Mining options (sentence-transformers' ``mine_hard_negatives``, over a run's scores). Between
the candidates and the draw, in this order, each only when given:

1. ``rescore``: a cross-encoder scores the query's positives and every candidate
   (:func:`cross_encoder_rescorer`, ``--rescore_model``); from here on "score" is its raw logit
   and the candidates are ranked by it (ties keep run order). Without it, "score" is the run's.
2. score filters, each counted in the stats by what it dropped (``dropped_<name>``), against
   the positive's score ``pos`` (the *lowest* score among the query's positives, as
   sentence-transformers takes the harder positive):
     ``margin``           (absolute) keeps ``neg + margin <= pos``, i.e. ``neg <= pos - margin``
     ``relative_margin``  keeps ``neg <= pos - |pos| * relative_margin``; that is
                          ``pos * (1 - relative_margin)`` for ``pos >= 0``, and for a negative
                          ``pos`` (a logit) it still lies below ``pos`` (sentence-transformers'
                          form since its issue #3819; ``pos * (1 - m)`` would lie above it)
     ``max_score``        keeps ``neg <= max_score``
     ``min_score``        keeps ``neg >= min_score``
3. ``range_min``/``range_max``: the rank window ``[range_min, range_max)`` over the candidates
   left, best first (sentence-transformers' ranks: positives and filtered candidates are not
   counted; ``skip``/``depth`` are run ranks, positives counted, before any filter). Dropped
   ones count as ``dropped_range``.
4. ``sampling``: ``random`` (the default, the draw above) or ``top`` (the first ``n_sample``).

The positive's score. With ``rescore`` every positive is scored by the cross-encoder itself, as
sentence-transformers scores it with its model. Without it only the run's scores are known: a
positive's score is its run score wherever the run has it (at any rank, also below ``depth``);
a positive the run lacks has no score and is left out of the minimum. A query none of whose
positives is in the run has no reference score: the margins are not applied to it (``max_score``
and ``min_score`` are) and it is counted as ``no_positive_score``. (sentence-transformers would
score such a positive below every hit of an exhaustive run, and so drop nearly all its
candidates under any margin >= 0; ``--rescore_model`` gives real scores instead.)

With none of these options given, the groups are exactly those of the plain builder above.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from densir.io import InputError
from densir.rng import seeded_rng

logger = logging.getLogger(__name__)

SAMPLING = ("random", "top")
SCORE_FILTERS = ("margin", "relative_margin", "max_score", "min_score")  # applied in this order

Rescorer = Callable[[str, Sequence[str]], Sequence[float]]  # (query, passage texts) -> scores


def check_mining_args(range_min: int = 0, range_max: int | None = None, relative_margin: float | None = None,
                      sampling: str = "random") -> None:
    """ValueError for mining options that cannot mine anything (before any file is read or model loaded)."""
    if range_min < 0:
        raise ValueError(f"range_min must be >= 0, got {range_min}")
    if range_max is not None and range_max <= range_min:
        raise ValueError(f"range_max must be > range_min, got {range_max} and {range_min}")
    if relative_margin is not None and relative_margin < 0:
        raise ValueError(f"relative_margin must be >= 0, got {relative_margin}")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")


def build_train_groups(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                       run: Iterable[tuple[str, list[tuple[str, float]]]],
                       corpus: Mapping[str, tuple[str, str]], depth: int = 200, n_sample: int = 30,
                       seed: int = 42, skip: int = 0, stats: dict | None = None, run_path=None,
                       queries_path=None, range_min: int = 0, range_max: int | None = None,
                       margin: float | None = None, relative_margin: float | None = None,
                       max_score: float | None = None, min_score: float | None = None,
                       sampling: str = "random", rescore: Rescorer | None = None) -> Iterator[dict]:
    """Yield train-group records; fill ``stats`` with counts of what was kept and skipped.

    ``run`` yields ``(qid, hits)`` best first (``densir.io.iter_run``). ``corpus`` maps
    docid -> (title, text). Only queries with qrels are considered. A judged query whose text is
    missing, or a docid in its top ``depth`` that the corpus lacks (a run over another corpus),
    is an :class:`densir.io.InputError` naming ``run_path`` and the line (``queries_path``, the
    corpus: named in the message).

    The mining options (``range_min`` ... ``rescore``) are those of the module docstring;
    ``rescore(query, passage_texts)`` returns one score per text (the positives' texts first,
    then the candidates', titles joined by :func:`densir.formats.passage_text`).
    """
    from densir.formats import passage_text

    check_mining_args(range_min, range_max, relative_margin, sampling)
    stats = stats if stats is not None else {}
    stats.update(groups=0, queries_in_run=0, no_positive=0, no_negative=0, fewer_than_n_sample=0,
                 not_in_run=0, negatives=0, positives=0, candidates=0, no_positive_score=0,
                 no_negative_after_filters=0, rescored_pairs=0, dropped_range=0,
                 **{f"dropped_{name}": 0 for name in SCORE_FILTERS})
    filters = {"margin": margin, "relative_margin": relative_margin, "max_score": max_score, "min_score": min_score}
    seen = set()
    for qid, hits in run:
        stats["queries_in_run"] += 1
        seen.add(qid)
        positives = [d for d, rel in qrels.get(qid, {}).items() if rel > 0]
        if not positives:
            stats["no_positive"] += 1
            continue
        _check_known(qid, hits[:depth], queries, corpus, run_path, queries_path)
        pos_set = set(positives)
        candidates = [(d, s) for d, s in hits[skip:depth] if d not in pos_set]
        if not candidates:
            stats["no_negative"] += 1
            continue
        stats["candidates"] += len(candidates)
        if rescore is not None:
            texts = [passage_text(*corpus[d]) for d in positives] + [passage_text(*corpus[d]) for d, _ in candidates]
            scores = [float(x) for x in rescore(queries[qid], texts)]
            if len(scores) != len(texts):
                raise ValueError(f"rescore returned {len(scores)} scores for {len(texts)} passages")
            stats["rescored_pairs"] += len(texts)
            positive_scores = scores[:len(positives)]
            # best first by the cross-encoder; sorted() is stable, so ties keep run order
            candidates = sorted(zip((d for d, _ in candidates), scores[len(positives):]), key=lambda h: -h[1])
        else:
            run_scores: dict[str, float] = {}
            for d, s in hits:
                run_scores.setdefault(d, s)
            positive_scores = [run_scores[d] for d in positives if d in run_scores]
        candidates = filter_candidates(candidates, positive_scores, stats=stats, **filters)
        window = candidates[range_min:range_max]
        stats["dropped_range"] += len(candidates) - len(window)
        if not window:
            stats["no_negative_after_filters"] += 1
            continue
        ids = [d for d, _ in window]
        if len(ids) > n_sample:
            negatives = ids[:n_sample] if sampling == "top" else seeded_rng(seed, qid).sample(ids, n_sample)
        else:
            negatives = ids
            stats["fewer_than_n_sample"] += len(ids) < n_sample
        stats["groups"] += 1
        stats["positives"] += len(positives)
        stats["negatives"] += len(negatives)
        yield {
            "query_id": qid,
            "query": queries[qid],
            "positive_passages": [_passage(corpus, d) for d in positives],
            "negative_passages": [_passage(corpus, d) for d in negatives],
        }
    stats["not_in_run"] = sum(1 for q, docs in qrels.items() if q not in seen and any(r > 0 for r in docs.values()))


def filter_candidates(candidates: Sequence[tuple[str, float]], positive_scores: Sequence[float],
                      margin: float | None = None, relative_margin: float | None = None,
                      max_score: float | None = None, min_score: float | None = None,
                      stats: dict | None = None) -> list[tuple[str, float]]:
    """The ``(docid, score)`` candidates that pass the score filters, in their order.

    The comparisons are sentence-transformers' (``neg + margin > pos`` drops, ``neg > pos -
    |pos| * relative_margin`` drops, ``neg > max_score`` drops, ``neg < min_score`` drops), with
    ``pos = min(positive_scores)``; with no positive score the margins are skipped (counted as
    ``no_positive_score``). ``stats[f"dropped_{name}"]`` grows by what each filter dropped of
    what the filters before it left.
    """
    stats = stats if stats is not None else {}
    kept = list(candidates)

    def drop(name: str, rejects) -> None:
        nonlocal kept
        before = len(kept)
        kept = [(d, s) for d, s in kept if not rejects(s)]
        stats[f"dropped_{name}"] = stats.get(f"dropped_{name}", 0) + before - len(kept)

    if margin is not None or relative_margin is not None:
        if not positive_scores:
            stats["no_positive_score"] = stats.get("no_positive_score", 0) + 1
        else:
            pos = min(positive_scores)
            if margin is not None:
                drop("margin", lambda s: s + margin > pos)
            if relative_margin is not None:
                threshold = pos - abs(pos) * relative_margin
                drop("relative_margin", lambda s: s > threshold)
    if max_score is not None:
        drop("max_score", lambda s: s > max_score)
    if min_score is not None:
        drop("min_score", lambda s: s < min_score)
    return kept


def cross_encoder_rescorer(model_name_or_path: str, batch_size: int = 64, max_len: int | None = None,
                           precision: str = "fp32", device: str = "auto", backend: str = "torch",
                           quantize: str = "none", recipe: str | None = None, calibration=None) -> Rescorer:
    """``rescore`` for :func:`build_train_groups`: raw logits of
    :meth:`densir.reranker.modeling.CrossEncoderReranker.predict` (any cross-encoder it loads; a
    plain encoder gets a fresh head, random: for real mining give a trained cross-encoder), loaded
    by :func:`densir.loading.load_model` with these arguments (``backend`` onnx/openvino:
    fp32 or int8 on the CPU; ``calibration``: (query, passage) pairs for a calibrated recipe)."""
    from densir.loading import load_model

    reranker = load_model(model_name_or_path, "cross-encoder", device, precision, backend, quantize, recipe,
                          calibration=calibration, max_len=max_len)
    precision = reranker.inference.precision
    logger.info("rescoring candidates with %s (max_len %d, %s, %s, %s)", model_name_or_path, reranker.max_len, precision,
                reranker.inference.device, reranker.inference.recipe)

    def rescore(query: str, texts: Sequence[str]):
        return reranker.predict([(query, t) for t in texts], batch_size=batch_size, precision=precision)

    rescore.reranker = reranker
    return rescore


def _check_known(qid: str, hits, queries: Mapping, corpus: Mapping, run_path, queries_path) -> None:
    run_name = run_path if run_path is not None else "run"
    if qid not in queries:
        raise InputError.in_run(run_name, qid, f"query {qid!r} is in the run and the qrels but not in the queries"
                                f"{f' {queries_path}' if queries_path else ''}", "qid")
    for docid, _ in hits:
        if docid not in corpus:
            raise InputError.in_run(run_name, qid, f"docid {docid!r} is not in the corpus", "docid", docid=docid)


def _passage(corpus, docid: str) -> dict:
    title, text = corpus[docid]  # every docid was checked by _check_known (positives by read_qrels)
    return {"docid": docid, "title": title, "text": text}


def describe_stats(stats: Mapping[str, int]) -> str:
    g = stats["groups"]
    mean = stats["negatives"] / g if g else 0.0
    text = (f"{g} groups written ({mean:.1f} negatives on average); skipped: "
            f"{stats['no_positive']} queries without a positive, {stats['no_negative']} without a negative, "
            f"{stats['not_in_run']} judged queries absent from the run; "
            f"{stats['fewer_than_n_sample']} groups have fewer negatives than asked")
    dropped = {name: stats.get(f"dropped_{name}", 0) for name in (*SCORE_FILTERS, "range")}
    if any(dropped.values()) or stats.get("no_negative_after_filters") or stats.get("no_positive_score"):
        text += ("; mining dropped " + ", ".join(f"{n} by {name}" for name, n in dropped.items() if n)
                 + f" of {stats.get('candidates', 0)} candidates, "
                 f"{stats.get('no_negative_after_filters', 0)} queries were left without a negative, "
                 f"{stats.get('no_positive_score', 0)} had no positive score (margins not applied)")
    return text


def build_train_file(queries_path, qrels_path, run_path, corpus_path, out, depth: int = 200, skip: int = 0,
                     n_sample: int = 30, seed: int = 42, range_min: int = 0, range_max: int | None = None,
                     margin: float | None = None, relative_margin: float | None = None,
                     max_score: float | None = None, min_score: float | None = None, sampling: str = "random",
                     rescore_model: str | None = None, rescore_batch_size: int = 64,
                     rescore_max_len: int | None = None, rescore_precision: str = "fp32",
                     rescore_device: str = "auto", rescore_backend: str = "torch", rescore_quantize: str = "none",
                     rescore_recipe: str | None = None) -> dict:
    """Files in, train-group JSONL out: ``out`` (atomic) and its stats beside it (``.stats.json``).

    ``rescore_model``: a cross-encoder (:func:`cross_encoder_rescorer`, with the other ``rescore_*``
    arguments) whose scores the mining options use instead of the run's; a calibrated recipe
    calibrates on the run's first (query, hit) pairs.
    """
    from pathlib import Path

    from densir.formats import passage_text, read_corpus, read_qrels, read_queries
    from densir.io import iter_run, write_json, write_jsonl
    from densir.loading import check_backend

    check_mining_args(range_min, range_max, relative_margin, sampling)
    if rescore_model:
        check_backend(rescore_backend, rescore_quantize, rescore_recipe, rescore_precision, task="cross-encoder")
    corpus = read_corpus(corpus_path)
    qrels = read_qrels(qrels_path, doc_ids=set(corpus))
    queries = read_queries(queries_path)
    if not queries:
        raise InputError(queries_path, None, "no queries")
    mining = dict(range_min=range_min, range_max=range_max, margin=margin, relative_margin=relative_margin,
                  max_score=max_score, min_score=min_score, sampling=sampling)
    rescore = None
    if rescore_model:
        rescore = cross_encoder_rescorer(
            rescore_model, batch_size=rescore_batch_size, max_len=rescore_max_len, precision=rescore_precision,
            device=rescore_device, backend=rescore_backend, quantize=rescore_quantize, recipe=rescore_recipe,
            calibration=lambda: ((queries[q], passage_text(*corpus[d]))
                                 for q, hits in iter_run(run_path) if q in queries for d, _ in hits if d in corpus))
    stats: dict = {}
    groups = build_train_groups(queries, qrels, iter_run(run_path), corpus,
                                depth=depth, n_sample=n_sample, seed=seed, skip=skip, stats=stats,
                                run_path=run_path, queries_path=queries_path, rescore=rescore, **mining)
    write_jsonl(out, _at_least_one(groups, stats, run_path))
    stats.update(depth=depth, skip=skip, n_sample=n_sample, seed=seed, run=str(run_path), **mining,
                 rescore_model=rescore_model)
    if rescore is not None:
        stats.update(rescore_max_len=rescore.reranker.max_len, rescore_recipe=rescore.reranker.inference.recipe)
    write_json(Path(str(out)).with_suffix(".stats.json"), stats)
    return stats


def _at_least_one(groups: Iterator[dict], stats: dict, run_path) -> Iterator[dict]:
    """``groups``, then an error (inside the atomic write, so no file appears) if there were none."""
    yield from groups
    if not stats["queries_in_run"]:
        raise InputError(run_path, None, "run is empty")
    if not stats["groups"]:
        raise InputError(run_path, None, f"no train group: {describe_stats(stats)}")
