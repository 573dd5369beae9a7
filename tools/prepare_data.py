"""Convert a dataset release (dir, .zip or .tar.gz) into densir's formats.

    python tools/prepare_data.py --format beir --source scifact.zip --out_dir data/scifact --name beir/scifact
    python tools/prepare_data.py --format msmarco --source collectionandqueries.tar.gz --out_dir data/msmarco

Writes corpus.jsonl, queries.<split>.jsonl, qrels.<split>.tsv and, last, dataset.json.
"""
import argparse
import json
import logging

from densir.io import cli_errors
from densir.prepare import convert_beir, convert_msmarco


@cli_errors
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", choices=["beir", "msmarco"], required=True)
    ap.add_argument("--source", required=True, help="directory, .zip or .tar.gz of the release")
    ap.add_argument("--out_dir", required=True)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    convert = convert_beir if args.format == "beir" else convert_msmarco
    manifest = convert(args.source, args.out_dir, name=args.name or args.format)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
