"""Hold out N train queries of a get_data.sh directory as a tuning split (densir.holdout).

    python tools/holdout_split.py --data_dir data/scifact --out_dir data/scifact-heldout --n 100 --seed 0
    DATA_DIR=data/scifact-heldout EVAL_SPLIT=heldout bash run.sh ...   # tune here, never on test

    python tools/holdout_split.py --data_dir data/scifact --in_place --n 100 --seed 0
    # inside the directory itself (get_data.sh HOLDOUT=100 does this): queries.heldout.jsonl and
    # qrels.heldout.tsv appear, the train files lose those queries, dataset.json records "heldout"
"""
import argparse

from densir.holdout import holdout_in_place, split_heldout
from densir.io import UsageError, cli_errors


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", required=True, help="get_data.sh output")
    ap.add_argument("--out_dir", help="a new directory for the split (or --in_place)")
    ap.add_argument("--in_place", action="store_true", help="split inside --data_dir")
    ap.add_argument("--n", type=int, required=True, help="train queries to hold out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    if bool(args.out_dir) == args.in_place:
        raise UsageError("give --out_dir DIR or --in_place, one of them")
    if args.in_place:
        manifest = holdout_in_place(args.data_dir, args.n, args.seed, args.split)
        print(f"{args.data_dir}: heldout {manifest['heldout']}")
    else:
        manifest = split_heldout(args.data_dir, args.out_dir, args.n, args.seed, args.split)
        print(f"{args.out_dir}: {manifest['heldout_of']}")


if __name__ == "__main__":
    main()
