"""``python -m densir.faiss_retriever`` and ``python -m densir.faiss_retriever.reducer``: the search
stage's CLIs under Tevatron's names. The search itself is :mod:`densir.search`."""
