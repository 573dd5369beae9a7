"""Search: FAISS indexes over embedding shards (:mod:`.faiss_index`), the reducer of shard runs
(:mod:`.shard_runs`), run fusion (:mod:`.fusion`), BM25 through pyserini (:mod:`.bm25`) and the
Python API over a built index (:mod:`.searcher`)."""
