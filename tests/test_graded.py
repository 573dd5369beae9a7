"""Graded labels and teacher scores end to end: DL19 mini's graded dev qrels (0-3) become train
groups whose passages carry "relevance" (densir.reranker.score_groups.grade_groups on what
densir.train_groups.build_train_groups yields), TrainDataset and RerankCollator carry the grades to
the loss unchanged, and the re-ranker trains on them with LambdaLoss and ListMLE through the real
trainer; tools/score_groups.py writes a cross-encoder's scores onto groups for the distillation
losses; Tevatron's layout (no labels) still reads as positive 1, negatives 0."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO, SHARED_DATA, rerank_mean_loss, run_cmd

from densir.dataset import TrainDataset, passage_input
from densir.formats import TrainGroupSource, read_qrels
from densir.io import InputError
from densir.losses import build_loss, loss_target
from densir.reranker.collator import RerankCollator
from densir.reranker.modeling import CrossEncoderReranker
from densir.reranker.score_groups import grade_groups

DL19 = SHARED_DATA / "msmarco-dl19-mini"
N_QUERIES, N_PASSAGES, MAX_LEN = 8, 5, 64


def _tsv(path, keep=None) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, text = line.rstrip("\n").split("\t", 1)
            if keep is None or key in keep:
                out[key] = text
    return out


@pytest.fixture(scope="module")
def dl19_graded(tmp_path_factory):
    """Train groups for 8 DL19 dev queries from the graded qrels: positives graded 2-3, negatives
    graded 1 (DL's "related") or 0, every passage with its grade as "relevance"."""
    if not (DL19 / "qrels.dev.graded.txt").exists():
        pytest.skip(f"DL19 mini not found at {DL19}")
    from densir.train_groups import build_train_groups

    qrels = read_qrels(DL19 / "qrels.dev.graded.txt")
    qids = sorted(qrels)[:N_QUERIES]
    qrels = {q: qrels[q] for q in qids}
    docids = {d for q in qids for d in qrels[q]}
    corpus = {d: ("", text) for d, text in _tsv(DL19 / "collection.tsv", keep=docids).items()}
    queries = _tsv(DL19 / "queries.dev.small.tsv", keep=set(qids))
    # the judged pool as the run the negatives are drawn from (the qrels' order)
    run = [(q, [(d, 0.0) for d in qrels[q]]) for q in qids]
    built: dict = {}
    groups = list(build_train_groups(queries, qrels, run, corpus, depth=1000, n_sample=12, seed=1, stats=built))
    stats: dict = {}
    graded = list(grade_groups(groups, qrels, relevant_min=2, stats=stats))
    for g in graded:  # compact groups (2 positives, 2 + 2 negatives), so that a few steps can fit them
        g["positive_passages"] = g["positive_passages"][:2]
        g["negative_passages"] = [p for p in g["negative_passages"] if p["relevance"] == 1][:2] + \
                                 [p for p in g["negative_passages"] if p["relevance"] == 0][:N_PASSAGES - 3]
    path = tmp_path_factory.mktemp("dl19-graded") / "train.graded.jsonl"
    path.write_text("".join(json.dumps(g) + "\n" for g in graded))
    return path, qrels, graded, stats


def test_graded_groups_carry_the_qrels_grades(dl19_graded):
    _, qrels, graded, stats = dl19_graded
    assert stats["groups"] == len(graded) == N_QUERIES and stats["no_positive"] == 0
    seen = set()
    for g in graded:
        judged = qrels[g["query_id"]]
        assert all(p["relevance"] == judged[p["docid"]] >= 2 for p in g["positive_passages"])
        assert all(p["relevance"] == judged.get(p["docid"], 0) < 2 for p in g["negative_passages"])
        seen |= {p["relevance"] for p in g["positive_passages"] + g["negative_passages"]}
    assert seen == {0, 1, 2, 3}
    assert set(stats["grades"]) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="relevant_min"):
        list(grade_groups(graded, qrels, relevant_min=0))


def test_collator_relevance_is_the_qrels_grades(dl19_graded, tiny_bert_dir):
    path, qrels, _, _ = dl19_graded
    ds = TrainDataset(TrainGroupSource(files=[path]), N_PASSAGES, seed=3)
    collate = RerankCollator(CrossEncoderReranker.load(tiny_bert_dir).tokenizer, MAX_LEN)
    items = [ds[k] for k in range(3 * len(ds))]  # three epochs
    batch = collate(items)
    expected = torch.tensor([[qrels[it["query_id"]].get(d, 0) for d in it["docids"]] for it in items],
                            dtype=torch.float32)
    assert torch.equal(batch["relevance"], expected)
    assert set(batch["relevance"][:, 0].tolist()) == {2.0, 3.0}       # positives: DL's relevant grades
    assert set(batch["relevance"][:, 1:].unique().tolist()) == {0.0, 1.0}  # graded negatives among them
    assert batch["pairs"]["input_ids"].shape[0] == len(items) * N_PASSAGES
    assert "teacher" not in batch


@pytest.mark.parametrize("loss", ["lambda", "listmle"])
def test_a_listwise_loss_trains_on_the_dl19_grades(loss, dl19_graded, tiny_bert_dir, tmp_path, monkeypatch):
    from densir import losses
    from densir.driver.train_reranker import main
    from densir.reranker.arguments import RerankerTrainingArguments
    from densir.reranker.trainer import RerankerTrainer

    path, _, _, _ = dl19_graded
    seen = []  # what the trainer hands the loss: the grades, not binary labels

    def spy_builder(args):
        inner = losses.LOSS_CLASSES[args.loss]()

        class Spy(torch.nn.Module):
            def forward(self, scores, relevance):
                seen.append(relevance.detach().clone())
                return inner(scores, relevance)

        return Spy()

    monkeypatch.setattr(RerankerTrainer, "build_loss", staticmethod(spy_builder))  # the trainer's loss hook
    start = tmp_path / "start"
    torch.manual_seed(0)
    CrossEncoderReranker.load(tiny_bert_dir, max_len=MAX_LEN).save(start)
    epochs = 8
    summary = main(["--model_name_or_path", str(start), "--train_dir", str(path), "--output_dir", str(tmp_path / "out"),
                    "--loss", loss, "--train_n_passages", str(N_PASSAGES), "--max_len", str(MAX_LEN),
                    "--per_device_train_batch_size", "4", "--learning_rate", "5e-3", "--num_train_epochs", str(epochs),
                    "--save_steps", "1000", "--seed", "42", "--logging_steps", "4", "--lr_scheduler_type", "constant"])
    assert summary["global_step"] == epochs * N_QUERIES // 4 == len(seen)
    labels = torch.cat(seen)
    assert set(labels.unique().tolist()) == {0.0, 1.0, 2.0, 3.0} and bool((labels[:, 0] >= 2).all())
    monkeypatch.undo()

    loss_fn = losses.build_loss_from_args(RerankerTrainingArguments(output_dir=str(tmp_path), loss=loss))
    before = rerank_mean_loss(start, path, loss_fn, epochs, N_PASSAGES, MAX_LEN)
    after = rerank_mean_loss(tmp_path / "out", path, loss_fn, epochs, N_PASSAGES, MAX_LEN)
    print(f"{loss}: mean loss {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before, (loss, before, after)


# --------------------------------------------------------------------------- teacher scores
@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_bert_dir):
    """A tiny cross-encoder with spread-out scores, as a teacher."""
    torch.manual_seed(1)
    r = CrossEncoderReranker.load(tiny_bert_dir, max_len=MAX_LEN)
    with torch.no_grad():
        r.model.classifier.weight.normal_(0.0, 30.0)
    out = tmp_path_factory.mktemp("teacher") / "model"
    r.save(out)
    return out


def test_score_groups_writes_the_cross_encoders_scores(dl19_graded, teacher_dir, tmp_path):
    _, _, graded, _ = dl19_graded
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(g) + "\n" for g in graded[:6]))
    out = tmp_path / "scored.jsonl"
    # --batch_size 1: chunks of 16 pairs, so the 6 groups (6 passages each) stream through in three chunks
    proc = run_cmd(["python", "tools/score_groups.py", "--model_name_or_path", str(teacher_dir), "--groups", str(few),
                    "--out", str(out), "--batch_size", "1"])
    n = sum(len(g["positive_passages"]) + len(g["negative_passages"]) for g in graded[:6])
    assert f"6 groups, {n} passages" in proc.stdout
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(scored) == 6
    teacher = CrossEncoderReranker.load(str(teacher_dir))
    for g, s in zip(graded[:6], scored):
        assert s["query_id"] == g["query_id"]
        for field in ("positive_passages", "negative_passages"):
            assert [{k: v for k, v in p.items() if k != "score"} for p in s[field]] == g[field]  # all else kept
        passages = s["positive_passages"] + s["negative_passages"]
        expected = teacher.predict([(s["query"], passage_input(p)) for p in passages], batch_size=4)
        np.testing.assert_allclose([p["score"] for p in passages], expected, atol=1e-5)
        assert np.ptp(expected) > 1e-2

    # the scores reach a distillation loss's teacher tensor, next to the grades
    ds = TrainDataset(TrainGroupSource(files=[out]), N_PASSAGES, seed=0)
    items = [ds[k] for k in range(len(ds))]
    batch = RerankCollator(teacher.tokenizer, MAX_LEN, teacher=True)(items)
    by_doc = {(g["query_id"], p["docid"]): p["score"] for g in scored for p in g["positive_passages"] + g["negative_passages"]}
    assert torch.allclose(batch["teacher"], torch.tensor([[by_doc[it["query_id"], d] for d in it["docids"]]
                                                          for it in items]))
    assert set(batch["relevance"][:, 0].tolist()) <= {2.0, 3.0}
    assert loss_target(build_loss("margin_mse"), batch) is batch["teacher"]


def test_score_groups_on_a_cpu_backend_matches_torch(dl19_graded, teacher_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from densir.reranker.score_groups import score_groups_file

    _, _, graded, _ = dl19_graded
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(g) + "\n" for g in graded[:4]))
    scores = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.jsonl"
        stats = score_groups_file(str(teacher_dir), few, out, batch_size=4, backend=backend)
        assert stats["recipe"] == ("torch-fp32" if backend == "torch" else "ort-fp32") and stats["groups"] == 4
        scores[backend] = [p["score"] for line in out.read_text().splitlines()
                           for g in [json.loads(line)] for p in g["positive_passages"] + g["negative_passages"]]
    spread = np.ptp(scores["torch"])
    assert spread > 1e-2
    np.testing.assert_allclose(scores["onnx"], scores["torch"], atol=1e-4 * spread)
    with pytest.raises(ValueError, match="fp32 or int8"):
        score_groups_file(str(teacher_dir), few, tmp_path / "bf16.jsonl", backend="onnx", precision="bf16")


def test_a_scored_run_is_a_teacher_too(dl19_graded, teacher_dir, tmp_path):
    """The cross-encoder's scores written as a TREC run teach the same scores as the cross-encoder;
    a pair the run lacks is an error at the group's line, or (--missing drop) left out and counted."""
    from densir.io import write_run

    _, _, graded, _ = dl19_graded
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(g) + "\n" for g in graded[:6]))
    teacher = CrossEncoderReranker.load(str(teacher_dir))
    run = {}
    for g in graded[:6]:
        passages = g["positive_passages"] + g["negative_passages"]
        scores = teacher.predict([(g["query"], passage_input(p)) for p in passages], batch_size=4)
        run[g["query_id"]] = [(p["docid"], float(s)) for p, s in zip(passages, scores)] + [("not-in-a-group", 99.0)]
    run_path = tmp_path / "teacher.run"
    write_run(run_path, run)
    by_model, by_run = tmp_path / "by_model.jsonl", tmp_path / "by_run.jsonl"
    run_cmd(["python", "tools/score_groups.py", "--model_name_or_path", str(teacher_dir), "--groups", str(few),
             "--out", str(by_model)])
    proc = run_cmd(["python", "tools/score_groups.py", "--run", str(run_path), "--groups", str(few), "--out", str(by_run)])
    n = sum(len(g["positive_passages"]) + len(g["negative_passages"]) for g in graded[:6])
    assert f"6 groups, {n} passages scored by {run_path}" in proc.stdout
    a = [json.loads(line) for line in by_model.read_text().splitlines()]
    b = [json.loads(line) for line in by_run.read_text().splitlines()]
    assert [[p["docid"] for p in g["positive_passages"] + g["negative_passages"]] for g in a] == \
           [[p["docid"] for p in g["positive_passages"] + g["negative_passages"]] for g in b]
    np.testing.assert_allclose([p["score"] for g in b for p in g["positive_passages"] + g["negative_passages"]],
                               [p["score"] for g in a for p in g["positive_passages"] + g["negative_passages"]],
                               atol=1e-5)  # 6 decimals, and batches padded apart

    # a negative of group 2 and every positive of group 4 missing from the run
    neg, pos = graded[1]["negative_passages"][0]["docid"], {p["docid"] for p in graded[3]["positive_passages"]}
    run[graded[1]["query_id"]] = [h for h in run[graded[1]["query_id"]] if h[0] != neg]
    run[graded[3]["query_id"]] = [h for h in run[graded[3]["query_id"]] if h[0] not in pos]
    write_run(run_path, run)
    out = tmp_path / "partial.jsonl"
    proc = run_cmd(["python", "tools/score_groups.py", "--run", str(run_path), "--groups", str(few), "--out", str(out)],
                   check=False)
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {few}:2: field 'negative_passages': passage {neg!r} of query {graded[1]['query_id']!r} has no score "
        f"in the run {run_path} (--missing drop leaves such passages out)")
    proc = run_cmd(["python", "tools/score_groups.py", "--run", str(run_path), "--groups", str(few), "--out", str(out),
                    "--missing", "drop"])
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["query_id"] for g in kept] == [g["query_id"] for i, g in enumerate(graded[:6]) if i != 3]
    assert neg not in {p["docid"] for p in kept[1]["negative_passages"]}
    assert f"(left out: {1 + len(pos)} passages not in the run, 1 groups left without a positive)" in proc.stdout


def test_distillation_needs_a_score_on_every_passage(tmp_path, tiny_bert_dir):
    groups = tmp_path / "g.jsonl"
    rows = [{"query_id": "q1", "query": "what is a cat",
             "positive_passages": [{"docid": "p1", "text": "a cat is an animal", "score": 2.5}],
             "negative_passages": [{"docid": "n1", "text": "dogs bark", "score": -1.0},
                                   {"docid": "n2", "text": "the sky is blue"}]}]
    groups.write_text("\n" + "".join(json.dumps(r) + "\n" for r in rows))  # the group is on line 2
    ds = TrainDataset(TrainGroupSource(files=[groups]), 3, seed=0)
    tok = CrossEncoderReranker.load(tiny_bert_dir).tokenizer
    assert ds[0]["score"][0] == 2.5 and None in ds[0]["score"]
    RerankCollator(tok, MAX_LEN)([ds[0]])  # the graded losses do not need scores
    with pytest.raises(InputError, match=rf"{groups}:2: a negative \('n2'\) has no teacher 'score'"):
        RerankCollator(tok, MAX_LEN, teacher=True)([ds[0]])


def test_score_groups_cli_errors_are_one_line(tmp_path, teacher_dir, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_groups_tool", REPO / "tools" / "score_groups.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main  # what tools/score_groups.py runs: its CLI through densir.io.cli_errors
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive_passages": [{"docid": "a", "text": "x"}]}\n{"query": 3}\n')
    for groups, message in [(tmp_path / "missing.jsonl", f"error: {tmp_path / 'missing.jsonl'}: no such train-group file"),
                            (bad, f"error: {bad}:2: field 'query': missing, or neither a string nor token ids")]:
        out = tmp_path / "out.jsonl"
        with pytest.raises(SystemExit) as exit_:
            main(["--model_name_or_path", str(teacher_dir), "--groups", str(groups), "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and err.strip().splitlines()[-1] == message, err
        assert not out.exists() and not list(tmp_path.glob("out.jsonl.tmp-*"))


# --------------------------------------------------------------------------- the train-group layout
def test_tevatron_layout_reads_as_binary_and_bad_labels_name_the_line(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"query_id": "1", "query": "q", "positive_passages": [{"docid": "p", "text": "pos"}],
                                 "negative_passages": [{"docid": f"n{j}", "text": f"neg {j}"} for j in range(3)]}) + "\n")
    item = TrainDataset(TrainGroupSource(files=[plain]), 4, seed=0)[0]
    assert item["relevance"] == [1.0, 0.0, 0.0, 0.0] and item["score"] == [None] * 4
    assert item["where"] == (str(plain), 1) and item["docids"][0] == "p"

    # a Hugging Face dataset fills labels some rows lack with None: absent, i.e. the defaults
    datasets = pytest.importorskip("datasets")
    rows = [{"query_id": "1", "query": "q", "positive_passages": [{"docid": "p", "text": "pos", "relevance": 3}],
             "negative_passages": [{"docid": "n", "text": "neg", "relevance": 1}]},
            {"query_id": "2", "query": "r", "positive_passages": [{"docid": "p2", "text": "pos", "relevance": None}],
             "negative_passages": [{"docid": "m", "text": "neg", "relevance": None}]}]
    hf = TrainDataset(TrainGroupSource(hf_dataset=datasets.Dataset.from_list(rows), hf_name="hf"), 2, seed=0)
    assert [hf[0]["relevance"], hf[1]["relevance"]] == [[3.0, 1.0], [1.0, 0.0]]

    good = {"query_id": "1", "query": "q", "positive_passages": [{"docid": "p", "text": "pos", "relevance": 2}],
            "negative_passages": [{"docid": "n", "text": "neg", "relevance": 1, "score": 0.5}]}
    cases = [
        ({"negative_passages": [{"docid": "n", "text": "neg", "relevance": "high"}]},
         r"bad.jsonl:2: field 'negative_passages': item 0 \('n'\): 'relevance' must be a finite number, got 'high'"),
        ({"negative_passages": [{"docid": "n", "text": "neg", "score": float("nan")}]},
         r"bad.jsonl:2: field 'negative_passages': item 0 \('n'\): 'score' must be a finite number"),
        ({"positive_passages": [{"docid": "p", "text": "pos", "relevance": 0}]},
         r"bad.jsonl:2: field 'positive_passages': item 0 \('p'\): a positive's 'relevance' must be > 0"),
    ]
    for change, message in cases:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, **change}) + "\n")
        with pytest.raises(InputError, match=message):
            TrainDataset(TrainGroupSource(files=[bad]), 2, seed=0)


@pytest.mark.parametrize("loss", ["margin_mse", "kl"])
def test_train_reranker_distils_from_scored_groups(loss, dl19_graded, teacher_dir, tiny_bert_dir, tmp_path):
    """python -m densir.driver.train_reranker --loss margin_mse|kl on groups scored by tools/score_groups.py:
    the trainer hands the teacher's scores to the loss, and the loss goes down."""
    _, _, graded, _ = dl19_graded
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(g) + "\n" for g in graded[:8]))
    scored = tmp_path / "scored.jsonl"
    run_cmd(["python", "tools/score_groups.py", "--model_name_or_path", str(teacher_dir), "--groups", str(few),
             "--out", str(scored)])
    out = tmp_path / "student"
    run_cmd(["python", "-m", "densir.driver.train_reranker", "--model_name_or_path", tiny_bert_dir,
             "--train_dir", str(scored), "--output_dir", str(out), "--loss", loss, "--train_n_passages",
             str(N_PASSAGES), "--max_len", str(MAX_LEN), "--per_device_train_batch_size", "4", "--max_steps", "8",
             "--learning_rate", "1e-3", "--logging_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true"])
    history = json.loads((out / "train_summary.json").read_text())["log_history"]
    losses = [h["loss"] for h in history]
    assert len(losses) == 8 and min(losses[-3:]) < losses[0]
