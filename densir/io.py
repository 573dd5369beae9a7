"""File I/O shared by every stage: atomic writes, JSONL and TREC run files, input errors.

Every artefact densir writes goes through :func:`atomic_write`, so a file that exists under its
final name is complete: a crash leaves at most a ``*.tmp-*`` file behind, never a truncated
artefact that a rerun would mistake for a finished one.

Run files are TREC format, ``qid Q0 docid rank score tag``, one line per hit, ranks 1..k per
query, sorted by descending score. Ids are strings everywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping, Sequence

from densir import ranking

Run = dict  # qid -> list[(docid, score)], best first


class InputError(ValueError):
    """Bad input data, with the file, line and field at fault in the message."""

    def __init__(self, path, line: int | None, message: str, field: str | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field

    @classmethod
    def in_run(cls, path, qid: str, message: str, field: str | None = None, docid: str | None = None) -> InputError:
        """An error about query ``qid`` (or its hit ``docid``) of the TREC run ``path``, at the line of
        its first appearance (found by reading the run again: the error path only)."""
        line = None
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
            for lineno, text in enumerate(f, 1):
                parts = text.split()
                if len(parts) >= 3 and parts[0] == qid and (docid is None or parts[2] == docid):
                    line = lineno
                    break
        return cls(path, line, message, field)


class UsageError(ValueError):
    """Flags or arguments that do not go together (no input file at fault): one line, exit status 1."""


class ParameterError(UsageError):
    """A library parameter's bad value, named as the library names it, never as a flag.

    ``ParameterError("depth", "must be >= 1, got {value}")`` (one parameter: the message follows its
    name) or ``ParameterError("`eval_queries` needs `eval_strategy` steps")`` (any parameters, each
    in backticks). ``str()`` names the parameters (``depth: must be ...``); :meth:`as_flags`, what
    :func:`cli_errors` prints, names the flags of the same names (``--depth: must be ...``).
    """

    def __init__(self, param_or_message: str, message: str | None = None):
        if message is not None:
            message = f"`{param_or_message}`: " + message.format(name=f"`{param_or_message}`")
        else:
            message = param_or_message
        super().__init__(message.replace("`", ""))
        self.message = message

    def as_flags(self) -> str:
        return re.sub(r"`(\w+)`", r"--\1", self.message)


# the exceptions that mean "the input is bad", not "densir is broken" (see cli_errors)
BAD_INPUT = (InputError, UsageError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def cli_errors(main):
    """Decorate a CLI ``main``: bad input ends the process with one line on stderr and exit status 1.

    The line is ``error: <file>:<line>: field '<f>': <message>`` (file, line and field as far as
    they are known: that is :class:`InputError`'s message). Bad input is exactly:

    - :class:`InputError`: a reader or a stage found bad data and says where (readers turn a
      ``json.JSONDecodeError`` into one, naming file and line: :func:`iter_jsonl`, :func:`read_json`);
    - :class:`UsageError`: flags that do not go together (:func:`usage_errors` turns the
      ``ValueError`` of an argument check into one); a :class:`ParameterError` of the library
      is said under the flag of the same name (``use_gpu`` -> ``--use_gpu``);
    - ``FileNotFoundError``, ``IsADirectoryError``, ``NotADirectoryError``, ``PermissionError``:
      a path given on the command line that cannot be read or written as asked.

    Everything else is a bug (or the machine failing: out of memory, a dead GPU) and keeps its
    traceback, including a bare ``ValueError``/``KeyError`` and a ``json.JSONDecodeError`` that no
    reader attributed to a file: the fix for those is in the code that raised them.

    Under torchrun every rank runs ``main``; each rank that meets the error prints the same one
    line and exits 1 (the data and flags are the same on every rank, so they fail alike; a rank
    that fails alone still says why). Output files never appear on error: every writer goes
    through :func:`atomic_write` / :func:`atomic_dir` or :class:`densir.embeddings.ShardWriter`.
    """
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BAD_INPUT as e:
            print(f"error: {describe_error(e)}", file=sys.stderr, flush=True)
            sys.exit(1)
        except BrokenPipeError:
            # the reader of stdout went away (``... | head``): stop quietly, as a shell tool does;
            # stdout goes to /dev/null so the interpreter's final flush does not fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            sys.exit(141)  # 128 + SIGPIPE, what the shell reports for a tool killed by the pipe
    return wrapper


def cli_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """The argument parser of ``python -m PROG``, its ``--help`` the module docstring as written."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def describe_error(e: BaseException) -> str:
    """The one-line message for a bad-input exception (an ``OSError`` as ``<path>: <reason>``)."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, ParameterError):
        return " ".join(e.as_flags().split())
    return " ".join(str(e).split())  # one line, whatever the message held


@contextlib.contextmanager
def usage_errors(argv: Sequence[str] | None = None) -> Iterator[None]:
    """Around argument parsing and flag checks: their ``ValueError`` is a :class:`UsageError`.

    An argument check (a dataclass ``__post_init__``, ``precision_from_flags``) raises a
    ``ValueError`` (a :class:`ParameterError`, said with flags) for flags that do not go together;
    inside this block that becomes a usage error. When ``argv`` is one ``.json`` file (the
    argument file of :func:`densir.arguments.parse_args`) the error names that file (and the
    parameters as its keys), and its invalid JSON the line. An :class:`InputError` passes unchanged.
    """
    args_file = argv[0] if argv is not None and len(argv) == 1 and str(argv[0]).endswith(".json") else None
    try:
        yield
    except InputError:
        raise
    except json.JSONDecodeError as e:
        if args_file is None:
            raise
        raise InputError(args_file, e.lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:
        if args_file is not None:  # the file's keys are the parameters' names
            raise InputError(args_file, None, str(e)) from None
        raise e if isinstance(e, ParameterError) else UsageError(str(e)) from None


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit fsync and rename it to ``path``.

    On an exception the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    os.close(fd)
    kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path) -> Iterator[Path]:
    """Build a directory under a temp name; rename it to ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def read_json(path) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    text = _decode(raw, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"invalid JSON: {e.msg}") from None


# --------------------------------------------------------------------------- text lines
def iter_lines(path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line of a UTF-8 text file (``\n`` kept; a UTF-8 byte
    order mark on line 1 dropped). Bytes that are not UTF-8 are an :class:`InputError` naming file,
    line and column: the one way every densir reader of text files reads its lines. ``path`` may
    also be an open binary stream (``sys.stdin.buffer``), named by its ``name``."""
    if hasattr(path, "read"):
        yield from _decode_lines(path, getattr(path, "name", "<stream>"))
        return
    with open(path, "rb") as f:
        yield from _decode_lines(f, path)


def iter_columns(path) -> Iterator[tuple[int, list[str]]]:
    """``(line_number, columns)`` of every non-blank line of a whitespace-separated file (runs, qrels)."""
    for lineno, line in iter_lines(path):
        columns = line.split()
        if columns:
            yield lineno, columns


def parse_finite(text: str, path, lineno: int, field: str) -> float:
    """``text`` (a column) as a finite float, else an :class:`InputError` naming file, line and ``field``."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, lineno, f"not a number: {text!r}", field) from None
    if not math.isfinite(value):
        raise InputError(path, lineno, f"not a finite number: {text!r}", field)
    return value


def _decode_lines(f, path) -> Iterator[tuple[int, str]]:
    for lineno, raw in enumerate(f, 1):
        text = _decode(raw, path, lineno)
        if lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield lineno, text


def _decode(raw: bytes, path, lineno: int | None = None) -> str:
    """UTF-8 text of ``raw`` (line ``lineno`` of ``path``, or the whole file); other bytes are an
    :class:`InputError` naming file, line and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if lineno is None:
            lineno = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(path, lineno, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column}: {e.reason})") from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def parse_json_line(line: str | bytes, path, lineno: int) -> dict:
    """One JSONL record: a JSON object of encodable text. Invalid JSON, another JSON value and a
    string holding a lone surrogate (``"\\ud800"``: valid JSON, but no text can hold it, so
    tokenizers fail on it) are :class:`InputError` s naming file, line (and field)."""
    if isinstance(line, bytes):
        line = _decode(line, path, lineno)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(line):  # rare: only then walk the record
        for key, value in obj.items():
            if not _encodable(value):
                raise InputError(path, lineno, "holds a lone surrogate (\\ud800-\\udfff escape): not text", key)
    return obj


def _encodable(value) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_encodable(k) and _encodable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    return True


# --------------------------------------------------------------------------- JSONL
def iter_jsonl(path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad bytes, bad JSON, a value that
    is not an object and unencodable text name file and line (:func:`parse_json_line`)."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        yield lineno, parse_json_line(line, path, lineno)


def write_jsonl(path, records: Iterable[Mapping]) -> int:
    n = 0
    with atomic_write(path) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False))
            f.write("\n")
            n += 1
    return n


def require(obj: Mapping, field: str, path, lineno: int, kind=str):
    """Return ``obj[field]``, raising :class:`InputError` if it is missing or of the wrong type."""
    if field not in obj:
        raise InputError(path, lineno, "missing", field)
    value = obj[field]
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # numeric ids in JSON are accepted and kept as strings
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
        raise InputError(path, lineno, f"expected {expected}, got {type(value).__name__}", field)
    return value


# --------------------------------------------------------------------------- TREC runs
def write_run(path, run: Mapping[str, Sequence[tuple[str, float]]] | Iterable[tuple[str, Sequence]],
              tag: str = "densir", depth: int | None = None, sort: bool = True) -> int:
    """Write a TREC run: ``{qid: hits}``, or ``(qid, hits)`` pairs streamed; returns the number of queries.

    Args:
        path: the run file; it appears only when complete (:func:`atomic_write`).
        run: ``{qid: [(docid, score), ...]}``, or ``(qid, hits)`` pairs (streamed).
        tag: the last TREC column. depth: hits kept per query (None: all).
        sort: rank each query's hits by :func:`densir.ranking.rank` (False: they are ranked already).
    Returns:
        the number of queries written.

    Example: ``write_run("my.run", {"q1": [("d7", 0.9), ("d2", 0.4)]})``.
    """
    n = 0
    with atomic_write(path) as f:
        for qid, hits in (run.items() if isinstance(run, Mapping) else run):
            write_run_hits(f, qid, hits, tag, depth, sort)
            n += 1
    return n


def write_run_hits(f: IO, qid: str, hits: Sequence[tuple[str, float]], tag: str = "densir",
                   depth: int | None = None, sort: bool = True) -> None:
    """Write one query's hits to an open run file (used by streaming writers)."""
    if sort:
        hits = ranking.rank(hits)
    if depth is not None:
        hits = hits[:depth]
    for rank, (docid, score) in enumerate(hits, 1):
        f.write(f"{qid} Q0 {docid} {rank} {ranking.format_score(score)} {tag}\n")


def iter_run(path) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """Stream a TREC run query by query, as ``(qid, [(docid, score), ...])`` in file order.

    A query's lines must be contiguous (every run densir writes is); a query that reappears
    later is an error, so a streaming consumer never sees it twice.
    """
    seen: set[str] = set()
    qid, hits = None, []
    for lineno, parts in iter_columns(path):
        if len(parts) != 6:
            raise InputError(path, lineno, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}")
        score = parse_finite(parts[4], path, lineno, "score")
        if parts[0] != qid:
            if qid is not None:
                yield qid, hits
            if parts[0] in seen:
                raise InputError(path, lineno, f"query {parts[0]!r} appears in two separate blocks", "qid")
            qid, hits = parts[0], []
            seen.add(qid)
        hits.append((parts[2], score))
    if qid is not None:
        yield qid, hits


def read_run(path) -> dict[str, list[tuple[str, float]]]:
    """``{qid: [(docid, score), ...]}`` of a TREC run file, each query's hits in file order.

    Bad lines (fields, a score that is not a finite number, bytes that are not UTF-8) name file and
    line. Example: ``read_run("runs/demo/round2/test.run")["1"][:3]``."""
    return dict(iter_run(path))


def run_to_marco(run_path, out_path, depth=None) -> int:
    """A TREC run -> MS MARCO's ``qid<TAB>pid<TAB>rank`` (ranks 1..k by descending score, file order
    among equal scores), streamed; returns the number of queries written."""
    n = 0
    with atomic_write(out_path) as f:
        for qid, hits in iter_run(run_path):
            hits = sorted(hits, key=lambda h: -h[1])[:depth]  # stable: file order breaks ties
            for rank, (docid, _) in enumerate(hits, 1):
                f.write(f"{qid}\t{docid}\t{rank}\n")
            n += 1
    return n
