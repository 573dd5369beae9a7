"""File I/O shared by every stage: atomic writes, JSONL and TREC run files, input errors.

Every artefact densir writes goes through :func:`atomic_write`, so a file that exists under its
final name is complete: a crash leaves at most a ``*.tmp-*`` file behind, never a truncated
artefact that a rerun would mistake for a finished one.

Run files are TREC format, ``qid Q0 docid rank score tag``, one line per hit, ranks 1..k per
query, sorted by descending score. Ids are strings everywhere.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping, Sequence

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
        with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
            for lineno, text in enumerate(f, 1):
                parts = text.split()
                if len(parts) >= 3 and parts[0] == qid and (docid is None or parts[2] == docid):
                    line = lineno
                    break
        return cls(path, line, message, field)


class UsageError(ValueError):
    """Flags or arguments that do not go together (no input file at fault): one line, exit status 1."""


class ParameterError(UsageError):
    """A library parameter's bad value: ``ParameterError("`eval_queries` needs `eval_strategy` steps")``
    says ``eval_queries`` as ``str()``, and ``--eval_queries`` as :meth:`as_flags`, what
    :func:`cli_errors` prints (a densir flag is its parameter's name)."""

    def __init__(self, message: str):
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
      ``ValueError`` of an argument check into one);
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
    return wrapper


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
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"invalid JSON: {e.msg}") from None


# --------------------------------------------------------------------------- JSONL
def iter_jsonl(path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; bad JSON names file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(path, lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


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
def write_run(path, run: Mapping[str, Sequence[tuple[str, float]]], tag: str = "densir",
              depth: int | None = None, sort: bool = True) -> None:
    """Write a TREC run. Hits are sorted by descending score (ties by docid) unless ``sort=False``."""
    with atomic_write(path) as f:
        for qid, hits in run.items():
            write_run_hits(f, qid, hits, tag, depth, sort)


def write_run_hits(f: IO, qid: str, hits: Sequence[tuple[str, float]], tag: str = "densir",
                   depth: int | None = None, sort: bool = True) -> None:
    """Write one query's hits to an open run file (used by streaming writers)."""
    if sort:
        hits = sorted(hits, key=lambda h: (-h[1], h[0]))
    if depth is not None:
        hits = hits[:depth]
    for rank, (docid, score) in enumerate(hits, 1):
        f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")


def iter_run(path) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """Stream a TREC run query by query, as ``(qid, [(docid, score), ...])`` in file order.

    A query's lines must be contiguous (every run densir writes is); a query that reappears
    later is an error, so a streaming consumer never sees it twice.
    """
    seen: set[str] = set()
    qid, hits = None, []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InputError(path, lineno, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}")
            try:
                score = float(parts[4])
            except ValueError:
                raise InputError(path, lineno, f"not a number: {parts[4]!r}", "score") from None
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
