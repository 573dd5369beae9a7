"""Turn a TREC run into the MS MARCO submission format ``qid<TAB>pid<TAB>rank``.

    python tools/score_to_marco.py RUN [--out RUN.marco] [--depth 1000]

Reads a TREC run (``qid Q0 docid rank score tag``); writes one line per hit, ranks 1..k per
query by descending score (file order among equal scores). Default output: ``RUN.marco``.
"""
import argparse

from densir.io import InputError, cli_errors, iter_run, run_to_marco


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out", help="output path (default: RUN.marco)")
    ap.add_argument("--depth", type=int, default=None, help="keep the top DEPTH hits per query")
    args = ap.parse_args()
    out = args.out or args.run + ".marco"
    if next(iter_run(args.run), None) is None:
        raise InputError(args.run, None, "run is empty: nothing to submit")
    n = run_to_marco(args.run, out, args.depth)
    print(f"{out}: {n} queries")


if __name__ == "__main__":
    main()
