"""Turn a TREC run into the MS MARCO submission format ``qid<TAB>pid<TAB>rank``.

    python tools/score_to_marco.py RUN [--out RUN.marco] [--depth 1000]

Reads a TREC run (``qid Q0 docid rank score tag``); writes one line per hit, ranks 1..k per
query by descending score (file order among equal scores). Default output: ``RUN.marco``.
"""
import argparse

from densir.io import atomic_write, cli_errors, iter_run


def run_to_marco(run_path, out_path, depth=None) -> int:
    """Stream ``run_path`` into ``out_path``; return the number of queries written."""
    n = 0
    with atomic_write(out_path) as f:
        for qid, hits in iter_run(run_path):
            hits = sorted(hits, key=lambda h: -h[1])[:depth]  # stable: file order breaks ties
            for rank, (docid, _) in enumerate(hits, 1):
                f.write(f"{qid}\t{docid}\t{rank}\n")
            n += 1
    return n


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--out", help="output path (default: RUN.marco)")
    ap.add_argument("--depth", type=int, default=None, help="keep the top DEPTH hits per query")
    args = ap.parse_args()
    out = args.out or args.run + ".marco"
    n = run_to_marco(args.run, out, args.depth)
    print(f"{out}: {n} queries")


if __name__ == "__main__":
    main()
