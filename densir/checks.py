"""Checks every entry point runs before it reads data or loads a model.

- **Ranges.** A numeric parameter declares its range once, where it is declared: in a dataclass
  field's metadata (``field(default=1, metadata={"range": at_least(1), "help": ...})``) or as the
  ``type`` of an argparse flag (``add_argument("--depth", type=at_least(1), ...)``; the
  :class:`Range` converts the text as ``int``/``float`` would). :func:`check_ranges` (dataclasses,
  run by :func:`densir.arguments.parse_args`) and :func:`parse_checked` (argparse CLIs) check
  them all; a value out of range is a :class:`densir.io.UsageError` naming the flag and the value.
- **Outputs.** :func:`check_output_path`: the directory an output goes into exists or can be made,
  and can be written (an output under an existing file is refused before the work, not after).
- **API text.** :func:`check_text` / :func:`check_texts`: a query handed to the Python API is a
  ``str`` of encodable text (``TypeError`` / ``ValueError`` naming the parameter).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from densir.io import UsageError


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric parameter (``None``: unbounded); ``None`` values (an unset optional) pass."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False   # low itself is out of range
    high_open: bool = False  # high itself is out of range
    kind: type = float       # how argparse converts the flag's text

    def __call__(self, text: str):
        return self.kind(text)

    @property
    def __name__(self) -> str:  # argparse names the type in "invalid <type> value" messages
        return self.kind.__name__

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def check(self, flag: str, value) -> None:
        if value is not None and not self.contains(value):
            raise UsageError(f"{flag} must be {self.describe()}, got {value!r}")


def at_least(low: float, kind: type = int) -> Range:
    return Range(low=low, kind=kind)


def positive(kind: type = float) -> Range:
    """> 0."""
    return Range(low=0, low_open=True, kind=kind)


def between(low: float, high: float, kind: type = float, high_open: bool = False) -> Range:
    return Range(low=low, high=high, high_open=high_open, kind=kind)


def check_ranges(*objs: Any) -> None:
    """Check every field of the dataclass instances ``objs`` that declares a ``range``."""
    for obj in objs:
        for f in dataclasses.fields(obj):
            value_range = f.metadata.get("range")
            if value_range is not None:
                value_range.check(f"--{f.name}", getattr(obj, f.name))


def parse_checked(parser, argv=None):
    """``parser.parse_args(argv)``, then every flag whose ``type`` is a :class:`Range` checked."""
    args = parser.parse_args(argv)
    for action in parser._actions:
        if isinstance(action.type, Range):
            flag = action.option_strings[0] if action.option_strings else action.dest
            values = getattr(args, action.dest, None)
            for value in values if isinstance(values, list) else [values]:
                action.type.check(flag, value)
    return args


def check_output_path(flag: str, path, is_dir: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: its directory (``path`` itself
    with ``is_dir``) must exist as a writable directory or be creatable under one, and ``path``
    must not be a directory where a file goes (or a file where a directory goes)."""
    if path is None:
        return
    p = Path(os.path.abspath(path))
    if p.exists() and p.is_dir() != is_dir:
        raise UsageError(f"{flag} {path}: is {'a file' if is_dir else 'a directory'}, "
                         f"not {'a directory' if is_dir else 'a file'}")
    parent = p if is_dir else p.parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {parent} is not writable")


# --------------------------------------------------------------------------- the Python API
def check_text(value, name: str = "query") -> str:
    """``value`` must be a ``str`` of encodable text (no lone surrogate): else ``TypeError`` or
    ``ValueError`` naming ``name``."""
    if not isinstance(value, str):
        hint = " (decode bytes first)" if isinstance(value, (bytes, bytearray)) else ""
        raise TypeError(f"{name} must be a str, got {type(value).__name__}{hint}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not encodable text: {e.reason} at position {e.start}") from None
    return value


def check_texts(values: Iterable, name: str = "queries") -> list[str]:
    """A list of :func:`check_text` strings (a lone ``str`` or ``bytes`` is a ``TypeError``, not a
    sequence of one-character queries)."""
    if isinstance(values, (str, bytes, bytearray)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a list of str, got {type(values).__name__}")
    return [check_text(v, f"{name}[{i}]") for i, v in enumerate(values)]
