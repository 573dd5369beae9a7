"""The contrastive loss: its formula, cross-device negatives under a real 2-process gloo torchrun,
and grad cache, each checked against one process on the whole batch (loss and every gradient)."""
from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch
from conftest import run_cmd

from densir.retriever.loss import ContrastiveLoss


def test_loss_is_cross_entropy_over_every_passage_in_the_batch():
    torch.manual_seed(0)
    q, p = torch.randn(3, 5), torch.randn(3 * 4, 5)
    loss = ContrastiveLoss(temperature=0.1)(q, p)
    by_hand = 0.0
    for i in range(3):
        scores = [float(q[i] @ p[j]) / 0.1 for j in range(12)]
        by_hand -= scores[4 * i] - math.log(sum(math.exp(s) for s in scores))
    assert loss.item() == pytest.approx(by_hand / 3, rel=1e-5)
    with pytest.raises(ValueError, match="whole group per query"):
        ContrastiveLoss()(q, p[:-1])
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveLoss(temperature=0)


def _batch(tokenizer, n_queries=8, n_passages=3):
    """A fixed batch of varied lengths (so chunks and ranks see different padding)."""
    from densir.tokenization import tokenize_batch

    queries = [f"what is finding number {i} about " + "protein " * (i % 4) for i in range(n_queries)]
    passages = [f"passage {j} reports " + "cells and genes " * (1 + j % 5) for j in range(n_queries * n_passages)]
    return tokenize_batch(tokenizer, queries, 16), tokenize_batch(tokenizer, passages, 24)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _reference(tiny_bert_dir, untied, grad_cache=False, train=False):
    """One process, whole batch: loss and parameter gradients (grad cache optional)."""
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import grad_cache_step

    torch.manual_seed(0)
    enc = DenseEncoder.build(tiny_bert_dir, pooling="mean", normalize=True, untie_encoder=untied)
    enc.train(train)
    q, p = _batch(enc.tokenizer)
    loss_fn = ContrastiveLoss(temperature=0.1)
    if grad_cache:
        loss = grad_cache_step(enc, q, p, loss_fn, q_chunk_size=3, p_chunk_size=5)
    else:
        qr, pr = enc(query=q, passage=p)
        loss = loss_fn(qr, pr)
        loss.backward()
    return loss.item(), _grads(enc)


def _assert_same(a, b, atol=1e-5):
    (la, ga), (lb, gb) = a, b
    assert la == pytest.approx(lb, abs=atol)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=atol, rtol=1e-4, msg=name)


@pytest.mark.parametrize("untied", [False, True])
def test_grad_cache_is_exact(tiny_bert_dir, untied):
    """Dropout off: chunked grad cache == whole batch, loss and every gradient."""
    _assert_same(_reference(tiny_bert_dir, untied, grad_cache=True), _reference(tiny_bert_dir, untied))


def test_grad_cache_replays_dropout(tiny_bert_dir):
    """Dropout on: the gradient is that of the representations grad cache computed first, which
    only holds if each chunk's second forward replays the first one's RNG state."""
    from densir.gradcache import split_batch as _split
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import grad_cache_step

    def run(cached):
        torch.manual_seed(0)
        enc = DenseEncoder.build(tiny_bert_dir, pooling="mean", normalize=True)
        enc.train()
        q, p = _batch(enc.tokenizer)
        loss_fn = ContrastiveLoss(temperature=0.1)
        torch.manual_seed(1)
        if cached:
            return grad_cache_step(enc, q, p, loss_fn, 3, 5).item(), _grads(enc)
        # the same chunks in the same order, with a graph: what grad cache must reproduce
        qc, pc = _split(q, 3), _split(p, 5)
        reps_q = [enc(query=c)[0] for c in qc[:-1]]
        reps_p = [enc(passage=c)[1] for c in pc[:-1]]
        last_q, last_p = enc(query=qc[-1], passage=pc[-1])
        loss = loss_fn(torch.cat(reps_q + [last_q]), torch.cat(reps_p + [last_p]))
        loss.backward()
        return loss.item(), _grads(enc)

    cached, direct = run(True), run(False)
    _assert_same(cached, direct)
    torch.manual_seed(0)
    no_dropout = _reference(tiny_bert_dir, False)
    assert abs(cached[0] - no_dropout[0]) > 1e-4  # dropout was really on


WORKER = textwrap.dedent('''
    import sys, torch, torch.distributed as dist
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel as DDP
    sys.path.insert(0, sys.argv[3])
    from test_loss import _batch, _grads
    from densir.retriever.loss import ContrastiveLoss
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import grad_cache_step

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    for untied in (False, True):
        for cached in (False, True):
            torch.manual_seed(0)
            enc = DenseEncoder.build(sys.argv[1], pooling="mean", normalize=True, untie_encoder=untied)
            enc.eval()
            q, p = _batch(enc.tokenizer)
            nq, npg = q["input_ids"].size(0) // world, p["input_ids"].size(0) // world
            q = {k: v[rank * nq:(rank + 1) * nq] for k, v in q.items()}
            p = {k: v[rank * npg:(rank + 1) * npg] for k, v in p.items()}
            model = DDP(enc, find_unused_parameters=True)
            loss_fn = ContrastiveLoss(temperature=0.1, negatives_x_device=True)
            if cached:
                loss = grad_cache_step(model, q, p, loss_fn, 3, 5, no_sync=model.no_sync)
            else:
                qr, pr = model(query=q, passage=p)
                loss = loss_fn(qr, pr)
                loss.backward()
            loss = loss.detach().reshape(1)
            dist.all_reduce(loss)
            tag = f"{'untied' if untied else 'tied'}-{'gc' if cached else 'plain'}"
            out[tag + "/loss"] = loss / world
            out.update({f"{tag}/{n}": g.contiguous() for n, g in _grads(model.module).items()})
    if rank == 0:
        save_file(out, sys.argv[2])
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_negatives_x_device_under_torchrun_gloo_match_one_process(tmp_path, tiny_bert_dir):
    """2 gloo processes with half the batch each and --negatives_x_device == 1 process on the
    whole batch: same loss, same gradient of every parameter (1e-5), tied and untied, with and
    without grad cache."""
    from pathlib import Path

    from safetensors.torch import load_file

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun = Path(sys.executable).parent / "torchrun"
    run_cmd([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), tiny_bert_dir,
             str(tmp_path / "dist.safetensors"), str(Path(__file__).parent)], timeout=600)
    got = load_file(tmp_path / "dist.safetensors")
    for untied in (False, True):
        ref = _reference(tiny_bert_dir, untied)
        for mode in ("plain", "gc"):
            tag = f"{'untied' if untied else 'tied'}-{mode}/"
            dist_grads = {k[len(tag):]: v for k, v in got.items() if k.startswith(tag) and not k.endswith("/loss")}
            _assert_same((got[tag + "loss"].item(), dist_grads), ref)
    # a single rank without cross-device negatives would see a different loss: the test can fail
    from densir.retriever.modeling import DenseEncoder

    torch.manual_seed(0)
    enc = DenseEncoder.build(tiny_bert_dir, pooling="mean", normalize=True).eval()
    q, p = _batch(enc.tokenizer)
    half = ContrastiveLoss(0.1)(*enc(query={k: v[:4] for k, v in q.items()}, passage={k: v[:12] for k, v in p.items()}))
    assert abs(half.item() - ref[0]) > 1e-3
