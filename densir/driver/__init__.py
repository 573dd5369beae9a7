"""The CLIs (``python -m densir.driver.<stage>``): flags in, one-line errors out, logic in the library."""
from __future__ import annotations

import sys

from densir.checks import check_output_path
from densir.io import cli_errors, usage_errors


def parse_stage_args(argument_types: tuple, argv: list[str] | None, output_flag: str, is_dir: bool = False) -> tuple:
    """A stage's flags (``argv``, default ``sys.argv[1:]``; or one .json file) parsed into
    ``argument_types``, every range checked, a bad flag a ``UsageError``; then the output that
    ``output_flag`` names is checked writable (a directory with ``is_dir``) before any work."""
    from densir.arguments import parse_args  # transformers' TrainingArguments: not for the light CLIs here

    argv = sys.argv[1:] if argv is None else list(argv)
    with usage_errors(argv):
        parsed = parse_args(*argument_types, argv=argv)  # ranges checked there
    dest = output_flag.removeprefix("--")
    check_output_path(output_flag, next(getattr(a, dest) for a in parsed if hasattr(a, dest)), is_dir=is_dir)
    return parsed


def train_main(argument_types: tuple, train, argv: list[str] | None = None) -> dict:
    """A training CLI: flags (or one .json file) parsed into ``argument_types``, then ``train(model_args,
    data_args, training_args)``; bad flags and library ``ParameterError`` s are one ``error:`` line."""
    from densir.training import setup_logging

    @cli_errors
    def run(argv):
        model_args, data_args, training_args = parse_stage_args(argument_types, argv, "--output_dir", is_dir=True)
        setup_logging(training_args)  # after the checks: a bad flag is one line, before any model loads
        return train(model_args, data_args, training_args)

    return run(argv)
