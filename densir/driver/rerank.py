"""``python -m densir.driver.rerank``: the re-ranking stage's CLI. Usage, what it reads and
writes: :mod:`densir.reranker.rerank` (its docstring is this module's).
"""
from __future__ import annotations

import logging
import sys

from densir.arguments import parse_args
from densir.checks import check_output_path
from densir.io import cli_errors, usage_errors
from densir.reranker.arguments import RerankArguments
from densir.reranker.rerank import (
    __doc__,  # noqa: E402,F401  (one docstring for the stage and its CLI)
    run_rerank,
)

__all__ = ["main", "run_rerank"]


@cli_errors
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    with usage_errors(argv):
        (args,) = parse_args(RerankArguments, argv=argv)  # ranges checked
    check_output_path("--save_ranking_to", args.save_ranking_to)
    run_rerank(args)


if __name__ == "__main__":
    main()
