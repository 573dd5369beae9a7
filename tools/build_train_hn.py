"""Hard-negative train groups from a round-1 dense run: tools/build_train.py with the defaults of
Tevatron's recipe (negatives from the top 100, skipping the top 3 as likely unlabelled positives).

    python tools/build_train_hn.py --queries queries.train.jsonl --qrels qrels.train.tsv \\
        --run train.round1.run --corpus corpus.jsonl --out train.hn.jsonl [--depth 100 --skip 3 --n_sample 30]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_train import main  # noqa: E402

if __name__ == "__main__":
    main(defaults={"depth": 100, "skip": 3})
