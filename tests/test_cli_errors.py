"""Every CLI through one error path (densir.io.cli_errors): a table of every ``python -m densir...``
entry point and every ``tools/*.py``, each fed the bad inputs that apply to it (a line that is not
JSON, a missing field, an empty file, an id the corpus or queries lack, a wrong dimension, flags
that do not go together). Each row checks: exit status != 0, stderr's last non-empty line starts
with ``error:`` and names the file (and line, and field, where there is one), no ``Traceback``
anywhere in stderr, and no output file afterwards.

The CLIs run as their own processes, forked from a forkserver that has imported torch,
transformers and densir once (``multiprocessing`` forkserver with preloads): each row is a fresh
process executing the module as ``__main__`` (``runpy``, as ``python -m`` does) with its own
stdout/stderr files and exit status, and an uncaught exception prints its traceback there as the
interpreter would. A few rows also run as plain ``python -m`` subprocesses (and the train driver
under torchrun) to show that the two agree.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import runpy
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cmd

MODULES = ("densir.driver.train", "densir.driver.train_reranker", "densir.driver.encode", "densir.driver.rerank",
           "densir.faiss_retriever", "densir.faiss_retriever.reducer", "densir.search", "densir.precision",
           "densir.settings", "densir.serve")
# imported once by the forkserver, so that each row's process starts in a fraction of a second
PRELOAD = ["torch", "transformers", "transformers.trainer", "faiss", "ir_measures", "densir.arguments",
           "densir.retriever.trainer", "densir.retriever.encode", "densir.reranker.trainer", "densir.reranker.rerank",
           "densir.reranker.modeling", "densir.search.faiss_index", "densir.search.searcher", "densir.search.bm25",
           "densir.search.fusion", "densir.evaluation", "densir.train_groups", "densir.holdout", "densir.prepare",
           "densir.pretokenize"]
ROW_TIMEOUT = 300


# --------------------------------------------------------------------------- the table
@dataclass
class Row:
    cli: str                      # a module (python -m) or tools/NAME.py
    case: str                     # what is wrong, for the test id
    argv: list[str]               # {placeholders}: inputs (below), {out} (this row's output dir), {model}
    bad: tuple[str, str] | None = None  # (input, how): the input replaced by a bad copy
    line: int | None | str = "auto"     # the line the message must name ("auto": from how)
    field: str | None = None      # the field the message must name
    names: str | None = None      # a file the message must name (default: the bad input's file)
    match: str | None = None      # a regex the message must match
    outputs: tuple[str, ...] = ()  # paths (with placeholders) that must not exist afterwards
    xfail: str | None = None      # reason, for a row whose fix is owned elsewhere

    @property
    def id(self) -> str:
        return f"{self.cli.replace('tools/', '').replace('.py', '')}-{self.case}"


TRAIN = ["--model_name_or_path", "{model}", "--train_dir", "{groups}", "--output_dir", "{out}/model",
         "--max_steps", "1", "--per_device_train_batch_size", "2", "--train_n_passages", "2", "--q_max_len", "8",
         "--p_max_len", "16", "--save_strategy", "no", "--logging_steps", "1", "--dataloader_num_workers", "0"]
RERANK_TRAIN = [a if a != "{out}/model" else "{out}/reranker" for a in TRAIN]
ENCODE = ["--model_name_or_path", "{model}", "--encode_in_path", "{corpus}", "--encoded_save_path", "{out}/corpus",
          "--per_device_eval_batch_size", "4", "--p_max_len", "16"]
ENCODE_Q = ["--model_name_or_path", "{model}", "--encode_in_path", "{queries}", "--encoded_save_path",
            "{out}/queries", "--encode_is_qry", "--q_max_len", "8"]
SHARD_OUT = tuple(f"{{out}}/corpus{s}" for s in (".json", ".npy", ".ids"))
QSHARD_OUT = tuple(f"{{out}}/queries{s}" for s in (".json", ".npy", ".ids"))
RERANK = ["--model_name_or_path", "{model}", "--run", "{run}", "--corpus", "{corpus}", "--queries", "{queries}",
          "--depth", "3", "--max_len", "32", "--batch_size", "4", "--save_ranking_to", "{out}/rerank.run"]
SEARCH = ["--query_reps", "{qshard}", "--passage_reps", "{pshard}", "--depth", "3", "--no_gpu",
          "--save_ranking_to", "{out}/search.run"]
REDUCE = ["--runs", "{shard0_run}", "{shard1_run}", "--depth", "3", "--save_ranking_to", "{out}/merged.run"]
SEARCHER = ["--index", "{round}", "--corpus", "{corpus}", "--k", "6", "--rerank_depth", "0", "--device", "cpu",
            "a query about d1"]
BUILD = ["--queries", "{queries}", "--qrels", "{qrels}", "--run", "{run}", "--corpus", "{corpus}",
         "--out", "{out}/train.jsonl"]
BUILD_OUT = ("{out}/train.jsonl", "{out}/train.stats.json")
EVALUATE = ["{qrels}", "{run}", "--save", "{out}/metrics.json"]
COMPARE = ["--qrels", "{qrels}", "--a", "{run}", "--b", "{run}", "--save", "{out}/compare.json"]
HOLDOUT = ["--data_dir", "{dataset}", "--out_dir", "{out}/heldout", "--n", "1"]
PREPARE = ["--format", "beir", "--source", "{beir}", "--out_dir", "{out}/data"]
PRETOK = ["--tokenizer", "{model}", "--groups", "{groups}", "{out}/groups.tok.jsonl", "--corpus", "{corpus}",
          "{out}/corpus.tok.jsonl"]
PRETOK_OUT = ("{out}/groups.tok.jsonl", "{out}/corpus.tok.jsonl")
FUSE = ["--runs", "{run}", "{run2}", "--out", "{out}/fused.run"]
FUSE_RR = ["--first", "{run}", "--rerank", "{run2}", "--alpha", "0.5", "--out", "{out}/fused.run"]
CHOOSE = ["--dense", "{run}", "--bm25", "{run2}", "--qrels", "{qrels}", "--out", "{out}/fusion.json"]
SCORE_GROUPS = ["--model_name_or_path", "{model}", "--groups", "{groups}", "--out", "{out}/scored.jsonl",
                "--max_len", "32", "--device", "cpu"]
FP = r"fp16.*bf16|bf16.*fp16"  # flags that exclude each other

ROWS = [
    # ---- python -m densir.driver.train / train_reranker: train groups, flags, the argument file
    Row("densir.driver.train", "malformed-json", TRAIN, bad=("groups", "json"), outputs=("{out}/model",)),
    Row("densir.driver.train", "missing-field", TRAIN, bad=("groups", "field:positive_passages"),
        field="positive_passages", outputs=("{out}/model",)),
    Row("densir.driver.train", "empty-file", TRAIN, bad=("groups", "empty"), outputs=("{out}/model",)),
    Row("densir.driver.train", "no-such-file", TRAIN, bad=("groups", "missing"), outputs=("{out}/model",)),
    Row("densir.driver.train", "no-such-model", ["--model_name_or_path", "{out}/no-model"] + TRAIN[2:],
        names="{out}/no-model", line=None, outputs=("{out}/model",)),
    Row("densir.driver.train", "fp16-with-bf16", TRAIN + ["--fp16", "--bf16"], match=FP,
        outputs=("{out}/model",)),
    Row("densir.driver.train", "args-file-malformed-json", ["{train_args}"], bad=("train_args", "json"),
        outputs=("{out}/model",)),
    Row("densir.driver.train", "args-file-unknown-key", ["{train_args}"], bad=("train_args", "key:no_such_flag"),
        match="no_such_flag", outputs=("{out}/model",)),
    Row("densir.driver.train_reranker", "malformed-json", RERANK_TRAIN, bad=("groups", "json"),
        outputs=("{out}/reranker",)),
    Row("densir.driver.train_reranker", "missing-field", RERANK_TRAIN, bad=("groups", "field:query"), field="query",
        outputs=("{out}/reranker",)),
    Row("densir.driver.train_reranker", "empty-file", RERANK_TRAIN, bad=("groups", "empty"),
        outputs=("{out}/reranker",)),
    Row("densir.driver.train_reranker", "fp16-with-bf16", RERANK_TRAIN + ["--fp16", "--bf16"], match=FP,
        outputs=("{out}/reranker",)),
    # ---- python -m densir.driver.encode
    Row("densir.driver.encode", "malformed-json", ENCODE, bad=("corpus", "json"), outputs=SHARD_OUT),
    Row("densir.driver.encode", "missing-field", ENCODE, bad=("corpus", "field:text"), field="text",
        outputs=SHARD_OUT),
    Row("densir.driver.encode", "empty-file", ENCODE, bad=("corpus", "empty"), outputs=SHARD_OUT),
    Row("densir.driver.encode", "queries-malformed-json", ENCODE_Q, bad=("queries", "json"), outputs=QSHARD_OUT),
    Row("densir.driver.encode", "queries-missing-field", ENCODE_Q, bad=("queries", "field:query"), field="query",
        outputs=QSHARD_OUT),
    Row("densir.driver.encode", "queries-empty-file", ENCODE_Q, bad=("queries", "empty"), outputs=QSHARD_OUT),
    Row("densir.driver.encode", "no-such-model", ["--model_name_or_path", "{out}/no-model"] + ENCODE[2:],
        names="{out}/no-model", line=None, outputs=SHARD_OUT),
    Row("densir.driver.encode", "fp16-with-bf16", ENCODE + ["--fp16", "--bf16"], match=FP, outputs=SHARD_OUT),
    # ---- python -m densir.driver.rerank
    Row("densir.driver.rerank", "run-bad-line", RERANK, bad=("run", "columns"), outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "run-empty-file", RERANK, bad=("run", "empty"), outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "unknown-docid", RERANK, bad=("run", "docid"), field="docid",
        outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "unknown-qid", RERANK, bad=("run", "qid"), field="qid",
        outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "queries-malformed-json", RERANK, bad=("queries", "json"),
        outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "queries-missing-field", RERANK, bad=("queries", "field:query"), field="query",
        outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "corpus-malformed-json", RERANK, bad=("corpus", "json"),
        outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "corpus-missing-field", RERANK, bad=("corpus", "field:docid"), field="docid",
        outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "no-such-model", ["--model_name_or_path", "{out}/no-model"] + RERANK[2:],
        names="{out}/no-model", line=None, outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "fp16-with-bf16", RERANK + ["--fp16", "--bf16"], match=FP,
        outputs=("{out}/rerank.run",)),
    # ---- python -m densir.faiss_retriever (search) and .reducer
    Row("densir.faiss_retriever", "wrong-dimension", SEARCH, bad=("pshard", "dim16"), line=None, field="dim",
        outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "shard-json-malformed", SEARCH, bad=("pshard", "json"),
        outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "shard-json-missing-field", SEARCH, bad=("pshard", "field:count"), line=None,
        field="count", outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "shard-json-empty", SEARCH, bad=("pshard", "empty"), line=1,
        outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "bad-index-factory", SEARCH + ["--index_factory", "NoSuchIndex"],
        match="NoSuchIndex", outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever.reducer", "bad-line", REDUCE, bad=("shard1_run", "columns"),
        outputs=("{out}/merged.run",)),
    Row("densir.faiss_retriever.reducer", "empty-file", REDUCE, bad=("shard1_run", "empty"),
        outputs=("{out}/merged.run",)),
    Row("densir.faiss_retriever.reducer", "unknown-qid", REDUCE, bad=("shard1_run", "qid"), line=None, field="qid",
        outputs=("{out}/merged.run",)),
    Row("densir.faiss_retriever.reducer", "bad-score", REDUCE, bad=("shard1_run", "score"), field="score",
        outputs=("{out}/merged.run",)),
    # ---- python -m densir.search (the Searcher CLI: writes nothing, prints hits)
    Row("densir.search", "corpus-malformed-json", SEARCHER, bad=("corpus", "json")),
    Row("densir.search", "corpus-missing-field", SEARCHER, bad=("corpus", "field:text"), field="text"),
    Row("densir.search", "wrong-dimension", SEARCHER, bad=("round/enc/corpus", "dim16"), line=None),
    Row("densir.search", "shard-json-malformed", SEARCHER, bad=("round/enc/corpus", "json")),
    # ---- python -m densir.precision (no input file: the one line and the status)
    Row("densir.precision", "unknown-precision", ["--requested", "fp64"], match="fp64"),
    # ---- python -m densir.settings (the stage scripts' settings: no input file, the one line and the status)
    Row("densir.settings", "not-an-integer", ["export", "run.sh", "--", "--num_shards", "abc"],
        match="NUM_SHARDS must be an integer >= 1, not 'abc'"),
    Row("densir.settings", "unknown-script", ["check", "nope.sh"], match="unknown script 'nope.sh'"),
    # ---- python -m densir.serve (checked before anything loads or binds)
    Row("densir.serve", "no-such-index", ["--index", "{out}/nope"], match="no such round directory"),
    Row("densir.serve", "port-out-of-range", ["--index", "{out}/nope", "--port", "99999"],
        match=r"--port must be in \[1, 65535\], got 99999"),
    Row("densir.serve", "zero-batch", ["--index", "{out}/nope", "--max_batch", "0"], match=r"--max_batch must be >= 1"),
    # ---- tools/build_train.py and tools/build_train_hn.py
    Row("tools/build_train.py", "queries-malformed-json", BUILD, bad=("queries", "json"), outputs=BUILD_OUT),
    Row("tools/build_train.py", "queries-missing-field", BUILD, bad=("queries", "field:query_id"), field="query_id",
        outputs=BUILD_OUT),
    Row("tools/build_train.py", "queries-empty-file", BUILD, bad=("queries", "empty"), outputs=BUILD_OUT),
    Row("tools/build_train.py", "corpus-malformed-json", BUILD, bad=("corpus", "json"), outputs=BUILD_OUT),
    Row("tools/build_train.py", "corpus-missing-field", BUILD, bad=("corpus", "field:text"), field="text",
        outputs=BUILD_OUT),
    Row("tools/build_train.py", "corpus-empty-file", BUILD, bad=("corpus", "empty"), outputs=BUILD_OUT),
    Row("tools/build_train.py", "qrels-bad-line", BUILD, bad=("qrels", "rel"), field="rel", outputs=BUILD_OUT),
    Row("tools/build_train.py", "qrels-unknown-docid", BUILD, bad=("qrels", "docid"), field="docid",
        outputs=BUILD_OUT),
    Row("tools/build_train.py", "qrels-empty-file", BUILD, bad=("qrels", "empty"), outputs=BUILD_OUT),
    Row("tools/build_train.py", "run-unknown-docid", BUILD, bad=("run", "docid"), field="docid", outputs=BUILD_OUT),
    Row("tools/build_train.py", "run-bad-line", BUILD, bad=("run", "columns"), outputs=BUILD_OUT),
    Row("tools/build_train.py", "run-empty-file", BUILD, bad=("run", "empty"), outputs=BUILD_OUT),
    Row("tools/build_train.py", "judged-query-without-text", BUILD, bad=("queries", "drop:q2"), names="{run}",
        line=6, field="qid", outputs=BUILD_OUT),
    Row("tools/build_train_hn.py", "run-unknown-docid", BUILD, bad=("run", "docid"), field="docid",
        outputs=BUILD_OUT),
    Row("tools/build_train_hn.py", "queries-malformed-json", BUILD, bad=("queries", "json"), outputs=BUILD_OUT),
    Row("tools/build_train_hn.py", "run-empty-file", BUILD, bad=("run", "empty"), outputs=BUILD_OUT),
    # mining that would write groups with one negative, none, or "all but the last" with exit 0
    Row("tools/build_train_hn.py", "negative-depth", BUILD + ["--depth", "-1"], match=r"--depth must be >= 1, got -1",
        outputs=BUILD_OUT),
    Row("tools/build_train_hn.py", "negative-skip", BUILD + ["--skip", "-1"], match=r"--skip must be >= 0, got -1",
        outputs=BUILD_OUT),
    Row("tools/build_train_hn.py", "no-negative-sampled", BUILD + ["--n_sample", "0"],
        match=r"--n_sample must be >= 1, got 0", outputs=BUILD_OUT),
    Row("tools/build_train.py", "skip-past-depth", BUILD + ["--depth", "5", "--skip", "5"],
        match=r"--skip 5 leaves no hit of the top --depth 5", outputs=BUILD_OUT),
    # ---- tools/evaluate.py, tools/metrics_table.py, tools/score_to_marco.py
    Row("tools/evaluate.py", "run-bad-line", EVALUATE, bad=("run", "columns"), outputs=("{out}/metrics.json",)),
    Row("tools/evaluate.py", "run-empty-file", EVALUATE, bad=("run", "empty"), outputs=("{out}/metrics.json",)),
    Row("tools/evaluate.py", "qrels-bad-line", EVALUATE, bad=("qrels", "rel"), field="rel",
        outputs=("{out}/metrics.json",)),
    Row("tools/evaluate.py", "qrels-empty-file", EVALUATE, bad=("qrels", "empty"), outputs=("{out}/metrics.json",)),
    Row("tools/evaluate.py", "unknown-metric", EVALUATE + ["--metrics", "nDCG@10", "Bogus@10"], match="Bogus@10",
        outputs=("{out}/metrics.json",)),
    Row("tools/compare_runs.py", "run-bad-line", COMPARE, bad=("run", "columns"), outputs=("{out}/compare.json",)),
    Row("tools/compare_runs.py", "run-empty-file", COMPARE, bad=("run", "empty"), outputs=("{out}/compare.json",)),
    Row("tools/compare_runs.py", "qrels-bad-line", COMPARE, bad=("qrels", "rel"), field="rel",
        outputs=("{out}/compare.json",)),
    Row("tools/metrics_table.py", "malformed-json", ["A={metrics}", "B={metrics}", "--save", "{out}/table.txt"],
        bad=("metrics", "json"), outputs=("{out}/table.txt",)),
    Row("tools/metrics_table.py", "empty-file", ["A={metrics}", "--save", "{out}/table.txt"], bad=("metrics", "empty"),
        line=1, outputs=("{out}/table.txt",)),
    Row("tools/metrics_table.py", "no-such-file", ["A={metrics}", "--save", "{out}/table.txt"],
        bad=("metrics", "missing"), outputs=("{out}/table.txt",)),
    Row("tools/score_to_marco.py", "bad-line", ["{run}", "--out", "{out}/run.marco"], bad=("run", "columns"),
        outputs=("{out}/run.marco",)),
    Row("tools/score_to_marco.py", "empty-file", ["{run}", "--out", "{out}/run.marco"], bad=("run", "empty"),
        outputs=("{out}/run.marco",)),
    # ---- tools/holdout_split.py, tools/prepare_data.py, tools/pretokenize.py, tools/bm25.py
    Row("tools/holdout_split.py", "queries-malformed-json", HOLDOUT, bad=("dataset/queries.train.jsonl", "json"),
        outputs=("{out}/heldout",)),
    Row("tools/holdout_split.py", "groups-missing-field", HOLDOUT, bad=("dataset/train.bm25.jsonl", "field:query_id"),
        field="query_id", outputs=("{out}/heldout",)),
    Row("tools/holdout_split.py", "qrels-empty-file", HOLDOUT, bad=("dataset/qrels.train.tsv", "empty"),
        outputs=("{out}/heldout",)),
    Row("tools/holdout_split.py", "run-bad-line", HOLDOUT, bad=("dataset/bm25.train.run", "columns"),
        outputs=("{out}/heldout",)),
    Row("tools/holdout_split.py", "queries-without-text", HOLDOUT, bad=("dataset/queries.train.jsonl", "empty"),
        field="query_id", outputs=("{out}/heldout",)),
    Row("tools/holdout_split.py", "no-manifest", HOLDOUT, bad=("dataset/dataset.json", "missing"),
        outputs=("{out}/heldout",)),
    Row("tools/holdout_split.py", "too-many", HOLDOUT[:-1] + ["9"], match="cannot hold out 9",
        outputs=("{out}/heldout",)),
    Row("tools/prepare_data.py", "corpus-malformed-json", PREPARE, bad=("beir/corpus.jsonl", "json"),
        outputs=("{out}/data",)),
    Row("tools/prepare_data.py", "corpus-missing-field", PREPARE, bad=("beir/corpus.jsonl", "field:_id"),
        field="_id", outputs=("{out}/data",)),
    Row("tools/prepare_data.py", "corpus-empty-file", PREPARE, bad=("beir/corpus.jsonl", "empty"),
        outputs=("{out}/data",)),
    Row("tools/prepare_data.py", "queries-missing-field", PREPARE, bad=("beir/queries.jsonl", "field:text"),
        field="text", outputs=("{out}/data",)),
    Row("tools/prepare_data.py", "qrels-unknown-docid", PREPARE, bad=("beir/qrels/test.tsv", "docid"), field="docid",
        outputs=("{out}/data",)),
    Row("tools/pretokenize.py", "groups-malformed-json", PRETOK, bad=("groups", "json"), outputs=PRETOK_OUT),
    Row("tools/pretokenize.py", "groups-missing-field", PRETOK, bad=("groups", "field:positive_passages"),
        field="positive_passages", outputs=PRETOK_OUT),
    Row("tools/pretokenize.py", "groups-empty-file", PRETOK, bad=("groups", "empty"), outputs=PRETOK_OUT),
    Row("tools/pretokenize.py", "corpus-malformed-json", PRETOK, bad=("corpus", "json"), outputs=PRETOK_OUT),
    Row("tools/pretokenize.py", "corpus-missing-field", PRETOK, bad=("corpus", "field:text"), field="text",
        outputs=PRETOK_OUT),
    Row("tools/pretokenize.py", "no-such-tokenizer", ["--tokenizer", "{out}/no-model"] + PRETOK[2:],
        names="{out}/no-model", line=None, outputs=PRETOK_OUT),
    Row("tools/bm25.py", "index-malformed-json", ["index", "--corpus", "{corpus}", "--index", "{out}/index"],
        bad=("corpus", "json"), outputs=("{out}/index",)),
    Row("tools/bm25.py", "index-missing-field", ["index", "--corpus", "{corpus}", "--index", "{out}/index"],
        bad=("corpus", "field:docid"), field="docid", outputs=("{out}/index",)),
    Row("tools/bm25.py", "search-queries-malformed-json",
        ["search", "--index", "{out}/index", "--queries", "{queries}", "--run", "{out}/bm25.run"],
        bad=("queries", "json"), outputs=("{out}/bm25.run",)),
    Row("tools/bm25.py", "search-queries-empty-file",
        ["search", "--index", "{out}/index", "--queries", "{queries}", "--run", "{out}/bm25.run"],
        bad=("queries", "empty"), outputs=("{out}/bm25.run",)),
    # ---- owned elsewhere: tools/fuse_runs.py, tools/score_groups.py
    Row("tools/fuse_runs.py", "run-bad-line", FUSE, bad=("run2", "columns"), outputs=("{out}/fused.run",)),
    Row("tools/fuse_runs.py", "run-empty-file", FUSE, bad=("run2", "empty"), outputs=("{out}/fused.run",)),
    Row("tools/fuse_runs.py", "rerank-unknown-qid", FUSE_RR, bad=("run2", "qid"), field="qid",
        outputs=("{out}/fused.run",)),
    # ---- tools/choose_fusion.py (HYBRID=auto's choice): bad input, and qrels of the evaluation split
    Row("tools/choose_fusion.py", "run-bad-line", CHOOSE, bad=("run2", "columns"), outputs=("{out}/fusion.json",)),
    Row("tools/choose_fusion.py", "qrels-bad-line", CHOOSE, bad=("qrels", "rel"), field="rel",
        outputs=("{out}/fusion.json",)),
    Row("tools/choose_fusion.py", "evaluation-qrels", CHOOSE + ["--eval_qrels", "{qrels}"], names="{qrels}",
        line=None, match="never on test", outputs=("{out}/fusion.json",)),
    Row("tools/score_groups.py", "malformed-json", SCORE_GROUPS, bad=("groups", "json"),
        outputs=("{out}/scored.jsonl",)),
    Row("tools/score_groups.py", "missing-field", SCORE_GROUPS, bad=("groups", "field:positive_passages"),
        field="positive_passages", outputs=("{out}/scored.jsonl",)),
    Row("tools/score_groups.py", "empty-file", SCORE_GROUPS, bad=("groups", "empty"),
        outputs=("{out}/scored.jsonl",)),
]

# ---- issue 26: every reader of every entry point on bytes that are not UTF-8 and on bad records
# (tests/test_bad_input.py feeds the readers themselves generated ones)
ROWS += [
    Row("densir.driver.encode", "corpus-not-utf8", ENCODE, bad=("corpus", "bytes"), outputs=SHARD_OUT),
    Row("densir.driver.encode", "corpus-id-whitespace", ENCODE, bad=("corpus", "id-space"), field="docid",
        outputs=SHARD_OUT),
    Row("densir.driver.encode", "corpus-lone-surrogate", ENCODE, bad=("corpus", "surrogate"), field="text",
        outputs=SHARD_OUT),
    Row("densir.driver.encode", "queries-not-utf8", ENCODE_Q, bad=("queries", "bytes"), outputs=QSHARD_OUT),
    Row("densir.driver.train", "groups-not-utf8", TRAIN, bad=("groups", "bytes"), outputs=("{out}/model",)),
    Row("densir.driver.rerank", "run-not-utf8", RERANK, bad=("run", "bytes"), outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "run-nan-score", RERANK, bad=("run", "nan"), field="score",
        outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "corpus-not-utf8", RERANK, bad=("corpus", "bytes"), outputs=("{out}/rerank.run",)),
    Row("densir.driver.rerank", "queries-not-utf8", RERANK, bad=("queries", "bytes"), outputs=("{out}/rerank.run",)),
    Row("densir.faiss_retriever", "ids-not-utf8", SEARCH, bad=("pshard", "ids-bytes"), outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "duplicate-ids", SEARCH, bad=("pshard", "dup-ids"), field="id",
        outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "nan-vector", SEARCH, bad=("pshard", "nan-vector"), field="vector",
        outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "empty-npy", SEARCH, bad=("pshard", "empty-npy"), outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever", "truncated-npy", SEARCH, bad=("pshard", "truncated-npy"),
        outputs=("{out}/search.run",)),
    Row("densir.faiss_retriever.reducer", "not-utf8", REDUCE, bad=("shard1_run", "bytes"),
        outputs=("{out}/merged.run",)),
    Row("densir.faiss_retriever.reducer", "nan-score", REDUCE, bad=("shard1_run", "nan"), field="score",
        outputs=("{out}/merged.run",)),
    Row("densir.search", "corpus-not-utf8", SEARCHER, bad=("corpus", "bytes")),
    Row("tools/build_train_hn.py", "run-not-utf8", BUILD, bad=("run", "bytes"), outputs=BUILD_OUT),
    Row("tools/build_train_hn.py", "queries-not-utf8", BUILD, bad=("queries", "bytes"), outputs=BUILD_OUT),
    Row("tools/build_train_hn.py", "corpus-not-utf8", BUILD, bad=("corpus", "bytes"), outputs=BUILD_OUT),
    Row("tools/evaluate.py", "qrels-not-utf8", EVALUATE, bad=("qrels", "bytes"), outputs=("{out}/metrics.json",)),
    Row("tools/evaluate.py", "run-nan-score", EVALUATE, bad=("run", "nan"), field="score",
        outputs=("{out}/metrics.json",)),
    Row("densir.driver.encode", "model-truncated-safetensors", ENCODE, bad=("model/model.safetensors", "truncate"),
        match="truncated", outputs=SHARD_OUT),
    Row("densir.driver.train", "model-truncated-safetensors", TRAIN, bad=("model/model.safetensors", "truncate"),
        match="truncated", outputs=("{out}/model",)),
]

# ---- issue 26: numbers out of range and unwritable outputs, refused before any work. The model
# and the inputs of these rows do not exist: an error about the flag proves it came first.
NO_MODEL = ["--model_name_or_path", "{out}/no-model"]
NO_INPUTS = {"{corpus}": "{out}/no-corpus.jsonl", "{queries}": "{out}/no-queries.jsonl", "{run}": "{out}/no.run",
             "{groups}": "{out}/no-groups.jsonl", "{qshard}": "{out}/no-qshard", "{pshard}": "{out}/no-pshard",
             "{shard0_run}": "{out}/no-0.run", "{shard1_run}": "{out}/no-1.run", "{round}": "{out}/no-round"}


def _nothing(argv: list[str]) -> list[str]:
    """``argv`` with the model and every input swapped for paths that do not exist."""
    out = [NO_INPUTS.get(a, a) for a in argv]
    if "--model_name_or_path" in out:
        out[out.index("--model_name_or_path") + 1] = "{out}/no-model"
    return out


def _range_row(cli, argv, flag, value, expect=None) -> Row:
    return Row(cli, f"range{flag.replace('_', '-')}-{value}", _nothing(argv) + [flag, value],
               match=re.escape(f"{flag} {expect or 'must be'}") + ".*" + re.escape(value))


def _output_row(cli, argv, flag, under_a_file, is_dir=False) -> Row:
    """``flag`` pointed under an existing file (the corpus): refused up front (the model does not exist)."""
    argv = list(argv)
    argv[argv.index(flag) + 1] = "{corpus}/" + under_a_file
    if "--model_name_or_path" in argv:
        argv[argv.index("--model_name_or_path") + 1] = "{out}/no-model"
    return Row(cli, f"output-under-a-file{flag.replace('_', '-')}", argv, names=None,
               match=re.escape(flag) + r" .*is a file, not a directory")


ROWS += [
    _range_row("densir.faiss_retriever", SEARCH, "--batch_size", "-1"),
    _range_row("densir.faiss_retriever", SEARCH, "--batch_size", "0"),
    _range_row("densir.faiss_retriever", SEARCH, "--depth", "0"),
    _range_row("densir.faiss_retriever.reducer", REDUCE, "--depth", "0"),
    _range_row("densir.driver.encode", ENCODE, "--num_shards", "0"),
    _range_row("densir.driver.encode", ENCODE, "--num_shards", "-2"),
    _range_row("densir.driver.encode", ENCODE + ["--num_shards", "2"], "--shard_index", "5",
               expect="must be < --num_shards 2, got"),
    _range_row("densir.driver.encode", ENCODE, "--p_max_len", "0"),
    _range_row("densir.driver.encode", ENCODE_Q, "--q_max_len", "0"),
    _range_row("densir.driver.encode", ENCODE, "--per_device_eval_batch_size", "0"),
    _range_row("densir.driver.train", TRAIN, "--per_device_train_batch_size", "0"),
    _range_row("densir.driver.train", TRAIN, "--learning_rate", "-1"),
    _range_row("densir.driver.train", TRAIN, "--temperature", "0"),
    _range_row("densir.driver.train", TRAIN, "--q_max_len", "0"),
    _range_row("densir.driver.train", TRAIN, "--p_max_len", "0"),
    _range_row("densir.driver.train_reranker", RERANK_TRAIN, "--max_len", "0"),
    _range_row("densir.driver.train_reranker", RERANK_TRAIN, "--temperature", "0"),
    _range_row("densir.driver.rerank", RERANK, "--batch_size", "0"),
    _range_row("densir.driver.rerank", RERANK, "--max_len", "0"),
    _range_row("densir.driver.rerank", RERANK, "--num_query_shards", "0"),
    _range_row("densir.search", SEARCHER, "--k", "0"),
    _range_row("densir.search", SEARCHER, "--interpolate", "2"),
    _range_row("densir.serve", ["--index", "{round}"], "--interpolate", "2"),
    _range_row("densir.serve", ["--index", "{round}"], "--port", "0"),
    _range_row("densir.serve", ["--index", "{round}"], "--hybrid_weight", "1.5"),
    _output_row("densir.faiss_retriever", SEARCH, "--save_ranking_to", "search.run"),
    _output_row("densir.faiss_retriever.reducer", REDUCE, "--save_ranking_to", "merged.run"),
    _output_row("densir.driver.encode", ENCODE, "--encoded_save_path", "enc/corpus"),
    _output_row("densir.driver.rerank", RERANK, "--save_ranking_to", "rerank.run"),
    _output_row("densir.driver.train", TRAIN, "--output_dir", "model"),
]


def _param(row: Row):
    marks = [pytest.mark.xfail(strict=False, reason=f"owned elsewhere: {row.xfail}")] if row.xfail else []
    return pytest.param(row, id=row.id, marks=marks)


# --------------------------------------------------------------------------- tiny inputs
DOCS = {f"d{i}": (f"Title {i}", f"passage number {i} about topic {i % 3}") for i in range(1, 7)}
QUERIES = {"q1": "what is topic one", "q2": "what is topic two", "q3": "and topic zero"}
QRELS = {"q1": "d1", "q2": "d2", "q3": "d3"}


def _run_lines(qids=("q1", "q2"), docs=("d1", "d2", "d3", "d4", "d5"), shift=1, tag="bm25") -> str:
    lines = []
    for n, qid in enumerate(qids):
        hits = [f"d{(int(d[1:]) - 1 + n * shift) % 6 + 1}" for d in docs]
        lines += [f"{qid} Q0 {d} {r} {10.0 - r:.4f} {tag}" for r, d in enumerate(hits, 1)]
    return "\n".join(lines) + "\n"


def _jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _groups(qids) -> str:
    return _jsonl({"query_id": q, "query": QUERIES[q],
                   "positive_passages": [{"docid": QRELS[q], "title": "", "text": DOCS[QRELS[q]][1]}],
                   "negative_passages": [{"docid": d, "title": "", "text": DOCS[d][1]} for d in ("d4", "d5", "d6")]}
                  for q in qids)


TOY_MODEL = {"model": "toy", "model_fingerprint": "toy-fp", "pooling": "mean", "normalize": False}


def _shard(name, ids, dim: int, meta: dict, seed: int = 0) -> None:
    from densir.embeddings import write_shard

    vectors = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    write_shard(name, ids, vectors, {k: v for k, v in meta.items() if k not in ("dim", "count", "dtype")})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_bert_dir) -> dict[str, str]:
    """Good inputs for every CLI; a row swaps one of them for a bad copy."""
    d = tmp_path_factory.mktemp("cli-inputs")
    files = {
        "corpus": ("corpus.jsonl", _jsonl({"docid": k, "title": t, "text": x} for k, (t, x) in DOCS.items())),
        "queries": ("queries.jsonl", _jsonl({"query_id": q, "query": t} for q, t in list(QUERIES.items())[:2])),
        "qrels": ("qrels.tsv", "".join(f"{q} 0 {QRELS[q]} 1\n" for q in ("q1", "q2"))),
        "run": ("run.trec", _run_lines()),
        "run2": ("run2.trec", _run_lines(docs=("d3", "d1", "d2"), tag="other")),
        "groups": ("groups.jsonl", _groups(("q1", "q2"))),
        "shard0_run": ("shard.0.run", _run_lines(docs=("d1", "d3"), shift=0)),
        "shard1_run": ("shard.1.run", _run_lines(docs=("d2", "d4"), shift=0)),
        "metrics": ("metrics.json", json.dumps({"MRR@10": 0.5, "nDCG@10": 0.5, "Recall@100": 1.0,
                                                 "Recall@1000": 1.0, "queries": 2}, indent=2) + "\n"),
    }
    paths = {}
    for key, (name, text) in files.items():
        (d / name).write_text(text)
        paths[key] = str(d / name)
    paths["train_args"] = str(d / "train_args.json")
    Path(paths["train_args"]).write_text(json.dumps({
        "model_name_or_path": tiny_bert_dir, "train_dir": [paths["groups"]], "output_dir": "{out}/model",
        "max_steps": 1, "per_device_train_batch_size": 2, "train_n_passages": 2, "save_strategy": "no"}, indent=2))
    _shard(d / "queries", ["q1", "q2"], 8, dict(TOY_MODEL, kind="query"))
    _shard(d / "corpus", list(DOCS), 8, dict(TOY_MODEL, kind="passage"), seed=1)
    paths.update(qshard=str(d / "queries"), pshard=str(d / "corpus"))
    # a get_data.sh directory for tools/holdout_split.py
    ds = d / "dataset"
    ds.mkdir()
    (ds / "dataset.json").write_text(json.dumps({"name": "toy", "docs": len(DOCS)}, indent=2))
    shutil.copy(paths["corpus"], ds / "corpus.jsonl")
    (ds / "queries.train.jsonl").write_text(_jsonl({"query_id": q, "query": t} for q, t in QUERIES.items()))
    (ds / "qrels.train.tsv").write_text("".join(f"{q} 0 {doc} 1\n" for q, doc in QRELS.items()))
    (ds / "bm25.train.run").write_text(_run_lines(qids=tuple(QUERIES)))
    (ds / "train.bm25.jsonl").write_text(_groups(tuple(QUERIES)))
    paths["dataset"] = str(ds)
    # a BEIR release directory for tools/prepare_data.py
    beir = d / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(_jsonl({"_id": k, "title": t, "text": x} for k, (t, x) in DOCS.items()))
    (beir / "queries.jsonl").write_text(_jsonl({"_id": q, "text": t} for q, t in QUERIES.items()))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{q}\t{doc}\t1\n" for q, doc in QRELS.items()))
    paths["beir"] = str(beir)
    # a round directory for python -m densir.search: the tiny model's corpus shard (dim 32)
    rd = d / "round"
    (rd / "enc").mkdir(parents=True)
    _shard(rd / "enc" / "corpus", list(DOCS), 32, {  # no fingerprint/pooling: only dim is checked
        "model": tiny_bert_dir, "kind": "passage", "source": paths["corpus"]}, seed=2)
    paths["round"] = str(rd)
    paths["model"] = tiny_bert_dir
    return paths


def _corrupt(path: Path, how: str) -> int | None:
    """Make ``path`` bad in the way ``how`` says; return the line the error must name (None: none)."""
    if how == "missing":
        path.unlink()
        return None
    if how == "empty":
        path.write_text("")
        return None
    if how == "truncate":  # a binary file cut short (a copy that did not finish)
        os.truncate(path, path.stat().st_size // 2)
        return None
    if how == "bytes":  # line 2 holds a byte that is not UTF-8
        raw = path.read_bytes().split(b"\n")
        raw[1] = raw[1][:3] + b"\xff" + raw[1][3:]
        path.write_bytes(b"\n".join(raw))
        return 2
    lines = path.read_text().splitlines()
    kind, _, arg = how.partition(":")
    if path.suffix == ".json" and kind in ("json", "field", "key"):  # a pretty-printed JSON object
        obj = json.loads(path.read_text())
        if kind == "json":
            path.write_text('{\n  "count": oops,\n  "dim": 8\n}\n')
            return 2
        if kind == "field":
            del obj[arg]
        else:
            obj[arg] = 1
        path.write_text(json.dumps(obj, indent=2))
        return None
    if kind == "json":
        lines[1] = '{"not json": '
        line = 2
    elif kind == "field":
        obj = json.loads(lines[1])
        del obj[arg]
        lines[1] = json.dumps(obj)
        line = 2
    elif kind == "id-space":  # line 2's id holds a space
        obj = json.loads(lines[1])
        key = "docid" if "docid" in obj else "query_id"
        obj[key] = f"{obj[key]} x"
        lines[1] = json.dumps(obj)
        line = 2
    elif kind == "surrogate":  # line 2's text is a lone surrogate (valid JSON, not text)
        obj = json.loads(lines[1])
        obj["text"] = "PLACEHOLDER"
        lines[1] = json.dumps(obj).replace("PLACEHOLDER", "\\ud800")
        line = 2
    elif kind == "drop":  # drop the record of one id
        lines = [s for s in lines if json.loads(s).get("query_id") != arg]
        line = None
    else:  # whitespace-separated: TREC runs ("qid Q0 docid rank score tag"), qrels ("qid 0 docid rel"), BEIR qrels
        header = 1 if lines[0].startswith("query-id") else 0
        i = header + (0 if kind == "qid" else 1)
        parts = lines[i].split()
        if kind == "columns":
            parts = parts[:4]
        elif kind == "qid":
            parts[0] = "q99"
        elif kind == "docid":
            parts[1 if header else 2] = "d99"
        elif kind == "rel":
            parts[3] = "high"
        elif kind == "score":
            parts[4] = "oops"
        elif kind == "nan":
            parts[4] = "nan"
        else:
            raise ValueError(how)
        lines[i] = ("\t" if header else " ").join(parts)
        line = i + 1
    path.write_text("\n".join(lines) + "\n")
    return line


def _bad_input(inputs: dict, key: str, how: str, where: Path) -> tuple[dict, str, int | None]:
    """A copy of ``inputs`` with ``key`` (an input, ``dir/member`` inside one, or a shard) made bad;
    returns the new inputs, the file the error must name and its line."""
    inputs = dict(inputs)
    top, _, member = key.partition("/")
    src = Path(inputs[top])
    if member:  # a file inside an input directory: copy the directory
        dst = where / src.name
        shutil.copytree(src, dst, symlinks=True)
        inputs[top] = str(dst)
        target = dst / member
    elif Path(f"{src}.json").exists():  # an embedding shard
        dst = where / src.name
        for suffix in (".npy", ".ids", ".json"):
            shutil.copy(f"{src}{suffix}", f"{dst}{suffix}")
        inputs[top] = str(dst)
        target = Path(f"{dst}.json")
    else:
        target = where / src.name
        shutil.copy(src, target)
        inputs[top] = str(target)
    if not target.exists() and Path(f"{target}.json").exists():  # a shard inside a directory
        target = Path(f"{target}.json")
    base = str(target)[:-len(".json")]
    if how in ("ids-bytes", "dup-ids"):  # line 2 of the shard's ids: a byte that is not UTF-8, or line 1's id
        ids = Path(f"{base}.ids").read_bytes().split(b"\n")
        ids[1] = ids[1] + b"\xff" if how == "ids-bytes" else ids[0]
        Path(f"{base}.ids").write_bytes(b"\n".join(ids))
        return inputs, f"{base}.ids", 2
    if how in ("nan-vector", "empty-npy", "truncated-npy"):  # the npy: a NaN in row 2, 0 bytes, 4 bytes short
        npy = Path(f"{base}.npy")
        if how == "nan-vector":
            arr = np.load(npy)
            arr[1, 0] = np.nan
            np.save(npy, arr)
        else:
            os.truncate(npy, 0 if how == "empty-npy" else npy.stat().st_size - 4)
        return inputs, str(npy), None
    if how == "dim16":  # the same shard re-encoded at another dimension
        base = str(target)[:-len(".json")]
        meta = json.loads(target.read_text())
        ids = Path(f"{base}.ids").read_text().split()
        for suffix in (".npy", ".ids", ".json"):
            os.unlink(f"{base}{suffix}")
        _shard(base, ids, 16, meta)
        return inputs, str(target), None
    return inputs, str(target), _corrupt(target, how)


# --------------------------------------------------------------------------- running a CLI
@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    argv: list = field(default_factory=list)

    def explain(self) -> str:
        return f"{self.argv}\nexit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-6000:]}"


def _cli_process(target: str, argv: list[str], out_path: str, err_path: str) -> None:
    """In the forked process: stdout/stderr to files, then run ``target`` as ``__main__``."""
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(REPO)
    sys.argv = [target, *argv]
    if target.endswith(".py"):
        script = str(REPO / target)
        sys.argv[0] = script
        sys.path.insert(0, os.path.dirname(script))  # as `python tools/x.py` does
        runpy.run_path(script, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    # multiprocessing's bootstrap turns SystemExit into the exit status and prints any other
    # exception's traceback to stderr, as the interpreter does for `python -m`


@pytest.fixture(scope="module")
def run_cli(tmp_path_factory):
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    logs = tmp_path_factory.mktemp("cli-logs")
    counter = iter(range(10**6))

    def run(target: str, argv: list[str]) -> Result:
        n = next(counter)
        out, err = logs / f"{n}.out", logs / f"{n}.err"
        p = ctx.Process(target=_cli_process, args=(target, argv, str(out), str(err)))
        p.start()
        p.join(ROW_TIMEOUT)
        if p.exitcode is None:
            p.kill()
            p.join()
            pytest.fail(f"{target} {argv} ran over {ROW_TIMEOUT}s")
        return Result(p.exitcode, out.read_text(errors="replace"), err.read_text(errors="replace"), [target, *argv])

    return run


def _fill(args, values: dict) -> list[str]:
    return [a.format(**values) for a in args]


def check_one_line_error(res: Result, names: str | None = None, line: int | None = None, field: str | None = None,
                         match: str | None = None) -> str:
    """The contract of densir.io.cli_errors, as every row checks it; returns the error line."""
    assert res.code != 0, res.explain()
    assert "Traceback" not in res.stderr, res.explain()
    lines = [s for s in res.stderr.splitlines() if s.strip()]
    assert lines and lines[-1].startswith("error: "), res.explain()
    last = lines[-1]
    if names is not None:
        assert f"error: {names}" in last, f"the error does not name {names}:\n{res.explain()}"
        if line is not None:
            assert f"error: {names}:{line}:" in last, f"the error does not name {names}:{line}:\n{res.explain()}"
    if field is not None:
        assert f"field '{field}'" in last, res.explain()
    if match is not None:
        assert re.search(match, last), res.explain()
    return last


@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_cli_error_is_one_line(row: Row, inputs, run_cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    values, names, line = dict(inputs), None, None
    if row.bad is not None:
        bad_dir = tmp_path / "bad"
        bad_dir.mkdir()
        values, names, line = _bad_input(inputs, *row.bad, bad_dir)
    values["out"] = str(out)
    if row.names is not None:
        names = row.names.format(**values)
    if row.line != "auto":
        line = row.line
    if "train_args" in values and Path(values["train_args"]).exists():  # the argument file names {out} too
        p = Path(values["train_args"])
        if p.parent != Path(inputs["train_args"]).parent:
            p.write_text(p.read_text().replace("{out}", str(out)))
    res = run_cli(row.cli, _fill(row.argv, values))
    check_one_line_error(res, names, line, row.field, row.match)
    for path in _fill(row.outputs, values):
        assert not os.path.exists(path), f"{path} exists after the error\n{res.explain()}"
    litter = [str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()]
    assert not litter, f"files left in the output dir: {litter}\n{res.explain()}"


def test_every_cli_has_rows():
    """Every ``python -m`` entry point of densir and every tools/*.py is in the table."""
    modules = set()
    for path in (REPO / "densir").rglob("*.py"):
        if '__name__ == "__main__"' in path.read_text():
            mod = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules.add(mod.removesuffix(".__main__"))
    tools = {f"tools/{p.name}" for p in (REPO / "tools").glob("*.py")}
    covered = {r.cli for r in ROWS}
    assert modules == set(MODULES), modules ^ set(MODULES)
    assert modules | tools <= covered, sorted((modules | tools) - covered)


# --------------------------------------------------------------------------- real processes
@pytest.mark.parametrize("row_id", ["densir.driver.encode-queries-empty-file", "build_train-run-unknown-docid",
                                    "densir.faiss_retriever-wrong-dimension", "densir.driver.train-fp16-with-bf16"])
def test_plain_subprocess_agrees(row_id, inputs, tmp_path):
    """The same rows as plain ``python -m`` / ``python tools/x.py`` processes: same one line."""
    row = next(r for r in ROWS if r.id == row_id)
    out = tmp_path / "out"
    out.mkdir()
    values, names, line = _bad_input(inputs, *row.bad, tmp_path) if row.bad else (dict(inputs), None, None)
    values["out"] = str(out)
    line = line if row.line == "auto" else row.line
    cmd = [sys.executable, str(REPO / row.cli)] if row.cli.endswith(".py") else [sys.executable, "-m", row.cli]
    proc = run_cmd(cmd + _fill(row.argv, values), check=False, timeout=600)
    res = Result(proc.returncode, proc.stdout, proc.stderr, cmd)
    assert res.code == 1, res.explain()
    check_one_line_error(res, names, line, row.field, row.match)
    assert not [p for p in out.rglob("*") if not p.is_dir()]


def test_torchrun_train_error_is_one_line_on_every_rank(inputs, tmp_path):
    """``torchrun --nproc_per_node 2 -m densir.driver.train`` on a malformed train file: every rank
    exits non-zero and prints the same one line (no traceback); the run writes no model."""
    values, names, line = _bad_input(inputs, "groups", "json", tmp_path)
    values["out"] = str(tmp_path / "out")
    logs = tmp_path / "logs"
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
                "--log_dir", str(logs), "--redirects", "3", "-m", "densir.driver.train"]
    proc = run_cmd(torchrun + _fill(TRAIN, values), check=False, timeout=600)
    assert proc.returncode != 0, proc.stderr[-3000:]
    per_rank = sorted(logs.rglob("stderr.log"))
    assert len(per_rank) == 2, (per_rank, proc.stderr[-3000:])
    errors = set()
    for log in per_rank:
        res = Result(1, "", log.read_text(errors="replace"), [str(log)])
        errors.add(check_one_line_error(res, names, line))
    assert len(errors) == 1, errors
    assert not (tmp_path / "out" / "model").exists()


def test_rerun_after_an_error_redoes_cleanly(inputs, run_cli, tmp_path):
    """Fix the input and rerun: the CLI does the whole job (nothing half-done is mistaken for done)."""
    out = tmp_path / "out"
    values, names, line = _bad_input(inputs, "queries", "empty", tmp_path)
    values["out"] = str(out)
    check_one_line_error(run_cli("densir.driver.encode", _fill(ENCODE_Q, values)), names)
    shutil.copy(inputs["queries"], values["queries"])
    res = run_cli("densir.driver.encode", _fill(ENCODE_Q, values))
    assert res.code == 0, res.explain()
    from densir.embeddings import EmbeddingShard

    assert EmbeddingShard.open(out / "queries").ids() == ["q1", "q2"]

    (tmp_path / "bad").mkdir()
    values, names, line = _bad_input(inputs, "run", "docid", tmp_path / "bad")
    values["out"] = str(out)
    check_one_line_error(run_cli("tools/build_train.py", _fill(BUILD, values)), names, line, "docid")
    shutil.copy(inputs["run"], values["run"])
    res = run_cli("tools/build_train.py", _fill(BUILD, values))
    assert res.code == 0, res.explain()
    assert [json.loads(s)["query_id"] for s in (out / "train.jsonl").read_text().splitlines()] == ["q1", "q2"]
