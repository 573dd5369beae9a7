"""Encoding stage: a corpus or queries file -> one embedding shard.

    python -m densir.driver.encode --model_name_or_path M --encode_in_path corpus.jsonl \\
        --encoded_save_path DIR/corpus [--encode_is_qry] [--shard_index i --num_shards n] \\
        [--bf16 | --fp16] [--per_device_eval_batch_size B] [--q_max_len 32] [--p_max_len 128]

Reads  ``--encode_in_path``: corpus JSONL ``{docid, title, text}`` (title and text joined by
       :func:`densir.formats.passage_text`) or, with ``--encode_is_qry``, queries JSONL
       ``{query_id, query}`` (a duplicate id is an error naming file and line).
Writes the shard ``NAME[.i][.rank<r>-of-<W>]`` = ``.npy`` + ``.ids`` + ``.json``
       (:mod:`densir.embeddings`); the ``.json`` appears last, only when the shard is complete,
       and a rerun finding it skips the work (or fails if it was made with other settings).

Sharding: record g of the input belongs to shard ``g % num_shards`` (a SLURM array runs one
shard per job). Under torchrun (one process per GPU) each process takes every W-th record of
its shard and writes its own piece; the retriever reassembles pieces and shards by name.

Memory: records are streamed ``encode_chunk_size`` at a time, sorted by length inside the chunk
(less padding), encoded in batches and written straight into the npy, so memory is bounded by
chunk + batch, never by the corpus. Rows stay in input order.

Precision: ``--precision auto|fp32|fp16|bf16`` (or the ``--fp16``/``--bf16`` flags; neither: fp32),
resolved by the one policy, :mod:`densir.precision`, and written into the shard json.
"""
from __future__ import annotations

import logging
import sys

from densir.arguments import parse_args
from densir.io import cli_errors, usage_errors
from densir.retriever.arguments import EncodeArguments, ModelArguments
from densir.retriever.encode import encode_file

__all__ = ["main", "encode_file"]

@cli_errors
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    with usage_errors(argv):
        model_args, encode_args = parse_args(ModelArguments, EncodeArguments, argv=argv)
    shard = encode_file(model_args, encode_args)
    print(f"{shard.name}: {shard.count} x {shard.dim} {shard.meta['dtype']} "
          f"({shard.meta['kind']}, max_len {shard.meta['max_len']}, {shard.meta['precision']})")


if __name__ == "__main__":
    main()
