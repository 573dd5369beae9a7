"""Training the cross-encoder re-ranker: :class:`RerankerTrainer` and :class:`RerankCollator`.

Everything but the objective is the bi-encoder's: :class:`densir.training.DensirTrainer` (saving
through ``model.save``, resume, the ``(seed, epoch)`` sampler) and :class:`densir.dataset.TrainDataset`
(one positive + ``n-1`` negatives per query, a pure function of ``(seed, epoch, index)``). Here a
batch of ``B`` groups becomes ``B * n`` (query, passage) pairs scored jointly by the
cross-encoder, and the ``[B, n]`` logits go to one of :mod:`densir.reranker.losses`.

Validation during training (``--eval_run`` with ``--eval_queries``/``--eval_qrels``,
``--eval_strategy steps``): :class:`densir.reranker.validation.RerankValidator` behind
:meth:`RerankerTrainer.evaluate` re-ranks held-out queries' first-stage top ``--eval_depth`` as
``densir.driver.rerank`` would, and logs ``eval_nDCG@10``/``eval_MRR@10``;
``--load_best_model_at_end`` keeps the best checkpoint (on nDCG@10 unless
``--metric_for_best_model`` says otherwise).
"""
from __future__ import annotations

import torch
from torch import nn

from densir.reranker.losses import loss_target
from densir.training import DensirTrainer


class RerankerTrainer(DensirTrainer):
    """A :class:`DensirTrainer` whose loss is a re-ranking loss over each query's group of logits.

    ``validator`` (a :class:`densir.reranker.validation.RerankValidator`) is the eval set:
    :meth:`evaluate` re-ranks it with the re-ranker being trained (HF calls it every ``--eval_steps``).
    """

    def __init__(self, *args, loss_fn: nn.Module, validator=None, **kwargs):
        if validator is not None:
            kwargs["eval_dataset"] = validator
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        target = loss_target(self.loss_fn, inputs)  # relevance labels, or the teacher's scores
        scores = model(inputs["pairs"]).view(target.shape)
        loss = self.loss_fn(scores, target)
        return (loss, scores) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """With ``--grad_cache``: the batch's pairs through :func:`densir.gradcache.cached_step` in
        chunks of ``--gc_pair_chunk_size`` (any loss; the multiple-negatives loss's in-batch pairs
        are what it is for)."""
        if not getattr(self.args, "grad_cache", False):
            return super().training_step(model, inputs, num_items_in_batch)
        from densir.gradcache import cached_step, split_batch

        model.train()
        inputs = self._prepare_inputs(inputs)
        target = loss_target(self.loss_fn, inputs)
        return cached_step(split_batch(inputs["pairs"], self.args.gc_pair_chunk_size), model,
                           lambda outs: self.loss_fn(torch.cat([o[0] for o in outs]).view(target.shape), target),
                           backward=self.accelerator.backward, no_sync=lambda: self.accelerator.no_sync(model),
                           scale=1.0 / self.current_gradient_accumulation_steps)


def build_validator(data_args, training_args):
    """The :class:`densir.reranker.validation.RerankValidator` that ``--eval_run`` & co. name, or None."""
    evaluating = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    if not data_args.eval_queries:
        if evaluating:
            raise ValueError(f"--eval_strategy {training_args.eval_strategy} needs --eval_run, --eval_queries and "
                             "--eval_qrels")
        return None
    if not evaluating:
        raise ValueError("--eval_run/--eval_queries need --eval_strategy steps (and --eval_steps N) or epoch")
    from densir.reranker.validation import RerankValidator

    return RerankValidator.from_files(data_args.eval_run, data_args.eval_queries, data_args.eval_qrels,
                                      data_args.eval_corpus, depth=training_args.eval_depth,
                                      metrics=training_args.eval_metrics,
                                      batch_size=training_args.per_device_eval_batch_size)


def train(model_args, data_args, training_args, callbacks: list | None = None) -> dict:
    """Build re-ranker, data, validator and trainer from the argument dataclasses
    (:mod:`densir.reranker.arguments`) and run them through :func:`densir.training.run_training`
    (the bi-encoder's runner)."""
    from densir.dataset import TrainDataset
    from densir.formats import train_group_source
    from densir.reranker.collator import RerankCollator
    from densir.reranker.losses import build_loss_from_args, in_batch_negatives, needs_teacher
    from densir.reranker.modeling import CrossEncoderReranker
    from densir.training import run_training

    def build():
        validator = build_validator(data_args, training_args)  # bad eval files fail before the model loads
        reranker = CrossEncoderReranker.load(model_args.model_name_or_path, max_len=data_args.max_len,
                                             revision=model_args.model_revision, cache_dir=model_args.cache_dir)
        if getattr(model_args, "lora", False):
            reranker.apply_lora(model_args)
        seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
        dataset = TrainDataset(train_group_source(data_args), data_args.train_n_passages, seed=seed)
        loss_fn = build_loss_from_args(training_args)
        collator = RerankCollator(reranker.tokenizer, data_args.max_len, data_args.pad_to_multiple_of,
                                  teacher=needs_teacher(loss_fn), in_batch_negatives=in_batch_negatives(loss_fn),
                                  eos_id=reranker.eos_id)
        trainer = RerankerTrainer(model=reranker, args=training_args, train_dataset=dataset, data_collator=collator,
                                  loss_fn=loss_fn, callbacks=callbacks,
                                  validator=validator)
        return trainer, dataset

    summary = run_training(training_args, build, extra={"loss": training_args.loss}, what=training_args.loss)
    if getattr(model_args, "lora", False) and model_args.lora_merge and training_args.should_save:
        from pathlib import Path

        CrossEncoderReranker.load(training_args.output_dir).merged().save(Path(training_args.output_dir) / "merged")
    return summary
