"""Teacher scores on train groups (densir.reranker.score_groups), for the distillation losses.

    python tools/score_groups.py --model_name_or_path CROSS_ENCODER --groups IN.jsonl --out OUT.jsonl \\
        [--batch_size 64] [--max_len 512] [--precision fp32|auto|fp16|bf16] [--device auto|cpu|cuda] \\
        [--backend torch|onnx|openvino --quantize none|int8 --backend_recipe NAME]
    python tools/score_groups.py --run TEACHER.run --groups IN.jsonl --out OUT.jsonl [--missing error|drop]

Reads train groups (JSONL, Tevatron's layout; strings or pre-tokenized ids) and writes the same
groups, record by record in input order, each passage, positive or negative, carrying
``"score"``: the cross-encoder's raw logit for (query, passage), exactly
:meth:`densir.reranker.modeling.CrossEncoderReranker.predict` on the pair the re-ranker trains
on (``densir.dataset.passage_input``: title and text joined as training joins them). Any
cross-encoder ``CrossEncoderReranker.load`` takes: a densir re-ranker, a sentence-transformers
``CrossEncoder``, a HF one-label classifier. A score already on a passage is overwritten; every
other field is kept. The groups stream through (a chunk of ``--batch_size * 16`` pairs at a
time, so a file of MS MARCO size never sits in memory) and OUT appears only when complete
(:func:`densir.io.atomic_write`). The distillation losses (``--loss margin_mse | kl``) train on
these scores.

The teacher may instead be a scored run (``--run RUN``: a TREC run whose scores are the teacher's,
e.g. a cross-encoder's re-ranking or a published teacher's scores): each passage gets the score
its (``query_id``, ``docid``) has in the run (:func:`score_groups_from_run`). A passage the run
lacks is an error naming the group's line (``--missing error``) or is dropped
(``--missing drop``; a group left without a positive is dropped too, and both are counted). Only
the pairs the groups hold are kept while the run streams through, so memory follows the groups,
not the run.
"""
import argparse
import logging
import re

from densir.io import cli_errors
from densir.loading import check_backend
from densir.reranker.score_groups import score_groups_file, score_groups_from_run_file

FLAGS = {"backend": "--backend", "quantize": "--quantize", "recipe": "--backend_recipe", "precision": "--precision"}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    teacher = ap.add_mutually_exclusive_group(required=True)
    teacher.add_argument("--model_name_or_path", help="the teacher: any cross-encoder")
    teacher.add_argument("--run", help="the teacher: a scored TREC run (each passage gets its pair's score)")
    ap.add_argument("--missing", default="error", choices=("error", "drop"),
                    help="with --run: a passage the run lacks is an error, or is left out")
    ap.add_argument("--groups", required=True, help="train-group JSONL to score")
    ap.add_argument("--out", required=True, help="the same groups with 'score' on every passage")
    ap.add_argument("--batch_size", type=int, default=64, help="pairs per forward pass")
    ap.add_argument("--max_len", type=int, default=None,
                    help="query + passage tokens; default: the model's saved max_len, else min(tokenizer, 512)")
    ap.add_argument("--precision", default="fp32", help="fp32 | auto | fp16 | bf16 (densir.precision)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when there is one) | cpu | cuda[:i]")
    ap.add_argument("--backend", default="torch", help="torch | onnx | openvino (densir.backends; CPU only)")
    ap.add_argument("--quantize", default="none", help="none | int8 (with --backend onnx or openvino)")
    ap.add_argument("--backend_recipe", default=None,
                    help="a named recipe of densir.backends.RECIPES (calibrated ones on the file's first pairs)")
    args = ap.parse_args(argv)
    if args.batch_size < 1:
        ap.error(f"--batch_size must be positive, got {args.batch_size}")
    try:
        check_backend(args.backend, args.quantize, args.backend_recipe, args.precision, task="cross-encoder")
    except ValueError as e:  # the library names its parameters; the user typed flags
        ap.error(re.sub(r"\b(backend|quantize|recipe|precision)\b", lambda m: FLAGS.get(m.group(1)), str(e)))
    return args


@cli_errors
def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.run:
        stats = score_groups_from_run_file(args.run, args.groups, args.out, missing=args.missing)
        dropped = (f" (left out: {stats['dropped_passages']} passages not in the run, {stats['dropped_groups']} "
                   "groups left without a positive)") if stats["dropped_passages"] else ""
        print(f"{args.out}: {stats['groups']} groups, {stats['passages']} passages scored by {args.run}{dropped}")
        return stats
    stats = score_groups_file(args.model_name_or_path, args.groups, args.out, batch_size=args.batch_size,
                              max_len=args.max_len, precision=args.precision, device=args.device,
                              backend=args.backend, quantize=args.quantize, recipe=args.backend_recipe)
    print(f"{args.out}: {stats['groups']} groups, {stats['passages']} passages scored by {args.model_name_or_path}")
    return stats


if __name__ == "__main__":
    main()
