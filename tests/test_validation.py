"""Validation during bi-encoder training (densir.validation) on real SciFact: 20 train queries held
out (tools/holdout_split.py's split), searched over a sample of the corpus (their judged passages
plus BM25 distractors), every 2 steps.

- the metrics logged for the best step equal ``python -m densir.driver.encode`` +
  ``python -m densir.faiss_retriever`` + ``tools/evaluate.py`` on the model the run saved (1e-6),
  the sample corpus being rebuilt here from the qrels and the run's rank column;
- ``--load_best_model_at_end`` (nDCG@10) leaves the best checkpoint's weights in the output dir;
- ``--report_to tensorboard`` writes the metrics into an event file;
- evaluating changes nothing about training (dropout on: same weights with and without it).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
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
from safetensors.torch import load_file

from densir.retriever.arguments import (
    DataArguments,
    DenseTrainingArguments,
)

N_HELDOUT, SAMPLE_DEPTH, Q_LEN, P_LEN = 20, 5, 24, 64
METRICS = ("nDCG@10", "MRR@10", "Recall@100")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, scifact_data) -> Path:
    return heldout_split(tmp_path_factory.mktemp("scifact-heldout"), scifact_data, N_HELDOUT)


@pytest.fixture(scope="module")
def sample_corpus(heldout) -> Path:
    """The validation sample, computed independently: qrels lines and the run's rank column."""
    queries = {json.loads(line)["query_id"] for line in _lines(heldout / "queries.heldout.jsonl")}
    keep = {line.split()[-2] for line in _lines(heldout / "qrels.heldout.tsv") if line.split()[0] in queries}
    for line in _lines(heldout / "bm25.heldout.run"):
        qid, _, docid, rank, _, _ = line.split()
        if qid in queries and int(rank) <= SAMPLE_DEPTH:
            keep.add(docid)
    out = heldout / "sample.corpus.jsonl"
    with open(heldout / "corpus.jsonl") as f, open(out, "w") as g:
        g.writelines(line for line in f if json.loads(line)["docid"] in keep)
    return out


def _lines(path) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _argv(model, heldout, out, *extra):
    return ["--model_name_or_path", str(model), "--train_dir", str(heldout / "small.jsonl"), "--output_dir", str(out),
            "--q_max_len", Q_LEN, "--p_max_len", P_LEN, "--train_n_passages", 2, "--per_device_train_batch_size", 4,
            "--temperature", 0.05, "--disable_tqdm", "true", "--logging_steps", 1,
            "--eval_queries", heldout / "queries.heldout.jsonl", "--eval_qrels", heldout / "qrels.heldout.tsv",
            "--eval_corpus", heldout / "corpus.jsonl", "--eval_sample_bm25_run", heldout / "bm25.heldout.run",
            "--eval_sample_depth", SAMPLE_DEPTH, *extra]


def test_sample_is_judged_plus_bm25_top(heldout, sample_corpus):
    from densir.validation import RetrievalValidator

    v = RetrievalValidator.from_files(heldout / "queries.heldout.jsonl", heldout / "qrels.heldout.tsv",
                                      heldout / "corpus.jsonl", sample_run=heldout / "bm25.heldout.run",
                                      sample_depth=SAMPLE_DEPTH, q_max_len=Q_LEN, p_max_len=P_LEN)
    expected = [json.loads(line)["docid"] for line in _lines(sample_corpus)]
    assert v.passage_ids == expected and len(v) == N_HELDOUT
    assert N_HELDOUT < len(expected) <= N_HELDOUT * (SAMPLE_DEPTH + 5)
    # without a run: the whole corpus beside the queries (get_data.sh's layout)
    whole = RetrievalValidator.from_files(heldout / "queries.heldout.jsonl", heldout / "qrels.heldout.tsv",
                                          q_max_len=Q_LEN, p_max_len=P_LEN)
    assert len(whole.passage_ids) == 5183


@pytest.mark.slow
def test_logged_metrics_equal_the_stage_clis_and_the_best_model_is_kept(tmp_path, heldout, sample_corpus,
                                                                        minilm_path):
    """all-MiniLM-L6-v2, 6 steps at a learning rate high enough to hurt it, evaluated and saved
    every 2 steps, --load_best_model_at_end: the output dir holds the best step's weights, and
    the stage CLIs on it give exactly the metrics logged at that step."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    summary = train_in_process(_argv(minilm_path, heldout, out, "--max_steps", 6, "--learning_rate", 2e-3,
                                     "--lr_scheduler_type", "constant", "--eval_strategy", "steps", "--eval_steps", 2,
                                     "--save_steps", 2, "--load_best_model_at_end", "--report_to", "tensorboard"))
    evals, best_step = assert_best_checkpoint_kept(summary, out, steps=(2, 4, 6))
    for h in evals.values():
        assert set(METRICS) <= {k.removeprefix("eval_") for k in h} and 0 <= h["eval_nDCG@10"] <= 1

    # the stage CLIs on the saved model, over the same passages, with the same lengths
    emb, run = tmp_path / "emb", tmp_path / "best.run"
    encode = ["python", "-m", "densir.driver.encode", "--model_name_or_path", str(out),
              "--q_max_len", str(Q_LEN), "--p_max_len", str(P_LEN)]
    run_cmd(encode + ["--encode_in_path", str(heldout / "queries.heldout.jsonl"), "--encode_is_qry",
                      "--encoded_save_path", str(emb / "queries")])
    run_cmd(encode + ["--encode_in_path", str(sample_corpus), "--encoded_save_path", str(emb / "corpus")])
    run_cmd(["python", "-m", "densir.faiss_retriever", "--query_reps", str(emb / "queries"), "--passage_reps",
             str(emb / "corpus"), "--depth", "100", "--save_ranking_to", str(run)])
    run_cmd(["python", "tools/evaluate.py", str(heldout / "qrels.heldout.tsv"), str(run),
             "--metrics", *METRICS, "--save", str(tmp_path / "best.json")])
    cli = json.loads((tmp_path / "best.json").read_text())
    for m in METRICS:
        assert evals[best_step][f"eval_{m}"] == pytest.approx(cli[m], abs=1e-6), m
    assert cli["queries"] == N_HELDOUT

    # tensorboard: one event file with every evaluation
    assert_tensorboard_logged(out, evals, ("nDCG@10",))


def test_evaluation_does_not_change_training(tmp_path, heldout, tiny_bert_dir):
    """Dropout on: 4 steps evaluated at steps 2 and 4 end with the weights of 4 steps never
    evaluated (the encoder goes back to train mode, no RNG is drawn)."""
    common = ("--max_steps", 4, "--learning_rate", 1e-3, "--save_strategy", "no", "--pooling", "mean",
              "--normalize", "true")
    train_in_process(_argv(tiny_bert_dir, heldout, tmp_path / "evaluated", *common, "--eval_strategy", "steps",
                           "--eval_steps", 2))
    plain = _argv(tiny_bert_dir, heldout, tmp_path / "plain", *common)
    train_in_process(plain[:plain.index("--eval_queries")] + list(common))
    assert_evaluation_left_training_alone(tmp_path / "evaluated", tmp_path / "plain", steps=(2, 4))


def test_flags_are_checked(tmp_path, heldout, tiny_bert_dir, capsys):
    from densir.driver.train import main

    # the library names its parameters; the CLI says the flags, in one line
    assert_eval_flags_need_a_strategy(_argv(tiny_bert_dir, heldout, tmp_path / "a", "--max_steps", 1), main,
                                      "--eval_queries, --eval_qrels", capsys)
    with pytest.raises(ValueError, match="go together"):
        DataArguments(train_dir=["x"], eval_queries="q.jsonl")
    _, args = best_model_args(DenseTrainingArguments, tmp_path)
    # a trainer without an eval set refuses --load_best_model_at_end in words
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import DenseTrainer

    with pytest.raises(ValueError, match="needs validation during training"):
        DenseTrainer(model=DenseEncoder.build(tiny_bert_dir), args=args, train_dataset=[])


@pytest.mark.slow
def test_torchrun_two_processes_validate_and_keep_the_best(tmp_path, heldout, tiny_bert_dir):
    """`torchrun --nproc_per_node 2 -m densir.driver.train` (gloo) with validation every 2 steps
    and --load_best_model_at_end: rank 0 evaluates, both ranks agree on the best checkpoint, and
    the metrics logged for it equal a fresh in-process evaluation of that checkpoint."""
    import sys

    from densir.retriever.modeling import DenseEncoder
    from densir.validation import RetrievalValidator

    out = tmp_path / "ddp"
    argv = _argv(tiny_bert_dir, heldout, out, "--pooling", "mean", "--normalize", "true", "--max_steps", 4,
                 "--learning_rate", 1e-3, "--eval_strategy", "steps", "--eval_steps", 2, "--save_steps", 2,
                 "--load_best_model_at_end")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    run_cmd([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "densir.driver.train", *map(str, argv)],
            timeout=900)
    summary = json.loads((out / "train_summary.json").read_text())
    evals = {h["step"]: h for h in summary["eval_history"]}
    assert sorted(evals) == [2, 4]
    best = summary["best_model_checkpoint"]
    step = int(best.rsplit("-", 1)[1])
    assert evals[step]["eval_nDCG@10"] == summary["best_metric"] == max(h["eval_nDCG@10"] for h in evals.values())
    final, kept = load_file(out / "model.safetensors"), load_file(Path(best) / "model.safetensors")
    assert all(torch.equal(final[k], kept[k]) for k in final)
    validator = RetrievalValidator.from_files(heldout / "queries.heldout.jsonl", heldout / "qrels.heldout.tsv",
                                              heldout / "corpus.jsonl", sample_run=heldout / "bm25.heldout.run",
                                              sample_depth=SAMPLE_DEPTH, q_max_len=Q_LEN, p_max_len=P_LEN)
    again = validator.evaluate(DenseEncoder.load(best))
    for m in METRICS:
        assert evals[step][f"eval_{m}"] == pytest.approx(again[m], abs=1e-6), m
