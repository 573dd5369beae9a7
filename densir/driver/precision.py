"""The CLI of ``python -m densir.precision`` (the name the stage scripts call; the library module hands
over to :func:`main` when run as a script): print the precision that
:func:`densir.precision.resolve_precision` chooses, or its trainer flags, for bash."""
from __future__ import annotations

import argparse
import logging
import sys

from densir.precision import resolve_precision, training_flags

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m densir.precision``: print the resolved precision (or its trainer flags) for bash scripts."""
    parser = argparse.ArgumentParser(prog="python -m densir.precision",
                                     description="print the precision densir.precision chooses on a device "
                                                 "(fp32 | fp16 | bf16), or its trainer flags")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    parser.add_argument("--requested", default="auto", help="auto | fp32 | fp16 | bf16 (default auto)")
    parser.add_argument("--flags", action="store_true",
                        help="print the HF Trainer flags (--bf16, --fp16 or nothing) instead of the name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        precision = resolve_precision(args.requested, args.device)
    except (ValueError, RuntimeError) as e:  # RuntimeError: torch cannot parse the device string
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(" ".join(training_flags(precision)) if args.flags else precision.name)
    return 0
