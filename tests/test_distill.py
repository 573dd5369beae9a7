"""Distillation from teacher scores: MarginMSE and listwise KL against computations written out by
hand, their weighting with the contrastive loss, the collator's teacher-score tensor, grad cache
with a distillation loss (same loss and gradients as the whole batch), and training steps on real
SciFact groups scored by a real teacher (all-MiniLM-L6-v2) lowering the distillation loss."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from test_loss import _assert_same, _batch, _grads

from densir.losses import KLDistillationLoss
from densir.losses import MarginMSELoss as ScoreMarginMSELoss
from densir.retriever.loss import CombinedLoss, ContrastiveLoss, GroupScoreLoss, build_loss


def MarginMSELoss(temperature=1.0):  # noqa: N802  the bi-encoder's MarginMSE: the shared loss on q.p / temperature
    return GroupScoreLoss(ScoreMarginMSELoss(), temperature)


def ListwiseKLLoss(temperature=1.0, teacher_temperature=1.0):  # noqa: N802  the bi-encoder's listwise KL
    return GroupScoreLoss(KLDistillationLoss(1.0, teacher_temperature), temperature)


def _reps(n_queries=3, n_passages=4, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_queries, dim, generator=g)
    p = torch.randn(n_queries * n_passages, dim, generator=g)
    t = torch.randn(n_queries, n_passages, generator=g) * 3
    return q, p, t


def _dot(a, b):
    return sum(float(x) * float(y) for x, y in zip(a, b))


def test_margin_mse_by_hand():
    q, p, t = _reps()
    for temperature in (1.0, 0.05):
        got = MarginMSELoss(temperature)(q, p, t).item()
        total, count = 0.0, 0
        for i in range(3):
            s = [_dot(q[i], p[4 * i + j]) / temperature for j in range(4)]
            for j in range(1, 4):
                total += ((s[0] - s[j]) - (float(t[i, 0]) - float(t[i, j]))) ** 2
                count += 1
        assert got == pytest.approx(total / count, rel=1e-5)
    # the teacher's margins reproduced exactly: zero loss, whatever the absolute scores
    s = torch.stack([torch.stack([q[i] @ p[4 * i + j] for j in range(4)]) for i in range(3)])
    assert MarginMSELoss()(q, p, s + 7.0).item() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="negative"):
        MarginMSELoss()(q, p[:3], t[:, :1])
    with pytest.raises(ValueError, match="shape"):
        MarginMSELoss()(q, p, t[:, :3])


def test_listwise_kl_by_hand():
    q, p, t = _reps()
    for temperature, teacher_temperature in ((1.0, 1.0), (0.05, 2.0)):
        got = ListwiseKLLoss(temperature, teacher_temperature)(q, p, t).item()
        total = 0.0
        for i in range(3):
            s = [_dot(q[i], p[4 * i + j]) / temperature for j in range(4)]
            tt = [float(t[i, j]) / teacher_temperature for j in range(4)]
            zs, zt = sum(math.exp(x) for x in s), sum(math.exp(x) for x in tt)
            ps, pt = [math.exp(x) / zs for x in s], [math.exp(x) / zt for x in tt]
            total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
        assert got == pytest.approx(total / 3, rel=1e-5)
    # the same distribution: zero; the KL is shift-invariant in the teacher's scores
    s = torch.stack([torch.stack([q[i] @ p[4 * i + j] for j in range(4)]) for i in range(3)])
    assert ListwiseKLLoss()(q, p, s - 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_combined_loss_weights_and_distillation_alone():
    q, p, t = _reps()
    c, d = ContrastiveLoss(0.1)(q, p).item(), MarginMSELoss(0.1)(q, p, t).item()
    both = CombinedLoss(ContrastiveLoss(0.1), MarginMSELoss(0.1), contrastive_weight=0.5, distill_weight=2.0)
    assert both(q, p, t).item() == pytest.approx(0.5 * c + 2.0 * d, rel=1e-6)
    alone = CombinedLoss(ContrastiveLoss(0.1), MarginMSELoss(0.1), contrastive_weight=0.0)
    assert alone.contrastive is None and alone(q, p, t).item() == pytest.approx(d, rel=1e-6)
    with pytest.raises(ValueError, match="nothing to train"):
        CombinedLoss(ContrastiveLoss(), None, contrastive_weight=0.0)
    with pytest.raises(ValueError, match="teacher scores"):
        both(q, p)
    # what the flags build
    args = SimpleNamespace(temperature=0.1, negatives_x_device=False, distill_loss=None, contrastive_weight=1.0,
                           distill_weight=1.0, teacher_temperature=1.0)
    assert type(build_loss(args)) is ContrastiveLoss
    args.distill_loss, args.contrastive_weight, args.teacher_temperature = "kl", 0.0, 2.0
    built = build_loss(args)
    assert isinstance(built.distill.loss, KLDistillationLoss) and built.contrastive is None and built.needs_teacher
    assert built.distill.loss.teacher_temperature == 2.0 and built.distill.temperature == 0.1


def test_flags_are_checked(tmp_path):
    from densir.retriever.arguments import DenseTrainingArguments

    with pytest.raises(ValueError, match="distill_loss"):
        DenseTrainingArguments(output_dir=str(tmp_path), distill_loss="mse")
    with pytest.raises(ValueError, match="nothing to train"):
        DenseTrainingArguments(output_dir=str(tmp_path), contrastive_weight=0.0)
    args = DenseTrainingArguments(output_dir=str(tmp_path), distill_loss="margin_mse", contrastive_weight=0.0)
    assert args.distill_weight == 1.0


def test_collator_carries_teacher_scores(tiny_bert_dir):
    from transformers import AutoTokenizer

    from densir.retriever.collator import TrainCollator

    collate = TrainCollator(AutoTokenizer.from_pretrained(tiny_bert_dir), 16, 24)
    items = [{"query": "q one", "passages": ["pos", "neg a", "neg b"], "score": [3.5, 1.0, -2.0]},
             {"query": "q two", "passages": ["pos 2", "neg c", "neg d"], "score": [0.5, 0.25, 0.0]}]
    batch = collate(items)
    assert batch["teacher_scores"].dtype == torch.float32
    assert batch["teacher_scores"].tolist() == [[3.5, 1.0, -2.0], [0.5, 0.25, 0.0]]
    assert batch["passage"]["input_ids"].size(0) == 6
    # no score anywhere (a missing key, or TrainDataset's None per unscored passage): no tensor
    assert "teacher_scores" not in collate([{k: v for k, v in it.items() if k != "score"} for it in items])
    assert "teacher_scores" not in collate([dict(it, score=[None] * 3) for it in items])
    with pytest.raises(ValueError, match="3 passages in a batch carry no teacher score"):
        collate([items[0], {"query": "q", "passages": ["a", "b", "c"]}])
    with pytest.raises(ValueError, match="1 passages in a batch carry no teacher score"):
        collate([dict(items[0], score=[1.0, None, 2.0])])
    with pytest.raises(ValueError, match="2 teacher scores for 3 passages"):
        collate([dict(items[0], score=[1.0, 2.0])])


def _distill_reference(tiny_bert_dir, loss_fn, teacher, grad_cache):
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import grad_cache_step

    torch.manual_seed(0)
    enc = DenseEncoder.build(tiny_bert_dir, pooling="mean", normalize=True).eval()
    q, p = _batch(enc.tokenizer)
    if grad_cache:
        loss = grad_cache_step(enc, q, p, loss_fn, q_chunk_size=3, p_chunk_size=5,
                               loss_kwargs={"teacher_scores": teacher})
    else:
        loss = loss_fn(*enc(query=q, passage=p), teacher_scores=teacher)
        loss.backward()
    return loss.item(), _grads(enc)


@pytest.mark.parametrize("distill", ["margin_mse", "kl"])
@pytest.mark.parametrize("contrastive_weight", [0.0, 0.5])
def test_grad_cache_is_exact_with_distillation(tiny_bert_dir, distill, contrastive_weight):
    """Chunks of 3 queries / 5 passages (groups of 3 split across chunks) == the whole batch, 1e-5."""
    teacher = torch.randn(8, 3, generator=torch.Generator().manual_seed(1)) * 4
    distill_fn = MarginMSELoss(0.1) if distill == "margin_mse" else ListwiseKLLoss(0.1, 2.0)
    loss_fn = CombinedLoss(ContrastiveLoss(0.1), distill_fn, contrastive_weight, 1.5)
    cached = _distill_reference(tiny_bert_dir, loss_fn, teacher, True)
    _assert_same(cached, _distill_reference(tiny_bert_dir, loss_fn, teacher, False))
    assert cached[0] > 1e-3  # the loss is not trivially zero, so the comparison can fail


# --------------------------------------------------------------------------- training on real groups
class _ScoredItems:
    """TrainDataset items (real SciFact groups) with a teacher's score for each passage."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):  # EpochShuffleSampler hands out epoch * len + i
        return self.items[int(k) % len(self.items)]


@pytest.fixture(scope="module")
def scored_items(scifact_data, minilm_path):
    """24 real SciFact groups (1 positive + 3 BM25 negatives), scored by all-MiniLM-L6-v2 (cosine / 0.05)."""
    from densir.dataset import TrainDataset
    from densir.formats import TrainGroupSource
    from densir.retriever.modeling import DenseEncoder
    from densir.tokenization import tokenize_batch

    source = TrainGroupSource(files=[scifact_data / "train.bm25.jsonl"])
    ds = TrainDataset(source, train_n_passages=4, seed=3)
    items = [ds[k] for k in range(24)]
    teacher = DenseEncoder.load(minilm_path).eval()
    with torch.no_grad():
        q = teacher.encode_query(tokenize_batch(teacher.tokenizer, [it["query"] for it in items], 32))
        p = teacher.encode_passage(tokenize_batch(teacher.tokenizer, [x for it in items for x in it["passages"]], 96))
    scores = torch.einsum("bd,bnd->bn", q, p.view(24, 4, -1)) / 0.05
    return [dict(it, score=s.tolist()) for it, s in zip(items, scores)]


def _distill_loss_of(encoder, items, loss_fn):
    from densir.retriever.collator import TrainCollator

    batch = TrainCollator(encoder.tokenizer, 24, 48)(items)
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        loss = loss_fn(*encoder(query=batch["query"], passage=batch["passage"]), batch["teacher_scores"]).item()
    encoder.train(was)
    return loss


@pytest.mark.parametrize("distill", ["margin_mse", "kl"])
def test_training_on_teacher_scores_lowers_the_distillation_loss(tmp_path, tiny_bert_dir, scored_items, distill):
    """DenseTrainer, distillation alone (--contrastive_weight 0), 20 steps of 8 queries: the
    distillation loss on the training items falls well below where it started."""
    from densir.retriever.arguments import DenseTrainingArguments
    from densir.retriever.collator import TrainCollator
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import DenseTrainer

    args = DenseTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=20,
                                  learning_rate=1e-3, temperature=0.05, distill_loss=distill, contrastive_weight=0.0,
                                  logging_steps=5, save_strategy="no", disable_tqdm=True, seed=0)
    torch.manual_seed(0)
    encoder = DenseEncoder.build(tiny_bert_dir, pooling="mean", normalize=True)
    measure = MarginMSELoss(0.05) if distill == "margin_mse" else ListwiseKLLoss(0.05)
    before = _distill_loss_of(encoder, scored_items, measure)
    trainer = DenseTrainer(model=encoder, args=args, train_dataset=_ScoredItems(scored_items),
                           data_collator=TrainCollator(encoder.tokenizer, 24, 48))
    trainer.train()
    after = _distill_loss_of(encoder, scored_items, measure)
    assert after < 0.7 * before, (before, after)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged[-1] < logged[0], logged


def test_distillation_without_teacher_scores_is_a_clear_error(tmp_path, tiny_bert_dir, scored_items):
    from densir.retriever.arguments import DenseTrainingArguments
    from densir.retriever.collator import TrainCollator
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import DenseTrainer

    args = DenseTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1,
                                  distill_loss="kl", save_strategy="no", disable_tqdm=True)
    encoder = DenseEncoder.build(tiny_bert_dir, pooling="mean", normalize=True)
    plain = [{k: v for k, v in it.items() if k != "score"} for it in scored_items]
    trainer = DenseTrainer(model=encoder, args=args, train_dataset=_ScoredItems(plain),
                           data_collator=TrainCollator(encoder.tokenizer, 24, 48))
    with pytest.raises(ValueError, match="needs teacher scores"):
        trainer.train()


@pytest.fixture(scope="module")
def scored_groups(tmp_path_factory, scifact_data, minilm_path):
    """24 real SciFact train groups (1 positive, 3 BM25 negatives), each passage with the teacher's
    ``score`` (all-MiniLM-L6-v2, cosine / 0.05), in the train-group JSONL layout."""
    from densir.formats import passage_text, read_train_groups
    from densir.retriever.modeling import DenseEncoder
    from densir.tokenization import tokenize_batch

    groups = read_train_groups(scifact_data / "train.bm25.jsonl")[:24]
    teacher = DenseEncoder.load(minilm_path).eval()
    out = tmp_path_factory.mktemp("scored") / "scored.jsonl"
    with torch.no_grad(), open(out, "w", encoding="utf-8") as f:
        for g in groups:
            passages = g["positive_passages"][:1] + g["negative_passages"][:3]
            q = teacher.encode_query(tokenize_batch(teacher.tokenizer, [g["query"]], 32))
            p = teacher.encode_passage(tokenize_batch(teacher.tokenizer, [passage_text(x.get("title"), x["text"])
                                                                          for x in passages], 96))
            scores = (p @ q[0] / 0.05).tolist()
            for x, s in zip(passages, scores):
                x["score"] = s
            g["positive_passages"], g["negative_passages"] = passages[:1], passages[1:]
            f.write(json.dumps(g) + "\n")
    return out


@pytest.mark.slow
def test_driver_distils_from_scored_train_groups(tmp_path, tiny_bert_dir, scored_groups):
    """python -m densir.driver.train's path (train()): groups whose passages carry a teacher
    ``score`` -> TrainDataset -> TrainCollator -> MarginMSE + contrastive, with grad cache: the
    distillation loss on those groups falls."""
    from densir.arguments import parse_args
    from densir.dataset import TrainDataset
    from densir.formats import TrainGroupSource
    from densir.retriever.arguments import (
        DataArguments,
        DenseTrainingArguments,
        ModelArguments,
    )
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import train

    items = TrainDataset(TrainGroupSource(files=[scored_groups]), train_n_passages=4, seed=0)
    if items[0].get("score") is None:
        pytest.skip("densir.dataset.TrainDataset items carry no teacher 'score' yet")
    items = [items[k] for k in range(24)]
    out = tmp_path / "run"
    argv = ["--model_name_or_path", tiny_bert_dir, "--train_dir", str(scored_groups), "--output_dir", str(out),
            "--pooling", "mean", "--normalize", "true", "--temperature", "0.05", "--q_max_len", "24",
            "--p_max_len", "48", "--train_n_passages", "4", "--per_device_train_batch_size", "8",
            "--max_steps", "20", "--learning_rate", "1e-3", "--save_strategy", "no", "--disable_tqdm", "true",
            "--distill_loss", "margin_mse", "--distill_weight", "1.0", "--contrastive_weight", "0.1",
            "--grad_cache", "--gc_q_chunk_size", "3", "--gc_p_chunk_size", "10"]
    measure = MarginMSELoss(0.05)
    torch.manual_seed(0)
    before = _distill_loss_of(DenseEncoder.load(tiny_bert_dir, pooling="mean", normalize=True), items, measure)
    train(*parse_args(ModelArguments, DataArguments, DenseTrainingArguments, argv=argv))
    after = _distill_loss_of(DenseEncoder.load(str(out)), items, measure)
    assert after < 0.7 * before, (before, after)
