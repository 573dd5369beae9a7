"""The cross-encoder re-ranker: arguments, model (:class:`~densir.reranker.modeling.CrossEncoderReranker`),
losses, collator, trainer and re-ranking, as Tevatron's ``tevatron/reranker/``."""
