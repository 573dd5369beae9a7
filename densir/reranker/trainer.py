"""Training the cross-encoder re-ranker: :class:`RerankerTrainer`.

Everything but the objective is the bi-encoder's: :func:`densir.training.run_training`,
:class:`densir.training.DensirTrainer` (saving, resume, the ``(seed, epoch)`` sampler, validation)
and :class:`densir.dataset.TrainDataset`. Here a batch of ``B`` groups becomes ``B * n`` (query,
passage) pairs scored jointly by the cross-encoder, and the ``[B, n]`` logits go to one of
:mod:`densir.losses`. Validation during training (``--eval_run``, ``--eval_queries``,
``--eval_qrels``, ``--eval_strategy steps``): :mod:`densir.reranker.validation`.
"""
from __future__ import annotations

import torch

from densir.gradcache import cached_step, split_batch
from densir.losses import build_loss_from_args, in_batch_negatives, loss_target, needs_teacher
from densir.reranker.collator import RerankCollator
from densir.reranker.modeling import CrossEncoderReranker
from densir.reranker.validation import RerankValidator
from densir.training import DensirTrainer, run_training


class RerankerTrainer(DensirTrainer):
    """A :class:`DensirTrainer` whose loss is a re-ranking loss over each query's group of logits.

    ``validator`` (a :class:`densir.reranker.validation.RerankValidator`) re-ranks its held-out
    queries with the re-ranker being trained (HF evaluates every ``eval_steps``).
    """

    eval_inputs = ("eval_run", "eval_queries", "eval_qrels")
    summary_fields = ("loss",)
    build_loss = staticmethod(build_loss_from_args)

    @staticmethod
    def build_model(model_args, data_args):
        reranker = CrossEncoderReranker.load(model_args.model_name_or_path, max_len=data_args.max_len,
                                             revision=model_args.model_revision, cache_dir=model_args.cache_dir)
        if model_args.lora:
            reranker.apply_lora(model_args)  # densir.lora: only the adapter trains
        return reranker

    @staticmethod
    def build_collator(reranker, data_args, loss_fn):
        return RerankCollator(reranker.tokenizer, data_args.max_len, data_args.pad_to_multiple_of,
                              teacher=needs_teacher(loss_fn), in_batch_negatives=in_batch_negatives(loss_fn),
                              eos_id=reranker.eos_id)

    @staticmethod
    def build_validator(data_args, training_args):
        return RerankValidator.from_files(data_args.eval_run, data_args.eval_queries, data_args.eval_qrels,
                                          data_args.eval_corpus, depth=training_args.eval_depth,
                                          metrics=training_args.eval_metrics,
                                          batch_size=training_args.per_device_eval_batch_size)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        target = loss_target(self.loss_fn, inputs)  # relevance labels, or the teacher's scores
        scores = model(inputs["pairs"]).view(target.shape)
        loss = self.loss_fn(scores, target)
        return (loss, scores) if return_outputs else loss

    def chunked_step(self, model, inputs, **step) -> torch.Tensor:
        """``grad_cache``: the batch's pairs through :func:`densir.gradcache.cached_step` in chunks of
        ``gc_pair_chunk_size`` (any loss; the multiple-negatives loss's in-batch pairs are what it is for)."""
        target = loss_target(self.loss_fn, inputs)
        return cached_step(split_batch(inputs["pairs"], self.args.gc_pair_chunk_size), model,
                           lambda outs: self.loss_fn(torch.cat([o[0] for o in outs]).view(target.shape), target),
                           **step)


def train(model_args, data_args, training_args, callbacks: list | None = None) -> dict:
    """Train a re-ranker from the argument dataclasses (:mod:`densir.reranker.arguments`) through
    :func:`densir.training.run_training` (the bi-encoder's path); returns the run's summary."""
    return run_training(RerankerTrainer, model_args, data_args, training_args, callbacks)
