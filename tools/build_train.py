"""Train groups (Tevatron layout) from qrels + a retrieval run: positives from the qrels,
negatives sampled from the run's top --depth minus positives (after skipping --skip ranks).

    python tools/build_train.py --queries queries.train.jsonl --qrels qrels.train.tsv \\
        --run bm25.train.run --corpus corpus.jsonl --out train.bm25.jsonl [--depth 200 --n_sample 30 --seed 42]
        [--range_min R --range_max R --margin M --relative_margin M --max_score S --min_score S
         --sampling random|top --rescore_model CROSS_ENCODER]

Mining (sentence-transformers' mine_hard_negatives over the run's scores; densir.train_groups):
--margin / --relative_margin drop candidates scoring too close to the positive's score,
--max_score / --min_score those scoring above / below a bound, --range_min/--range_max keep a
rank window of what is left, --sampling top takes the best N_SAMPLE instead of a random draw, and
--rescore_model scores the positives and candidates with a cross-encoder whose scores all of
these then use (dropping likely false negatives). Without these flags the groups are unchanged.

Writes OUT (atomic) and OUT's stats next to it (``.stats.json``): groups written, queries
skipped because they had no positive, no negative, or were absent from the run, and what each
mining filter dropped (``dropped_<filter>``).
"""
from densir.io import cli_errors
from densir.train_groups import build_train_cli


@cli_errors
def main():
    build_train_cli(__doc__)


if __name__ == "__main__":
    main()
