"""Teacher scores on train groups: every passage of every group gets ``"score"``, the raw logit of
any cross-encoder, or the score its pair has in a scored run (densir.reranker.score_groups), for the distillation losses (--loss margin_mse | kl).

    python tools/score_groups.py --model_name_or_path CROSS_ENCODER --groups IN.jsonl --out OUT.jsonl \\
        [--batch_size 64] [--max_len 512] [--precision fp32] [--device auto] \\
        [--backend openvino --quantize int8]
    python tools/score_groups.py --run TEACHER.run --groups IN.jsonl --out OUT.jsonl [--missing drop]

Streams IN, writes OUT atomically (the same groups, in order, every other field kept).
"""
from densir.io import cli_errors
from densir.reranker.score_groups import score_groups_cli


@cli_errors
def main():
    score_groups_cli()


if __name__ == "__main__":
    main()
