"""Long documents: encode --chunk_tokens/--chunk_stride (token windows, docid repeated), search and the
reducer returning documents scored by their best window (MaxP) or first window (FirstP)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from densir.embeddings import resolve_shards, write_shard
from densir.formats import passage_text
from densir.io import InputError, ParameterError, iter_run, write_jsonl
from densir.ranking import rank, round_score
from densir.retriever.arguments import EncodeArguments, ModelArguments
from densir.retriever.encode import encode_file
from densir.search.faiss_index import ShardIndex, search, search_to_run
from densir.search.shard_runs import reduce_shard_runs
from densir.tokenization import token_windows, tokenize_windows

META = {"model": "m", "model_fingerprint": "f00", "pooling": "mean", "normalize": True, "max_len": 8}
CHUNKED = dict(META, kind="passage", chunk_tokens=4, chunk_stride=2)


# --------------------------------------------------------------------------- windows
@pytest.mark.parametrize("length,size,stride", [(0, 4, 2), (3, 4, 2), (4, 4, 2), (5, 4, 2), (17, 4, 3),
                                                (17, 5, 5), (30, 7, 1), (100, 16, 8)])
def test_windows_cover_every_token_with_the_stride_and_overlap(length, size, stride):
    windows = token_windows(length, size, stride)
    covered = set()
    for a, b in windows:
        assert 0 <= a < b <= length or (length == 0 and (a, b) == (0, 0))
        assert b - a <= size
        covered.update(range(a, b))
    assert covered == set(range(length))
    assert windows[0][0] == 0 and windows[-1][1] == length
    for (a1, b1), (a2, _) in zip(windows, windows[1:]):
        assert a2 - a1 == stride
        assert b1 - a2 == size - stride  # overlap: every full window overlaps the next by size - stride
        assert b1 - a1 == size  # only the last window may be short
    assert len(windows) == 1 if length <= size else windows[-2][1] < length  # no window past the end


def test_token_windows_refuses_a_gap():
    with pytest.raises(ValueError, match="stride"):
        token_windows(10, 4, 5)
    with pytest.raises(ValueError, match="chunk_stride must be <="):
        EncodeArguments(encoded_save_path="x", encode_in_path="c.jsonl", chunk_tokens=4, chunk_stride=5)
    with pytest.raises(ValueError, match="needs --chunk_tokens"):
        EncodeArguments(encoded_save_path="x", encode_in_path="c.jsonl", chunk_stride=5)
    with pytest.raises(ValueError, match="queries are not chunked"):
        EncodeArguments(encoded_save_path="x", encode_in_path="q.jsonl", encode_is_qry=True, chunk_tokens=8)
    assert EncodeArguments(encoded_save_path="x", encode_in_path="c.jsonl", chunk_tokens=9).chunk_stride == 4


def test_tokenize_windows_cuts_one_tokenization(tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = ["short one", "a much longer passage about proteins, cells and the way they fold " * 3]
    features, owner = tokenize_windows(tok, texts, 32, 10, 6)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert owner == [0] + [1] * len(token_windows(len(ids[1]), 10, 6))
    for f, i, (a, b) in zip(features, owner, [(0, len(ids[0]))] + token_windows(len(ids[1]), 10, 6)):
        assert f["input_ids"] == [tok.cls_token_id] + ids[i][a:b] + [tok.sep_token_id]
    # a pre-tokenized passage (ids, as densir.pretokenize writes) is cut as it is, beside strings
    pre, owner = tokenize_windows(tok, [ids[1], texts[0]], 32, 10, 6)
    assert [f["input_ids"] for f in pre] == [f["input_ids"] for f in features[1:]] + [features[0]["input_ids"]]
    assert owner == [0] * (len(features) - 1) + [1]


# --------------------------------------------------------------------------- encode
def _corpus(tmp_path):
    long = "Protein folding in the cell depends on chaperones and on the sequence of amino acids. "
    rows = [{"docid": "d0", "title": "Folding", "text": long * 4},
            {"docid": "d1", "title": "", "text": "A short abstract."},
            {"docid": "d2", "title": "Cancer", "text": "Tumour cells divide without control. " * 6},
            {"docid": "d3", "title": "", "text": "Vitamin D and bone density in older adults."},
            {"docid": "d4", "title": "Sleep", "text": "Sleep deprivation impairs memory consolidation. " * 5}]
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, rows)
    queries = tmp_path / "queries.jsonl"
    write_jsonl(queries, [{"query_id": f"q{i}", "query": q} for i, q in enumerate(
        ["protein folding chaperones", "tumour growth", "memory and sleep", "bone density vitamin"])])
    return path, queries, rows


def _encode(model, path, save, **kw):
    return encode_file(ModelArguments(model_name_or_path=model),
                       EncodeArguments(encode_in_path=str(path), encoded_save_path=str(save), p_max_len=32, **kw))


def test_encode_writes_one_row_per_window_under_the_docid(tiny_bert_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    path, _, rows = _corpus(tmp_path)
    shard = _encode(tiny_bert_dir, path, tmp_path / "chunked/corpus", chunk_tokens=12, chunk_stride=8)
    plain = _encode(tiny_bert_dir, path, tmp_path / "plain/corpus")
    assert (shard.meta["chunk_tokens"], shard.meta["chunk_stride"]) == (12, 8)
    assert "chunk_tokens" not in plain.meta
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    lengths = [len(tok(passage_text(r["title"], r["text"]), add_special_tokens=False)["input_ids"]) for r in rows]
    expected = [r["docid"] for r, n in zip(rows, lengths) for _ in token_windows(n, 12, 8)]
    assert shard.ids() == expected and shard.count == len(expected) > len(rows)
    vectors, plain_vectors = np.asarray(shard.vectors()), np.asarray(plain.vectors())
    # a passage of one window is encoded exactly as without chunking
    assert lengths[1] <= 12
    np.testing.assert_allclose(vectors[expected.index("d1")], plain_vectors[1], atol=1e-5)
    # a window of a long passage: its tokens between [CLS] and [SEP], through the model itself (CLS pooling)
    assert (shard.meta["pooling"], shard.meta["normalize"]) == ("cls", False)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    ids = tok(passage_text(rows[0]["title"], rows[0]["text"]), add_special_tokens=False)["input_ids"]
    a, b = token_windows(len(ids), 12, 8)[2]
    with torch.no_grad():
        hidden = model(torch.tensor([[tok.cls_token_id] + ids[a:b] + [tok.sep_token_id]])).last_hidden_state[0]
    np.testing.assert_allclose(vectors[2], hidden[0].numpy(), atol=1e-5)
    # the shard reads back (repeats allowed: it is chunked) and a rerun with other windows is refused
    assert [p.name for p in resolve_shards(tmp_path / "chunked/corpus", kind="passage")] == [shard.name]
    with pytest.raises(InputError, match="chunk_stride"):
        _encode(tiny_bert_dir, path, tmp_path / "chunked/corpus", chunk_tokens=12, chunk_stride=6)


def test_a_window_that_does_not_fit_max_len_is_refused(tiny_bert_dir, tmp_path):
    from densir.io import UsageError

    path, _, _ = _corpus(tmp_path)
    with pytest.raises(UsageError, match="--chunk_tokens 31 does not fit"):
        _encode(tiny_bert_dir, path, tmp_path / "c", chunk_tokens=31)  # 31 + [CLS] + [SEP] > 32


# --------------------------------------------------------------------------- search: MaxP, FirstP, depth
def _hand_made(tmp_path, seed=0):
    """Documents of 1..6 windows (random unit vectors) and 5 queries, as shards."""
    rng = np.random.default_rng(seed)
    docids = [f"doc{i}" for i in range(14)]
    ids = [d for i, d in enumerate(docids) for _ in range(1 + (i * 5) % 6)]
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    passages = write_shard(tmp_path / "corpus", ids, vectors, CHUNKED)
    query_shard = write_shard(tmp_path / "queries", [f"q{i}" for i in range(5)], queries, dict(META, kind="query"))
    return passages, query_shard


def _expected(query: np.ndarray, ids: list[str], vectors: np.ndarray, how: str, depth: int):
    """Document scores computed here: max (or first) of the window scores, ranked by densir.ranking."""
    scores = vectors.astype(np.float64) @ query.astype(np.float64)
    best: dict[str, float] = {}
    for docid, s in zip(ids, scores):
        if how == "maxp":
            best[docid] = max(best.get(docid, -np.inf), s)
        else:
            best.setdefault(docid, s)
    return rank(((d, round_score(s)) for d, s in best.items()), depth)


@pytest.mark.parametrize("how", ["maxp", "firstp"])
@pytest.mark.parametrize("depth", [1, 3, 14, 50])
def test_search_scores_documents_by_best_or_first_window(tmp_path, how, depth):
    passages, queries = _hand_made(tmp_path)
    ids, vectors = passages.ids(), np.asarray(passages.vectors())
    hits = list(search([queries], [passages], depth, doc_aggregation=how))
    assert [q for q, _ in hits] == queries.ids()
    for q, (_, got) in zip(np.asarray(queries.vectors()), hits):
        want = _expected(q, ids, vectors, how, depth)
        assert [d for d, _ in got] == [d for d, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=2e-6)
        assert len(got) == len({d for d, _ in got}) == min(depth, 14)  # each document once, depth of them


def test_depth_distinct_documents_when_one_document_floods_the_top(tmp_path):
    """40 windows of one document outscore every other document: still `depth` documents come back."""
    query = np.eye(8, dtype=np.float32)[:1]
    flood = np.tile(query, (40, 1)) + np.linspace(0, 0.01, 40)[:, None] * np.eye(8, dtype=np.float32)[1]
    others = np.eye(8, dtype=np.float32)[[0] * 5] * np.linspace(0.5, 0.9, 5)[:, None]
    ids = ["big"] * 40 + [f"small{i}" for i in range(5)]
    passages = write_shard(tmp_path / "corpus", ids, np.vstack([flood, others]), CHUNKED)
    queries = write_shard(tmp_path / "queries", ["q"], query, dict(META, kind="query"))
    (_, hits), = search([queries], [passages], 4)
    assert [d for d, _ in hits] == ["big", "small4", "small3", "small2"]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-6)


def test_firstp_ignores_later_windows_and_refuses_saved_indexes(tmp_path):
    ids = ["a", "a", "b"]
    vectors = np.array([[0.1, 0], [1, 0], [0.5, 0]], dtype=np.float32)
    passages = write_shard(tmp_path / "corpus", ids, vectors, CHUNKED)
    queries = write_shard(tmp_path / "queries", ["q"], np.array([[1, 0]], np.float32), dict(META, kind="query"))
    assert list(search([queries], [passages], 2))[0][1] == [("a", 1.0), ("b", 0.5)]
    assert list(search([queries], [passages], 2, doc_aggregation="firstp"))[0][1] == [("b", 0.5), ("a", 0.1)]
    with pytest.raises(ParameterError, match="first windows only"):
        ShardIndex([passages], "HNSW32", use_gpu=False, doc_aggregation="firstp", save_index=tmp_path / "idx")
    with pytest.raises(ParameterError, match="doc_aggregation"):
        ShardIndex([passages], use_gpu=False, doc_aggregation="sum")


def test_blocks_and_pieces_do_not_change_maxp_or_firstp(tmp_path):
    passages, queries = _hand_made(tmp_path)
    q = np.asarray(queries.vectors())
    for how in ("maxp", "firstp"):
        whole = list(ShardIndex([passages], use_gpu=False, doc_aggregation=how).search(q, 6))
        for kwargs in ({"block_rows": 5}, {"index_factory": "HNSW32"}):
            other = list(ShardIndex([passages], use_gpu=False, doc_aggregation=how, **kwargs).search(q, 6))
            assert [[d for d, _ in h] for h in other] == [[d for d, _ in h] for h in whole]


# --------------------------------------------------------------------------- shards: repeats, mixing
def test_repeats_only_adjacent_and_only_in_a_chunked_shard(tmp_path):
    v = np.eye(4, dtype=np.float32)
    write_shard(tmp_path / "ok", ["a", "a", "b", "c"], v, CHUNKED)
    assert resolve_shards(tmp_path / "ok")[0].chunked
    write_shard(tmp_path / "plain", ["a", "a", "b", "c"], v, dict(META, kind="passage"))
    with pytest.raises(InputError, match=r"plain.ids:2: .*'a' is also on line 1"):
        resolve_shards(tmp_path / "plain")
    write_shard(tmp_path / "split", ["a", "b", "a", "c"], v, CHUNKED)  # 'a' twice in the corpus
    with pytest.raises(InputError, match=r"split.ids:3: .*'a' is also on line 1"):
        resolve_shards(tmp_path / "split")
    write_shard(tmp_path / "two.0", ["a", "a"], v[:2], dict(CHUNKED, num_shards=2, shard_index=0))
    write_shard(tmp_path / "two.1", ["b", "a"], v[2:], dict(CHUNKED, num_shards=2, shard_index=1))
    with pytest.raises(InputError, match="'a' is also on line 1 of .*two.0.ids"):
        resolve_shards(tmp_path / "two.*")


def test_chunked_and_unchunked_shards_are_not_searched_together(tmp_path):
    v = np.eye(4, dtype=np.float32)
    queries = write_shard(tmp_path / "q", ["q"], v[:1], dict(META, kind="query"))
    chunked = write_shard(tmp_path / "c.0", ["a", "a"], v[:2], dict(CHUNKED, num_shards=2, shard_index=0))
    plain = write_shard(tmp_path / "c.1", ["b", "c"], v[2:], dict(META, kind="passage", num_shards=2, shard_index=1))
    with pytest.raises(InputError, match="unchunked, but .*c.0.json is chunk_tokens=4, chunk_stride=2"):
        list(search([queries], [chunked, plain], 2))
    other = write_shard(tmp_path / "d.1", ["b"], v[2:3], dict(CHUNKED, chunk_stride=4, num_shards=2, shard_index=1))
    with pytest.raises(InputError, match="chunk_stride=4"):
        list(search([queries], [chunked, other], 2))


# --------------------------------------------------------------------------- end to end: encode, search, reduce
def test_reducer_over_chunked_shard_runs_equals_one_search(tiny_bert_dir, tmp_path):
    path, queries_path, rows = _corpus(tmp_path)
    one = _encode(tiny_bert_dir, path, tmp_path / "one/corpus", chunk_tokens=10, chunk_stride=5)
    for i in range(2):
        _encode(tiny_bert_dir, path, tmp_path / "two/corpus", chunk_tokens=10, chunk_stride=5, shard_index=i,
                num_shards=2)
    encode_file(ModelArguments(model_name_or_path=tiny_bert_dir),
                EncodeArguments(encode_in_path=str(queries_path), encoded_save_path=str(tmp_path / "q"),
                                encode_is_qry=True))
    for how in ("maxp", "firstp"):
        whole, merged = tmp_path / f"whole.{how}.run", tmp_path / f"merged.{how}.run"
        search_to_run(tmp_path / "q", tmp_path / "one/corpus", whole, 4, use_gpu=False, doc_aggregation=how)
        for i in range(2):
            search_to_run(tmp_path / "q", tmp_path / f"two/corpus.{i}", tmp_path / f"shard.{i}.{how}.run", 4,
                          use_gpu=False, doc_aggregation=how)
        reduce_shard_runs([str(tmp_path / f"shard.*.{how}.run")], merged, 4, num_shards=2)
        assert merged.read_text() == whole.read_text()
        runs = list(iter_run(whole))
        assert len(runs) == 4
        for _, hits in runs:
            docids = [d for d, _ in hits]
            assert len(docids) == len(set(docids)) == 4 and set(docids) <= {r["docid"] for r in rows}
    # MaxP of the real encoder's windows, checked against numpy over the shard
    q = resolve_shards(tmp_path / "q")[0]
    (qid, hits), = [h for h in search([q], [one], 5, use_gpu=False)][:1]
    want = _expected(np.asarray(q.vectors())[0], one.ids(), np.asarray(one.vectors()), "maxp", 5)
    assert [d for d, _ in hits] == [d for d, _ in want]


def test_searcher_returns_documents_with_their_text(tiny_bert_dir, tmp_path):
    from densir.retriever.modeling import DenseEncoder
    from densir.search.searcher import Searcher

    path, _, rows = _corpus(tmp_path)
    shard = _encode(tiny_bert_dir, path, tmp_path / "c/corpus", chunk_tokens=10, chunk_stride=5)
    searcher = Searcher(DenseEncoder.load(tiny_bert_dir), [shard], corpus=str(path), device="cpu", use_gpu=False)
    hits = searcher.search("protein folding", k=5, rerank_depth=None)
    assert sorted(h.docid for h in hits) == sorted(r["docid"] for r in rows)
    by_id = {r["docid"]: r for r in rows}
    for h in hits:
        assert h.text == by_id[h.docid]["text"] and h.title == by_id[h.docid]["title"]
    # the Searcher goes through the same ShardIndex: its scores are the search stage's MaxP
    vectors = searcher.encode_queries(["protein folding"])
    queries = write_shard(tmp_path / "qs", ["q"], vectors, dict(shard.meta, kind="query"))
    (_, direct), = list(search([queries], [shard], 5, use_gpu=False))
    assert [(h.docid, round(h.score, 5)) for h in hits] == [(d, round(s, 5)) for d, s in direct]
    want = _expected(vectors[0], shard.ids(), np.asarray(shard.vectors()), "maxp", 5)
    assert [h.docid for h in hits] == [d for d, _ in want]


# --------------------------------------------------------------------------- command lines
def test_command_lines_take_the_flags_and_refuse_bad_ones_in_one_line(tmp_path):
    import sys

    from conftest import run_cmd

    passages, queries = _hand_made(tmp_path)
    for how in ("maxp", "firstp"):
        run_cmd([sys.executable, "-m", "densir.faiss_retriever", "--query_reps", queries.name, "--passage_reps",
                 passages.name, "--depth", "5", "--no_gpu", "--doc_aggregation", how,
                 "--save_ranking_to", str(tmp_path / f"{how}.run")])
        got = [(q, [d for d, _ in hits]) for q, hits in iter_run(tmp_path / f"{how}.run")]
        assert got == [(q, [d for d, _ in hits]) for q, hits in search([queries], [passages], 5, doc_aggregation=how)]
    bad = run_cmd([sys.executable, "-m", "densir.driver.encode", "--model_name_or_path", "unused", "--encode_in_path",
                   "c.jsonl", "--encoded_save_path", str(tmp_path / "x"), "--chunk_tokens", "4", "--chunk_stride", "5"],
                  check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "--chunk_stride must be <=" in bad.stderr
