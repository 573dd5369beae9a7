"""The re-ranker's losses (densir.losses): each against an independent computation written
here (loops over queries and pairs, float64), and against sentence-transformers' loss of the same
name on the same scores and labels (graded 0..3, with ties), to 1e-5.

sentence-transformers' cross-encoder losses take a model and (query, documents) inputs; to feed
them fixed scores, :class:`FixedLogits` is a CrossEncoder whose forward returns our logits for the
pairs it is given (looked up by the pair's names, so its mini-batching and padding of lists do
not matter). Our lists have one length, so sentence-transformers pads nothing.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from densir.losses import (
    LOSSES,
    KLDistillationLoss,
    LambdaLoss,
    ListMLELoss,
    MarginMSELoss,
    PListMLELoss,
    RankNetLoss,
    build_loss,
    build_loss_from_args,
    loss_target,
    needs_teacher,
)

# six queries of seven passages; graded labels 0..3 with ties in every row
SCORES = torch.tensor([
    [2.1, -0.3, 0.7, 1.5, -1.2, 0.0, 0.9],
    [0.2, 0.4, -0.8, 1.9, 1.1, -0.5, 0.3],
    [-1.0, 2.5, 0.6, 0.6, -0.2, 1.3, 0.1],   # tied scores
    [0.5, 0.5, 0.5, -0.7, 1.8, 0.9, -1.4],   # tied scores, three of them
    [3.0, 1.0, -2.0, 0.4, 0.8, -0.6, 2.2],
    [-0.4, -0.9, 1.7, 0.3, 0.0, 2.0, -1.6],
])
GRADES = torch.tensor([
    [3, 0, 1, 2, 0, 0, 1],
    [1, 0, 0, 3, 2, 0, 1],
    [2, 3, 0, 1, 0, 2, 0],   # tied grades across the tied scores
    [0, 2, 1, 0, 3, 1, 0],
    [3, 3, 0, 1, 2, 0, 0],
    [0, 1, 2, 0, 0, 3, 1],
], dtype=torch.float32)
SCHEMES = {"ndcg2pp": "NDCGLoss2PPScheme", "ndcg2": "NDCGLoss2Scheme", "lambdarank": "LambdaRankScheme"}


# --------------------------------------------------------------------------- independent computations
def _ranks(s) -> np.ndarray:
    """1-based rank of each passage by descending score, ties in input order."""
    order = np.argsort(-np.asarray(s, dtype=np.float64), kind="stable")
    ranks = np.empty(len(s), dtype=int)
    ranks[order] = np.arange(1, len(s) + 1)
    return ranks


def pairwise_reference(scores, labels, scheme=None, sigma=1.0, mu=10.0, k=None, reduction="query") -> float:
    """RankNet (scheme None) / LambdaLoss from the papers' formulas, one pair at a time."""
    per_query, n_pairs = [], 0
    for s, y in zip(scores.tolist(), labels.tolist()):
        n = len(s)
        rank = _ranks(s)
        top = n if k is None else min(k, n)
        ideal = sorted(y, reverse=True)
        max_dcg = sum((2 ** ideal[r] - 1) / math.log2(2 + r) for r in range(top))
        gain = [(2 ** v - 1) / max_dcg for v in y]

        def disc(r):
            return math.log2(1 + r)

        loss = 0.0
        for a in range(n):
            for b in range(n):
                if y[a] <= y[b] or (k is not None and rank[a] > k and rank[b] > k):
                    continue
                n_pairs += 1
                d_gain = abs(gain[a] - gain[b])
                rho = abs(1 / disc(rank[a]) - 1 / disc(rank[b]))
                dist = abs(rank[a] - rank[b])
                delta = abs(1 / disc(dist) - 1 / disc(dist + 1))
                w = {None: 1.0, "ndcg2": delta * d_gain, "ndcg2pp": (rho + mu * delta) * d_gain,
                     "lambdarank": rho * d_gain}[scheme]
                loss += -w * math.log2(1.0 / (1.0 + math.exp(-sigma * (s[a] - s[b]))))
        per_query.append(loss)
    return sum(per_query) / len(per_query) if reduction == "query" else sum(per_query) / n_pairs


def listmle_reference(scores, labels, position_aware=False) -> float:
    losses = []
    for s, y in zip(scores.tolist(), labels.tolist()):
        n = len(s)
        order = sorted(range(n), key=lambda i: -y[i])  # Python's sort is stable: ties keep input order
        raw = [2.0 ** (n - i) - 1 for i in range(1, n + 1)]
        w = [r / sum(raw) for r in raw] if position_aware else [1.0] * n
        loss = 0.0
        for i in range(n):
            rest = [s[order[m]] for m in range(i, n)]
            loss -= w[i] * (s[order[i]] - math.log(sum(math.exp(v) for v in rest)))
        losses.append(loss)
    return sum(losses) / len(losses)


def margin_mse_reference(student, teacher) -> float:
    sq = [((s[0] - s[j]) - (t[0] - t[j])) ** 2 for s, t in zip(student.tolist(), teacher.tolist())
          for j in range(1, len(s))]
    return sum(sq) / len(sq)


def kl_reference(student, teacher, temperature=1.0) -> float:
    total = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        p = np.exp(np.array(t) / temperature)
        p /= p.sum()
        q = np.exp(np.array(s) / temperature)
        q /= q.sum()
        total += float(np.sum(p * (np.log(p) - np.log(q))))
    return total / len(student)


# --------------------------------------------------------------------------- sentence-transformers
st_losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
from sentence_transformers.cross_encoder import CrossEncoder  # noqa: E402  after the importorskip above


class FixedLogits(CrossEncoder):
    """A CrossEncoder that scores pair (q{b}, q{b}|{i}) with ``scores[b, i]``."""

    num_labels = 1
    device = torch.device("cpu")

    def __init__(self, scores: torch.Tensor):
        nn.Module.__init__(self)  # nothing of a real model: only forward's logits are used
        self.scores = scores.float()

    def inputs(self):
        B, n = self.scores.shape
        return [[f"q{b}" for b in range(B)], [[f"q{b}|{i}" for i in range(n)] for b in range(B)]]

    def preprocess(self, pairs, prompt=None, task=None):
        return {"index": torch.tensor([[int(q[1:]), int(d.split("|")[1])] for q, d in pairs])}

    def forward(self, features):
        i = features["index"]
        return {"scores": self.scores[i[:, 0], i[:, 1]]}


def st_value(loss_cls, scores, labels, **kwargs) -> float:
    model = FixedLogits(scores)
    return float(loss_cls(model, **kwargs)(model.inputs(), list(labels)))


# --------------------------------------------------------------------------- LambdaLoss, RankNet
@pytest.mark.parametrize("weighting", LambdaLoss.SCHEMES)
@pytest.mark.parametrize("k", [None, 3])
def test_lambda_loss_is_the_paper_and_equals_sentence_transformers(weighting, k):
    ours = LambdaLoss(weighting=weighting, k=k)(SCORES, GRADES)
    assert float(ours) == pytest.approx(pairwise_reference(SCORES, GRADES, weighting, k=k), rel=1e-5)
    # sentence-transformers averages over the batch's pairs: reduction='pair'
    pair = LambdaLoss(weighting=weighting, k=k, reduction="pair")(SCORES, GRADES)
    assert float(pair) == pytest.approx(pairwise_reference(SCORES, GRADES, weighting, k=k, reduction="pair"), rel=1e-5)
    scheme = getattr(st_losses, SCHEMES[weighting])()
    theirs = st_value(st_losses.LambdaLoss, SCORES, GRADES, weighting_scheme=scheme, k=k)
    assert float(pair) == pytest.approx(theirs, abs=1e-5)


def test_lambda_loss_mu_and_sigma_equal_sentence_transformers():
    ours = LambdaLoss(mu=3.0, sigma=0.5, reduction="pair")(SCORES, GRADES)
    theirs = st_value(st_losses.LambdaLoss, SCORES, GRADES, weighting_scheme=st_losses.NDCGLoss2PPScheme(mu=3.0),
                      sigma=0.5)
    assert float(ours) == pytest.approx(theirs, abs=1e-5)
    assert float(ours) == pytest.approx(pairwise_reference(SCORES, GRADES, "ndcg2pp", sigma=0.5, mu=3.0,
                                                           reduction="pair"), rel=1e-5)


@pytest.mark.parametrize("k", [None, 2])
def test_ranknet_is_burges_and_equals_sentence_transformers(k):
    ours = RankNetLoss(k=k)(SCORES, GRADES)
    assert float(ours) == pytest.approx(pairwise_reference(SCORES, GRADES, None, k=k), rel=1e-5)
    pair = RankNetLoss(k=k, reduction="pair", sigma=2.0)(SCORES, GRADES)
    assert float(pair) == pytest.approx(st_value(st_losses.RankNetLoss, SCORES, GRADES, k=k, sigma=2.0), abs=1e-5)
    # the cross entropy of P_ij = sigmoid(s_i - s_j) against 1, in bits, for one pair
    one = RankNetLoss()(torch.tensor([[0.3, 1.0]]), torch.tensor([[1.0, 0.0]]))
    assert float(one) == pytest.approx(math.log(1 + math.exp(0.7)) / math.log(2), rel=1e-6)


def test_pairwise_losses_ignore_tied_labels_and_binary_reductions_agree():
    ties = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    s = torch.tensor([[0.1, 2.0, 1.5, -1.0]])
    # only the 4 pairs (positive, negative) count: swapping two tied passages changes nothing
    assert float(RankNetLoss()(s, ties)) == pytest.approx(pairwise_reference(s, ties), rel=1e-6)
    assert float(RankNetLoss()(s[:, [1, 0, 2, 3]], ties)) == pytest.approx(float(RankNetLoss()(s, ties)), rel=1e-6)
    assert float(RankNetLoss(reduction="pair")(s, ties)) == pytest.approx(float(RankNetLoss()(s, ties)) / 4, rel=1e-6)
    # one positive and n-1 negatives per query (densir's binary groups): the two reductions differ by n-1
    binary = torch.zeros(6, 7)
    binary[:, 0] = 1
    for w in LambdaLoss.SCHEMES:
        q, p = LambdaLoss(weighting=w)(SCORES, binary), LambdaLoss(weighting=w, reduction="pair")(SCORES, binary)
        assert float(q) == pytest.approx(6 * float(p), rel=1e-5)
    with pytest.raises(ValueError):
        LambdaLoss(reduction="sum")
    with pytest.raises(ValueError):
        RankNetLoss(k=0)


def test_lambda_loss_prefers_the_graded_order():
    s = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    graded = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    for w in LambdaLoss.SCHEMES:
        right, wrong = LambdaLoss(weighting=w)(s, graded), LambdaLoss(weighting=w)(s.flip(-1), graded)
        assert right < wrong
        # a grade-3 passage below a grade-1 one costs more than a grade-2 below a grade-1
        worse = LambdaLoss(weighting=w)(torch.tensor([[0.0, 2.0, 3.0, -1.0]]), graded)
        milder = LambdaLoss(weighting=w)(torch.tensor([[3.0, 0.0, 2.0, -1.0]]), graded)
        assert worse > milder


# --------------------------------------------------------------------------- ListMLE, PListMLE
def _presorted(scores, labels):
    """Scores and labels reordered by descending label, ties in input order (a stable sort)."""
    order = labels.argsort(dim=-1, descending=True, stable=True)
    return scores.gather(-1, order), labels.gather(-1, order)


@pytest.mark.parametrize("position_aware", [False, True])
def test_listmle_is_the_plackett_luce_likelihood_and_equals_sentence_transformers(position_aware):
    loss = PListMLELoss() if position_aware else ListMLELoss()
    ours = float(loss(SCORES, GRADES))
    assert ours == pytest.approx(listmle_reference(SCORES, GRADES, position_aware), rel=1e-5)
    st_cls = st_losses.PListMLELoss if position_aware else st_losses.ListMLELoss
    # with tied labels the permutation is ours (stable): give sentence-transformers the same one
    s_sorted, y_sorted = _presorted(SCORES, GRADES)
    assert ours == pytest.approx(st_value(st_cls, s_sorted, y_sorted, respect_input_order=True), abs=1e-5)
    # without ties, sentence-transformers' own sort by label gives the same permutation
    distinct = torch.tensor([[0, 4, 1, 6, 2, 5, 3]] * 6, dtype=torch.float32)
    assert float(loss(SCORES, distinct)) == pytest.approx(
        st_value(st_cls, SCORES, distinct, respect_input_order=False), abs=1e-5)
    # the positive-first binary groups densir trains on need no sorting at all
    binary = torch.zeros(6, 7)
    binary[:, 0] = 1
    assert float(loss(SCORES, binary)) == pytest.approx(
        st_value(st_cls, SCORES, binary, respect_input_order=True), abs=1e-5)


def test_listmle_ties_keep_input_order_and_prefer_the_right_ranking():
    y = torch.tensor([[2.0, 0.0, 0.0, 1.0]])
    s = torch.tensor([[0.5, 1.0, -1.0, 0.2]])
    # pi = (0, 3, 1, 2): the tied negatives 1 and 2 in input order
    manual = -sum(s[0, i] - torch.logsumexp(s[0, rest], 0) for i, rest in
                  [(0, [0, 3, 1, 2]), (3, [3, 1, 2]), (1, [1, 2]), (2, [2])])
    assert float(ListMLELoss()(s, y)) == pytest.approx(float(manual), rel=1e-6)
    good = torch.tensor([[3.0, 0.0, -1.0, 1.0]])
    assert ListMLELoss()(good, y) < ListMLELoss()(s, y) and PListMLELoss()(good, y) < PListMLELoss()(s, y)


def test_plistmle_weights_are_normalised_and_survive_long_lists():
    from densir.losses.listmle import position_weights

    w = position_weights(4)
    assert torch.allclose(w, torch.tensor([7.0, 3.0, 1.0, 0.0]) / 11)
    long = position_weights(300)
    assert torch.isfinite(long).all() and float(long.sum()) == pytest.approx(1.0, rel=1e-6)
    assert float(long[0]) == pytest.approx(0.5, rel=1e-6)  # 2^299 / (2^300 - 301): the top position's half
    s, y = torch.randn(2, 300), torch.randint(0, 4, (2, 300)).float()
    s_sorted, y_sorted = _presorted(s, y)
    assert float(PListMLELoss()(s, y)) == pytest.approx(
        st_value(st_losses.PListMLELoss, s_sorted, y_sorted, respect_input_order=True), abs=1e-5)


# --------------------------------------------------------------------------- distillation
TEACHER = torch.tensor([
    [4.2, -1.0, 0.3, 2.2, -3.1, 0.0, 1.1],
    [1.0, 0.5, -2.0, 3.3, 2.9, -0.7, 0.2],
    [2.4, 3.0, -1.1, 0.8, -0.4, 2.0, -0.2],
    [-0.5, 1.9, 0.6, -1.3, 2.7, 0.4, -2.2],
    [5.0, 4.1, -3.0, 0.0, 1.5, -1.0, 0.3],
    [-1.2, 0.4, 1.3, -0.6, -0.1, 2.6, 0.7],
])


def test_margin_mse_is_hofstaetter_and_equals_sentence_transformers():
    ours = float(MarginMSELoss()(SCORES, TEACHER))
    assert ours == pytest.approx(margin_mse_reference(SCORES, TEACHER), rel=1e-5)
    model = FixedLogits(SCORES)
    queries, docs = model.inputs()
    columns = [[d[i] for d in docs] for i in range(SCORES.size(1))]  # (anchor, positive, negative_1, ...)
    theirs = float(st_losses.MarginMSELoss(model)([queries] + columns, TEACHER))
    assert ours == pytest.approx(theirs, abs=1e-5)
    # only margins matter: a per-query offset of the teacher, or of the student, changes nothing
    shift = torch.arange(6.0)[:, None]
    assert float(MarginMSELoss()(SCORES + shift, TEACHER - 2 * shift)) == pytest.approx(ours, rel=1e-5)
    assert float(MarginMSELoss()(TEACHER + 1.0, TEACHER)) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_distillation_is_the_kl_of_the_softmaxes(temperature):
    ours = float(KLDistillationLoss(temperature)(SCORES, TEACHER))
    assert ours == pytest.approx(kl_reference(SCORES, TEACHER, temperature), rel=1e-5)
    # torch's own KL of the two distributions (Tevatron's kl_div with a probability target)
    p, log_q = torch.softmax(TEACHER / temperature, -1), torch.log_softmax(SCORES / temperature, -1)
    assert ours == pytest.approx(float(torch.nn.functional.kl_div(log_q, p, reduction="batchmean")), rel=1e-5)
    assert float(KLDistillationLoss(temperature)(TEACHER + 3.0, TEACHER)) == pytest.approx(0.0, abs=1e-6)
    assert ours > 0


def test_distillation_gradients_pull_the_student_to_the_teacher():
    for loss in (MarginMSELoss(), KLDistillationLoss()):
        s = SCORES.clone().requires_grad_(True)
        before = loss(s, TEACHER)
        before.backward()
        after = loss((s - 0.1 * s.grad).detach(), TEACHER)
        assert after < before


# --------------------------------------------------------------------------- registry
def test_every_loss_builds_from_its_flags_and_computes_in_float32(tmp_path, capsys):
    from densir.reranker.arguments import RerankerTrainingArguments

    expected = {"bce": "BinaryCrossEntropyLoss", "listwise": "ListwiseSoftmaxLoss", "lambda": "LambdaLoss",
                "ranknet": "RankNetLoss", "listmle": "ListMLELoss", "plistmle": "PListMLELoss",
                "margin_mse": "MarginMSELoss", "kl": "KLDistillationLoss", "mnrl": "MultipleNegativesRankingLoss"}
    assert set(LOSSES) == set(expected)
    binary = torch.zeros(6, 7)
    binary[:, 0] = 1
    batch = {"relevance": binary, "teacher": TEACHER}
    for name in LOSSES:
        loss = build_loss_from_args(RerankerTrainingArguments(output_dir=str(tmp_path), loss=name))
        assert type(loss).__name__ == expected[name]
        assert needs_teacher(loss) == needs_teacher(name) == (name in ("margin_mse", "kl"))
        target = loss_target(loss, batch)
        assert target is (TEACHER if needs_teacher(loss) else binary)
        value = loss(SCORES.bfloat16(), target)
        assert value.dtype == torch.float32 and value.dim() == 0 and torch.isfinite(value)
    args = RerankerTrainingArguments(output_dir=str(tmp_path), loss="lambda", lambda_weighting="ndcg2",
                                     lambda_k=4, pairwise_reduction="pair", lambda_mu=2.0)
    lam = build_loss_from_args(args)
    assert (lam.weighting, lam.k, lam.reduction, lam.mu) == ("ndcg2", 4, "pair", 2.0)
    rn = build_loss_from_args(RerankerTrainingArguments(output_dir=str(tmp_path), loss="ranknet", ranknet_sigma=3.0))
    assert rn.sigma == 3.0
    kl = build_loss_from_args(RerankerTrainingArguments(output_dir=str(tmp_path), loss="kl", kl_temperature=2.0))
    assert kl.temperature == 2.0
    with pytest.raises(ValueError, match="teacher=True"):
        loss_target(build_loss("kl"), {"relevance": binary})
    with pytest.raises(ValueError, match="^loss must be one of"):
        RerankerTrainingArguments(output_dir=str(tmp_path), loss="softmax")
    from densir.driver.train_reranker import main

    with pytest.raises(SystemExit):  # the CLI says the flag, in one line
        main(["--model_name_or_path", "m", "--train_dir", "x", "--output_dir", str(tmp_path), "--loss", "softmax"])
    assert capsys.readouterr().err.startswith("error: --loss must be one of (")
    with pytest.raises(ValueError, match="^pairwise_reduction must be one of"):
        RerankerTrainingArguments(output_dir=str(tmp_path), pairwise_reduction="mean")


# --------------------------------------------------------------------------- multiple negatives
class FixedPairLogits(FixedLogits):
    """A CrossEncoder that scores (query b, passage i of group j) with ``table[b, j, i]``: queries
    are scored against other groups' passages, as the multiple-negatives loss does."""

    def __init__(self, table: torch.Tensor):
        nn.Module.__init__(self)
        self.table = table.float()

    def columns(self):
        B, _, n = self.table.shape
        return [[f"q{b}" for b in range(B)]] + [[f"d{b}|{i}" for b in range(B)] for i in range(n)]

    def preprocess(self, pairs, prompt=None, task=None):
        return {"index": torch.tensor([[int(q[1:]), *map(int, d[1:].split("|"))] for q, d in pairs])}

    def forward(self, features):
        i = features["index"]
        return {"scores": self.table[i[:, 0], i[:, 1], i[:, 2]].unsqueeze(1)}  # [pairs, 1], as num_labels=1


@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_mnrl_is_cross_entropy_of_the_positive_and_equals_sentence_transformers(activation):
    """All in-batch candidates (num_negatives None): the candidate set is fixed, so the value is
    comparable to sentence-transformers' (which draws a random subset otherwise)."""
    from densir.losses import MultipleNegativesRankingLoss

    torch.manual_seed(3)
    B, n, scale = 4, 3, 7.0
    table = torch.randn(B, B, n) * 2
    # ours: each query's own group (positive first), then every passage of the other groups
    rows = torch.stack([torch.cat([table[b, b]] + [table[b, j] for j in range(B) if j != b]) for b in range(B)])
    ours = MultipleNegativesRankingLoss(num_negatives=None, scale=scale, activation=activation)(rows)
    f = torch.sigmoid if activation == "sigmoid" else (lambda x: x)
    reference = float(np.mean([-torch.log_softmax(scale * f(r), 0)[0] for r in rows]))
    assert abs(float(ours) - reference) < 1e-5
    model = FixedPairLogits(table)
    st = st_losses.MultipleNegativesRankingLoss(model, num_negatives=None, scale=scale,
                                                activation_fn=nn.Sigmoid() if activation == "sigmoid" else None)
    assert abs(float(st(model.columns(), None)) - float(ours)) < 1e-5


def test_collator_adds_in_batch_negatives_from_the_other_groups(tiny_bert_dir):
    from transformers import AutoTokenizer

    from densir.reranker.collator import RerankCollator

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    items = [{"query_id": f"q{b}", "query": f"query {b}", "passages": [f"pos {b}", f"neg {b}a", f"neg {b}b"],
              "relevance": [2.0, 0.0, 0.0]} for b in range(4)]
    batch = RerankCollator(tok, 32, in_batch_negatives=4)(items)
    assert batch["relevance"].shape == (4, 7) and batch["pairs"]["input_ids"].shape[0] == 28
    assert batch["relevance"][:, 0].tolist() == [2.0] * 4 and batch["relevance"][:, 3:].sum() == 0
    texts = tok.batch_decode(batch["pairs"]["input_ids"], skip_special_tokens=True)
    for b in range(4):
        row = texts[7 * b: 7 * b + 7]
        assert all(t.startswith(f"query {b} ") for t in row)
        assert [t.split(" ", 2)[2] for t in row[:3]] == [f"pos {b}", f"neg {b}a", f"neg {b}b"]
        extra = [t.split(" ", 2)[2] for t in row[3:]]
        assert len(set(extra)) == 4 and not any(t.endswith(f" {b}") or f" {b}a" in t or f" {b}b" in t for t in extra)
    again = RerankCollator(tok, 32, in_batch_negatives=4)(items)
    assert torch.equal(again["pairs"]["input_ids"], batch["pairs"]["input_ids"])  # the same draw for the same batch
    everything = RerankCollator(tok, 32, in_batch_negatives=None)(items)
    assert everything["relevance"].shape == (4, 3 + 9)
    with pytest.raises(ValueError, match="has only 9 other passages"):
        RerankCollator(tok, 32, in_batch_negatives=10)(items)


def test_reranker_grad_cache_gives_the_full_batch_gradients(reranker_dir):
    """The cross-encoder through densir.gradcache (chunks of 5 pairs) == one forward of every pair,
    the multiple-negatives loss over in-batch candidates: loss and every gradient, dropout on."""
    from transformers import AutoTokenizer

    from densir.gradcache import cached_step, split_batch
    from densir.losses import MultipleNegativesRankingLoss
    from densir.reranker.collator import RerankCollator
    from densir.reranker.modeling import CrossEncoderReranker

    items = [{"query_id": f"q{b}", "query": f"what is topic {b} about", "passages": [
        f"topic {b} is about {w}" for w in ("cells", "stars", "rivers")]} for b in range(5)]
    batch = RerankCollator(AutoTokenizer.from_pretrained(str(reranker_dir)), 48, in_batch_negatives=3)(items)
    loss_fn = MultipleNegativesRankingLoss(num_negatives=3)
    shape = batch["relevance"].shape

    def grads(cached):
        model = CrossEncoderReranker.load(str(reranker_dir))
        model.train()
        torch.manual_seed(7)
        if cached:
            loss = cached_step(split_batch(batch["pairs"], 5), model,
                               lambda outs: loss_fn(torch.cat([o[0] for o in outs]).view(shape), batch["relevance"]))
        else:  # the same chunks with a graph (the same dropout draws): what the cache must reproduce
            scores = torch.cat([model(c) for c in split_batch(batch["pairs"], 5)]).view(shape)
            loss = loss_fn(scores, batch["relevance"])
            loss.backward()
        return float(loss.detach()), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    (a, ga), (b, gb) = grads(True), grads(False)
    assert abs(a - b) < 1e-5 and ga.keys() == gb.keys() and len(ga) > 10
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-5, rtol=1e-4)
