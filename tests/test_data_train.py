"""TrainDataset / EpochShuffleSampler / TrainCollator: determinism, negative coverage, bad input."""
from __future__ import annotations

import json

import pytest

from densir.dataset import EpochShuffleSampler, TrainDataset
from densir.formats import TrainGroupSource, passage_text
from densir.io import InputError
from densir.retriever.collator import TrainCollator


def _group(qid, n_neg=5, n_pos=1, query=None):
    return {"query_id": qid, "query": query if query is not None else f"query {qid}",
            "positive_passages": [{"docid": f"{qid}-p{i}", "title": "T", "text": f"positive {qid} {i}"}
                                  for i in range(n_pos)],
            "negative_passages": [{"docid": f"{qid}-n{i}", "title": "", "text": f"negative {qid} {i}"}
                                  for i in range(n_neg)]}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _dataset(path, n=4, seed=7):
    return TrainDataset(TrainGroupSource(files=[path]), train_n_passages=n, seed=seed)


def test_items_repeat_and_visit_every_negative(tmp_path):
    path = _write(tmp_path / "g.jsonl", [_group(str(i), n_neg=7, n_pos=2) for i in range(5)])
    ds, again = _dataset(path), _dataset(path)
    n = len(ds)
    assert n == 5
    for k in range(3 * n):  # same (seed, epoch, index) -> same item, in a fresh dataset too
        assert ds[k] == again[k]
    item = ds[0]
    assert len(item["passages"]) == 4 and item["passages"][0].startswith("T positive")  # title joined
    assert item["passages"][0] == passage_text("T", item["passages"][0][2:])
    # across ceil(7/3) = 3 epochs every negative of group 0 is drawn, and both positives over 2
    seen = {p for e in range(3) for p in ds[e * n + 0]["passages"][1:]}
    assert seen == {f"negative 0 {i}" for i in range(7)}
    assert {ds[e * n]["passages"][0] for e in range(2)} == {"T positive 0 0", "T positive 0 1"}
    # within an epoch a group's negatives are distinct; a different seed draws differently
    assert len(set(item["passages"][1:])) == 3
    other = _dataset(path, seed=8)
    assert any(other[k] != ds[k] for k in range(n))


def test_sampler_is_a_seeded_permutation_per_epoch():
    s = EpochShuffleSampler(10, seed=3)
    e0 = list(s)
    assert sorted(e0) == list(range(10)) and list(s) == e0
    s.set_epoch(2)
    e2 = list(s)
    assert sorted(e2) == list(range(20, 30)) and [k - 20 for k in e2] != e0
    assert list(EpochShuffleSampler(10, seed=4)) != e0


def test_too_few_negatives_drawn_with_replacement_and_counted(tmp_path, caplog):
    path = _write(tmp_path / "g.jsonl", [_group("a", n_neg=2), _group("b", n_neg=9)])
    with caplog.at_level("WARNING"):
        ds = _dataset(path, n=6)
    assert ds.stats["short_of_negatives"] == 1
    assert "1 with short of negatives" in caplog.text and "g.jsonl:1" in caplog.text
    negs = ds[0]["passages"][1:]
    assert len(negs) == 5 and set(negs) == {"negative a 0", "negative a 1"}


def test_bad_groups_are_counted_skips_with_file_and_line(tmp_path, caplog):
    records = [
        _group("ok"),
        dict(_group("nopos"), positive_passages=[]),
        _group("emptyq", query="   "),
        dict(_group("emptypos"), positive_passages=[{"docid": "x", "title": "", "text": ""}]),
        dict(_group("noneg"), negative_passages=[]),
        dict(_group("emptyneg"), negative_passages=[{"docid": "y", "text": " "}, {"docid": "z", "text": "fine"}]),
    ]
    path = _write(tmp_path / "bad.jsonl", records)
    with caplog.at_level("WARNING"):
        ds = _dataset(path, n=2)
    assert len(ds) == 2  # "ok" and "emptyneg" (its empty negative dropped)
    assert ds.stats == {"records": 6, "groups": 2, "no_positive": 2, "empty_query": 1, "no_negative": 1,
                        "empty_passages": 1, "short_of_negatives": 0}
    assert "2 with no positive (first at " in caplog.text and "bad.jsonl:2): groups skipped" in caplog.text
    assert "bad.jsonl:3" in caplog.text and "bad.jsonl:5" in caplog.text
    assert ds[1]["passages"][1] == "fine"
    batch = TrainCollator(_FakeTokenizer(), 8, 8)([ds[0], ds[1]])  # nothing bad reaches the collator
    assert batch["passage"]["input_ids"].shape[0] == 4


def test_missing_fields_and_nothing_usable_fail_with_location(tmp_path):
    p = _write(tmp_path / "m.jsonl", [_group("a"), {"query_id": "b", "query": "q", "negative_passages": []}])
    with pytest.raises(InputError, match=r"m.jsonl:2: field 'positive_passages': missing"):
        _dataset(p)
    p = _write(tmp_path / "t.jsonl", [dict(_group("a"), negative_passages=[{"docid": "n"}])])
    with pytest.raises(InputError, match=r"t.jsonl:1: field 'negative_passages': item 0 has no 'text'"):
        _dataset(p)
    p = _write(tmp_path / "q.jsonl", [{"positive_passages": []}])
    with pytest.raises(InputError, match=r"q.jsonl:1: field 'query'"):
        _dataset(p)
    p = _write(tmp_path / "none.jsonl", [dict(_group("a"), positive_passages=[])])
    with pytest.raises(InputError, match=r"none.jsonl: no usable train group among 1 records"):
        _dataset(p)
    (tmp_path / "j.jsonl").write_text(json.dumps(_group("a")) + "\n{not json\n")
    with pytest.raises(InputError, match=r"j.jsonl:2: invalid JSON"):
        _dataset(tmp_path / "j.jsonl")


def test_collator_strings_and_pretokenized_give_the_same_batch(tmp_path, tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    groups = [_group(str(i), n_neg=3) for i in range(3)]
    pre = []
    for g in groups:
        ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        pre.append({"query": ids(g["query"]),
                    "positive_passages": [{"text": ids(passage_text(p["title"], p["text"]))} for p in g["positive_passages"]],
                    "negative_passages": [{"text": ids(passage_text(p["title"], p["text"]))} for p in g["negative_passages"]]})
    a = _dataset(_write(tmp_path / "s.jsonl", groups), n=3)
    b = _dataset(_write(tmp_path / "p.jsonl", pre), n=3)
    collate = TrainCollator(tok, q_max_len=6, p_max_len=8, query_prefix="query: ")
    ba, bb = collate([a[k] for k in range(3)]), collate([b[k] for k in range(3)])
    for part in ("query", "passage"):
        assert ba[part]["input_ids"].tolist() == bb[part]["input_ids"].tolist()
        assert ba[part]["attention_mask"].tolist() == bb[part]["attention_mask"].tolist()
    # the longest passage, not p_max_len
    assert ba["query"]["input_ids"].shape == (3, 6) and ba["passage"]["input_ids"].shape == (9, 6)
    assert tok.decode(ba["query"]["input_ids"][0]).startswith("[CLS] query :")
    # dynamic padding: short passages are not padded up to p_max_len
    assert collate([a[0]])["passage"]["input_ids"].shape[1] <= 8


class _FakeTokenizer:
    """Enough of a tokenizer for the collator: one id per whitespace word."""

    def __call__(self, texts, max_length, truncation, padding, pad_to_multiple_of, return_tensors):
        import torch

        ids = [([1] + [2] * len(t.split()))[:max_length] for t in texts]
        width = max(map(len, ids))
        return {"input_ids": torch.tensor([x + [0] * (width - len(x)) for x in ids]),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])}


def test_hf_dataset_source_gives_the_jsonl_items(tmp_path):
    """--dataset_name: a datasets.Dataset in Tevatron's layout (here a local dir, no hub) trains as-is."""
    from datasets import load_dataset

    groups = [_group(str(i), n_neg=4, n_pos=1 + i % 2) for i in range(6)] + [dict(_group("x"), positive_passages=[])]
    (tmp_path / "hf").mkdir()
    _write(tmp_path / "hf" / "train.jsonl", groups)
    hf = load_dataset(str(tmp_path / "hf"), split="train")
    a = TrainDataset(TrainGroupSource(hf_dataset=hf, hf_name="local/hf"), train_n_passages=3, seed=5)
    b = _dataset(tmp_path / "hf" / "train.jsonl", n=3, seed=5)
    assert len(a) == len(b) == 6 and a.stats["no_positive"] == 1
    # the same items; only the provenance of each (file and line, for error messages) differs
    def strip(item):
        return {k: v for k, v in item.items() if k != "where"}

    assert [strip(a[k]) for k in range(12)] == [strip(b[k]) for k in range(12)]
    assert a[0]["where"] == ("local/hf", 1) and b[0]["where"][1] == 1
