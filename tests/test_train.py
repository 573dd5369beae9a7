"""python -m densir.driver.train with a tiny random BERT: loss goes down on real SciFact groups,
resume after a kill is exact, untied training, argument files, and 2-process torchrun."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import KilledAtStep, head_lines, kill_at, run_cmd, train_in_process
from safetensors.torch import load_file

from densir.dataset import TrainDataset
from densir.driver import train as driver
from densir.formats import TrainGroupSource
from densir.retriever.collator import TrainCollator
from densir.retriever.loss import ContrastiveLoss
from densir.retriever.modeling import DenseEncoder


def _args(model, groups, out, *extra):
    return ["--model_name_or_path", str(model), "--train_dir", str(groups), "--output_dir", str(out),
            "--pooling", "mean", "--normalize", "true", "--temperature", "0.05",
            "--q_max_len", "24", "--p_max_len", "48", "--disable_tqdm", "true", *map(str, extra)]


@pytest.fixture(scope="module")
def scifact_groups(scifact_data) -> Path:
    path = scifact_data / "train.bm25.jsonl"
    assert path.is_file(), "get_data.sh wrote no train.bm25.jsonl"
    return path


@pytest.fixture(scope="module")
def small_groups(tmp_path_factory, scifact_groups) -> Path:
    """The first 24 real SciFact groups: enough for several epochs of tiny batches."""
    return head_lines(scifact_groups, tmp_path_factory.mktemp("groups") / "small.jsonl", 24)


def _eval_loss(model_dir, groups, n=64) -> float:
    """Contrastive loss of a saved/initial encoder on fixed items (epoch 0) of the groups, eval mode."""
    enc = DenseEncoder.load(str(model_dir), pooling="mean", normalize=True).eval()
    ds = TrainDataset(TrainGroupSource(files=[groups]), train_n_passages=2, seed=1)
    collate = TrainCollator(enc.tokenizer, 24, 48)
    loss_fn, losses = ContrastiveLoss(0.05), []
    with torch.no_grad():
        for start in range(0, n, 16):
            batch = collate([ds[k] for k in range(start, start + 16)])
            losses.append(loss_fn(*enc(query=batch["query"], passage=batch["passage"])).item())
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_loss_goes_down_on_scifact_and_model_loads_everywhere(tmp_path, tiny_bert_dir, scifact_groups):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    summary = train_in_process(_args(tiny_bert_dir, scifact_groups, out, "--per_device_train_batch_size", 16,
                                     "--train_n_passages", 2, "--max_steps", 30, "--learning_rate", 1e-3,
                                     "--warmup_ratio", 0.1, "--logging_steps", 5, "--save_steps", 1000))
    assert summary["queries"] == 809 and summary["global_step"] == 30
    before, after = _eval_loss(tiny_bert_dir, scifact_groups), _eval_loss(out, scifact_groups)
    assert after < before - 0.3, (before, after)
    logged = [h["loss"] for h in summary["log_history"]]
    assert logged[-1] < logged[0], logged
    # the saved dir: densir and sentence-transformers give the same vectors
    enc = DenseEncoder.load(str(out)).eval()
    assert (enc.config.pooling, enc.config.normalize, enc.config.max_seq_length) == ("mean", True, 48)
    texts = ["vitamin d and multiple sclerosis", "0-dimensional biomaterials lack inductive properties"]
    from densir.tokenization import tokenize_batch

    with torch.no_grad():
        ours = enc.encode_passage(tokenize_batch(enc.tokenizer, texts, 48))
    st = SentenceTransformer(str(out), device="cpu").encode(texts)
    torch.testing.assert_close(torch.as_tensor(st), ours, atol=1e-5, rtol=0)
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pkl"))  # no pickled model artefacts
    assert json.loads((out / "training_args.json").read_text())["temperature"] == 0.05


@pytest.mark.slow
def test_resume_after_kill_is_exact(tmp_path, tiny_bert_dir, small_groups):
    """24 groups, batch 4: 6 steps an epoch, 10 steps. Killed at step 5 (checkpoint-4, mid epoch
    0) and again at step 9 (checkpoint-8, mid epoch 1), resumed with 'auto' each time: the final
    weights equal an uninterrupted run's. Dropout is on, so the RNG state must be restored too."""
    common = ("--per_device_train_batch_size", 4, "--train_n_passages", 3, "--max_steps", 10,
              "--save_steps", 4, "--learning_rate", 1e-3, "--logging_steps", 1)
    full = train_in_process(_args(tiny_bert_dir, small_groups, tmp_path / "full", *common))
    out = tmp_path / "killed"
    argv = _args(tiny_bert_dir, small_groups, out, *common, "--resume_from_checkpoint", "auto")
    with pytest.raises(KilledAtStep):
        train_in_process(argv, callbacks=[kill_at(5)])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    with pytest.raises(KilledAtStep):
        train_in_process(argv, callbacks=[kill_at(9)])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    resumed = train_in_process(argv)
    assert resumed["resumed_from"].endswith("checkpoint-8") and resumed["global_step"] == 10
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)
    # the per-step losses after the resume are the uninterrupted run's
    tail = {h["step"]: h["loss"] for h in resumed["log_history"]}
    ref = {h["step"]: h["loss"] for h in full["log_history"]}
    assert tail and all(tail[s] == pytest.approx(ref[s], abs=1e-6) for s in tail)
    # and training moved the weights at all (the comparison could fail)
    init = DenseEncoder.load(tiny_bert_dir).q_model.state_dict()
    assert not torch.allclose(init["embeddings.word_embeddings.weight"], a["embeddings.word_embeddings.weight"])


def test_untied_training_and_json_argument_file(tmp_path, tiny_bert_dir, small_groups, monkeypatch):
    out = tmp_path / "untied"
    argv = _args(tiny_bert_dir, small_groups, out, "--untie_encoder", "--per_device_train_batch_size", 8,
                 "--train_n_passages", 2, "--max_steps", 3, "--learning_rate", 1e-3, "--grad_cache",
                 "--gc_q_chunk_size", 3, "--gc_p_chunk_size", 5, "--query_prefix", "query: ")
    # the same flags as one .json argument file
    spec, i = {}, 0
    while i < len(argv):
        key = argv[i][2:]
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            spec[key], i = _typed(argv[i + 1]), i + 2
        else:
            spec[key], i = True, i + 1
    spec["train_dir"] = [spec["train_dir"]]
    (tmp_path / "args.json").write_text(json.dumps(spec))
    monkeypatch.setattr(sys, "argv", ["train", str(tmp_path / "args.json")])
    summary = driver.main()
    assert summary["global_step"] == 3
    enc = DenseEncoder.load(str(out))
    assert enc.config.untied and enc.config.query_prefix == "query: "
    q = enc.q_model.state_dict()["encoder.layer.0.attention.self.query.weight"]
    p = enc.p_model.state_dict()["encoder.layer.0.attention.self.query.weight"]
    assert not torch.allclose(q, p)  # the two encoders were trained apart


@pytest.mark.parametrize("grad_cache", [False, True])
def test_bf16_autocast_tracks_fp32(tmp_path, tiny_bert_dir, small_groups, grad_cache):
    """--bf16 (CPU autocast; HF needs no --use_cpu from densir users): the same run's per-step
    losses stay within a few percent of fp32, with and without grad cache."""
    extra = ("--grad_cache", "--gc_q_chunk_size", 2, "--gc_p_chunk_size", 5) if grad_cache else ()
    common = ("--per_device_train_batch_size", 4, "--train_n_passages", 3, "--max_steps", 5,
              "--learning_rate", 1e-3, "--logging_steps", 1, "--save_steps", 1000, *extra)
    fp32 = train_in_process(_args(tiny_bert_dir, small_groups, tmp_path / "fp32", *common))
    bf16 = train_in_process(_args(tiny_bert_dir, small_groups, tmp_path / "bf16", *common, "--bf16"))
    a, b = [h["loss"] for h in fp32["log_history"]], [h["loss"] for h in bf16["log_history"]]
    assert len(a) == len(b) == 5 and a != b  # autocast really ran
    assert b == pytest.approx(a, rel=0.05)


def _typed(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value, value)


KILLABLE = """
import sys
sys.path.insert(0, sys.argv[1])
from conftest import kill_at, train_in_process
step = int(sys.argv[2])
train_in_process(sys.argv[3:], callbacks=[kill_at(step)] if step else None)
"""


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_and_resume(tmp_path, small_groups, tiny_bert_nodropout_dir):
    """`torchrun --nproc_per_node 2 -m densir.driver.train --negatives_x_device` (gloo, batch 4
    per rank), killed after step 5 and resumed from checkpoint-4 (inside epoch 1: 3 steps an
    epoch), ends with the weights of ONE uninterrupted process with batch 8: same global
    batches, loss and gradients, and the data position restored on every rank. Dropout is off
    and the optimizer plain SGD, so both runs are deterministic."""
    model = tiny_bert_nodropout_dir
    common = ("--train_n_passages", 3, "--max_steps", 6, "--learning_rate", 0.5, "--optim", "sgd",
              "--lr_scheduler_type", "constant", "--save_steps", 4, "--logging_steps", 1)
    one = train_in_process(_args(model, small_groups, tmp_path / "one", "--per_device_train_batch_size", 8, *common))
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script),
                str(Path(__file__).parent)]
    argv = _args(model, small_groups, tmp_path / "two", "--per_device_train_batch_size", 4, "--negatives_x_device",
                 "--resume_from_checkpoint", "auto", *common)
    killed = run_cmd([*torchrun, "5", *argv], check=False, timeout=600)
    assert killed.returncode != 0 and "KilledAtStep" in killed.stderr
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*")) == ["checkpoint-4"]
    run_cmd([*torchrun, "0", *argv], timeout=600)

    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    init = load_file(model / "model.safetensors")
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=name)
    two = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert two["resumed_from"].endswith("checkpoint-4")
    ref = {h["step"]: h["loss"] for h in one["log_history"]}
    got = {h["step"]: h["loss"] for h in two["log_history"]}
    assert {5, 6} <= set(got) and all(got[s] == pytest.approx(ref[s], abs=1e-5) for s in got)
