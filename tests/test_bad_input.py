"""Bad input and crashes, reader by reader and entry point by entry point (issue 26).

- Property-based (hypothesis): each reader (corpus, queries, train groups, runs, qrels, shard ids)
  is fed valid files with one generated bad thing at a generated line (bytes that are not UTF-8,
  invalid JSON, a value of the wrong kind, a missing field, an id with whitespace, a lone
  surrogate, a non-finite number, a duplicate id, ...): it raises one :class:`InputError` whose
  one-line message starts ``<file>:<line>:``, the line of the bad thing.
- The CLIs with such input (one row per reader), out-of-range flags and unwritable outputs are rows
  of tests/test_cli_errors.py's table (one line, non-zero exit, no traceback, no output; the range
  rows pass a model and inputs that do not exist, so the flag's error proves nothing ran first).
  ``python -m densir.search`` reads stdin here, and is cut by ``| head``.
- Crashes: an encode SIGKILLed during its shard write, and a training SIGKILLed after a
  checkpoint (process group), are rerun: outputs, leftover files and ``train_summary.json`` equal a
  clean run's; a rerun of the finished training keeps its summary; two encodes of one shard with
  different settings at once: exactly one succeeds.
- The Python API: ``Searcher.search`` refuses bytes, None, a number and a lone surrogate.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cmd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from densir.embeddings import EmbeddingShard, resolve_shards, write_shard
from densir.formats import TrainGroupSource, read_corpus, read_qrels, read_queries, read_train_groups
from densir.io import InputError, read_run

EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- generated bad things
def _invalid_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# bytes that are not UTF-8 (never a newline: the bad thing stays on its line)
BAD_BYTES = st.binary(min_size=1, max_size=6).map(lambda b: b.replace(b"\n", b"\xff")).filter(_invalid_utf8)
ID = st.text(alphabet="abcdefghij0123456789-_", min_size=1, max_size=8)
SPACE = st.sampled_from([" ", "\t", "\u00a0", "\u3000", "\r"])
LONE_SURROGATE = st.sampled_from(["\\ud800", "\\udfff", "\\uDBFF", "x\\udc00y"])
NON_FINITE = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity"])


def _with_bytes(line: bytes, bad: bytes, where: float) -> bytes:
    body = line.rstrip(b"\n")
    cut = int(where * len(body))
    return body[:cut] + bad + body[cut:] + b"\n"


def _write(lines: list, bad_index: int, bad_line, path: Path) -> int:
    """Write ``lines`` with line ``bad_index`` replaced by ``bad_line``; return its 1-based number."""
    out = []
    for i, line in enumerate(lines):
        line = bad_line if i == bad_index else line
        out.append(line if isinstance(line, bytes) else line.encode("utf-8"))
    path.write_bytes(b"".join(out))
    return bad_index + 1


def _assert_names(exc: InputError, path: Path, line: int, field: str | None = None) -> None:
    msg = str(exc)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert msg.startswith(f"{path}:{line}: "), (msg, line)
    if field is not None:
        assert f"field '{field}'" in msg, msg


def _jsonl(obj) -> str:
    return json.dumps(obj) + "\n"


def _corpus_lines(n: int) -> list[str]:
    return [_jsonl({"docid": f"d{i}", "title": f"T{i}", "text": f"passage {i}"}) for i in range(n)]


def _query_lines(n: int) -> list[str]:
    return [_jsonl({"query_id": f"q{i}", "query": f"query {i}"}) for i in range(n)]


def _group(i: int, **change) -> dict:
    g = {"query_id": f"q{i}", "query": f"query {i}", "positive_passages": [{"docid": f"d{i}", "text": "pos"}],
         "negative_passages": [{"docid": f"d{i + 1}", "text": "neg"}]}
    g.update(change)
    return g


def _bad_jsonl_record(kind: str, i: int, data, id_field: str, text_field: str, make) -> tuple[str, str | None]:
    """One bad JSONL line of kind ``kind`` (the record ``make(i)`` spoilt) and the field it names."""
    good = make(i)
    if kind == "invalid-json":
        line = json.dumps(good)
        return line[:data.draw(st.integers(1, len(line) - 1))] + "\n", None
    if kind == "not-an-object":
        return data.draw(st.sampled_from(["[1, 2]\n", '"text"\n', "3\n", "null\n"])), None
    if kind == "missing-field":
        field = data.draw(st.sampled_from([id_field, text_field]))
        del good[field]
        return _jsonl(good), field
    if kind == "wrong-type":
        good[text_field] = data.draw(st.sampled_from([None, {"a": 1}, True]))
        return _jsonl(good), text_field
    if kind == "id-whitespace":
        value = data.draw(ID)
        cut = data.draw(st.integers(0, len(value)))
        good[id_field] = value[:cut] + data.draw(SPACE) + value[cut:]
        return _jsonl(good), id_field
    if kind == "empty-id":
        good[id_field] = ""
        return _jsonl(good), id_field
    if kind == "lone-surrogate":
        return json.dumps(good).replace(f'"{good[text_field]}"', f'"{data.draw(LONE_SURROGATE)}"') + "\n", text_field
    if kind == "duplicate-id":
        return _jsonl(make(0)), id_field
    raise AssertionError(kind)


JSONL_KINDS = ["bytes", "invalid-json", "not-an-object", "missing-field", "wrong-type", "id-whitespace",
               "empty-id", "lone-surrogate", "duplicate-id"]


@pytest.mark.parametrize("reader", ["corpus", "queries"])
@EXAMPLES
@given(data=st.data())
def test_jsonl_readers_name_file_and_line(reader, data):
    id_field, text_field = ("docid", "text") if reader == "corpus" else ("query_id", "query")
    n = data.draw(st.integers(2, 6))
    bad_index = data.draw(st.integers(1, n - 1))  # after line 1: a duplicate can repeat line 1
    kind = data.draw(st.sampled_from(JSONL_KINDS))
    lines = _corpus_lines(n) if reader == "corpus" else _query_lines(n)
    field = None
    if kind == "bytes":
        bad = _with_bytes(lines[bad_index].encode(), data.draw(BAD_BYTES), data.draw(st.floats(0, 1)))
    else:
        make = ((lambda i: {"docid": f"d{i}", "title": f"T{i}", "text": f"passage {i}"}) if reader == "corpus"
                else (lambda i: {"query_id": f"q{i}", "query": f"query {i}"}))
        bad, field = _bad_jsonl_record(kind, bad_index, data, id_field, text_field, make)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{reader}.jsonl"
        line = _write(lines, bad_index, bad, path)
        with pytest.raises(InputError) as e:
            (read_corpus if reader == "corpus" else read_queries)(path)
        _assert_names(e.value, path, line, field)


@EXAMPLES
@given(data=st.data())
def test_train_group_readers_name_file_and_line(data):
    n = data.draw(st.integers(1, 5))
    bad_index = data.draw(st.integers(0, n - 1))
    kind = data.draw(st.sampled_from(["bytes", "invalid-json", "not-an-object", "missing", "passage-not-object",
                                      "passage-no-text", "lone-surrogate"]))
    lines = [_jsonl(_group(i)) for i in range(n)]
    field = None
    if kind == "bytes":
        bad = _with_bytes(lines[bad_index].encode(), data.draw(BAD_BYTES), data.draw(st.floats(0, 1)))
    elif kind == "invalid-json":
        bad = lines[bad_index][:data.draw(st.integers(1, len(lines[bad_index]) - 3))] + "\n"
    elif kind == "not-an-object":
        bad = data.draw(st.sampled_from(["[]\n", "1\n", '"g"\n']))
    elif kind == "missing":
        field = data.draw(st.sampled_from(["query", "positive_passages"]))
        g = _group(bad_index)
        del g[field]
        bad = _jsonl(g)
    elif kind == "passage-not-object":
        field = data.draw(st.sampled_from(["positive_passages", "negative_passages"]))
        bad = _jsonl(_group(bad_index, **{field: [data.draw(st.sampled_from([1, "p", None, []]))]}))
    elif kind == "passage-no-text":
        field = "negative_passages"
        bad = _jsonl(_group(bad_index, negative_passages=[{"docid": "x"}]))
    else:
        field = "positive_passages"
        bad = _jsonl(_group(bad_index)).replace('"pos"', f'"{data.draw(LONE_SURROGATE)}"')
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "groups.jsonl"
        line = _write(lines, bad_index, bad, path)
        with pytest.raises(InputError) as e:  # the list reader (tools) ...
            read_train_groups(path)
        _assert_names(e.value, path, line, field)
        with pytest.raises(InputError) as e:  # ... and the training source read the same
            list(TrainGroupSource(files=[path]).scan())
        _assert_names(e.value, path, line, field)


def _run_lines(n_queries: int, depth: int = 3) -> list[str]:
    return [f"q{q} Q0 d{r} {r + 1} {10 - r:.4f} t\n" for q in range(n_queries) for r in range(depth)]


@EXAMPLES
@given(data=st.data())
def test_run_reader_names_file_and_line(data):
    lines = _run_lines(data.draw(st.integers(1, 3)))
    bad_index = data.draw(st.integers(0, len(lines) - 1))
    kind = data.draw(st.sampled_from(["bytes", "columns", "score-not-number", "score-non-finite"]))
    parts, field = lines[bad_index].split(), None
    if kind == "bytes":
        bad = _with_bytes(lines[bad_index].encode(), data.draw(BAD_BYTES), data.draw(st.floats(0, 1)))
    elif kind == "columns":
        k = data.draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8]))
        bad = " ".join((parts * 2)[:k]) + "\n"
    else:
        field = "score"
        parts[4] = data.draw(NON_FINITE if kind == "score-non-finite" else st.sampled_from(["x", "1,5", "--1", "0x"]))
        bad = " ".join(parts) + "\n"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.trec"
        line = _write(lines, bad_index, bad, path)
        with pytest.raises(InputError) as e:
            read_run(path)
        _assert_names(e.value, path, line, field)


@EXAMPLES
@given(data=st.data())
def test_qrels_reader_names_file_and_line(data):
    beir = data.draw(st.booleans())
    n = data.draw(st.integers(1, 5))
    lines = (["query-id\tcorpus-id\tscore\n"] if beir else []) + [
        (f"q{i}\td{i}\t1\n" if beir else f"q{i} 0 d{i} 1\n") for i in range(n)]
    bad_index = data.draw(st.integers(1 if beir else 0, len(lines) - 1))
    kind = data.draw(st.sampled_from(["bytes", "columns", "rel-not-number", "rel-non-finite"]))
    parts, field = lines[bad_index].split(), None
    if kind == "bytes":
        bad = _with_bytes(lines[bad_index].encode(), data.draw(BAD_BYTES), data.draw(st.floats(0, 1)))
    elif kind == "columns":
        bad = " ".join((parts * 3)[:data.draw(st.sampled_from([1, 2, 5, 6]))]) + "\n"
    else:
        field = "rel"
        parts[-1] = data.draw(NON_FINITE if kind == "rel-non-finite" else st.sampled_from(["high", "1/2", "?"]))
        bad = " ".join(parts) + "\n"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "qrels.tsv"
        line = _write(lines, bad_index, bad, path)
        with pytest.raises(InputError) as e:
            read_qrels(path)
        _assert_names(e.value, path, line, field)


SHARD_META = {"model": "toy", "model_fingerprint": "fp", "pooling": "mean", "normalize": False, "kind": "passage"}


@EXAMPLES
@given(data=st.data())
def test_shard_ids_reader_names_file_and_line(data):
    """A piece's ids that are not UTF-8, or an id in two rows (one piece or two): the .ids file and line."""
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    ids = [[f"p{j}-{i}" for i in range(size)] for j, size in enumerate(sizes)]
    kind = data.draw(st.sampled_from(["bytes", "duplicate"]))
    flat = [(j, i) for j, size in enumerate(sizes) for i in range(size)]
    if kind == "duplicate" and len(flat) < 2:
        kind = "bytes"
    with tempfile.TemporaryDirectory() as d:
        n = len(sizes)
        names = [f"{d}/corpus.{j}" if n > 1 else f"{d}/corpus" for j in range(n)]
        spec = f"{d}/corpus.*" if n > 1 else f"{d}/corpus"
        if kind == "duplicate":
            k = data.draw(st.integers(1, len(flat) - 1))
            src = flat[data.draw(st.integers(0, k - 1))]
            j, i = flat[k]
            ids[j][i] = ids[src[0]][src[1]]
        for piece, name in enumerate(names):
            vectors = np.random.default_rng(piece).standard_normal((sizes[piece], 4)).astype(np.float32)
            write_shard(name, ids[piece], vectors, dict(SHARD_META, shard_index=piece, num_shards=n))
        if kind == "bytes":
            j = data.draw(st.integers(0, n - 1))
            i = data.draw(st.integers(0, sizes[j] - 1))
            lines = [f"{x}\n".encode() for x in ids[j]]
            lines[i] = _with_bytes(lines[i], data.draw(BAD_BYTES), data.draw(st.floats(0, 1)))
            Path(f"{names[j]}.ids").write_bytes(b"".join(lines))
        with pytest.raises(InputError) as e:
            resolve_shards(spec)
        _assert_names(e.value, Path(f"{names[j]}.ids"), i + 1, "id" if kind == "duplicate" else None)


@pytest.mark.parametrize("how", ["nan", "inf", "empty", "truncated", "header-only"])
def test_shard_vectors_are_checked_on_read(tmp_path, how):
    name = tmp_path / "corpus"
    vectors = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    if how in ("nan", "inf"):
        vectors[3, 1] = np.nan if how == "nan" else -np.inf
    write_shard(name, [f"d{i}" for i in range(5)], vectors, SHARD_META)
    npy = Path(f"{name}.npy")
    if how == "empty":
        npy.write_bytes(b"")
    elif how == "truncated":
        os.truncate(npy, npy.stat().st_size - 5)
    elif how == "header-only":
        os.truncate(npy, 64)
    with pytest.raises(InputError) as e:
        resolve_shards(name)
    msg = str(e.value)
    assert msg.startswith(f"{npy}: ") and "\n" not in msg, msg
    if how in ("nan", "inf"):
        assert "field 'vector'" in msg and "row 4" in msg, msg


# --------------------------------------------------------------------------- CLIs reading stdin, a pipe
@pytest.fixture(scope="module")
def tiny_round(tmp_path_factory, tiny_bert_dir) -> tuple[Path, Path]:
    """A zero-shot round dir (round/enc/corpus encoded by the tiny model) and its corpus."""
    from densir.driver.encode import main as encode

    tmp = tmp_path_factory.mktemp("round")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(_corpus_lines(12)))
    rd = tmp / "round"
    encode(["--model_name_or_path", tiny_bert_dir, "--encode_in_path", str(corpus), "--encoded_save_path",
            str(rd / "enc" / "corpus"), "--p_max_len", "16"])
    return rd, corpus


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")


def test_search_cli_stdin_bytes_and_broken_pipe(tiny_round, capsys, monkeypatch):
    import io

    from densir.search.__main__ import main as search_main

    rd, corpus = tiny_round
    search = ["--index", str(rd), "--corpus", str(corpus), "--k", "5", "--rerank_depth", "0", "--device", "cpu"]
    # stdin holding bytes that are not UTF-8: one line naming stdin and the line, before the model loads
    piped = rd.parent / "stdin.txt"  # sys.stdin as the process would have it, named by this file
    piped.write_bytes(b"a fine query\nnot \xff utf-8\n")
    with open(piped, "rb") as raw:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
        with pytest.raises(SystemExit) as e:
            search_main(search)
    out, err = capsys.readouterr()
    assert e.value.code == 1 and out == "" and err.strip().splitlines() == [
        f"error: {piped}:2: not UTF-8 text (byte 0xff at column 5: invalid start byte)"], err
    # an argument holding a lone surrogate (what Python makes of bad bytes in argv): one line too
    with pytest.raises(SystemExit) as e:
        search_main([*search, b"caf\xe9".decode("utf-8", "surrogateescape")])
    out, err = capsys.readouterr()
    assert e.value.code == 1 and out == "" and err.strip().startswith("error: query[0] is not encodable text"), err
    # `| head -1` closes the pipe after one line of many: no BrokenPipeError (a real pipe, a real process)
    queries = [f"query number {i} about passage {i}" for i in range(400)]
    cmd = " ".join(f"'{a}'" for a in [sys.executable, "-m", "densir.search", *search, *queries]) + " | head -1"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert proc.stdout.startswith("query 1: ") and proc.stdout.count("\n") == 1, proc.stdout + proc.stderr
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_searcher_api_refuses_non_text_queries(tiny_round):
    from densir.search.searcher import Searcher

    rd, corpus = tiny_round
    searcher = Searcher.from_run_dir(rd, corpus=corpus, device="cpu")
    assert len(searcher.search("passage 3", k=3)) == 3  # text works
    for bad, error in ((b"passage 3", TypeError), (None, TypeError), (123, TypeError), ("x\ud800y", ValueError)):
        with pytest.raises(error, match=r"^query "):
            searcher.search(bad)
        with pytest.raises(error, match=r"^queries\[1\] "):
            searcher.search_batch(["fine", bad])
    with pytest.raises(TypeError, match="queries must be a list of str"):
        searcher.retrieve(b"abc", 3)


# --------------------------------------------------------------------------- crashes
def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _wait_for(predicate, proc, timeout=240.0, what=""):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the process ended ({proc.returncode}) before {what}: "
                        f"{proc.stderr.read().decode(errors='replace')[-3000:] if proc.stderr else ''}")
        time.sleep(0.005)
    pytest.fail(f"timed out waiting for {what}")


def _kill_group(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


ENCODE_ARGS = ["--p_max_len", "32", "--per_device_eval_batch_size", "4", "--encode_chunk_size", "64"]


def _encode_cmd(model, corpus, name, *extra):
    return [sys.executable, "-m", "densir.driver.encode", "--model_name_or_path", model, "--encode_in_path",
            str(corpus), "--encoded_save_path", str(name), *ENCODE_ARGS, *extra]


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """Enough passages that the tiny model spends seconds encoding them (time to kill it mid-write)."""
    path = tmp_path_factory.mktemp("big") / "corpus.jsonl"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rng = np.random.default_rng(0)
    path.write_text("".join(_jsonl({"docid": f"d{i}", "title": "", "text": " ".join(rng.choice(words, 24))})
                            for i in range(800)))
    return path


def test_encode_killed_during_write_reruns_clean(tmp_path, tiny_bert_dir, big_corpus):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_cmd(_encode_cmd(tiny_bert_dir, big_corpus, clean / "corpus"))
    proc = subprocess.Popen(_encode_cmd(tiny_bert_dir, big_corpus, killed / "corpus"), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    # the full-size temporaries appear when the write starts, after the model loaded and the input was counted
    _wait_for(lambda: killed.is_dir() and list(killed.glob("corpus.npy.tmp-*")), proc, what="the shard write")
    _kill_group(proc)
    left = _files(killed)
    assert any(".tmp-" in f for f in left) and "corpus.json" not in left, left  # a half-written shard
    with pytest.raises(InputError, match="half-written"):
        EmbeddingShard.open(killed / "corpus")
    run_cmd(_encode_cmd(tiny_bert_dir, big_corpus, killed / "corpus"))  # the rerun reclaims the temporaries
    assert _files(killed) == _files(clean) == ["corpus.ids", "corpus.json", "corpus.npy"]
    for suffix in (".npy", ".ids", ".json"):
        assert (killed / f"corpus{suffix}").read_bytes() == (clean / f"corpus{suffix}").read_bytes(), suffix


def test_concurrent_encodes_with_other_settings_one_wins(tmp_path, tiny_bert_dir, big_corpus):
    name = tmp_path / "out" / "corpus"
    procs = [subprocess.Popen(_encode_cmd(tiny_bert_dir, big_corpus, name, "--p_max_len", str(n)), cwd=REPO,
                              env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for n in (16, 24)]
    results = [(p.wait(timeout=600), p.stderr.read().decode(errors="replace")) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "Traceback" not in loser and loser.strip().splitlines()[-1].startswith(f"error: {name}"), loser
    winner = 16 if results[0][0] == 0 else 24
    assert EmbeddingShard.open(name).meta["max_len"] == winner
    assert _files(name.parent) == ["corpus.ids", "corpus.json", "corpus.npy"]


def _train_cmd(model, groups, out):
    return [sys.executable, "-m", "densir.driver.train", "--model_name_or_path", model, "--train_dir", str(groups),
            "--output_dir", str(out), "--pooling", "mean", "--temperature", "0.05", "--q_max_len", "16",
            "--p_max_len", "24", "--per_device_train_batch_size", "4", "--train_n_passages", "2",
            "--max_steps", "9", "--save_steps", "2", "--logging_steps", "3", "--learning_rate", "1e-3",
            "--disable_tqdm", "true", "--resume_from_checkpoint", "auto", "--dataloader_num_workers", "0"]


def _summary(out: Path) -> dict:
    s = json.loads((out / "train_summary.json").read_text())
    return {k: v for k, v in s.items() if k not in ("train_seconds", "resumed_from")}


def test_training_killed_mid_run_reruns_to_the_clean_summary(tmp_path, tiny_bert_dir):
    """save_steps 2 and logging_steps 3 (not aligned, the last step 9 is neither): killed after
    checkpoint-4, the resumed run's model, files and summary (loss included) are the clean run's."""
    from safetensors.numpy import load_file

    groups = tmp_path / "groups.jsonl"
    groups.write_text("".join(_jsonl(_group(i, query=f"query about topic {i % 5} number {i}")) for i in range(20)))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_cmd(_train_cmd(tiny_bert_dir, groups, clean))
    proc = subprocess.Popen(_train_cmd(tiny_bert_dir, groups, killed), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    _wait_for(lambda: (killed / "checkpoint-4" / "trainer_state.json").is_file(), proc, what="checkpoint-4")
    _kill_group(proc)
    assert not (killed / "train_summary.json").exists()
    run_cmd(_train_cmd(tiny_bert_dir, groups, killed))
    assert json.loads((killed / "train_summary.json").read_text())["resumed_from"]  # it did resume
    assert _summary(killed) == _summary(clean)
    assert _files(killed) == _files(clean)
    a, b = load_file(clean / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    # the summary's loss is the mean of every step's, from the log history
    history = _summary(clean)["log_history"]
    assert [h["step"] for h in history][-1] == 9 and 2 in [h["step"] for h in history]
    # a rerun of the finished training leaves the summary (and the model) as they were
    before = {p: (killed / p).read_bytes() for p in ("train_summary.json", "model.safetensors")}
    run_cmd(_train_cmd(tiny_bert_dir, groups, killed))
    assert {p: (killed / p).read_bytes() for p in before} == before
