"""Hard-negative train groups from a round-1 dense run: tools/build_train.py with the defaults of
Tevatron's recipe (negatives from the top 100, skipping the top 3 as likely unlabelled positives).

    python tools/build_train_hn.py --queries queries.train.jsonl --qrels qrels.train.tsv \\
        --run train.round1.run --corpus corpus.jsonl --out train.hn.jsonl [--depth 100 --skip 3 --n_sample 30]
"""
from densir.io import cli_errors
from densir.train_groups import build_train_cli


@cli_errors
def main():
    build_train_cli(__doc__, defaults={"depth": 100, "skip": 3})


if __name__ == "__main__":
    main()
