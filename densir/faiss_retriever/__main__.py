"""Search stage CLI: query shard(s) x passage shard(s) -> TREC run (the search is densir.search.faiss_index).

    python -m densir.faiss_retriever --query_reps DIR/queries --passage_reps 'DIR/corpus.*' \\
        [--num_passage_shards N] --depth 1000 --save_ranking_to RUN \\
        [--index_factory Flat|HNSW32|IVF4096,PQ64] [--nprobe 64] [--use_gpu | --no_gpu] [--batch_size 128] \\
        [--fp16_storage] [--save_index NAME | --load_index NAME] [--doc_aggregation maxp|firstp]

One passage shard per job (SLURM array): ``--passage_reps DIR/corpus.3 --save_ranking_to DIR/shard.3.run``,
then merge with ``python -m densir.faiss_retriever.reducer``.

GPUs: every GPU faiss sees (or none with --no_gpu); on several GPUs each gets one slice of the passages.
faiss returns at most 2048 hits per query from a GPU and probes at most 2048 IVF cells: a --depth or
--nprobe above 2048 is searched on the CPU instead, with a warning (slower, same results).

ANN indexes (HNSW, IVF) are built per passage shard; build one once with --save_index NAME (writes
NAME.faiss + NAME.json) and let later searches over the same shard load it with --load_index NAME
(refused when NAME.json does not match the passage shard: model fingerprint, count, dim, shard index).

Chunked passage shards (encode --chunk_tokens) are searched as documents, each once under its corpus
id: scored by its best window (MaxP, the default) or, with --doc_aggregation firstp, its first window.
"""
from __future__ import annotations

import logging

from densir.checks import at_least, check_output_path, parse_checked
from densir.io import cli_errors, cli_parser
from densir.search.faiss_index import DOC_AGGREGATIONS, GPU_MAX_K, search_to_run


@cli_errors
def main(argv=None) -> None:
    parser = cli_parser("python -m densir.faiss_retriever", __doc__)
    parser.add_argument("--query_reps", required=True, help="query shard name or pattern (densir.driver.encode --encode_is_qry)")
    parser.add_argument("--passage_reps", required=True, help="passage shard name, or a pattern over names ('DIR/corpus.*')")
    parser.add_argument("--num_passage_shards", type=at_least(1), default=None,
                        help="how many shards the pattern must match (default: every shard of the encoding run)")
    parser.add_argument("--depth", type=at_least(1), default=1000,
                        help=f"hits per query (above {GPU_MAX_K}, faiss' GPU limit, the search runs on the CPU)")
    parser.add_argument("--save_ranking_to", required=True, help="TREC run to write")
    parser.add_argument("--index_factory", default=None,
                        help="FAISS factory string; Flat = exact inner product (default; with --load_index: the saved one)")
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--use_gpu", dest="use_gpu", action="store_true", default=None,
                     help="require a GPU; an error when faiss sees none (default: use every GPU faiss sees)")
    gpu.add_argument("--no_gpu", dest="use_gpu", action="store_false", help="search on CPU")
    parser.add_argument("--batch_size", type=at_least(1), default=128, help="queries per FAISS search call")
    parser.add_argument("--fp16_storage", action="store_true", help="store passage vectors in fp16 in the index")
    parser.add_argument("--nprobe", type=at_least(1), default=None,
                        help=f"IVF cells to visit (IVF factories; above {GPU_MAX_K} the search runs on the CPU)")
    saved = parser.add_mutually_exclusive_group()
    saved.add_argument("--save_index", default=None, metavar="NAME",
                       help="write the ANN index built for the passage shard to NAME.faiss + NAME.json "
                            "(with several passage shards: NAME.0, NAME.1, ...)")
    saved.add_argument("--load_index", default=None, metavar="NAME",
                       help="search the index saved by --save_index instead of building one")
    parser.add_argument("--doc_aggregation", choices=DOC_AGGREGATIONS, default="maxp",
                        help="chunked passage shards (encode --chunk_tokens): a document's score is its best window "
                             "(maxp, default) or its first (firstp); unchunked shards: no effect")
    parser.add_argument("--tag", default="densir", help="run tag (last TREC column)")
    args = parse_checked(parser, argv)
    check_output_path("--save_ranking_to", args.save_ranking_to)
    if args.save_index is not None:
        check_output_path("--save_index", args.save_index + ".faiss")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD library it tried, line by line
    n = search_to_run(args.query_reps, args.passage_reps, args.save_ranking_to, args.depth,
                      num_passage_shards=args.num_passage_shards, tag=args.tag, index_factory=args.index_factory,
                      use_gpu=args.use_gpu, batch_size=args.batch_size, fp16_storage=args.fp16_storage,
                      nprobe=args.nprobe, save_index=args.save_index, load_index=args.load_index,
                      doc_aggregation=args.doc_aggregation)
    print(f"{args.save_ranking_to}: {n} queries, depth {args.depth}")


if __name__ == "__main__":
    main()
