"""Validation during cross-encoder training (densir.reranker.validation) on real SciFact: 12 train
queries held out (densir.holdout's split), their BM25 top 10 re-ranked every 2 steps by a tiny
cross-encoder (2-layer BERT, fresh head) trained on 24 BM25 groups of the other train queries.

- the metrics logged at a step equal ``python -m densir.driver.rerank`` + ``tools/evaluate.py``
  on the model saved at that step (1e-6): the best one (the output dir, --load_best_model_at_end)
  and the last one (its checkpoint);
- ``--load_best_model_at_end`` (nDCG@10) leaves the best checkpoint's weights in the output dir;
- ``--report_to tensorboard`` writes the metrics into an event file;
- evaluating changes nothing about training (dropout on: same weights with and without it);
- the flags are checked, and only the run's eval queries are re-ranked.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import (
    assert_best_checkpoint_kept,
    assert_eval_flags_need_a_strategy,
    assert_evaluation_left_training_alone,
    assert_tensorboard_logged,
    best_model_args,
    heldout_split,
    run_cmd,
    train_in_process,
)

from densir.reranker.arguments import RerankerDataArguments, RerankerTrainingArguments

N_HELDOUT, EVAL_DEPTH, MAX_LEN = 12, 10, 64
METRICS = ("nDCG@10", "MRR@10")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, scifact_data) -> Path:
    return heldout_split(tmp_path_factory.mktemp("scifact-heldout-rerank"), scifact_data, N_HELDOUT)


def _argv(model, heldout, out, *extra):
    return ["--model_name_or_path", str(model), "--train_dir", str(heldout / "small.jsonl"), "--output_dir", str(out),
            "--max_len", MAX_LEN, "--train_n_passages", 4, "--per_device_train_batch_size", 4, "--loss", "listwise",
            "--disable_tqdm", "true", "--logging_steps", 1, "--seed", 0,
            "--eval_run", heldout / "bm25.heldout.run", "--eval_queries", heldout / "queries.heldout.jsonl",
            "--eval_qrels", heldout / "qrels.heldout.tsv", "--eval_corpus", heldout / "corpus.jsonl",
            "--eval_depth", EVAL_DEPTH, *extra]


def _train(argv):
    return train_in_process(argv, reranker=True)


def _cli_metrics(model_dir, heldout, tmp_path, name) -> dict:
    """rerank.sh's re-ranking stage and tools/evaluate.py on a saved model."""
    run = tmp_path / f"{name}.run"
    run_cmd(["python", "-m", "densir.driver.rerank", "--model_name_or_path", str(model_dir),
             "--run", str(heldout / "bm25.heldout.run"), "--corpus", str(heldout / "corpus.jsonl"),
             "--queries", str(heldout / "queries.heldout.jsonl"), "--depth", str(EVAL_DEPTH),
             "--save_ranking_to", str(run), "--device", "cpu"])
    run_cmd(["python", "tools/evaluate.py", str(heldout / "qrels.heldout.tsv"), str(run), "--metrics", *METRICS,
             "--save", str(tmp_path / f"{name}.json")])
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_logged_metrics_equal_the_rerank_cli_and_the_best_model_is_kept(tmp_path, heldout, tiny_bert_dir):
    """6 steps at a learning rate that moves a tiny model a lot, evaluated and saved every 2 steps,
    --load_best_model_at_end: the output dir holds the best step's weights, and the re-ranking CLI
    + tools/evaluate.py on it (and on the last checkpoint) give exactly the metrics logged."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    summary = _train(_argv(tiny_bert_dir, heldout, out, "--max_steps", 6, "--learning_rate", 3e-2,
                           "--lr_scheduler_type", "constant", "--eval_strategy", "steps", "--eval_steps", 2,
                           "--save_steps", 2, "--load_best_model_at_end", "--report_to", "tensorboard"))
    evals, best_step = assert_best_checkpoint_kept(summary, out, steps=(2, 4, 6))
    for h in evals.values():
        assert {f"eval_{m}" for m in METRICS} | {"eval_runtime"} <= set(h) and 0 <= h["eval_nDCG@10"] <= 1
    assert summary["final_model_is"] == summary["best_model_checkpoint"]

    # python -m densir.driver.rerank + tools/evaluate.py on the saved model and on the last checkpoint
    for name, model_dir, step in (("best", out, best_step), ("last", out / "checkpoint-6", 6)):
        cli = _cli_metrics(model_dir, heldout, tmp_path, name)
        assert cli["queries"] == N_HELDOUT
        for m in METRICS:
            assert evals[step][f"eval_{m}"] == pytest.approx(cli[m], abs=1e-6), (name, m)

    # tensorboard: one event file with every evaluation
    assert_tensorboard_logged(out, evals, METRICS)


def test_evaluation_does_not_change_training(tmp_path, heldout, tiny_bert_dir):
    """Dropout on: 4 steps evaluated at steps 2 and 4 end with the weights of 4 steps never
    evaluated (the model goes back to train mode, no RNG is drawn)."""
    common = ("--max_steps", 4, "--learning_rate", 1e-3, "--save_strategy", "no")
    _train(_argv(tiny_bert_dir, heldout, tmp_path / "evaluated", *common, "--eval_strategy", "steps",
                 "--eval_steps", 2))
    plain = _argv(tiny_bert_dir, heldout, tmp_path / "plain", *common)
    _train(plain[:plain.index("--eval_run")] + list(common))
    assert_evaluation_left_training_alone(tmp_path / "evaluated", tmp_path / "plain", steps=(2, 4))


def test_validator_reranks_the_runs_eval_queries(heldout, scifact_data):
    from densir.io import InputError
    from densir.reranker.validation import RerankValidator

    # the whole train BM25 run: only the held-out queries are kept, each cut to the depth in file order
    v = RerankValidator.from_files(scifact_data / "bm25.train.run", heldout / "queries.heldout.jsonl",
                                   heldout / "qrels.heldout.tsv", depth=EVAL_DEPTH)
    held = [json.loads(line)["query_id"] for line in (heldout / "queries.heldout.jsonl").read_text().splitlines()]
    assert len(v) == N_HELDOUT and set(v.run) == set(held) and set(v.qrels) == set(held)
    ranks = {}
    for line in (heldout / "bm25.heldout.run").read_text().splitlines():
        qid, _, docid, rank, _, _ = line.split()
        if int(rank) <= EVAL_DEPTH:
            ranks.setdefault(qid, []).append(docid)
    assert {q: [d for d, _ in h] for q, h in v.run.items()} == ranks
    assert set(v.passages) == {d for h in ranks.values() for d in h}
    # a run of other queries is refused in words
    with pytest.raises(InputError, match="no query of"):
        RerankValidator.from_files(scifact_data / "bm25.test.run", heldout / "queries.heldout.jsonl",
                                   heldout / "qrels.heldout.tsv")


def test_flags_are_checked(tmp_path, heldout, tiny_bert_dir, capsys):
    from densir.driver.train_reranker import main

    # the library names its parameters; the CLI says the flags, in one line
    assert_eval_flags_need_a_strategy(_argv(tiny_bert_dir, heldout, tmp_path / "a", "--max_steps", 1), main,
                                      "--eval_run, --eval_queries, --eval_qrels", capsys, reranker=True)
    with pytest.raises(SystemExit):
        main([str(a) for a in _argv(tiny_bert_dir, heldout, tmp_path / "a", "--eval_depth", 0)])
    assert capsys.readouterr().err == "error: --eval_depth must be >= 1, got 0\n"
    with pytest.raises(ValueError, match="needs eval_run"):
        RerankerDataArguments(train_dir=["x"], eval_queries="q.jsonl", eval_qrels="r.tsv")
    with pytest.raises(ValueError, match="needs eval_run"):
        RerankerDataArguments(train_dir=["x"], eval_run="r.run")
    with pytest.raises(ValueError, match="bi-encoder's"):
        RerankerDataArguments(train_dir=["x"], eval_run="r.run", eval_queries="q.jsonl", eval_qrels="r.tsv",
                              eval_sample_bm25_run="b.run")
    # a range declared on the argument field (densir.checks), said under its flag, before any other check
    with pytest.raises(ValueError, match=r"^--eval_depth must be >= 1, got 0$"):
        RerankerTrainingArguments(output_dir=str(tmp_path), eval_depth=0)
    args, mrr = best_model_args(RerankerTrainingArguments, tmp_path)
    assert args.per_device_eval_batch_size == 64 and args.eval_depth == 100
    args = mrr
    # a re-ranker trainer without an eval set refuses --load_best_model_at_end in words
    from densir.losses import build_loss_from_args
    from densir.reranker.modeling import CrossEncoderReranker
    from densir.reranker.trainer import RerankerTrainer

    with pytest.raises(ValueError, match="needs validation during training"):
        RerankerTrainer(model=CrossEncoderReranker.load(tiny_bert_dir), args=args, train_dataset=[],
                        loss_fn=build_loss_from_args(args))
