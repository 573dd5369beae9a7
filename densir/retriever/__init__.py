"""The bi-encoder (dense retriever): arguments, model (:class:`~densir.retriever.modeling.DenseEncoder`),
contrastive loss, collator, trainer and encoding, as Tevatron's ``tevatron/retriever/``."""
