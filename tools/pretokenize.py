"""Pre-tokenize train groups and/or a corpus for the drivers (see densir/pretokenize.py).

    python tools/pretokenize.py --tokenizer MODEL --groups train.bm25.jsonl train.bm25.tok.jsonl \\
        --corpus corpus.jsonl corpus.tok.jsonl [--q_max_len 32 --p_max_len 128]
"""
import argparse

from transformers import AutoTokenizer

from densir.io import cli_errors
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
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    if args.groups:
        n = pretokenize_groups(*args.groups, tok, args.q_max_len, args.p_max_len)
        print(f"{args.groups[1]}: {n} groups")
    if args.corpus:
        n = pretokenize_corpus(*args.corpus, tok, args.p_max_len)
        print(f"{args.corpus[1]}: {n} passages")


if __name__ == "__main__":
    main()
