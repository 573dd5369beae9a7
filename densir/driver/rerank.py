"""``python -m densir.driver.rerank``: the re-ranking stage's CLI. Usage, what it reads and
writes: :mod:`densir.reranker.rerank` (its docstring is this module's).
"""
from __future__ import annotations

import logging

from densir.driver import parse_stage_args
from densir.io import cli_errors
from densir.reranker.arguments import RerankArguments
from densir.reranker.rerank import (
    __doc__,  # noqa: E402,F401  (one docstring for the stage and its CLI)
    run_rerank,
)

__all__ = ["main", "run_rerank"]


@cli_errors
def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (args,) = parse_stage_args((RerankArguments,), argv, "--save_ranking_to")
    run_rerank(args)


if __name__ == "__main__":
    main()
