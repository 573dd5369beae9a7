"""Training the cross-encoder re-ranker: :class:`RerankerTrainer` and :class:`RerankCollator`.

Everything but the objective is the bi-encoder's: :class:`densir.training.DensirTrainer` (saving
through ``model.save``, resume, the ``(seed, epoch)`` sampler) and :class:`densir.dataset.TrainDataset`
(one positive + ``n-1`` negatives per query, a pure function of ``(seed, epoch, index)``). Here a
batch of ``B`` groups becomes ``B * n`` (query, passage) pairs scored jointly by the
cross-encoder, and the ``[B, n]`` logits go to one of :mod:`densir.reranker.losses`.
"""
from __future__ import annotations

from torch import nn

from densir.training import DensirTrainer


class RerankerTrainer(DensirTrainer):
    """A :class:`DensirTrainer` whose loss is a re-ranking loss over each query's group of logits."""

    def __init__(self, *args, loss_fn: nn.Module, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_fn = loss_fn

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        relevance = inputs["relevance"]
        scores = model(inputs["pairs"]).view(relevance.shape)
        loss = self.loss_fn(scores, relevance)
        return (loss, scores) if return_outputs else loss


def train(model_args, data_args, training_args, callbacks: list | None = None) -> dict:
    """Build re-ranker, data and trainer from the argument dataclasses (:mod:`densir.reranker.arguments`)
    and run them through :func:`densir.training.run_training` (the bi-encoder's runner)."""
    from densir.dataset import TrainDataset
    from densir.formats import train_group_source
    from densir.reranker.collator import RerankCollator
    from densir.reranker.losses import build_loss_from_args
    from densir.reranker.modeling import CrossEncoderReranker
    from densir.training import run_training

    def build():
        reranker = CrossEncoderReranker.load(model_args.model_name_or_path, max_len=data_args.max_len,
                                             revision=model_args.model_revision, cache_dir=model_args.cache_dir)
        seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
        dataset = TrainDataset(train_group_source(data_args), data_args.train_n_passages, seed=seed)
        collator = RerankCollator(reranker.tokenizer, data_args.max_len, data_args.pad_to_multiple_of)
        trainer = RerankerTrainer(model=reranker, args=training_args, train_dataset=dataset, data_collator=collator,
                                  loss_fn=build_loss_from_args(training_args), callbacks=callbacks)
        return trainer, dataset

    return run_training(training_args, build, extra={"loss": training_args.loss}, what=training_args.loss)
