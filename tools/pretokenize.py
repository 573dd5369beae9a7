"""Pre-tokenize train groups and/or a corpus for the drivers (see densir/pretokenize.py).

    python tools/pretokenize.py --tokenizer MODEL --groups train.bm25.jsonl train.bm25.tok.jsonl \\
        --corpus corpus.jsonl corpus.tok.jsonl [--q_max_len 32 --p_max_len 128]
"""
import argparse
import contextlib
import os

from transformers import AutoTokenizer

from densir.io import InputError, UsageError, cli_errors
from densir.models import resolve_model_dir
from densir.pretokenize import pretokenize_corpus, pretokenize_groups


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--groups", nargs=2, metavar=("IN", "OUT"))
    ap.add_argument("--corpus", nargs=2, metavar=("IN", "OUT"))
    ap.add_argument("--q_max_len", type=int, default=32)
    ap.add_argument("--p_max_len", type=int, default=128)
    args = ap.parse_args()
    if not (args.groups or args.corpus):
        raise UsageError("give --groups IN OUT, --corpus IN OUT, or both")
    tok = AutoTokenizer.from_pretrained(resolve_model_dir(args.tokenizer).local_dir)
    jobs = []
    if args.groups:
        jobs.append((args.groups, "groups", lambda i, o: pretokenize_groups(i, o, tok, args.q_max_len, args.p_max_len)))
    if args.corpus:
        jobs.append((args.corpus, "passages", lambda i, o: pretokenize_corpus(i, o, tok, args.p_max_len)))
    # every output under a temporary name first (each written atomically), renamed only when all are
    # done: bad input in the corpus leaves no groups file behind, and a rerun redoes both
    staged, done = [], []
    try:
        for (src, out), what, run in jobs:
            staged.append((f"{out}.tmp-pretokenize", out))
            n = run(src, staged[-1][0])
            if n == 0:
                raise InputError(src, None, f"no {what} to pretokenize")
            done.append(f"{out}: {n} {what}")
        for tmp, out in staged:
            os.replace(tmp, out)
        staged = []
    finally:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    print("\n".join(done))


if __name__ == "__main__":
    main()
