"""Convert a dataset release (dir, .zip or .tar.gz) into densir's formats.

    python tools/prepare_data.py --format beir --source scifact.zip --out_dir data/scifact --name beir/scifact
    python tools/prepare_data.py --format msmarco --source collectionandqueries.tar.gz --out_dir data/msmarco

Writes corpus.jsonl, queries.<split>.jsonl, qrels.<split>.tsv and, last, dataset.json, into OUT_DIR only
when all of them are complete (bad input leaves OUT_DIR as it was).
"""
import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

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
    out = Path(args.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # convert into a staging dir beside OUT_DIR and move the files in only when all are written
    # (dataset.json last): bad input leaves OUT_DIR as it was, whatever file it is found in
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        manifest = convert(args.source, staging, name=args.name or args.format)
        out.mkdir(exist_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: (p.name == "dataset.json", p.name)):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
