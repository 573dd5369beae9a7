"""Hard-negative train groups from a round-1 dense run: tools/build_train.py with the defaults of
Tevatron's recipe (negatives from the top 100, skipping the top 3 as likely unlabelled positives).

    python tools/build_train_hn.py --queries queries.train.jsonl --qrels qrels.train.tsv \\
        --run train.round1.run --corpus corpus.jsonl --out train.hn.jsonl [--depth 100 --skip 3 --n_sample 30]
        [--range_min R --range_max R --margin M --relative_margin M --max_score S --min_score S
         --sampling random|top --rescore_model CROSS_ENCODER]

The mining flags are tools/build_train.py's (densir.train_groups); e.g. NV-Retriever's
TopK-PercPos: --relative_margin 0.05 --sampling top (--rescore_model to judge with a cross-encoder).
"""
from build_train import main  # tools/ is on sys.path when this script runs

from densir.io import cli_errors

if __name__ == "__main__":
    cli_errors(main)(__doc__, defaults={"depth": 100, "skip": 3})
