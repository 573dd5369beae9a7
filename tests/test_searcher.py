"""The Retrieve & Re-Rank API (densir.search.searcher) and its CLI (python -m densir.search).

Fast tests build a small round the way run.sh lays it out (MiniLM, 3 corpus shards, query shard,
per-shard search + reducer, a re-ranker and densir.driver.rerank's runs) and check that the API
returns what those runs hold, that CrossEncoderReranker.rank has CrossEncoder.rank's shape and numbers, and
that bad input is one line. The slow tests compare the API with the runs run.sh and rerank.sh
wrote on tests/test_pipeline.py's SciFact slice (session fixtures, no extra pipeline run).
"""
from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest
import torch
from conftest import RERANK_SETTINGS, run_cmd

from densir.formats import read_corpus, read_queries
from densir.io import InputError, read_run, write_run
from densir.loading import load_reranker
from densir.search.fusion import interpolate_runs
from densir.search.searcher import Hit, Searcher

N_DOCS, N_SHARDS, Q_MAX_LEN, P_MAX_LEN, RUN_DEPTH, RERANK_DEPTH, ALPHA = 60, 3, 16, 64, 30, 10, 0.3
WORDS = ("malaria vaccine protein receptor tumour insulin diabetes neuron synapse bacteria antibiotic "
         "resistance virus genome mutation enzyme kinase cholesterol artery stroke sleep memory obesity "
         "vitamin bone fracture pregnancy placenta smoking lung cancer therapy trial mice dose").split()
QUERIES = ["does vitamin d prevent bone fracture", "antibiotic resistance in bacteria",
           "insulin and diabetes in obese mice", "tumour receptor kinase therapy", "sleep and memory in neurons",
           "smoking lung cancer risk"]


# --------------------------------------------------------------------------- a small round, as run.sh writes it
@pytest.fixture(scope="module")
def mini(tmp_path_factory, minilm_path):
    """OUT/round/{model, enc/corpus.{0,1,2}, enc/queries.test, runs/test.i.run, test.run}, a re-ranker
    OUT/rerank/model and rerank.sh's runs: test.ce.run (densir.driver.rerank) and test.run (that run
    fused with the first stage, as tools/fuse_runs.py does), and test.interp.run (--interpolate)."""
    from densir.reranker.arguments import RerankArguments
    from densir.reranker.modeling import CrossEncoderReranker
    from densir.reranker.rerank import run_rerank
    from densir.retriever.arguments import EncodeArguments, ModelArguments
    from densir.retriever.encode import encode_file
    from densir.retriever.modeling import DenseEncoder
    from densir.search.faiss_index import search_to_run
    from densir.search.shard_runs import reduce_shard_runs

    out = tmp_path_factory.mktemp("searcher")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(N_DOCS):
        doc = {"docid": f"doc-{i}", "title": " ".join(rng.choice(WORDS, 3)) if i % 4 else "",
               "text": " ".join(rng.choice(WORDS, int(rng.integers(5, 40))))}
        lines.append(json.dumps(doc) + "\n" + ("\n" if i == 7 else ""))  # a blank line, skipped by every reader
    corpus = out / "data" / "corpus.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(lines))
    queries = out / "data" / "queries.test.jsonl"
    queries.write_text("".join(json.dumps({"query_id": f"q{i}", "query": q}) + "\n" for i, q in enumerate(QUERIES)))

    rnd = out / "round"
    DenseEncoder.load(minilm_path).save(rnd / "model")
    model = ModelArguments(model_name_or_path=str(rnd / "model"))
    for i in range(N_SHARDS):
        encode_file(model, EncodeArguments(encode_in_path=str(corpus), encoded_save_path=str(rnd / "enc/corpus"),
                                           shard_index=i, num_shards=N_SHARDS, p_max_len=P_MAX_LEN,
                                           per_device_eval_batch_size=16))
    encode_file(model, EncodeArguments(encode_in_path=str(queries), encoded_save_path=str(rnd / "enc/queries.test"),
                                       encode_is_qry=True, q_max_len=Q_MAX_LEN, per_device_eval_batch_size=4))
    for i in range(N_SHARDS):
        search_to_run(str(rnd / "enc/queries.test"), str(rnd / f"enc/corpus.{i}"), rnd / f"runs/test.{i}.run",
                      depth=RUN_DEPTH, use_gpu=False)
    reduce_shard_runs([str(rnd / "runs/test.*.run")], rnd / "test.run", RUN_DEPTH, num_shards=N_SHARDS)

    torch.manual_seed(0)
    ce = CrossEncoderReranker.load(minilm_path, max_len=64, num_hidden_layers=1)
    with torch.no_grad():
        ce.model.classifier.weight.normal_(0.0, 1.0)  # a random head: logits spread ~0.002 within a query
    ce.save(out / "rerank" / "model")
    for name, alpha in (("test.ce.run", None), ("test.interp.run", ALPHA)):
        run_rerank(RerankArguments(model_name_or_path=str(out / "rerank" / "model"), run=str(rnd / "test.run"),
                                   corpus=str(corpus), queries=str(queries), depth=RERANK_DEPTH, batch_size=8,
                                   save_ranking_to=str(out / "rerank" / name), interpolate=alpha, device="cpu"))
    # rerank.sh's fuse step (tools/fuse_runs.py --first ... --rerank test.ce.run --alpha ALPHA --out test.run)
    fused = interpolate_runs(read_run(rnd / "test.run"), read_run(out / "rerank" / "test.ce.run"), ALPHA)
    write_run(out / "rerank" / "test.run", fused, tag="densir-rerank")
    return out


@pytest.fixture(scope="module")
def searcher(mini):
    # the batch sizes of the query shard's encoding and of densir.driver.rerank, so search_batch
    # reproduces the query vectors and the cross-encoder's batches bit for bit
    reranker = load_reranker(mini / "rerank", batch_size=8, device="cpu")
    return Searcher.from_run_dir(mini / "round", reranker=reranker, batch_size=4, device="cpu")


def _queries(mini) -> dict:
    return read_queries(mini / "data" / "queries.test.jsonl")


def assert_hits_equal(hits: list[Hit], run_hits: list[tuple[str, float]], tol: float = 1e-5) -> None:
    """The API's hits are the run's: docids in order, scores to ``tol``, ranks 1..n."""
    assert [h.docid for h in hits] == [d for d, _ in run_hits]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in run_hits], atol=tol, rtol=0)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


# --------------------------------------------------------------------------- fast: the API against the runs
def test_top_k_equals_the_run_file(mini, searcher):
    run = read_run(mini / "round" / "test.run")
    queries = _queries(mini)
    for qid, text in queries.items():  # one query at a time, as an application asks
        hits = searcher.search(text, k=10, rerank_depth=0)
        assert_hits_equal(hits, run[qid][:10])
        assert all(h.rerank_score is None and h.first_score == h.score for h in hits)
    batch = searcher.search_batch(list(queries.values()), k=RUN_DEPTH, rerank_depth=0)
    for qid, hits in zip(queries, batch):  # encoded in the query shard's batches: hit for hit
        assert [(h.docid, h.score) for h in hits] == run[qid]
    # the first stage alone, as (docid, score) lists
    assert searcher.retrieve([queries["q0"]], 5)[0] == [(h.docid, h.score) for h in batch[0][:5]]


def test_reranked_equals_driver_rerank(mini, searcher):
    """Re-ranking the top 10 through the API == rerank.sh's runs of run.sh's run: the cross-encoder
    alone (densir.driver.rerank) and fused with the first stage (rerank.sh's RERANK_ALPHA step)."""
    first = read_run(mini / "round" / "test.run")
    ce, fused, interp = (read_run(mini / "rerank" / f"test.{n}run") for n in ("ce.", "", "interp."))
    queries = _queries(mini)
    kwargs = {"k": RERANK_DEPTH, "rerank_depth": RERANK_DEPTH}
    alone = searcher.search_batch(list(queries.values()), **kwargs)
    mixed = searcher.search_batch(list(queries.values()), interpolate=ALPHA, **kwargs)
    for qid, a, m in zip(queries, alone, mixed):  # the driver's batches: the same numbers
        assert_hits_equal(a, ce[qid])
        assert [h.score for h in a] == [h.rerank_score for h in a]
        assert [h.first_score for h in a] == [dict(first[qid])[h.docid] for h in a]
        assert_hits_equal(m, fused[qid])
        # densir.driver.rerank --interpolate fuses unrounded logits: the same up to their 6th decimal
        assert_same_up_to_near_ties(m, interp[qid], fused_tolerance(first[qid][:RERANK_DEPTH], ce[qid], ALPHA))
    for qid, text in queries.items():  # one query at a time
        hits = searcher.search(text, **kwargs)
        assert_hits_equal(hits, ce[qid])
        tol = fused_tolerance(first[qid][:RERANK_DEPTH], ce[qid], ALPHA)
        assert_same_up_to_near_ties(searcher.search(text, interpolate=ALPHA, **kwargs), fused[qid], tol)
    top3 = searcher.search(queries["q0"], k=3, rerank_depth=RERANK_DEPTH)  # k below the depth: its top
    assert [h.docid for h in top3] == [d for d, _ in ce["q0"][:3]]


def fused_tolerance(first_hits, ce_hits, alpha: float, step: float = 2e-6) -> float:
    """How far a fused score may move when an input score moves by ``step`` (its 6th decimal):
    z-scoring divides that by the spread of the query's scores, 0.002 for a barely trained
    cross-encoder, so 2e-6 in a logit is 1e-3 in the fused score."""
    sd = [float(np.std([s for _, s in hits])) or 1.0 for hits in (first_hits, ce_hits)]
    return 1e-5 + alpha * step / sd[0] + (1 - alpha) * step / sd[1]


def test_hits_carry_the_corpus_title_and_text(mini, searcher):
    corpus = read_corpus(mini / "data" / "corpus.jsonl")
    hits = searcher.search(QUERIES[0], k=N_DOCS, rerank_depth=0)  # every document, every shard
    assert sorted(h.docid for h in hits) == sorted(corpus)
    for h in hits:
        assert (h.title, h.text) == corpus[h.docid]
    assert searcher.document("doc-9") == corpus["doc-9"]
    assert set(hits[0].to_dict()) == {"docid", "rank", "score", "title", "text", "first_score", "rerank_score"}
    bare = Searcher.from_run_dir(mini / "round", texts=False, device="cpu")
    assert [(h.docid, h.title, h.text) for h in bare.search(QUERIES[0], k=3)] == \
        [(h.docid, None, None) for h in hits[:3]]


def test_reranker_rank_is_cross_encoder_rank(mini):
    """CrossEncoderReranker.rank (load_reranker): the list sentence-transformers' CrossEncoder.rank returns, same numbers."""
    from sentence_transformers import CrossEncoder

    corpus = read_corpus(mini / "data" / "corpus.jsonl")
    paragraphs = [corpus[f"doc-{i}"][1] for i in range(8)]  # e.g. one document's paragraphs
    reranker = load_reranker(mini / "rerank", device="cpu")
    ours = reranker.rank(QUERIES[1], paragraphs, top_k=5, return_documents=True)
    theirs = CrossEncoder(str(mini / "rerank" / "model"), device="cpu").rank(QUERIES[1], paragraphs, top_k=5,
                                                                            return_documents=True)
    assert [r["corpus_id"] for r in ours] == [r["corpus_id"] for r in theirs]
    assert [set(r) for r in ours] == [set(r) for r in theirs] == [{"corpus_id", "score", "text"}] * 5
    assert [r["text"] for r in ours] == [paragraphs[r["corpus_id"]] for r in ours]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=1e-5)
    plain = reranker.rank(QUERIES[1], paragraphs)
    assert len(plain) == 8 and set(plain[0]) == {"corpus_id", "score"}
    assert [r["score"] for r in plain] == sorted((r["score"] for r in plain), reverse=True)


def test_bad_requests(searcher):
    with pytest.raises(ValueError, match="more than rerank_depth"):
        searcher.search(QUERIES[0], k=20, rerank_depth=10)
    with pytest.raises(ValueError, match="interpolate must be in"):
        searcher.search(QUERIES[0], k=5, rerank_depth=10, interpolate=1.5)
    with pytest.raises(ValueError, match="needs bm25_index"):
        searcher.search(QUERIES[0], retriever="bm25", rerank_depth=0)
    with pytest.raises(TypeError):
        searcher.search_batch(QUERIES[0])


# --------------------------------------------------------------------------- fast: bad input
def _copy_round(mini, tmp_path):
    dst = tmp_path / "round"
    shutil.copytree(mini / "round", dst)
    return dst


def test_bad_input_is_one_input_error(mini, tmp_path, tiny_bert_dir):
    with pytest.raises(InputError, match="no such round directory"):
        Searcher.from_run_dir(tmp_path / "nope")
    rnd = _copy_round(mini, tmp_path)
    (rnd / "enc" / "corpus.1.json").unlink()  # an encode job that did not finish
    with pytest.raises(InputError, match="half-written embedding shard"):
        Searcher.from_run_dir(rnd)
    for suffix in (".npy", ".ids"):
        (rnd / "enc" / f"corpus.1{suffix}").unlink()
    with pytest.raises(InputError, match=r"shard\(s\) \[1\] are missing"):
        Searcher.from_run_dir(rnd)

    rnd = _copy_round(mini, tmp_path / "b")
    shutil.rmtree(rnd / "model")
    shutil.copytree(tiny_bert_dir, rnd / "model")
    (rnd / "model" / "densir_config.json").write_text('{"pooling": "mean", "normalize": true}')
    with pytest.raises(InputError, match="encoded by another model"):
        Searcher.from_run_dir(rnd)
    (rnd / "model" / "densir_config.json").unlink()  # a training that has not finished
    with pytest.raises(InputError, match="not trained yet"):
        Searcher.from_run_dir(rnd)

    with pytest.raises(InputError, match="no such corpus file"):
        Searcher.from_run_dir(mini / "round", corpus=tmp_path / "moved.jsonl")
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join((mini / "data" / "corpus.jsonl").read_text().splitlines(keepends=True)[1:]))
    s = Searcher.from_run_dir(mini / "round", corpus=fewer, device="cpu")
    with pytest.raises(InputError, match="not the corpus that was encoded"):
        s.search(QUERIES[0], k=3)
    with pytest.raises(InputError, match="missing: not a finished re-ranker"):
        load_reranker(rnd / "model")
    with pytest.raises(InputError, match="no such re-ranker directory"):
        load_reranker(tmp_path / "no-reranker")


# --------------------------------------------------------------------------- fast: the CLI
def test_cli_prints_top_hits_for_arguments_and_stdin(mini):
    run = read_run(mini / "round" / "test.run")
    queries = _queries(mini)
    stdin = "\n".join([queries["q0"], "", queries["q1"]])  # queries one per line, a blank line skipped
    command = (f"printf '%s\\n' {shlex.quote(stdin)} | python -m densir.search --index "
               f"{shlex.quote(str(mini / 'round'))} --k 5 --device cpu")
    proc = run_cmd(["bash", "-c", command])
    blocks = proc.stdout.split("query ")[1:]
    assert [b.splitlines()[0] for b in blocks] == [f"1: {queries['q0']}", f"2: {queries['q1']}"]
    corpus = read_corpus(mini / "data" / "corpus.jsonl")
    for qid, block in zip(("q0", "q1"), blocks):
        rows = [line.split(None, 3) for line in block.splitlines()[1:]]
        assert [(int(r[0]), r[1]) for r in rows] == [(i, d) for i, (d, _) in enumerate(run[qid][:5], 1)]
        assert [float(r[2]) for r in rows] == pytest.approx([s for _, s in run[qid][:5]], abs=1e-5)
        for docid, rest in ((r[1], r[3]) for r in rows):
            title, snippet = (" " + rest).split(" | ", 1)  # an empty title leaves "| snippet"
            title = title.strip()
            text = corpus[docid][1]
            assert title == corpus[docid][0] and len(snippet) <= 160
            assert snippet == text or (snippet.endswith("...") and text.startswith(snippet[:-3]))


def test_cli_json_with_reranker(mini, capsys):
    from densir.search.__main__ import main

    ce = read_run(mini / "rerank" / "test.ce.run")
    query = _queries(mini)["q2"]
    main(["--index", str(mini / "round"), "--reranker", str(mini / "rerank"), "--rerank_depth", str(RERANK_DEPTH),
          "--k", "4", "--json", "--device", "cpu", query])
    (line,) = capsys.readouterr().out.splitlines()
    out = json.loads(line)
    assert out["query"] == query
    assert [(h["docid"], h["rank"]) for h in out["hits"]] == [(d, i) for i, (d, _) in enumerate(ce["q2"][:4], 1)]
    assert all(h["rerank_score"] == h["score"] for h in out["hits"])


@pytest.mark.parametrize("case", ["missing index", "incomplete shard", "k above rerank depth"])
def test_cli_errors_are_one_line(mini, tmp_path, capsys, case):
    from densir.search.__main__ import main

    args = ["--index", str(tmp_path / "nope"), "q"]
    if case == "incomplete shard":
        rnd = _copy_round(mini, tmp_path)
        (rnd / "enc" / "corpus.2.json").unlink()
        args = ["--index", str(rnd), "q"]
    if case == "k above rerank depth":
        args = ["--index", str(mini / "round"), "--reranker", str(mini / "rerank"), "--k", "20",
                "--rerank_depth", "10", "q"]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == (2 if case == "k above rerank depth" else 1)
    assert "Traceback" not in err
    if case == "k above rerank depth":
        assert err.endswith("--k 20 is more than --rerank_depth 10: only re-ranked hits are shown")
    else:
        assert len(err.splitlines()) == 1 and err.startswith("error: ")
        assert ("no such round directory" if case == "missing index" else "half-written embedding shard") in err


# --------------------------------------------------------------------------- slow: run.sh's and rerank.sh's runs
@pytest.fixture(scope="module")
def rerank_round(rerank_pipeline):
    """rerank.sh's round on the slice (conftest's rerank_pipeline) and the settings it ran with."""
    return rerank_pipeline[0] / "rerank", RERANK_SETTINGS


def assert_same_up_to_near_ties(hits: list[Hit], run_hits: list[tuple[str, float]], tol: float = 1e-5) -> int:
    """``hits`` are the top of ``run_hits``: scores equal to ``tol`` at every rank; where the docids
    differ, the two documents' run scores are within ``tol`` of each other (a near-tie that float
    noise orders either way). Returns the number of ranks whose docid differs."""
    run_score = dict(run_hits)  # the whole run: a near-tie at the cut may come from below it
    assert len(hits) <= len(run_hits)
    differ = 0
    for h, (docid, score) in zip(hits, run_hits):
        assert abs(h.score - score) <= tol, (h, docid, score)
        if h.docid != docid:
            differ += 1
            assert abs(run_score.get(h.docid, -np.inf) - score) <= tol, (h, docid, score)
    return differ


@pytest.mark.slow
def test_searcher_equals_run_sh_on_the_scifact_slice(bash_pipeline, slice_data):
    """The must-show: the API's top-10 for a query is run.sh's run for it (round 2 of the slice)."""
    out, env, _ = bash_pipeline
    run = read_run(out / "round2" / "test.run")
    queries = read_queries(slice_data / "queries.test.jsonl")
    depth = int(env["EVAL_DEPTH"])
    searcher = Searcher.from_run_dir(out / "round2", batch_size=int(env["ENCODE_BATCH"]), device="cpu")
    assert searcher.q_max_len == int(env["Q_MAX_LEN"])  # read from the round's query shard
    # the test queries in one batch, encoded in run.sh's batches: its run hit for hit, at full depth
    batch = searcher.search_batch(list(queries.values()), k=depth, rerank_depth=0)
    for qid, hits in zip(queries, batch):
        assert [(h.docid, h.score) for h in hits] == run[qid], qid
    # one query at a time, as an application asks: the top 10, equal up to near-ties. Padded
    # alone, a query's vector can differ from its batch encoding in the last float bit, and the
    # tiny random model scores every passage near 32, where float32 steps are 4e-6 apart, so such
    # a bit can swap two passages whose scores tie to 1e-5
    corpus = read_corpus(slice_data / "corpus.jsonl")
    differ = 0
    for qid in list(queries)[:20]:
        hits = searcher.search(queries[qid], k=10, rerank_depth=0, depth=depth)
        differ += assert_same_up_to_near_ties(hits, run[qid])
        assert all((h.title, h.text) == corpus[h.docid] for h in hits)
    assert differ <= 10, differ


@pytest.mark.slow
def test_searcher_rerank_equals_rerank_sh(bash_pipeline, slice_data, rerank_round):
    """Re-ranked through the API == rerank.sh's runs: the cross-encoder alone (test.ce.run) and
    fused with the round-2 run by RERANK_ALPHA (test.run). The slice's tiny random models score
    a query's top 10 within ~1e-5 of each other (first stage and cross-encoder), so the fused run,
    z-scores of 6-decimal scores, moves by up to ~0.1 when an input moves by its last decimal:
    fused scores are compared within fused_tolerance, docids up to near-ties at it."""
    out, env, _ = bash_pipeline
    rdir, settings = rerank_round
    depth, alpha = int(settings["RERANK_DEPTH"]), float(settings["RERANK_ALPHA"])
    first, ce, fused = read_run(out / "round2" / "test.run"), read_run(rdir / "test.ce.run"), read_run(rdir / "test.run")
    queries = read_queries(slice_data / "queries.test.jsonl")
    reranker = load_reranker(rdir, device="cpu", batch_size=int(settings["RERANK_EVAL_BATCH"]))
    searcher = Searcher.from_run_dir(out / "round2", reranker=reranker, batch_size=int(env["ENCODE_BATCH"]),
                                     device="cpu")
    kwargs = {"k": depth, "rerank_depth": depth, "depth": int(env["EVAL_DEPTH"])}
    qids = list(queries)[:100]  # a third of the split: the cross-encoder on a CPU is the cost here
    alone = searcher.search_batch([queries[q] for q in qids], **kwargs)
    mixed = searcher.search_batch([queries[q] for q in qids], interpolate=alpha, **kwargs)
    differ = {"ce": 0, "fused": 0, "first stage": 0}

    def same_first_stage(qid, hits) -> bool:
        """The API re-ranked the run's top ``depth``. Else a first-stage near-tie at the cut went the
        other way (the API encodes other query batches than run.sh, and the slice's tiny model scores
        a query's top hits within ~1e-5): another set was re-ranked, and is only counted."""
        if {h.docid for h in hits} == {d for d, _ in first[qid][:depth]}:
            return True
        differ["first stage"] += 1
        return False

    for qid, a, m in zip(qids, alone, mixed):
        if same_first_stage(qid, a):  # else another set was re-ranked: nothing to compare rank by rank
            differ["ce"] += assert_same_up_to_near_ties(a, ce[qid])
            differ["fused"] += assert_same_up_to_near_ties(m, fused[qid],
                                                           fused_tolerance(first[qid][:depth], ce[qid], alpha))
    assert max(differ.values()) <= len(qids) // 10, differ
    for qid in qids[:10]:  # one query at a time
        one = searcher.search(queries[qid], **kwargs)
        if same_first_stage(qid, one):
            assert_same_up_to_near_ties(one, ce[qid])
            assert_same_up_to_near_ties(searcher.search(queries[qid], interpolate=alpha, **kwargs), fused[qid],
                                        fused_tolerance(first[qid][:depth], ce[qid], alpha))


@pytest.mark.slow
def test_cli_on_the_scifact_slice(bash_pipeline, slice_data):
    out, _, _ = bash_pipeline
    run = read_run(out / "round2" / "test.run")
    qid, query = next(iter(read_queries(slice_data / "queries.test.jsonl").items()))
    proc = run_cmd(["python", "-m", "densir.search", "--index", str(out / "round2"), "--json", query])
    hits = [Hit(**h) for h in json.loads(proc.stdout)["hits"]]
    assert_same_up_to_near_ties(hits, run[qid])


@pytest.mark.slow
def test_bm25_first_stage_equals_get_data_sh(bash_pipeline, slice_data):
    """retriever="bm25" over get_data.sh's index: its BM25 run (which drops a hit whose docid is the
    query's id, BEIR's --remove-query; the API does not know query ids), re-ranked or not."""
    out, _, _ = bash_pipeline
    run = read_run(slice_data / "bm25.test.run")
    queries = read_queries(slice_data / "queries.test.jsonl")
    searcher = Searcher.from_run_dir(out / "round2", bm25_index=slice_data / "bm25_index", device="cpu")
    qids = list(queries)[:20]
    for qid, hits in zip(qids, searcher.search_batch([queries[q] for q in qids], k=11, retriever="bm25",
                                                     rerank_depth=0)):
        kept = [(h.docid, h.score) for h in hits if h.docid != qid][:10]
        assert [d for d, _ in kept] == [d for d, _ in run[qid][:10]], qid
        np.testing.assert_allclose([s for _, s in kept], [s for _, s in run[qid][:10]], atol=1e-4, rtol=0)
