"""Bi-encoder training: :class:`DenseTrainer` (the objective of :mod:`densir.retriever.loss`:
contrastive, distillation or both, on :class:`densir.training.DensirTrainer`), with ``grad_cache``
the gradient cache (:func:`grad_cache_step`), and validation during training
(:class:`densir.validation.RetrievalValidator` as its ``validator``); :func:`train` runs it through
:func:`densir.training.run_training`, the re-ranker's path too.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from densir.gradcache import cached_step, split_batch
from densir.io import ParameterError
from densir.retriever.collator import TEACHER_SCORES_KEY, TrainCollator
from densir.retriever.loss import build_loss
from densir.retriever.modeling import DenseEncoder
from densir.training import DensirTrainer, run_training
from densir.validation import RetrievalValidator


class DenseTrainer(DensirTrainer):
    """Bi-encoder training with the objective of :func:`densir.retriever.loss.build_loss` (and optionally grad cache).

    Batches are ``{"query": tensors, "passage": tensors[, "scores": teacher scores]}`` from
    :class:`densir.retriever.collator.TrainCollator`. ``validator`` (a
    :class:`densir.validation.RetrievalValidator`) searches its held-out queries with the encoder
    being trained (HF evaluates every ``eval_steps``).
    """

    build_loss = staticmethod(build_loss)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Matryoshka (--matryoshka_dims): the objective at each truncated size, the sizes saved with the model
        from densir.retriever.matryoshka import MatryoshkaLoss, parse_dims, with_matryoshka

        encoder = self.accelerator.unwrap_model(self.model)
        if getattr(self.args, "matryoshka_dims", None) and not isinstance(self.loss_fn, MatryoshkaLoss):
            self.loss_fn = with_matryoshka(self.loss_fn, self.args, normalize=bool(encoder.config.normalize),
                                           hidden_size=encoder.p_model.config.hidden_size)
            encoder.config.matryoshka_dims = parse_dims(self.args.matryoshka_dims, self.args.matryoshka_weights)[0]

    @staticmethod
    def build_model(model_args, data_args):
        encoder = DenseEncoder.build(model_args.model_name_or_path, pooling=model_args.pooling,
                                     normalize=model_args.normalize, untie_encoder=model_args.untie_encoder,
                                     query_prefix=model_args.query_prefix, passage_prefix=model_args.passage_prefix,
                                     attention_dropout=model_args.attention_dropout,
                                     query_instruction=model_args.query_instruction,
                                     revision=model_args.model_revision, cache_dir=model_args.cache_dir)
        encoder.config.max_seq_length = data_args.p_max_len  # what a sentence-transformers user gets
        if model_args.append_eos is not None:
            encoder.config.append_eos = model_args.append_eos
        if model_args.bidirectional:
            encoder.set_bidirectional(True)
        if model_args.lora:
            encoder.apply_lora(model_args)  # densir.lora: only the adapter trains
        return encoder

    @staticmethod
    def build_collator(encoder, data_args, loss_fn):
        return TrainCollator(encoder.tokenizer, data_args.q_max_len, data_args.p_max_len,
                             encoder.config.query_prefix, encoder.config.passage_prefix, data_args.pad_to_multiple_of,
                             eos_id=encoder.eos_id)

    @staticmethod
    def build_validator(data_args, training_args):
        return RetrievalValidator.from_files(
            data_args.eval_queries, data_args.eval_qrels, data_args.eval_corpus,
            sample_run=data_args.eval_sample_bm25_run, sample_depth=data_args.eval_sample_depth,
            q_max_len=data_args.q_max_len, p_max_len=data_args.p_max_len, depth=training_args.eval_depth,
            metrics=training_args.eval_metrics, batch_size=training_args.per_device_eval_batch_size)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        q_reps, p_reps = model(query=inputs["query"], passage=inputs["passage"])
        loss = self.loss_fn(q_reps, p_reps, **self._loss_kwargs(inputs))
        return (loss, (q_reps, p_reps)) if return_outputs else loss

    def _loss_kwargs(self, inputs) -> dict:
        """The teacher scores, for an objective that distils; nothing otherwise."""
        if not getattr(self.loss_fn, "needs_teacher", False):
            return {}
        if TEACHER_SCORES_KEY not in inputs:
            raise ParameterError("`distill_loss` needs teacher scores in the train groups (a per-passage score); "
                                 "these groups carry none")
        return {"teacher_scores": inputs[TEACHER_SCORES_KEY]}

    def chunked_step(self, model, inputs, **step) -> torch.Tensor:
        """``grad_cache``: :func:`grad_cache_step` in chunks of ``gc_q_chunk_size`` queries and
        ``gc_p_chunk_size`` passages."""
        return grad_cache_step(model, inputs["query"], inputs["passage"], self.loss_fn, self.args.gc_q_chunk_size,
                               self.args.gc_p_chunk_size, loss_kwargs=self._loss_kwargs(inputs), **step)


def grad_cache_step(model, query: dict, passage: dict, loss_fn: Callable, q_chunk_size: int, p_chunk_size: int,
                    backward: Callable = torch.Tensor.backward, no_sync: Callable = contextlib.nullcontext,
                    scale: float = 1.0, loss_kwargs: dict | None = None) -> torch.Tensor:
    """The bi-encoder's step through the gradient cache (:func:`densir.gradcache.cached_step`): query
    and passage representations in chunks, the loss on all of them, the full batch's gradients.

    The last query chunk and the last passage chunk go through one forward call together, both
    times: under DDP that call is the sync point, and it must use every parameter (both encoders
    when untied). ``loss_kwargs`` go to ``loss_fn`` beside the representations (the teacher scores
    of a distillation loss: per query, not per chunk, so they need no splitting).
    Returns the loss (detached, times ``scale``) like ``Trainer.training_step``.
    """
    q_chunks, p_chunks = split_batch(query, q_chunk_size), split_batch(passage, p_chunk_size)
    chunks = [("q", c) for c in q_chunks[:-1]] + [("p", c) for c in p_chunks[:-1]] + \
        [("qp", (q_chunks[-1], p_chunks[-1]))]

    def forward(chunk):
        kind, x = chunk
        if kind == "q":
            return model(query=x)[0]
        if kind == "p":
            return model(passage=x)[1]
        return model(query=x[0], passage=x[1])

    def loss_on(outputs):
        q = [o[0] for (kind, _), o in zip(chunks, outputs) if kind == "q"] + [outputs[-1][0]]
        p = [o[0] for (kind, _), o in zip(chunks, outputs) if kind == "p"] + [outputs[-1][1]]
        return loss_fn(torch.cat(q), torch.cat(p), **(loss_kwargs or {}))

    return cached_step(chunks, forward, loss_on, backward=backward, no_sync=no_sync, scale=scale)


def train(model_args, data_args, training_args, callbacks: list | None = None) -> dict:
    """Train a bi-encoder from the three argument dataclasses (:mod:`densir.retriever.arguments`)
    through :func:`densir.training.run_training`; returns the run's summary."""
    return run_training(DenseTrainer, model_args, data_args, training_args, callbacks)
