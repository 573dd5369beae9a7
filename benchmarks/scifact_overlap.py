"""How in-domain BEIR SciFact's test split is to its train split, and the published rows to compare with.

    python benchmarks/scifact_overlap.py [--scifact ../shared/data/scifact] \\
        [--out benchmarks/results/scifact_overlap.json]

Counts, from the official qrels and queries (BEIR's ``qrels/{train,test}.tsv``, ``queries.jsonl``):
test queries with a relevant abstract that is also relevant to some train query (fine-tuning on
train has seen that abstract as a positive), and test claims whose text equals a train claim's
(after lower-casing and collapsing white space). Fine-tuned figures on SciFact test are therefore
in-domain, comparable with other in-domain fine-tunes and not with zero-shot BEIR figures.

The JSON also carries, as published (not measured here), Tevatron's in-domain SciFact fine-tunes
and a zero-shot row, each with its source, so the README quotes them from one file.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from densir.formats import read_qrels  # noqa: E402
from densir.io import iter_jsonl, write_json  # noqa: E402

PUBLISHED = {
    "tevatron_bert_base_in_domain": {
        "nDCG@10": 0.7473, "what": "bert-base-uncased fine-tuned on SciFact train (in-domain)",
        "source": "Tevatron paper (Gao et al. 2022, arXiv:2203.05765), Table: BEIR SciFact"},
    "tevatron_cocondenser_in_domain": {
        "nDCG@10": 0.7841, "what": "coCondenser fine-tuned on SciFact train (in-domain)",
        "source": "Tevatron paper (Gao et al. 2022, arXiv:2203.05765), Table: BEIR SciFact"},
    "bge_base_zero_shot": {
        "nDCG@10": 0.7408, "what": "bge-base-en-v1.5, zero-shot (no SciFact training)",
        "source": "MTEB leaderboard, SciFact retrieval"},
}


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def overlap(scifact: Path) -> dict:
    train, test = read_qrels(scifact / "qrels" / "train.tsv"), read_qrels(scifact / "qrels" / "test.tsv")
    seen = {d for docs in train.values() for d, r in docs.items() if r > 0}
    shared = sorted(q for q, docs in test.items() if any(r > 0 and d in seen for d, r in docs.items()))
    texts = {str(obj["_id"]): obj["text"] for _, obj in iter_jsonl(scifact / "queries.jsonl")}
    train_texts = {norm(texts[q]) for q in train if q in texts}
    same = sorted(q for q in test if q in texts and norm(texts[q]) in train_texts)
    return {"test_queries": len(test), "train_queries": len(train),
            "test_queries_with_a_train_positive": len(shared),
            "share_with_a_train_positive": round(len(shared) / len(test), 4),
            "test_claims_equal_to_a_train_claim": len(same), "equal_claim_ids": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scifact", default=str(REPO.parent / "shared" / "data" / "scifact"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scifact_overlap.json"))
    args = ap.parse_args()
    result = {"data": args.scifact, **overlap(Path(args.scifact)), "published": PUBLISHED}
    write_json(args.out, result)
    print({k: v for k, v in result.items() if k != "published"})


if __name__ == "__main__":
    main()
