"""Mining options of densir.train_groups (sentence-transformers' mine_hard_negatives over a run's
scores) on the real BM25 run of SciFact's 809 train queries (get_data.sh's bm25.train.run):

- every option (margin, relative_margin, max_score, min_score, range_min/range_max, top/random
  sampling, and all together) against a plain computation written here from the run file's
  columns, with the stats' ``dropped_*`` counts;
- the same settings through sentence-transformers' own ``mine_hard_negatives`` (a stand-in model
  whose similarity is the BM25 score): the same negatives;
- no option: the plain builder's groups (Tevatron's rule), unchanged;
- ``--rescore_model``: a MiniLM cross-encoder (fresh head: mechanics only) scores positives and
  candidates, and the margin drops exactly the candidates its scores say;
- the flags of tools/build_train_hn.py and the MINE_* settings of mine_hard_neg.sh reach the builder.
"""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import run_cmd

from densir.rng import seeded_rng

DEPTH, N_SAMPLE, SEED = 200, 30, 42


# --------------------------------------------------------------------------- the data, read plainly
@pytest.fixture(scope="module")
def data(scifact_data):
    """Run, qrels and texts read with str.split / json, not densir's readers."""
    run = defaultdict(list)
    for line in (scifact_data / "bm25.train.run").read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run[qid].append((int(rank), docid, float(score)))
    run = {q: [(d, s) for _, d, s in sorted(hits)] for q, hits in run.items()}
    qrels = defaultdict(dict)
    for line in (scifact_data / "qrels.train.tsv").read_text().splitlines():
        qid, _, docid, rel = line.split()
        qrels[qid][docid] = int(rel)
    return {"run": run, "qrels": dict(qrels), "dir": scifact_data}


@pytest.fixture(scope="module")
def inputs(scifact_data):
    from densir.formats import read_corpus, read_qrels, read_queries

    corpus = read_corpus(scifact_data / "corpus.jsonl")
    return {"queries": read_queries(scifact_data / "queries.train.jsonl"), "corpus": corpus,
            "qrels": read_qrels(scifact_data / "qrels.train.tsv", doc_ids=set(corpus))}


def build(inputs, data, **options):
    from densir.io import iter_run
    from densir.train_groups import build_train_groups

    stats = {}
    kw = dict(depth=DEPTH, n_sample=N_SAMPLE, seed=SEED)
    kw.update(options)
    groups = build_train_groups(inputs["queries"], inputs["qrels"], iter_run(data["dir"] / "bm25.train.run"),
                                inputs["corpus"], stats=stats, **kw)
    return {g["query_id"]: [p["docid"] for p in g["negative_passages"]] for g in groups}, stats


def expected(data, depth=DEPTH, skip=0, n_sample=N_SAMPLE, seed=SEED, margin=None, relative_margin=None,
             max_score=None, min_score=None, range_min=0, range_max=None, sampling="random"):
    """The mining rule, computed from the run's rank/score columns: negatives per query, and counts."""
    out, counts = {}, defaultdict(int)
    for qid, hits in data["run"].items():
        positives = {d for d, r in data["qrels"].get(qid, {}).items() if r > 0}
        if not positives:
            continue
        cands = [(d, s) for d, s in hits[skip:depth] if d not in positives]
        if not cands:
            continue
        pos_scores = [s for d, s in hits if d in positives]
        if margin is not None or relative_margin is not None:
            if pos_scores:
                ref = min(pos_scores)
                if margin is not None:
                    keep = [(d, s) for d, s in cands if s + margin <= ref]
                    counts["dropped_margin"] += len(cands) - len(keep)
                    cands = keep
                if relative_margin is not None:
                    keep = [(d, s) for d, s in cands if s <= ref - abs(ref) * relative_margin]
                    counts["dropped_relative_margin"] += len(cands) - len(keep)
                    cands = keep
            else:
                counts["no_positive_score"] += 1
        if max_score is not None:
            keep = [(d, s) for d, s in cands if s <= max_score]
            counts["dropped_max_score"] += len(cands) - len(keep)
            cands = keep
        if min_score is not None:
            keep = [(d, s) for d, s in cands if s >= min_score]
            counts["dropped_min_score"] += len(cands) - len(keep)
            cands = keep
        window = [d for d, _ in cands][range_min:range_max]
        counts["dropped_range"] += len(cands) - len(window)
        if not window:
            counts["no_negative_after_filters"] += 1
            continue
        if len(window) <= n_sample:
            out[qid] = window
        elif sampling == "top":
            out[qid] = window[:n_sample]
        else:
            out[qid] = seeded_rng(seed, qid).sample(window, n_sample)
    return out, counts


# --------------------------------------------------------------------------- each option
CASES = {
    "none": {},
    "margin": {"margin": 0.5},
    "margin0": {"margin": 0.0},
    "relative_margin": {"relative_margin": 0.05},
    "max_score": {"max_score": 12.0},
    "min_score": {"min_score": 4.0},
    "range": {"range_min": 10, "range_max": 60},
    "top": {"sampling": "top"},
    "skip_depth_top": {"skip": 3, "depth": 100, "sampling": "top", "n_sample": 8},
    "all": {"margin": 0.2, "relative_margin": 0.02, "max_score": 20.0, "min_score": 3.0, "range_min": 2,
            "range_max": 50, "sampling": "top", "n_sample": 10},
    "all_random": {"relative_margin": 0.1, "max_score": 15.0, "range_min": 5, "n_sample": 10, "seed": 7},
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_option_against_the_run_file(case, inputs, data):
    options = CASES[case]
    got, stats = build(inputs, data, **options)
    want, counts = expected(data, **options)
    assert got == want  # the same negatives, in the same order
    for key in ("dropped_margin", "dropped_relative_margin", "dropped_max_score", "dropped_min_score",
                "dropped_range", "no_positive_score", "no_negative_after_filters"):
        assert stats[key] == counts[key], key
    assert stats["groups"] == len(want) and stats["negatives"] == sum(map(len, want.values()))
    if case != "none":  # every option did something on this run
        assert want != expected(data)[0]
    for key, name in (("margin", "dropped_margin"), ("relative_margin", "dropped_relative_margin"),
                      ("max_score", "dropped_max_score"), ("min_score", "dropped_min_score")):
        if key in options:
            assert stats[name] > 0, name
    if "margin" in options or "relative_margin" in options:
        # 40 train queries have a positive that BM25 never retrieves (no run score): margins skip them
        assert stats["no_positive_score"] == sum(
            1 for q, h in data["run"].items() if not {d for d, _ in h} & set(data["qrels"][q]))
        assert stats["no_positive_score"] > 0


def test_no_option_is_the_plain_rule(inputs, data):
    """Tevatron's rule (ranks (skip, depth] minus positives, seeded draw) with nothing else given,
    and the groups get_data.sh wrote."""
    got, stats = build(inputs, data)
    plain = {}
    for qid, hits in data["run"].items():
        positives = {d for d, r in data["qrels"][qid].items() if r > 0}
        cands = [d for d, _ in hits[:DEPTH] if d not in positives]
        plain[qid] = seeded_rng(SEED, qid).sample(cands, N_SAMPLE) if len(cands) > N_SAMPLE else cands
    assert got == plain and len(got) == 809
    written = [json.loads(line) for line in (data["dir"] / "train.bm25.jsonl").read_text().splitlines()]
    assert {g["query_id"]: [p["docid"] for p in g["negative_passages"]] for g in written} == plain
    assert all(stats[k] == 0 for k in stats if k.startswith("dropped_"))


# --------------------------------------------------------------------------- sentence-transformers
class _BM25AsModel:
    """Stands in for a SentenceTransformer in mine_hard_negatives: texts are ids, an embedding is
    the row of the id, and the similarity of a query and a passage is the BM25 run's score."""

    def __init__(self, run: dict, corpus_ids: list[str]):
        import torch

        self.device = torch.device("cpu")
        self.qrow = {q: i for i, q in enumerate(run)}
        self.drow = {d: i for i, d in enumerate(corpus_ids)}
        self.sim = torch.full((len(run), len(corpus_ids)), -1e4, dtype=torch.float64)
        for q, hits in run.items():
            for d, s in hits:
                self.sim[self.qrow[q], self.drow[d]] = s

    def encode_query(self, texts, **_):
        import numpy as np

        return np.array([[self.qrow[t]] for t in texts], dtype=np.float64)

    def encode_document(self, texts, **_):
        import numpy as np

        return np.array([[self.drow[t]] for t in texts], dtype=np.float64)

    def similarity(self, q, p):
        import torch

        return self.sim[torch.as_tensor(q)[:, 0].long()][:, torch.as_tensor(p)[:, 0].long()]

    def similarity_pairwise(self, q, p):
        import torch

        return self.sim[torch.as_tensor(q)[:, 0].long(), torch.as_tensor(p)[:, 0].long()]


ST_CASES = {
    "margin": dict(absolute_margin=0.5, range_max=60, num_negatives=10),
    "relative_margin": dict(relative_margin=0.05, range_max=60, num_negatives=10),
    "max_score": dict(max_score=12.0, range_min=5, range_max=80, num_negatives=20),
    "all": dict(absolute_margin=0.2, relative_margin=0.02, max_score=20.0, min_score=3.0, range_min=2,
                range_max=50, num_negatives=10),
}


@pytest.mark.parametrize("case", list(ST_CASES))
def test_sentence_transformers_mines_the_same(case, inputs, data):
    """mine_hard_negatives(sampling_strategy='top') over the BM25 scores, and the builder with the
    same settings (its pool: the run's top range_max + max positives, as sentence-transformers
    retrieves): the same negatives. Queries all of whose positives the run holds, and a full run."""
    st_util = pytest.importorskip("sentence_transformers.util")
    datasets = pytest.importorskip("datasets")
    st = dict(ST_CASES[case])
    run = {q: h for q, h in data["run"].items() if len(h) == DEPTH and set(data["qrels"][q]) <= {d for d, _ in h}}
    max_pos = max(len(data["qrels"][q]) for q in run)
    pairs = [(q, d) for q in run for d, r in data["qrels"][q].items() if r > 0]
    model = _BM25AsModel(run, list(inputs["corpus"]))
    ds = datasets.Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    mined = st_util.mine_hard_negatives(ds, model, corpus=list(inputs["corpus"]), sampling_strategy="top",
                                        output_format="labeled-list", output_scores=True, verbose=False, **st)
    theirs = {}
    for row in mined:
        positives = {d for d, r in data["qrels"][row["query"]].items() if r > 0}
        theirs[row["query"]] = (sorted(d for d in row["positive"] if d not in positives),
                                sorted(s for d, s in zip(row["positive"], row["scores"]) if d not in positives))
    opts = dict(depth=st.pop("range_max") + max_pos, range_max=ST_CASES[case]["range_max"],
                n_sample=st.pop("num_negatives"), sampling="top", range_min=st.pop("range_min", 0),
                margin=st.pop("absolute_margin", None), **st)
    from densir.train_groups import build_train_groups

    ours = {}
    run_scores = {q: dict(h) for q, h in run.items()}
    for g in build_train_groups(inputs["queries"], inputs["qrels"], ((q, h) for q, h in run.items()),
                                inputs["corpus"], **opts):
        negs = [p["docid"] for p in g["negative_passages"]]
        ours[g["query_id"]] = (sorted(negs), sorted(run_scores[g["query_id"]][d] for d in negs))
    assert set(ours) == set(theirs)
    assert len(ours) > 500, len(ours)
    for q in ours:  # the same docids (no BM25 tie straddles a window edge here), the same scores
        assert ours[q][0] == theirs[q][0], q
        assert ours[q][1] == pytest.approx(theirs[q][1], abs=1e-6), q


# --------------------------------------------------------------------------- cross-encoder rescoring
RESCORE_QUERIES, RESCORE_DEPTH, CE_LEN = 4, 6, 96


@pytest.fixture(scope="module")
def small_ce(tmp_path_factory, minilm_path) -> str:
    """MiniLM's encoder with a fresh, seeded one-logit head, saved (so every load scores alike); the
    head's weights are scaled up so that scores spread over about a unit, not 0.01."""
    import torch

    from densir.reranker.modeling import CrossEncoderReranker

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("minilm-ce")
    ce = CrossEncoderReranker.load(minilm_path, max_len=CE_LEN)
    with torch.no_grad():
        ce.model.classifier.weight.mul_(100.0)
    ce.save(out)
    return str(out)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data) -> Path:
    """The BM25 run of a few train queries whose positives are all in its top RESCORE_DEPTH, cut there."""
    qids = [q for q, h in data["run"].items()
            if set(data["qrels"][q]) <= {d for d, _ in h[:RESCORE_DEPTH]}][:RESCORE_QUERIES]
    assert len(qids) == RESCORE_QUERIES
    out = tmp_path_factory.mktemp("small-run") / "train.run"
    with open(out, "w") as f:
        for q in qids:
            for rank, (d, s) in enumerate(data["run"][q][:RESCORE_DEPTH], 1):
                f.write(f"{q} Q0 {d} {rank} {s:.6f} bm25\n")
    return out


@pytest.fixture(scope="module")
def ce_scores(small_ce, small_run, data, inputs) -> dict:
    """The cross-encoder's score of every (query, positive) and (query, run hit), one pair at a time."""
    from densir.formats import passage_text
    from densir.reranker.modeling import CrossEncoderReranker

    ce = CrossEncoderReranker.load(small_ce)
    assert ce.max_len == CE_LEN
    scores = defaultdict(dict)
    for line in small_run.read_text().splitlines():
        q, docid = line.split()[0], line.split()[2]
        for x in [docid] + [x for x, r in data["qrels"][q].items() if r > 0]:
            if x not in scores[q]:
                scores[q][x] = float(ce.predict([(inputs["queries"][q], passage_text(*inputs["corpus"][x]))])[0])
    return scores


@pytest.mark.parametrize("options", [{"margin": 0.0}, {"relative_margin": 0.3, "max_score": 1.0}],
                         ids=["margin", "relative_margin+max_score"])
def test_rescoring_drops_what_the_cross_encoder_scores_say(options, tmp_path, small_ce, small_run, ce_scores,
                                                           data):
    """--rescore_model: the cross-encoder's scores of the positives and candidates (computed here
    pair by pair) decide; the margin is against the lowest positive score, ``pos - |pos| * m`` for
    the relative one (some positives score below 0 here), and --sampling top takes the best by it."""
    from densir.train_groups import build_train_file

    d = data["dir"]
    out = tmp_path / "hn.jsonl"
    stats = build_train_file(d / "queries.train.jsonl", d / "qrels.train.tsv", small_run, d / "corpus.jsonl", out,
                             depth=RESCORE_DEPTH, n_sample=RESCORE_DEPTH, sampling="top", rescore_model=small_ce,
                             rescore_batch_size=8, rescore_device="cpu", **options)
    got = {g["query_id"]: [p["docid"] for p in g["negative_passages"]]
           for g in map(json.loads, out.read_text().splitlines())}

    assert stats["rescore_max_len"] == CE_LEN
    run = defaultdict(list)
    for line in small_run.read_text().splitlines():
        run[line.split()[0]].append(line.split()[2])
    kept, dropped, borderline, negative_pos = {}, defaultdict(int), 0, 0
    for q, docids in run.items():
        positives = [x for x, r in data["qrels"][q].items() if r > 0]
        cands = [x for x in docids if x not in positives]
        score = ce_scores[q]
        pos = min(score[x] for x in positives)
        negative_pos += pos < 0
        bounds = []
        if "margin" in options:
            bounds.append(("dropped_margin", pos - options["margin"]))
        if "relative_margin" in options:
            bounds.append(("dropped_relative_margin", pos - abs(pos) * options["relative_margin"]))
        if "max_score" in options:
            bounds.append(("dropped_max_score", options["max_score"]))
        ok = cands
        for name, bound in bounds:
            borderline += sum(abs(score[x] - bound) < 1e-4 for x in ok)
            dropped[name] += sum(score[x] > bound for x in ok)
            ok = [x for x in ok if score[x] <= bound]
        if ok:
            kept[q] = sorted(ok, key=lambda x: -score[x])  # --sampling top: best first by the cross-encoder
    assert borderline == 0  # so pair-by-pair and batched scoring cannot disagree about a candidate
    assert got == kept
    total = sum(len(v) for v in run.values()) - sum(len(data["qrels"][q]) for q in run)
    for name, n in dropped.items():
        assert stats[name] == n and 0 < n < total, (name, n, total)
    assert stats["rescored_pairs"] == sum(len(v) for v in run.values())  # every positive is in these runs
    assert stats["no_negative_after_filters"] == RESCORE_QUERIES - len(kept)
    assert stats["rescore_model"] == small_ce
    if "relative_margin" in options:
        assert negative_pos > 0  # the sign-safe form is exercised


def test_mine_hard_neg_rescores_with_mine_rescore_model(tmp_path, small_ce, small_run, data):
    """MINE_RESCORE_MODEL (+ MINE_MARGIN, MINE_SAMPLING) through mine_hard_neg.sh's build stage: the
    groups of build_train_file with that cross-encoder."""
    from densir.train_groups import build_train_file

    d = data["dir"]
    ref = tmp_path / "ref.jsonl"
    build_train_file(d / "queries.train.jsonl", d / "qrels.train.tsv", small_run, d / "corpus.jsonl", ref,
                     depth=RESCORE_DEPTH, skip=0, n_sample=3, margin=0.0, sampling="top", rescore_model=small_ce,
                     rescore_batch_size=4, rescore_device="cpu")
    out = tmp_path / "out"
    (out / "round1" / "model").mkdir(parents=True)
    (out / "round1" / "model" / "densir_config.json").write_text("{}")
    shutil.copy(small_run, out / "round1" / "train.run")
    env = {"DATA_DIR": str(d), "OUT_DIR": str(out), "NUM_SHARDS": "1", "PYTHON": "python", "PRECISION": "fp32",
           "DEPTH": str(RESCORE_DEPTH), "SKIP": "0", "N_SAMPLE": "3", "MINE_RESCORE_MODEL": small_ce,
           "MINE_RESCORE_BATCH_SIZE": "4", "MINE_MARGIN": "0.0", "MINE_SAMPLING": "top", "CUDA_VISIBLE_DEVICES": ""}
    run_cmd(["bash", "mine_hard_neg.sh", "--stage", "build"], env=env)
    assert (out / "round1" / "train.hn.jsonl").read_text() == ref.read_text()
    stats = json.loads((out / "round1" / "train.hn.stats.json").read_text())
    assert stats["rescore_model"] == small_ce and stats["rescored_pairs"] == RESCORE_QUERIES * RESCORE_DEPTH
    assert stats["dropped_margin"] > 0


def test_rescorer_on_onnx_gives_the_torch_scores(tmp_path, small_ce, small_run, ce_scores, data, inputs):
    """--backend onnx for the mining rescorer (densir.loading, as the other stages load theirs): the
    cross-encoder's scores are torch's (within the backend tests' tolerance), and tools/build_train.py
    with --rescore_model ... --backend onnx writes the groups the torch rescorer gives."""
    import numpy as np

    from densir.formats import passage_text
    from densir.train_groups import build_train_file, cross_encoder_rescorer

    pytest.importorskip("onnxruntime")
    rescore = cross_encoder_rescorer(small_ce, batch_size=4, device="cpu", backend="onnx")
    assert rescore.reranker.inference.recipe == "ort-fp32" and rescore.reranker.max_len == CE_LEN
    spread = []
    for q, scores in ce_scores.items():
        got = rescore(inputs["queries"][q], [passage_text(*inputs["corpus"][d]) for d in scores])
        np.testing.assert_allclose(got, list(scores.values()), atol=1e-4)
        spread += list(scores.values())
    assert np.ptp(spread) > 0.5  # the scores differ enough for the tolerance to mean something

    d = data["dir"]
    files = [str(d / "queries.train.jsonl"), str(d / "qrels.train.tsv"), str(small_run), str(d / "corpus.jsonl")]
    options = dict(depth=RESCORE_DEPTH, skip=0, n_sample=3, margin=0.0, sampling="top")
    ref = tmp_path / "torch.jsonl"
    build_train_file(*files, ref, rescore_model=small_ce, rescore_batch_size=4, rescore_device="cpu", **options)
    out = tmp_path / "onnx.jsonl"
    run_cmd(["python", "tools/build_train.py", "--queries", files[0], "--qrels", files[1], "--run", files[2],
             "--corpus", files[3], "--out", str(out), *[x for k, v in options.items() for x in (f"--{k}", str(v))],
             "--rescore_model", small_ce, "--rescore_batch_size", "4", "--rescore_device", "cpu", "--backend", "onnx"])
    assert out.read_text() == ref.read_text()
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["rescore_recipe"] == "ort-fp32" and stats["dropped_margin"] > 0
    proc = run_cmd(["python", "tools/build_train.py", "--queries", files[0], "--qrels", files[1], "--run", files[2],
                    "--corpus", files[3], "--out", str(tmp_path / "x.jsonl"), "--rescore_model", small_ce,
                    "--backend", "onnx", "--rescore_precision", "bf16"], check=False)
    assert proc.returncode == 2 and "--backend onnx runs in fp32 or int8" in proc.stderr, proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


# --------------------------------------------------------------------------- the CLIs
def test_build_train_hn_flags_and_mine_hard_neg_settings(tmp_path, data, inputs):
    """tools/build_train_hn.py's mining flags and mine_hard_neg.sh's MINE_* settings (its build
    stage over a given round-1 run) give the builder's groups for those options."""
    from densir.train_groups import build_train_file

    d = data["dir"]
    options = dict(margin=0.3, relative_margin=0.01, max_score=25.0, min_score=2.0, range_min=1, range_max=40,
                   sampling="top")
    ref = tmp_path / "ref.jsonl"
    build_train_file(d / "queries.train.jsonl", d / "qrels.train.tsv", d / "bm25.train.run", d / "corpus.jsonl", ref,
                     depth=100, skip=3, n_sample=30, **options)

    # the tool, with Tevatron's defaults (depth 100, skip 3)
    cli = tmp_path / "cli.jsonl"
    run_cmd(["python", "tools/build_train_hn.py", "--queries", str(d / "queries.train.jsonl"),
             "--qrels", str(d / "qrels.train.tsv"), "--run", str(d / "bm25.train.run"),
             "--corpus", str(d / "corpus.jsonl"), "--out", str(cli),
             *[x for k, v in options.items() for x in (f"--{k}", str(v))]])
    assert cli.read_text() == ref.read_text()
    stats = json.loads(cli.with_suffix(".stats.json").read_text())
    assert stats["dropped_margin"] > 0 and stats["sampling"] == "top" and stats["range_max"] == 40

    # mine_hard_neg.sh --stage build: a round-1 "model" and its merged train run in place
    out = tmp_path / "out"
    (out / "round1" / "model").mkdir(parents=True)
    (out / "round1" / "model" / "densir_config.json").write_text("{}")
    shutil.copy(d / "bm25.train.run", out / "round1" / "train.run")
    env = {"DATA_DIR": str(d), "OUT_DIR": str(out), "NUM_SHARDS": "1", "PYTHON": "python", "PRECISION": "fp32",
           "MINE_MARGIN": "0.3", "MINE_RELATIVE_MARGIN": "0.01", "MINE_MAX_SCORE": "25.0", "MINE_MIN_SCORE": "2.0",
           "MINE_RANGE_MIN": "1"}
    run_cmd(["bash", "mine_hard_neg.sh", "--stage", "build", "--mine_range_max", "40", "--mine_sampling", "top"],
            env=env)
    assert (out / "round1" / "train.hn.jsonl").read_text() == ref.read_text()


def test_bad_mining_flags_are_usage_errors(tmp_path, data):
    d = data["dir"]
    base = ["python", "tools/build_train.py", "--queries", str(d / "queries.train.jsonl"), "--qrels",
            str(d / "qrels.train.tsv"), "--run", str(d / "bm25.train.run"), "--corpus", str(d / "corpus.jsonl"),
            "--out", str(tmp_path / "x.jsonl")]
    for extra, words in ((["--range_min", "5", "--range_max", "5"], "--range_max must be > --range_min"),
                         (["--relative_margin", "-0.1"], "--relative_margin must be >= 0"),
                         (["--sampling", "best"], "invalid choice"),
                         (["--rescore_max_len", "64"], "need --rescore_model")):
        proc = run_cmd(base + extra, check=False)
        assert proc.returncode == 2 and words in proc.stderr, (extra, proc.stderr)
    # a range declared on the flag (densir.checks): one line, exit 1, as every CLI says it, before any file is read
    proc = run_cmd(base + ["--range_min", "-1"], check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: --range_min must be >= 0, got -1", proc.stderr
    assert not (tmp_path / "x.jsonl").exists()
