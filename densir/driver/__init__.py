"""The CLIs (``python -m densir.driver.<stage>``): flags in, one-line errors out, logic in the library."""
from __future__ import annotations

import sys

from densir.arguments import parse_args
from densir.checks import check_output_path
from densir.io import cli_errors, usage_errors


def train_main(argument_types: tuple, train, argv: list[str] | None = None) -> dict:
    """A training CLI: flags (or one .json file) parsed into ``argument_types``, then ``train(model_args,
    data_args, training_args)``; bad flags and library ``ParameterError`` s are one ``error:`` line."""
    from densir.training import setup_logging

    @cli_errors
    def run(argv):
        with usage_errors(argv):
            model_args, data_args, training_args = parse_args(*argument_types, argv=argv)  # ranges checked there
        check_output_path("--output_dir", training_args.output_dir, is_dir=True)  # before any model loads
        setup_logging(training_args)
        return train(model_args, data_args, training_args)

    return run(sys.argv[1:] if argv is None else list(argv))
