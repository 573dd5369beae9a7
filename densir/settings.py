"""The settings of the stage scripts, declared once.

The stage scripts (get_data.sh, run.sh, mine_hard_neg.sh, train_hn.sh, rerank.sh, demo.sh,
slurm/submit_pipeline.sh) take their settings as env vars, or as ``--name VALUE`` flags of the same
name in lower case (flags win). :data:`SETTINGS` is their one list: name, type, default, range or
choices, help, and the scripts that take each one. The scripts stay bash and read it here:

    python -m densir.settings export run.sh -- "$@"   # bash to eval: each setting of run.sh from its
                                                      # flag, env var or default, checked, exported
    python -m densir.settings check run.sh mine_hard_neg.sh  # the env's values, checked for these scripts
    python -m densir.settings help run.sh             # the settings part of `bash run.sh --help`
    python -m densir.settings names run.sh train_hn.sh       # the names these scripts take, one a line

A bad value ends the command, before the script does any work, with one line naming the setting
and the value, ``error: run.sh: NUM_SHARDS must be an integer >= 1, not 'abc'``, and exit status 1
(2 for an unknown option, an argument that is no option, or an option without its value).

It imports nothing heavy (no torch; the standard library and densir.io): the check costs a script one
short python start, before anything else runs.
"""
from __future__ import annotations

import os
import shlex
import string
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from densir.checks import Range, at_least, between, positive
from densir.io import UsageError, describe_error

# the scripts, by the name they report in messages (slurm/submit_pipeline.sh is submit_pipeline.sh)
GET_DATA, RUN, MINE, TRAIN_HN, RERANK, DEMO, SUBMIT = (
    "get_data.sh", "run.sh", "mine_hard_neg.sh", "train_hn.sh", "rerank.sh", "demo.sh", "submit_pipeline.sh")
SCRIPTS = (GET_DATA, RUN, MINE, TRAIN_HN, RERANK, DEMO, SUBMIT)
PIPELINE = (RUN, MINE, TRAIN_HN, RERANK)   # the scripts of scripts/stages.sh
ROUNDS = (RUN, TRAIN_HN)                   # a round that is evaluated, with its hybrid run
# slurm/submit_pipeline.sh submits these scripts' jobs: it takes every setting they take and hands
# those that are set on to the jobs (the jobs fill in the defaults)
SUBMITTED = (RUN, MINE, TRAIN_HN)
# ... except these, which it needs itself (the jobs' paths and array sizes): filled in when unset
SUBMIT_FILLS = ("DATA_DIR", "OUT_DIR", "NUM_SHARDS")

Default = str | Callable[[Mapping[str, str]], str]


class SettingError(UsageError):
    """A setting's value is bad: the message names the setting and the value (exit status 1)."""


class OptionError(UsageError):
    """An option that is unknown, lacks its value, or an argument that is no option (exit status 2)."""


@dataclass(frozen=True)
class Setting:
    """One setting: ``type`` is int, number, choice, text (a name or path) or flags (extra flags passed on).

    ``default`` is a literal, a template of other settings (``$DATA_DIR/train.bm25.jsonl``, those
    declared before it) or a function of the values so far (then ``shown`` is what help prints).
    ``range`` bounds an int or number (a :class:`densir.checks.Range`). ``optional``: empty
    means unset. ``unset_only``: only an unset variable gets the default (an empty one stays empty).
    """

    name: str
    type: str
    default: Default
    help: str
    scripts: tuple
    choices: tuple = ()
    range: Range = Range()
    optional: bool = False
    unset_only: bool = False
    shown: str = ""
    message: str = ""  # replaces "NAME must be <rule>, not '<value>'" ({value}, {choices})
    heldout: tuple = ()  # (value, STAGEs): that value reads DATA_DIR's held-out train queries in those stages

    @property
    def flag(self) -> str:
        return "--" + self.name.lower()

    def rule(self) -> str:
        """What a value must be, e.g. ``an integer >= 1``, ``a number in [0, 1]``, ``kl or margin_mse``."""
        if self.type == "choice":
            head = ", ".join(self.choices[:-1])
            return f"{head} or {self.choices[-1]}" if head else self.choices[0]
        if self.type not in ("int", "number"):
            return "non-empty"
        what = "an integer" if self.type == "int" else "a number"
        if self.range.low is None and self.range.high is None:
            return what
        return f"{what} {self.range.describe()}"

    def type_text(self) -> str:
        """The type column of help: ``int >= 1``, ``number in [0, 1]``, ``cls|mean|last``, ``text``."""
        if self.type == "choice":
            return "|".join(self.choices)
        if self.type in ("int", "number"):
            return self.rule().replace("an integer", "int").replace("a number", "number")
        return self.type

    def default_text(self) -> str:
        if self.shown:
            return self.shown
        if callable(self.default):
            raise AssertionError(f"{self.name}: a computed default needs 'shown'")
        if self.default == "":
            return "unset"
        return self.default.replace("${", "").replace("}", "").replace("$", "")

    def check(self, value: str) -> None:
        """Raise :class:`SettingError` naming the setting and the value unless ``value`` is one it takes."""
        if value == "" and (self.optional or self.type == "flags" or self.unset_only):
            return
        ok = True
        if self.type == "choice":
            ok = value in self.choices
        elif self.type in ("int", "number"):
            ok = self._in_range(value)
        elif self.type == "text":
            ok = value != ""
        if not ok:
            if self.message:
                raise SettingError(self.message.format(value=value, choices=" ".join(self.choices)))
            raise SettingError(f"{self.name} must be {self.rule()}, not '{value}'")

    def _in_range(self, value: str) -> bool:
        """``value`` is the text of an int (a number) in ``range``, with no white space around it."""
        if value != value.strip():
            return False
        try:
            return self.range.contains(int(value) if self.type == "int" else float(value))
        except ValueError:
            return False


def _nproc(_: Mapping[str, str]) -> str:
    """What coreutils' ``nproc`` prints: the CPUs this process may use, or OMP_NUM_THREADS's first
    number when set, at most OMP_THREAD_LIMIT."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if first.isdigit() and int(first) > 0:
        n = int(first)
    limit = os.environ.get("OMP_THREAD_LIMIT", "").strip()
    if limit.isdigit() and int(limit) > 0:
        n = min(n, int(limit))
    return str(n)


def _eval_split(v: Mapping[str, str]) -> str:
    return "dev" if os.path.isfile(os.path.join(v["DATA_DIR"], "qrels.dev.tsv")) else "test"


def _runs_dir(v: Mapping[str, str]) -> str:
    return "runs/" + os.path.basename(os.path.normpath(v["DATA_DIR"]))


def _int(name, default, help, scripts, range=None, **kw) -> Setting:
    """An integer setting, >= 1 unless ``range`` says otherwise."""
    return Setting(name, "int", default, help, scripts, range=range or at_least(1), **kw)


def _number(name, default, help, scripts, **kw) -> Setting:
    return Setting(name, "number", default, help, scripts, **kw)


def _choice(name, default, choices, help, scripts, **kw) -> Setting:
    return Setting(name, "choice", default, help, scripts, choices=tuple(choices), **kw)


def _text(name, default, help, scripts, **kw) -> Setting:
    return Setting(name, "text", default, help, scripts, **kw)


def _flags(name, help, scripts) -> Setting:
    return Setting(name, "flags", "", help, scripts)


_BOOL = ("0", "1")
_STAGE_MESSAGE = "unknown STAGE '{value}' (one of: {choices})"

# --------------------------------------------------------------------------- the list
SETTINGS: tuple[Setting, ...] = (
    # ---- get_data.sh (and demo.sh, which runs it)
    _text("DATASET", "beir/scifact", "msmarco-passage | beir/<name>", (GET_DATA, DEMO)),
    _text("DATASET", "msmarco-passage", "the get_data job's dataset: msmarco-passage | beir/<name>", (SUBMIT,)),
    _text("SOURCE", "", "URL, local file (.zip/.tar.gz) or directory in place of the public URL (demo.sh: "
          "$DENSIR_SHARED_DATA/scifact/scifact.zip, else ../shared/data/..., when it exists)",
          (GET_DATA, DEMO, SUBMIT), optional=True),
    _text("OUT_DIR", lambda v: "data/" + v["DATASET"].replace("/", "-"), "get_data.sh's output directory",
          (GET_DATA,), shown="data/<DATASET, / as ->"),
    _int("THREADS", _nproc, "BM25 threads", (GET_DATA, DEMO), shown="nproc"),
    _int("DEPTH", "200", "sample the round-1 negatives from the BM25 top DEPTH", (GET_DATA,)),
    _int("SEED", "42", "negative sampling seed", (GET_DATA,), range=at_least(0)),
    _text("TOKENIZE", "", "a tokenizer (HF name or dir): also write pre-tokenized groups and corpus",
          (GET_DATA,), optional=True),
    _int("HOLDOUT", "0", "hold out this many train queries (a seeded sample of those with a positive) inside "
         "OUT_DIR: queries.heldout.jsonl, qrels.heldout.tsv, bm25.heldout.run; the train files, BM25 negatives "
         "and groups never see them (dataset.json's \"heldout\" says how many train queries and groups are left). "
         "HYBRID=auto and VALIDATE=1 need them; 0 = off", (GET_DATA,), range=at_least(0)),
    _int("HOLDOUT_SEED", "0", "seed of that sample", (GET_DATA,), range=at_least(0)),
    # ---- demo.sh's own (the stage settings it sets are in scripts/demo_settings.sh)
    _text("DATA_DIR", "data/beir-scifact", "get_data.sh's output", (DEMO,)),
    _text("OUT_DIR", "runs/demo-scifact", "rounds, tables, timings", (DEMO,)),
    _int("HOLDOUT", "100", "get_data.sh's HOLDOUT: the train queries set aside, on which each round chooses its "
         "hybrid fusion (HYBRID=auto)", (DEMO,), range=at_least(0)),
    _choice("DEMO_CHECK", "1", _BOOL, "1 = exit 1 unless nDCG@10 round2 > round1 > 0.645 (zero-shot, MTEB)", (DEMO,)),
    _choice("DISTILL", "", _BOOL, "1 = round 2 learns from a cross-encoder too: after mining, rerank.sh STAGE=train "
            "trains the re-ranker on round 2's groups (the teacher stage), and train_hn.sh distils it (TEACHER; "
            "listwise KL beside the contrastive loss)", (DEMO,), optional=True,
            shown="scripts/demo_settings.sh's (0, with the held-out study behind it)"),
    _choice("RERANK", "0", _BOOL, "1 = then rerank.sh: train a cross-encoder on the round-2 groups, re-rank round "
            "2's top 100, fuse with round 2 (RERANK_ALPHA); its steps' times join timings.tsv", (DEMO,)),
    _text("TIMINGS", "$OUT_DIR/timings.tsv", "each step that ran appends 'script step seconds' here", (DEMO,)),
    # ---- shared by the stage scripts (scripts/stages.sh)
    _text("MODEL", "bert-base-uncased", "initial checkpoint: HF hub name or local dir", PIPELINE),
    _text("DATA_DIR", "data/msmarco-passage", "get_data.sh's output directory", PIPELINE),
    _text("OUT_DIR", _runs_dir, "where the rounds are written", PIPELINE, shown="runs/<basename DATA_DIR>"),
    _text("EVAL_SPLIT", _eval_split, "split to evaluate", PIPELINE,
          shown="dev if DATA_DIR/qrels.dev.tsv exists, else test"),
    _int("NUM_SHARDS", "8", "corpus shards: one encode job and one search job each", PIPELINE),
    _int("Q_MAX_LEN", "32", "query token limit (get_data.sh: for TOKENIZE)", PIPELINE + (GET_DATA,)),
    _int("P_MAX_LEN", "128", "passage token limit (get_data.sh: for TOKENIZE)", PIPELINE + (GET_DATA,)),
    _choice("POOLING", "", ("cls", "mean", "last"), "pooling of a new encoder", PIPELINE, optional=True,
            shown="MODEL's config, else cls"),
    _choice("NORMALIZE", "", ("1", "0", "true", "false", "True", "False"), "1 = L2-normalise embeddings, 0 = not",
            PIPELINE, optional=True, shown="MODEL's config, else 0"),
    _number("TEMPERATURE", "1.0", "contrastive softmax temperature", PIPELINE, range=positive()),
    _choice("PRECISION", "auto", ("auto", "bf16", "fp16", "fp32"),
            "training, encoding and re-ranking; auto = bf16 where the device has it (GPU sm_80+, CPU "
            "avx512_bf16/AMX), else fp16 on a GPU, else fp32 (python -m densir.precision)", PIPELINE),
    _int("NPROC", "1", "training processes per node; > 1 runs torchrun with --negatives_x_device (gloo on CPU, "
         "NCCL on GPUs)", PIPELINE),
    _int("BATCH", "8", "queries per device per training step", PIPELINE),
    _int("TRAIN_N_PASSAGES", "8", "passages per query: 1 positive + n-1 negatives", PIPELINE),
    _number("LR", "5e-6", "learning rate", PIPELINE, range=positive()),
    _number("EPOCHS", "3", "training epochs", PIPELINE, range=positive()),
    _int("MAX_STEPS", "-1", "> 0: train this many steps instead of EPOCHS", PIPELINE, range=at_least(-1)),
    _number("WARMUP", "0.1", "linear warm-up: a share of the steps if < 1, else a step count", PIPELINE,
            range=at_least(0, float)),
    _int("SAVE_STEPS", "500", "checkpoint every N steps; a rerun resumes from the last", PIPELINE),
    _int("SEED", "42", "training seed", PIPELINE, range=at_least(0)),
    _number("ATTENTION_DROPOUT", "", "training: attention-probability dropout; 0 runs torch's fused attention "
            "kernel on the CPU, 1.3x faster per step (benchmarks/train_throughput.py)", PIPELINE,
            range=between(0, 1, high_open=True), optional=True, shown="MODEL's"),
    _int("ENCODE_BATCH", "128", "encoding batch size", PIPELINE),
    _choice("BACKEND", "torch", ("torch", "onnx", "openvino"), "what runs the encoder when encoding "
            "(densir.backends; onnx/openvino run on the CPU, exported once beside the model; PRECISION then "
            "applies to training only)", PIPELINE),
    _choice("QUANTIZE", "none", ("none", "int8"), "int8 needs BACKEND onnx or openvino", PIPELINE),
    _int("EVAL_DEPTH", "1000", "retrieval depth of the evaluation run (get_data.sh: of the BM25 baseline)",
         PIPELINE + (GET_DATA,)),
    _flags("TRAIN_ARGS", "extra flags for densir.driver.train", PIPELINE),
    _flags("ENCODE_ARGS", "extra flags for densir.driver.encode", PIPELINE),
    _flags("SEARCH_ARGS", "extra flags for densir.faiss_retriever, e.g. \"--index_factory HNSW32\"", PIPELINE),
    _choice("STAGE", "all", ("all", "train", "encode-corpus", "encode-queries", "search", "reduce"),
            "only this stage (the SLURM jobs use it); reduce = merge shard runs, MS MARCO copy, evaluate, hybrid "
            "run, table", ROUNDS, message=_STAGE_MESSAGE),
    _choice("STAGE", "all", ("all", "encode-corpus", "encode-queries", "search", "build"),
            "only this stage (the SLURM jobs use it); build = merge shard runs, then tools/build_train_hn.py",
            (MINE,), message=_STAGE_MESSAGE),
    _choice("STAGE", "all", ("all", "train", "rerank", "merge"),
            "only this stage; merge = join the query shards, fuse, score, table", (RERANK,), message=_STAGE_MESSAGE),
    _int("SHARD", "", "with STAGE=encode-corpus or search: only this shard (a SLURM array task)", PIPELINE,
         range=at_least(0), optional=True),
    _text("TIMINGS", "$OUT_DIR/timings.tsv", "each step that ran appends 'script step seconds' here (empty: "
          "nowhere)", PIPELINE, unset_only=True),
    _text("PYTHON", "python", "python interpreter", SCRIPTS),
    # ---- the hybrid run of run.sh and train_hn.sh (each round's EVAL_SPLIT run fused with
    # DATA_DIR/bm25.<EVAL_SPLIT>.run by tools/fuse_runs.py; a changed setting needs R/<split>.hybrid.* deleted)
    _choice("HYBRID", "rrf", ("rrf", "weighted", "auto", "none"), "fuse each round's run with BM25's: rrf "
            "(reciprocal rank fusion) | weighted (sum of per-query normalised scores) | auto (each round chooses: "
            "its model also searches DATA_DIR's held-out train queries (get_data.sh HOLDOUT), every RRF k and "
            "weighted alpha x norm is scored on them (tools/choose_fusion.py), R/fusion.json keeps the sweep and "
            "the best by nDCG@10, which fuses the round's EVAL_SPLIT run) | none", ROUNDS,
            heldout=("auto", ("all", "encode-queries", "search", "reduce"))),
    _number("HYBRID_K", "60", "rrf: each run adds 1 / (HYBRID_K + rank)", ROUNDS, range=at_least(0, float)),
    _number("HYBRID_WEIGHT", "0.5", "weighted: weight of the dense run; BM25 gets 1 - it (min-max 0.5 was the "
            "best weighted setting on 100 held-out SciFact train queries: benchmarks/results/hybrid_sweep.json)",
            ROUNDS, range=between(0, 1)),
    _choice("HYBRID_NORM", "minmax", ("minmax", "zscore"), "weighted: per query and run", ROUNDS),
    _choice("VALIDATE", "0", _BOOL, "1 = training scores DATA_DIR's held-out train queries (get_data.sh HOLDOUT) "
            "once per epoch (each against its judged passages plus its BM25 top 100, not the whole corpus), "
            "checkpoints per epoch, and keeps the epoch best by nDCG@10; costs a search per epoch", ROUNDS,
            heldout=("1", ("all", "train"))),
    _int("VALIDATE_DEPTH", "100", "VALIDATE=1: the BM25 top N of each held-out query joins its judged passages "
         "in the validation sample (the passages encoded per epoch)", ROUNDS, range=at_least(1)),
    # ---- run.sh
    _text("TRAIN_GROUPS", "$DATA_DIR/train.bm25.jsonl", "round-1 train groups (one or more files, space-separated)",
          (RUN,)),
    _choice("ZERO_SHOT", "0", _BOOL, "1 = also encode, search and score MODEL untrained, as OUT_DIR/zeroshot/",
            (RUN, DEMO)),
    # ---- mine_hard_neg.sh
    _text("MINE_ROUND", "round1", "round whose model mines", (MINE,)),
    _text("TRAIN_SPLIT", "train", "queries to mine for (DATA_DIR/queries.<split>.jsonl + qrels)", (MINE,)),
    _int("DEPTH", "100", "retrieve (and sample negatives from) the top DEPTH", (MINE,)),
    _int("SKIP", "3", "leave out the top SKIP ranks (unlabelled positives hide there); < DEPTH", (MINE,), range=at_least(0)),
    _int("N_SAMPLE", "30", "negatives per query", (MINE, GET_DATA)),
    _int("MINE_SEED", "42", "sampling seed", (MINE,), range=at_least(0)),
    _text("HN_GROUPS", "$OUT_DIR/$MINE_ROUND/train.hn.jsonl", "output groups (a complete one is never rebuilt: "
          "other mining settings want another HN_GROUPS)", (MINE,)),
    _int("MINE_RANGE_MIN", "", "rank window [MIN, MAX) over the candidates the filters leave (best first; "
         "positives not counted)", (MINE,), range=at_least(0), optional=True, shown="0"),
    _int("MINE_RANGE_MAX", "", "end of that window (> MINE_RANGE_MIN)", (MINE,), optional=True, shown="all"),
    _number("MINE_MARGIN", "", "drop a candidate unless score <= positive's score - MARGIN", (MINE,),
            optional=True, shown="off"),
    _number("MINE_RELATIVE_MARGIN", "", "drop a candidate unless score <= positive's score - |positive's score| * M",
            (MINE,), range=at_least(0, float), optional=True, shown="off"),
    _number("MINE_MAX_SCORE", "", "drop candidates scoring above this", (MINE,), optional=True, shown="off"),
    _number("MINE_MIN_SCORE", "", "drop candidates scoring below this", (MINE,), optional=True, shown="off"),
    _choice("MINE_SAMPLING", "", ("random", "top"), "random (N_SAMPLE drawn at random) | top (the best N_SAMPLE)",
            (MINE,), optional=True, shown="random"),
    _text("MINE_RESCORE_MODEL", "", "a cross-encoder: the filters and ranks use its scores of the positives and "
          "candidates instead of the run's (drops likely false negatives; runs in PRECISION)", (MINE,),
          optional=True, shown="off"),
    _int("MINE_RESCORE_MAX_LEN", "", "its query + passage tokens", (MINE,), optional=True, shown="its own"),
    _int("MINE_RESCORE_BATCH_SIZE", "", "its pairs per batch", (MINE,), optional=True, shown="tools' default"),
    # ---- train_hn.sh
    _choice("INIT", "model", ("model", "round1"), "model = start from MODEL; round1 = continue from "
            "OUT_DIR/round1/model", (TRAIN_HN,)),
    _text("ROUND", "round2", "name of this round under OUT_DIR", (TRAIN_HN,)),
    _text("BM25_GROUPS", "$DATA_DIR/train.bm25.jsonl", "BM25-negative groups", (TRAIN_HN, RERANK)),
    _text("HN_GROUPS", "$OUT_DIR/round1/train.hn.jsonl", "hard-negative groups from mine_hard_neg.sh",
          (TRAIN_HN, RERANK)),
    _number("HN_EPOCHS", "$EPOCHS", "round-2 EPOCHS", (TRAIN_HN,), range=positive()),
    _int("HN_MAX_STEPS", "$MAX_STEPS", "round-2 MAX_STEPS", (TRAIN_HN,), range=at_least(-1)),
    _number("HN_LR", "$LR", "round-2 LR", (TRAIN_HN,), range=positive()),
    _text("TEACHER", "", "a cross-encoder dir (rerank.sh's model, or any CrossEncoder), or a scored TREC run file: "
          "every passage of both group files gets its score (tools/score_groups.py) into OUT_DIR/ROUND/teacher/, "
          "and round 2 trains on those groups with --distill_loss DISTILL_LOSS beside the contrastive loss",
          (TRAIN_HN,), optional=True, shown="none"),
    _choice("DISTILL_LOSS", "kl", ("kl", "margin_mse"), "kl (listwise KL to the teacher's softmax over each group) "
            "| margin_mse", (TRAIN_HN,)),
    _int("TEACHER_MAX_LEN", "", "query + passage tokens the teacher scores", (TRAIN_HN,), optional=True,
         shown="the length it was trained at"),
    _flags("TEACHER_ARGS", "more flags for a teacher model, e.g. \"--backend openvino --quantize int8\"", (TRAIN_HN,)),
    _choice("TEACHER_MISSING", "error", ("error", "drop"), "a run TEACHER: drop = leave out the passages it lacks",
            (TRAIN_HN,)),
    # ---- rerank.sh
    _text("RERANK_MODEL", "$MODEL", "starting checkpoint: a cross-encoder, or an encoder that gets a fresh "
          "one-logit head (a bi-encoder dir works)", (RERANK,)),
    _text("RERANK_ROUND", "rerank", "name of this stage's directory under OUT_DIR", (RERANK,)),
    _text("FROM_ROUND", "round2", "round whose EVAL_SPLIT run is re-ranked", (RERANK,)),
    _text("RERANK_RUN", "$OUT_DIR/$FROM_ROUND/$EVAL_SPLIT.run", "the run to re-rank", (RERANK,)),
    _text("RERANK_GROUPS", "$BM25_GROUPS $HN_GROUPS", "train groups, space-separated (round 2's)", (RERANK,)),
    # its names are checked by rerank.sh (densir.losses.LOSSES)
    _text("RERANK_LOSS", "plistmle", "bce | listwise | lambda | ranknet | listmle | plistmle | mnrl, or with "
          "teacher scores on the groups (tools/score_groups.py) margin_mse | kl (densir.losses; "
          "benchmarks/rerank_losses.sh compares them; the default was best fused there)", (RERANK,)),
    _int("RERANK_MAX_LEN", "256", "tokens of query + passage", (RERANK,)),
    _int("RERANK_N_PASSAGES", "$TRAIN_N_PASSAGES", "pairs per query in training: 1 positive + n-1 negatives",
         (RERANK,)),
    _int("RERANK_BATCH", "$BATCH", "queries per device per training step", (RERANK,)),
    _number("RERANK_LR", "2e-5", "learning rate", (RERANK,), range=positive()),
    _number("RERANK_EPOCHS", "1", "training epochs", (RERANK,), range=positive()),
    _int("RERANK_MAX_STEPS", "-1", "> 0: train this many steps instead", (RERANK,), range=at_least(-1)),
    _int("RERANK_DEPTH", "100", "re-rank each query's top RERANK_DEPTH", (RERANK,)),
    _number("RERANK_ALPHA", "0.6", "final score = ALPHA * z(first-stage score) + (1 - ALPHA) * z(cross-encoder "
            "score), z standardising each query's top RERANK_DEPTH; 0 = the cross-encoder alone. Choose it on "
            "held-out train queries (tools/fuse_runs.py --alpha ... --qrels), never on test", (RERANK,),
            range=between(0, 1)),
    _int("RERANK_EVAL_BATCH", "64", "pairs per forward pass when re-ranking", (RERANK,)),
    _int("NUM_QUERY_SHARDS", "1", "split the re-ranking into this many query ranges (a SLURM array)", (RERANK,)),
    _int("QUERY_SHARD", "", "with STAGE=rerank: only this query shard (an array task)", (RERANK,), range=at_least(0),
         optional=True),
    _flags("RERANK_TRAIN_ARGS", "extra flags for densir.driver.train_reranker, e.g. \"--bce_pos_weight 7\"", (RERANK,)),
    _flags("RERANK_ARGS", "extra flags for densir.driver.rerank", (RERANK,)),
    # ---- slurm/submit_pipeline.sh's own (it also takes every setting of SUBMITTED and exports it to the jobs)
    _text("PARTITION", "", "passed to every sbatch", (SUBMIT,), optional=True, shown="the cluster's"),
    _text("ACCOUNT", "", "passed to every sbatch", (SUBMIT,), optional=True, shown="the cluster's"),
    _text("QOS", "", "passed to every sbatch", (SUBMIT,), optional=True, shown="the cluster's"),
    _int("GPUS_PER_NODE", "0", "GPUs for training (per node) and for each encode/search task", (SUBMIT,), range=at_least(0)),
    _int("NODES", "1", "nodes for training (srun torchrun, one per node)", (SUBMIT,)),
    _int("CPUS_PER_TASK", "1", "CPUs of each get_data/encode/search/reduce job", (SUBMIT,)),
    _int("TRAIN_CPUS", "", "CPUs per node of a training job", (SUBMIT,), optional=True, shown="CPUS_PER_TASK * NPROC"),
    _text("TIME", "", "--time of every job", (SUBMIT,), optional=True, shown="the cluster's"),
    _text("MEM", "", "--mem of every job", (SUBMIT,), optional=True, shown="the cluster's"),
    _text("TRAIN_TIME", "$TIME", "--time of a training job", (SUBMIT,), optional=True),
    _text("TRAIN_MEM", "$MEM", "--mem of a training job", (SUBMIT,), optional=True),
    _flags("SBATCH_ARGS", "extra sbatch flags for every job, e.g. \"--constraint=a100 --exclusive\"", (SUBMIT,)),
    _text("JOB_PREFIX", "densir", "job-name prefix", (SUBMIT,)),
    _text("SBATCH", "sbatch", "sbatch command", (SUBMIT,)),
    _flags("GET_DATA_ARGS", "extra get_data.sh flags for the get_data job", (SUBMIT,)),
)


# checks between settings: (names, fn(values) -> message or None); run when every name is set
def _shard(shard: str, count: str) -> Callable[[Mapping[str, str]], str | None]:
    return lambda v: (f"{shard}={v[shard]} is out of range for {count}={v[count]}"
                      if int(v[shard]) >= int(v[count]) else None)


CONSTRAINTS: tuple = (
    (("SHARD", "NUM_SHARDS"), _shard("SHARD", "NUM_SHARDS")),
    (("QUERY_SHARD", "NUM_QUERY_SHARDS"), _shard("QUERY_SHARD", "NUM_QUERY_SHARDS")),
    (("BACKEND", "QUANTIZE"), lambda v: "QUANTIZE=int8 needs BACKEND=onnx or openvino"
     if v["BACKEND"] == "torch" and v["QUANTIZE"] == "int8" else None),
    (("SKIP", "DEPTH"), lambda v: f"SKIP={v['SKIP']} leaves no rank of DEPTH={v['DEPTH']} to mine "
     "(SKIP must be < DEPTH)" if int(v["SKIP"]) >= int(v["DEPTH"]) else None),
    (("MINE_RANGE_MIN", "MINE_RANGE_MAX"), lambda v: f"MINE_RANGE_MAX must be > MINE_RANGE_MIN, not "
     f"'{v['MINE_RANGE_MAX']}' (MINE_RANGE_MIN={v['MINE_RANGE_MIN']})"
     if int(v["MINE_RANGE_MAX"]) <= int(v["MINE_RANGE_MIN"]) else None),
)


# --------------------------------------------------------------------------- lookups
def script_name(script: str) -> str:
    """``slurm/submit_pipeline.sh`` -> ``submit_pipeline.sh``; an unknown script is a ValueError."""
    name = os.path.basename(script)
    if name not in SCRIPTS:
        raise ValueError(f"unknown script {script!r} (one of: {', '.join(SCRIPTS)})")
    return name


def settings_of(script: str) -> list[Setting]:
    """The settings ``script`` declares, in declaration order (the order defaults are filled in)."""
    name = script_name(script)
    return [s for s in SETTINGS if name in s.scripts]


def passed_on(script: str) -> list[Setting]:
    """The settings ``script`` takes only to hand on (submit_pipeline.sh: its jobs' settings)."""
    if script_name(script) != SUBMIT:
        return []
    own = {s.name for s in settings_of(SUBMIT)}
    seen, out = set(own), []
    for s in SETTINGS:
        if any(x in s.scripts for x in SUBMITTED) and s.name not in seen:
            seen.add(s.name)
            out.append(s)
    return out


def names(scripts: Iterable[str]) -> list[str]:
    """Every setting name the scripts take, each once, in declaration order."""
    out: list[str] = []
    for script in scripts:
        for s in settings_of(script) + passed_on(script):
            if s.name not in out:
                out.append(s.name)
    return out


# --------------------------------------------------------------------------- parse, resolve, check
def parse_flags(script: str, argv: Sequence[str]) -> tuple[dict, bool]:
    """``--name VALUE`` / ``--name=VALUE`` for each setting of ``script``: ({NAME: VALUE}, help asked)."""
    known = set(names([script]))
    flags: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            return flags, True
        if not arg.startswith("--") or arg == "--":
            raise OptionError(f"unexpected argument '{arg}' (see --help)")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise OptionError(f"option {arg} needs a value")
            key, value = arg[2:], argv[i + 1]
            i += 2
        name = key.upper().replace("-", "_")
        if name not in known:
            raise OptionError(f"unknown option --{key.lower()} (see --help)")
        flags[name] = value
    return flags, False


def resolve(script: str, env: Mapping[str, str], flags: Mapping[str, str] | None = None) -> dict:
    """Every setting of ``script``: its flag, else its env var, else its default; all checked.

    The settings ``script`` only hands on (:func:`passed_on`) are in the result when set, and
    checked then. Raises :class:`SettingError` for the first bad value (declaration order), then
    for the first check between settings that fails.
    """
    given = dict(env)
    given.update(flags or {})
    values: dict = {}
    for s in settings_of(script):
        value = given.get(s.name)
        if value is None or (value == "" and not s.unset_only):
            d = s.default
            value = d(values) if callable(d) else string.Template(d).substitute(values)
        s.check(value)
        values[s.name] = value
    for s in passed_on(script):
        value = given.get(s.name)
        if s.name in SUBMIT_FILLS and not value:
            d = s.default
            value = d(values) if callable(d) else string.Template(d).substitute(values)
        if value is not None:
            s.check(value)
            values[s.name] = value
    for needs, rule in CONSTRAINTS:
        if all(values.get(n, "") != "" for n in needs):
            message = rule(values)
            if message:
                raise SettingError(message)
    return values


def heldout_users(script: str, values: Mapping[str, str]) -> list[str]:
    """The settings of ``script`` whose values read DATA_DIR's held-out train queries in its STAGE, as
    ``NAME=value`` (e.g. ``["VALIDATE=1"]``): what the stage scripts check those queries are there for."""
    stage = values.get("STAGE", "all")
    return [f"{s.name}={s.heldout[0]}" for s in settings_of(script)
            if s.heldout and values.get(s.name) == s.heldout[0] and stage in s.heldout[1]]


def export_lines(script: str, values: Mapping[str, str]) -> str:
    """Bash that sets each value (and exports it, except the cluster settings of submit_pipeline.sh), and
    ``HELDOUT_USERS`` (not exported): :func:`heldout_users`."""
    own_only = {s.name for s in settings_of(SUBMIT)} if script_name(script) == SUBMIT else set()
    lines = [f"{k}={shlex.quote(v)}" for k, v in values.items()]
    exported = [k for k in values if k not in own_only]
    if exported:
        lines.append("export " + " ".join(exported))
    lines.append("HELDOUT_USERS=" + shlex.quote(" ".join(heldout_users(script, values))))
    return "\n".join(lines) + "\n"


def help_text(script: str, width: int = 100) -> str:
    """The settings table of ``script``'s --help: name, type and default on one line, then the help."""
    own = settings_of(script)
    how = "env vars" if script_name(script) == DEMO else \
        "env vars, or --flags of the same name in lower case; flags win"
    out = [f"Settings ({how}; densir/settings.py):"]
    out += _table(own, width)
    handed = passed_on(script)
    if handed:
        out += ["", f"Settings it exports to the jobs when set (those of {', '.join(SUBMITTED)}; "
                f"{', '.join(SUBMIT_FILLS)} always):"]
        out += _table(handed, width)
    return "\n".join(out) + "\n"


def _table(settings: Sequence[Setting], width: int) -> list:
    lines = []
    for s in settings:
        lines.append(f"  {s.name:<24} {s.type_text()}; default {s.default_text()}")
        lines += textwrap.wrap(s.help, width, initial_indent=" " * 27, subsequent_indent=" " * 27)
    return lines


# --------------------------------------------------------------------------- command line
USAGE = """usage: python -m densir.settings export SCRIPT [-- ARGS...]
       python -m densir.settings check SCRIPT...
       python -m densir.settings help SCRIPT
       python -m densir.settings names SCRIPT..."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] not in ("export", "check", "help", "names"):
        print(USAGE, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if "--" in rest:
        cut = rest.index("--")
        rest, args = rest[:cut], rest[cut + 1:]
    else:
        args = []
    who = os.path.basename(rest[0]) if rest else "densir.settings"
    try:
        scripts = [script_name(s) for s in rest]
        if command == "names":
            print("\n".join(names(scripts)))
        elif command == "help":
            for s in scripts:
                sys.stdout.write(help_text(s))
        elif command == "check":
            for s in scripts:
                who = s
                resolve(s, os.environ)
        else:
            if len(scripts) != 1:
                raise ValueError("export takes one script")
            flags, wants_help = parse_flags(scripts[0], args)
            if wants_help:
                print("usage; exit 0")  # the script's usage(): its header, then help_text
                return 0
            sys.stdout.write(export_lines(scripts[0], resolve(scripts[0], os.environ, flags)))
    except ValueError as e:  # SettingError, OptionError, an unknown script
        print(f"error: {who}: {describe_error(e)}", file=sys.stderr)
        return 2 if isinstance(e, OptionError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
