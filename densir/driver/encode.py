"""``python -m densir.driver.encode``: the encoding stage's CLI. Usage, what it reads and
writes: :mod:`densir.retriever.encode` (its docstring is this module's).
"""
from __future__ import annotations

import logging

from densir.driver import parse_stage_args
from densir.io import cli_errors
from densir.retriever.arguments import EncodeArguments, ModelArguments
from densir.retriever.encode import (
    __doc__,  # noqa: E402,F401  (one docstring for the stage and its CLI)
    encode_file,
)

__all__ = ["main", "encode_file"]

@cli_errors
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model_args, encode_args = parse_stage_args((ModelArguments, EncodeArguments), argv, "--encoded_save_path")
    shard = encode_file(model_args, encode_args)
    print(f"{shard.name}: {shard.count} x {shard.dim} {shard.meta['dtype']} "
          f"({shard.meta['kind']}, max_len {shard.meta['max_len']}, {shard.meta['precision']})")


if __name__ == "__main__":
    main()
