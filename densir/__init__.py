"""densir: dense passage retrieval and cross-encoder re-ranking the way IR researchers run it.

The public API (everything else is internal and may move)::

    from densir import Searcher, encode_texts, load_model

    # what the pipeline built (run.sh / train_hn.sh): a round's model, shards and corpus
    searcher = Searcher.from_run_dir("runs/demo/round2")
    for hit in searcher.search("what lowers blood pressure?", k=10):
        print(hit.rank, hit.docid, hit.score, hit.title)

    # any checkpoint, by hub id or dir: a DenseEncoder ready to run
    encoder = load_model("sentence-transformers/all-MiniLM-L6-v2", "encoder")
    vectors = encode_texts(encoder, ["what lowers blood pressure?"], "query", max_len=64, batch_size=32)

Names are imported on first use, so ``import densir`` stays cheap (no torch) for the CLIs that
need none of them. The stage CLIs (``python -m densir.driver.train`` ...) and the bash stage
scripts are the other entry points; the README is the manual, its "Data formats" section the
formats' specification.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # models
    "DenseEncoder": "densir.retriever.modeling",
    "CrossEncoderReranker": "densir.reranker.modeling",
    "load_model": "densir.loading",
    "load_reranker": "densir.loading",
    "encode_texts": "densir.retriever.encode",
    # search
    "Searcher": "densir.search.searcher",
    "Hit": "densir.search.searcher",
    "ShardIndex": "densir.search.faiss_index",
    "EmbeddingShard": "densir.embeddings",
    "fuse": "densir.search.fusion",
    # evaluation and files
    "evaluate": "densir.evaluation",
    "read_run": "densir.io",
    "write_run": "densir.io",
    "read_qrels": "densir.formats",
    "read_corpus": "densir.formats",
    "read_queries": "densir.formats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'densir' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
