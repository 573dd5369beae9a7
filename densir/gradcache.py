"""The gradient cache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): one training step of a loss over a whole batch, computed in chunks of bounded
memory, with the full batch's gradients. densir's one mechanism, used by the bi-encoder
(:func:`densir.retriever.trainer.grad_cache_step`: query and passage representations) and by the
cross-encoder (:class:`densir.reranker.trainer.RerankerTrainer`: the logits of (query, passage)
pairs, e.g. the multiple-negatives loss's in-batch pairs).

:func:`cached_step`:

1. every chunk's outputs without a graph (the RNG state recorded per chunk);
2. the loss on those outputs, and its gradient with respect to each output;
3. per chunk: forward again with the recorded RNG state (same dropout masks, so the same outputs)
   and backpropagate ``output . grad_output`` into the parameters.

The parameter gradients equal those of the full batch (up to float rounding). Under DDP every
chunk's backward but the last runs inside ``no_sync``, so the last chunk's backward is the one
all-reduce; a caller whose chunks use different parameters (an untied bi-encoder's two encoders)
makes the last chunk one call that uses all of them.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch


def cached_step(chunks: Sequence[Any], forward: Callable[[Any], torch.Tensor | tuple], loss_fn: Callable,
                backward: Callable = torch.Tensor.backward, no_sync: Callable = contextlib.nullcontext,
                scale: float = 1.0) -> torch.Tensor:
    """Forward and backward ``loss_fn`` over all ``chunks`` as one batch, a chunk at a time.

    ``forward(chunk)`` returns a tensor or a tuple of tensors; ``loss_fn(outputs)`` gets the list
    of every chunk's outputs (each a tuple, detached float32 leaves) and returns the loss.
    ``backward`` (e.g. ``accelerator.backward``), ``no_sync`` (DDP's) and ``scale`` (1 / gradient
    accumulation steps, as HF's Trainer divides) are the trainer's. Returns the loss, detached,
    times ``scale``.
    """
    if not chunks:
        raise ValueError("grad cache: no chunks")
    states, outputs = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_RngState(_device_of(chunk)))
            outputs.append(tuple(o.detach().float().requires_grad_() for o in _as_tuple(forward(chunk))))
    with torch.enable_grad():
        loss = loss_fn(outputs) * scale
    leaves = [o for out in outputs for o in out]
    flat = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads, i = [], 0
    for out in outputs:
        grads.append(flat[i:i + len(out)])
        i += len(out)

    def replay(chunk, state, grad):
        with state.replay():
            out = _as_tuple(forward(chunk))
        terms = [(o.float() * g).sum() for o, g in zip(out, grad) if g is not None]
        backward(sum(terms) if terms else sum(o.sum() * 0.0 for o in out))

    with no_sync():  # every chunk but the last: gradients accumulate locally
        for chunk, state, grad in zip(chunks[:-1], states[:-1], grads[:-1]):
            replay(chunk, state, grad)
    replay(chunks[-1], states[-1], grads[-1])
    return loss.detach()


def split_batch(batch: dict, size: int) -> list[dict]:
    """Split a tokenized batch into chunks of ``size`` rows, each trimmed of all-padding columns."""
    if size <= 0:
        raise ValueError(f"grad cache chunk size must be > 0, got {size}")
    n = batch["input_ids"].size(0)
    chunks = []
    for start in range(0, n, size):
        chunk = {k: v[start: start + size] for k, v in batch.items() if torch.is_tensor(v)}
        used = chunk["attention_mask"].any(0).nonzero()
        width = int(used.max()) + 1 if used.numel() else 1  # right padding only; left padding keeps all
        chunks.append({k: v[:, :width] if v.dim() == 2 else v for k, v in chunk.items()})
    return chunks


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def _device_of(chunk) -> torch.device:
    if isinstance(chunk, dict):
        return chunk["input_ids"].device
    if isinstance(chunk, (tuple, list)):
        for part in chunk:
            if isinstance(part, dict):
                return part["input_ids"].device
    return torch.device("cpu")


class _RngState:
    """The RNG state before a chunk's first forward, replayed for its second (same dropout)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self):
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield
