"""Train groups (Tevatron layout) from qrels + a retrieval run: positives from the qrels,
negatives sampled from the run's top --depth minus positives (after skipping --skip ranks).

    python tools/build_train.py --queries queries.train.jsonl --qrels qrels.train.tsv \\
        --run bm25.train.run --corpus corpus.jsonl --out train.bm25.jsonl [--depth 200 --n_sample 30 --seed 42]
        [--range_min R --range_max R --margin M --relative_margin M --max_score S --min_score S
         --sampling random|top --rescore_model CROSS_ENCODER [--backend onnx|openvino --quantize int8]]

Mining (sentence-transformers' mine_hard_negatives over the run's scores; densir.train_groups):
--margin / --relative_margin drop candidates scoring too close to the positive's score,
--max_score / --min_score those scoring above / below a bound, --range_min/--range_max keep a
rank window of what is left, --sampling top takes the best N_SAMPLE instead of a random draw, and
--rescore_model scores the positives and candidates with a cross-encoder whose scores all of
these then use (dropping likely false negatives), run by torch or, with --backend onnx|openvino
(--quantize int8), by a CPU backend as the other stages run it. Without these flags the groups are unchanged.

Writes OUT (atomic) and OUT's stats next to it (``.stats.json``): groups written, queries
skipped because they had no positive, no negative, or were absent from the run, and what each
mining filter dropped (``dropped_<filter>``).
"""
import argparse
import logging
import re

from densir.checks import at_least, check_output_path, parse_checked
from densir.io import UsageError, cli_errors
from densir.loading import check_backend
from densir.train_groups import SAMPLING, build_train_file, check_mining_args, describe_stats

RESCORE_FLAGS = ("batch_size", "max_len", "precision", "device", "backend", "quantize", "backend_recipe")
# the library's parameter names in its messages -> the flags a user typed
FLAGS = {**{p: f"--{p}" for p in ("range_min", "range_max", "relative_margin", "sampling", "backend", "quantize")},
         "recipe": "--backend_recipe", "precision": "--rescore_precision"}


def main(description: str = __doc__, defaults: dict | None = None, argv=None) -> None:
    """This CLI (``tools/build_train_hn.py``'s too, with other ``defaults``)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--qrels", required=True)
    ap.add_argument("--run", required=True, help="TREC run, e.g. BM25 or a round-1 dense run")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=at_least(1), default=200, help="sample negatives from the top DEPTH hits")
    ap.add_argument("--skip", type=at_least(0), default=0, help="leave out the top SKIP hits (false-negative guard)")
    ap.add_argument("--n_sample", type=at_least(1), default=30, help="negatives per query")
    ap.add_argument("--seed", type=int, default=42)
    m = ap.add_argument_group("mining (sentence-transformers' mine_hard_negatives; densir.train_groups)")
    m.add_argument("--range_min", type=at_least(0), default=0,
                   help="keep candidates from this rank on, among those the filters leave, best first (0 = the best)")
    m.add_argument("--range_max", type=at_least(1), default=None, help="... up to (not including) this rank; default: all")
    m.add_argument("--margin", "--absolute_margin", dest="margin", type=float, default=None,
                   help="drop a candidate unless score <= positive's score - MARGIN")
    m.add_argument("--relative_margin", type=float, default=None,
                   help="drop a candidate unless score <= positive's score - |positive's score| * M "
                        "(= positive's score * (1 - M) for a score >= 0)")
    m.add_argument("--max_score", type=float, default=None, help="drop a candidate scoring above this")
    m.add_argument("--min_score", type=float, default=None, help="drop a candidate scoring below this")
    m.add_argument("--sampling", choices=SAMPLING, default="random",
                   help="random: N_SAMPLE drawn from the window (seeded per query); top: the first N_SAMPLE")
    m.add_argument("--rescore_model", default=None,
                   help="a cross-encoder that scores the positives and candidates: the filters and ranks use its "
                        "scores (raw logits) instead of the run's")
    m.add_argument("--rescore_batch_size", type=at_least(1), default=64, help="pairs per forward pass when rescoring")
    m.add_argument("--rescore_max_len", type=at_least(1), default=None,
                   help="query + passage tokens; default: the model's saved max_len, else min(tokenizer, 512)")
    m.add_argument("--rescore_precision", default="fp32", help="fp32 | auto | fp16 | bf16 (densir.precision)")
    m.add_argument("--rescore_device", default="auto", help="auto (CUDA when there is one) | cpu | cuda[:i]")
    m.add_argument("--rescore_backend", "--backend", default="torch",
                   help="torch | onnx | openvino: what runs the cross-encoder (onnx/openvino: CPU only)")
    m.add_argument("--rescore_quantize", "--quantize", default="none",
                   help="none | int8 (with --backend onnx or openvino)")
    m.add_argument("--rescore_backend_recipe", "--backend_recipe", default=None,
                   help="a named recipe of densir.backends.RECIPES (calibrated ones on the run's first pairs)")
    ap.set_defaults(**(defaults or {}))
    # every range before any file is read: a negative depth or skip, or no negative to sample, would
    # write groups that train on the wrong thing with exit 0
    args = parse_checked(ap, argv)
    if args.skip >= args.depth:
        raise UsageError(f"--skip {args.skip} leaves no hit of the top --depth {args.depth} to sample negatives from")
    check_output_path("--out", args.out)
    try:
        check_mining_args(args.range_min, args.range_max, args.relative_margin, args.sampling)
        check_backend(args.rescore_backend, args.rescore_quantize, args.rescore_backend_recipe, args.rescore_precision,
                      task="cross-encoder")
    except ValueError as e:  # the library names its parameters; the user typed flags
        ap.error(re.sub(rf"\b({'|'.join(FLAGS)})\b", lambda m: FLAGS[m.group(1)], str(e)))
    if args.rescore_model is None and any(getattr(args, f"rescore_{k}") != ap.get_default(f"rescore_{k}")
                                          for k in RESCORE_FLAGS):
        ap.error("/".join(f"--rescore_{k}" for k in RESCORE_FLAGS) + " need --rescore_model")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = build_train_file(args.queries, args.qrels, args.run, args.corpus, args.out, depth=args.depth,
                             skip=args.skip, n_sample=args.n_sample, seed=args.seed, range_min=args.range_min,
                             range_max=args.range_max, margin=args.margin, relative_margin=args.relative_margin,
                             max_score=args.max_score, min_score=args.min_score, sampling=args.sampling,
                             rescore_model=args.rescore_model, rescore_batch_size=args.rescore_batch_size,
                             rescore_max_len=args.rescore_max_len, rescore_precision=args.rescore_precision,
                             rescore_device=args.rescore_device, rescore_backend=args.rescore_backend,
                             rescore_quantize=args.rescore_quantize, rescore_recipe=args.rescore_backend_recipe)
    print(f"{args.out}: {describe_stats(stats)}")


if __name__ == "__main__":
    cli_errors(main)()
