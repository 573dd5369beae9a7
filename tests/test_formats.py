"""Readers, writers and errors of the DESIGN formats; atomic writes; train-group building."""
import json
import os
import signal
import subprocess
import sys

import pytest

from densir.formats import iter_train_groups, passage_text, read_corpus, read_qrels, read_queries
from densir.io import InputError, atomic_write, iter_run, read_run, write_run
from densir.tokenization import tokenize_batch
from densir.train_groups import build_train_groups


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_corpus_reader_keeps_string_ids(tmp_path):
    p = write(tmp_path / "c.jsonl", '{"docid": "doc-α", "title": "T", "text": "x"}\n{"docid": 7, "text": "y"}\n')
    corpus = read_corpus(p)
    assert corpus == {"doc-α": ("T", "x"), "7": ("", "y")}
    assert passage_text("T", "x") == "T x" and passage_text("", "y") == "y"


@pytest.mark.parametrize("content,line,needle", [
    ('{"docid": "a", "text": "x"}\n{"docid": "b", "text": "y"\n', 2, "invalid JSON"),
    ('{"docid": "a", "text": "x"}\n{"docid": "b"}\n', 2, "field 'text': missing"),
    ('{"text": "x"}\n', 1, "field 'docid': missing"),
    ('{"docid": "a", "text": "x"}\n{"docid": "a", "text": "y"}\n', 2, "duplicate docid"),
])
def test_corpus_errors_name_file_line_field(tmp_path, content, line, needle):
    p = write(tmp_path / "corpus.jsonl", content)
    with pytest.raises(InputError) as e:
        read_corpus(p)
    assert f"corpus.jsonl:{line}" in str(e.value) and needle in str(e.value)


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(InputError, match="corpus.jsonl: corpus is empty"):
        read_corpus(write(tmp_path / "corpus.jsonl", "\n"))


def test_queries_duplicate_and_missing(tmp_path):
    with pytest.raises(InputError, match=r"q.jsonl:2: field 'query_id': duplicate"):
        read_queries(write(tmp_path / "q.jsonl", '{"query_id": "1", "query": "a"}\n{"query_id": "1", "query": "b"}\n'))
    with pytest.raises(InputError, match=r"q2.jsonl:1: field 'query': missing"):
        read_queries(write(tmp_path / "q2.jsonl", '{"query_id": "1"}\n'))


def test_qrels_formats_and_unknown_doc(tmp_path):
    trec = write(tmp_path / "trec.tsv", "q1 0 d1 1\nq1 0 d2 0\n")
    marco = write(tmp_path / "marco.tsv", "1185869\t0\t0\t1\n")
    beir = write(tmp_path / "beir.tsv", "query-id\tcorpus-id\tscore\nq-β\tdoc-α\t1\n")
    assert read_qrels(trec) == {"q1": {"d1": 1, "d2": 0}}
    assert read_qrels(marco) == {"1185869": {"0": 1}}
    assert read_qrels(beir) == {"q-β": {"doc-α": 1}}
    with pytest.raises(InputError, match=r"trec.tsv:2: field 'docid': docid 'd2' is not in the corpus"):
        read_qrels(trec, doc_ids={"d1"})
    with pytest.raises(InputError, match=r"bad.tsv:1: expected"):
        read_qrels(write(tmp_path / "bad.tsv", "q1 d1\n"))


def test_train_group_errors(tmp_path):
    p = write(tmp_path / "g.jsonl", '{"query_id": "1", "query": "q", "positive_passages": [{"docid": "a"}]}\n')
    with pytest.raises(InputError, match=r"g.jsonl:1: field 'positive_passages': item 0 has no 'text'"):
        list(iter_train_groups(p))
    p = write(tmp_path / "h.jsonl", '{"query_id": "1", "positive_passages": []}\n')
    with pytest.raises(InputError, match=r"h.jsonl:1: field 'query'"):
        list(iter_train_groups(p))


def test_run_roundtrip_sorted_with_string_ids(tmp_path):
    run = {"q-β": [("d2", 0.5), ("doc-α", 0.9), ("d3", 0.5)], "7": [("1", 1.0)]}
    write_run(tmp_path / "r.run", run, tag="t")
    lines = (tmp_path / "r.run").read_text().splitlines()
    assert lines[0] == "q-β Q0 doc-α 1 0.900000 t" and lines[1].split()[2:4] == ["d2", "2"]
    assert read_run(tmp_path / "r.run")["q-β"] == [("doc-α", 0.9), ("d2", 0.5), ("d3", 0.5)]
    bad = write(tmp_path / "bad.run", "q1 Q0 d1 1 0.5 t\nq2 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4 t\n")
    with pytest.raises(InputError, match=r"bad.run:3: field 'qid'"):
        list(iter_run(bad))
    with pytest.raises(InputError, match=r"bad2.run:1: expected 6 columns"):
        list(iter_run(write(tmp_path / "bad2.run", "q1 d1 1 0.5\n")))


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("partial\n")
            raise RuntimeError("crash")
    assert not target.exists() and os.listdir(tmp_path) == []


def test_atomic_write_killed_process_leaves_no_final_file(tmp_path):
    """A writer killed with SIGKILL mid-write leaves only a temp file, never the final name."""
    target = tmp_path / "big.run"
    code = ("import sys, time; from densir.io import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n"
            "    f.write('q Q0 d 1 1.0 t\\n'); f.flush(); print('writing', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    assert any(p.name.startswith("big.run.tmp-") for p in tmp_path.iterdir())


def test_build_train_groups_sampling():
    qrels = {"q1": {"d1": 1, "d5": 0}, "q2": {"d9": 1}, "q3": {"d2": 0}}
    run = [("q1", [(f"d{i}", 10.0 - i) for i in range(1, 9)]), ("q2", [("d9", 1.0)]), ("q3", [("d1", 1.0)])]
    corpus = {f"d{i}": ("", f"text {i}") for i in range(1, 10)}
    queries = {"q1": "one", "q2": "two", "q3": "three", "q4": "four"}
    stats = {}
    groups = list(build_train_groups(queries, dict(qrels, q4={"d1": 1}), run, corpus, depth=6, n_sample=3,
                                     seed=1, skip=1, stats=stats))
    assert [g["query_id"] for g in groups] == ["q1"]
    negs = [p["docid"] for p in groups[0]["negative_passages"]]
    assert len(negs) == 3 and set(negs) <= {"d2", "d3", "d4", "d5", "d6"}  # skip d1 (rank 1), depth 6
    assert stats["no_negative"] == 1 and stats["no_positive"] == 1 and stats["not_in_run"] == 1
    again = list(build_train_groups(queries, qrels, list(reversed(run)), corpus, depth=6, n_sample=3, seed=1, skip=1))
    assert again[0]["negative_passages"] == groups[0]["negative_passages"]  # order-independent sampling


def test_pretokenized_groups_equal_string_tokenization(tmp_path, minilm_path):
    from transformers import AutoTokenizer

    from densir.pretokenize import pretokenize_groups

    tok = AutoTokenizer.from_pretrained(minilm_path)
    g = {"query_id": "1", "query": "what is a cell",
         "positive_passages": [{"docid": "a", "title": "Cells", "text": "A cell is the basic unit of life " * 20}],
         "negative_passages": [{"docid": "b", "title": "", "text": "Unrelated."}]}
    src = write(tmp_path / "g.jsonl", json.dumps(g) + "\n")
    pretokenize_groups(src, tmp_path / "g.tok.jsonl", tok, q_max_len=8, p_max_len=32)
    rec = json.loads((tmp_path / "g.tok.jsonl").read_text())
    texts = [passage_text(p["title"], p["text"]) for p in g["positive_passages"] + g["negative_passages"]]
    ids = [p["text"] for p in rec["positive_passages"] + rec["negative_passages"]]
    assert tokenize_batch(tok, ids, 32)["input_ids"].tolist() == tokenize_batch(tok, texts, 32)["input_ids"].tolist()
    assert tokenize_batch(tok, [rec["query"]], 8)["input_ids"].tolist() == \
        tokenize_batch(tok, [g["query"]], 8)["input_ids"].tolist()
