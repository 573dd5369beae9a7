"""Train groups (Tevatron layout) from qrels + a retrieval run: positives from the qrels,
negatives sampled from the run's top --depth minus positives (after skipping --skip ranks).

    python tools/build_train.py --queries queries.train.jsonl --qrels qrels.train.tsv \\
        --run bm25.train.run --corpus corpus.jsonl --out train.bm25.jsonl [--depth 200 --n_sample 30 --seed 42]

Writes OUT (atomic) and OUT's stats next to it (``.stats.json``): groups written, and queries
skipped because they had no positive, no negative, or were absent from the run.
"""
from densir.io import cli_errors
from densir.train_groups import build_train_cli


@cli_errors
def main():
    build_train_cli(__doc__)


if __name__ == "__main__":
    main()
