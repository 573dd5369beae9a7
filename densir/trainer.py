"""Trainers: :class:`DensirTrainer` (what every densir model shares) and :class:`DenseTrainer`.

:class:`DensirTrainer` is a ``transformers.Trainer`` for any model with ``save(dir)`` and
``load_weights(dir)`` (the bi-encoder here, the cross-encoder re-ranker too). It owns:

- saving: checkpoints and the final model go through ``model.save`` (safetensors + the model's
  own config; no pickled model). HF's optimizer/scheduler/RNG state files sit beside it in
  ``checkpoint-N/`` so a run can resume;
- resume: ``resume_checkpoint(output_dir, "auto")`` finds the latest complete checkpoint; HF
  restores weights (through ``load_weights``), optimizer, scheduler, RNG and step count;
- data position: the train sampler is :class:`densir.data.EpochShuffleSampler`, a function of
  ``(seed, epoch)``, and a callback tells it the epoch before each one, so after HF skips the
  batches already seen the resumed run gets exactly the batches of an uninterrupted one. A
  dataset for it maps an index ``epoch * len + i`` to its item (see :class:`densir.data.TrainDataset`).

:class:`DenseTrainer` adds the contrastive objective (:mod:`densir.loss`) and, with
``--grad_cache``, the gradient cache (:func:`grad_cache_step`).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable

import torch
from transformers import Trainer, TrainerCallback

from densir.data import EpochShuffleSampler
from densir.loss import ContrastiveLoss

logger = logging.getLogger(__name__)

TRAINING_ARGS_JSON = "training_args.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def resume_checkpoint(output_dir, resume_from_checkpoint: str | None) -> str | None:
    """``"auto"`` (or ``"true"``, HF's spelling) -> the latest complete ``checkpoint-N`` in
    ``output_dir``, None if there is none; a path -> that path, which must be a complete
    checkpoint; None/""/"false" -> None.

    A checkpoint is complete when it holds ``trainer_state.json`` (HF writes it after the model,
    optimizer and RNG files); a half-written one left by a crash is skipped with a warning.
    """
    if resume_from_checkpoint in (None, "", "false", "False", "no"):
        return None
    if str(resume_from_checkpoint).lower() not in ("auto", "true"):
        if not Path(resume_from_checkpoint, "trainer_state.json").is_file():
            raise FileNotFoundError(f"{resume_from_checkpoint}: not a complete checkpoint (no trainer_state.json)")
        return str(resume_from_checkpoint)
    found = []
    if Path(output_dir).is_dir():
        for d in Path(output_dir).iterdir():
            m = _CHECKPOINT.match(d.name)
            if m and d.is_dir():
                if (d / "trainer_state.json").is_file():
                    found.append((int(m.group(1)), d))
                else:
                    logger.warning("ignoring incomplete checkpoint %s (no trainer_state.json)", d)
    if not found:
        logger.info("--resume_from_checkpoint %s: no checkpoint in %s, starting afresh", resume_from_checkpoint,
                    output_dir)
        return None
    latest = str(max(found)[1])
    logger.info("--resume_from_checkpoint %s: resuming from %s", resume_from_checkpoint, latest)
    return latest


class _SamplerEpoch(TrainerCallback):
    """Tells the train sampler its epoch before each one (also after a resume, mid-epoch)."""

    def __init__(self, trainer: "DensirTrainer"):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        sampler = self.trainer.epoch_sampler
        if sampler is not None:
            # state.epoch is epochs done as a float: exact at an epoch boundary, and a resumed
            # run restores it from trainer_state.json, so the floor is the epoch about to run
            sampler.set_epoch(int(math.floor(state.epoch + 1e-6)))


class DensirTrainer(Trainer):
    """A ``transformers.Trainer`` for densir models; see the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # densir losses are batch means computed here, never by the model from `labels`
        self.model_accepts_loss_kwargs = False
        self.epoch_sampler: EpochShuffleSampler | None = None
        self.add_callback(_SamplerEpoch(self))
        if self.args.load_best_model_at_end:
            raise ValueError("--load_best_model_at_end is not supported by densir trainers")

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self.epoch_sampler = EpochShuffleSampler(len(dataset), seed=seed)
        return self.epoch_sampler

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        logger.info("saving model to %s", output_dir)
        self.accelerator.unwrap_model(self.model).save(output_dir)
        # JSON instead of HF's pickled training_args.bin: no artefact of ours executes code on load
        with open(os.path.join(output_dir, TRAINING_ARGS_JSON), "w") as f:
            f.write(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        logger.info("loading weights from %s", resume_from_checkpoint)
        self.accelerator.unwrap_model(model if model is not None else self.model).load_weights(resume_from_checkpoint)


class DenseTrainer(DensirTrainer):
    """Bi-encoder training with :class:`densir.loss.ContrastiveLoss` (and optionally grad cache).

    Batches are ``{"query": tensors, "passage": tensors}`` from :class:`densir.data.TrainCollator`.
    """

    def __init__(self, *args, loss_fn: ContrastiveLoss | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn or ContrastiveLoss(self.args.temperature, self.args.negatives_x_device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        q_reps, p_reps = model(query=inputs["query"], passage=inputs["passage"])
        loss = self.loss_fn(q_reps, p_reps)
        return (loss, (q_reps, p_reps)) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.args.grad_cache:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        return grad_cache_step(
            model, inputs["query"], inputs["passage"], self.loss_fn,
            self.args.gc_q_chunk_size, self.args.gc_p_chunk_size,
            backward=self.accelerator.backward,
            no_sync=lambda: self.accelerator.no_sync(model),
            # HF divides a step's loss by the accumulation steps before backward; so do we
            scale=1.0 / self.current_gradient_accumulation_steps,
        )


# --------------------------------------------------------------------------- grad cache
def grad_cache_step(model, query: dict, passage: dict, loss_fn: Callable, q_chunk_size: int, p_chunk_size: int,
                    backward: Callable = torch.Tensor.backward, no_sync: Callable = contextlib.nullcontext,
                    scale: float = 1.0) -> torch.Tensor:
    """Gradient cache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
    Limited Setup"): forward and backward the same loss as a full-batch step, in chunks.

    1. representations of every chunk without a graph (RNG state recorded per chunk);
    2. the loss on those representations, and its gradient wrt each representation;
    3. per chunk: forward again with the recorded RNG state (same dropout masks, so the same
       representations) and backpropagate ``rep . grad_rep`` into the parameters.

    The parameter gradients equal those of the full batch (up to float rounding). Under DDP all
    chunk backwards but the last run in ``no_sync``; the last forward takes the last query and the
    last passage chunk in one call, so every parameter (both encoders when untied) joins its
    all-reduce.
    Returns the loss (detached, times ``scale``) like ``Trainer.training_step``.
    """
    q_chunks, p_chunks = _split(query, q_chunk_size), _split(passage, p_chunk_size)
    # the last query chunk and the last passage chunk go through one forward call together, both
    # times: under DDP that call is the sync point, and it must use every parameter
    q_last, p_last = q_chunks.pop(), p_chunks.pop()
    states, q_reps, p_reps = [], [], []
    with torch.no_grad():
        for chunk in q_chunks:
            states.append(_RngState(chunk["input_ids"].device))
            q_reps.append(model(query=chunk)[0])
        for chunk in p_chunks:
            states.append(_RngState(chunk["input_ids"].device))
            p_reps.append(model(passage=chunk)[1])
        states.append(_RngState(q_last["input_ids"].device))
        q_rep, p_rep = model(query=q_last, passage=p_last)
        q_reps.append(q_rep)
        p_reps.append(p_rep)
    q_all = torch.cat(q_reps).detach().float().requires_grad_()
    p_all = torch.cat(p_reps).detach().float().requires_grad_()
    with torch.enable_grad():
        loss = loss_fn(q_all, p_all) * scale
    q_all_grad, p_all_grad = torch.autograd.grad(loss, [q_all, p_all])
    q_grads = q_all_grad.split([len(r) for r in q_reps])
    p_grads = p_all_grad.split([len(r) for r in p_reps])

    with no_sync():  # every chunk but the last pair: gradients accumulate locally
        for chunk, state, grad in zip(q_chunks, states, q_grads):
            with state.replay():
                rep = model(query=chunk)[0]
            backward(_dot(rep, grad))
        for chunk, state, grad in zip(p_chunks, states[len(q_chunks):], p_grads):
            with state.replay():
                rep = model(passage=chunk)[1]
            backward(_dot(rep, grad))
    with states[-1].replay():
        q_rep, p_rep = model(query=q_last, passage=p_last)
    backward(_dot(q_rep, q_grads[-1]) + _dot(p_rep, p_grads[-1]))
    return loss.detach()


def _dot(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return (rep.float() * grad).sum()


def _split(batch: dict, size: int) -> list[dict]:
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


def setup_logging(training_args) -> None:
    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, stream=sys.stderr)
    logging.getLogger("densir").setLevel(level)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
