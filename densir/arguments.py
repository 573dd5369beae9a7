"""Argument dataclasses for every stage, parsed by ``transformers.HfArgumentParser``.

A stage takes flags or a single ``.json`` file holding the same names, so a run is reproducible
from its argument file. Names follow Tevatron's where one exists.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelArguments:
    """The encoder: shared by training, encoding and hard-negative mining."""

    model_name_or_path: str = field(metadata={"help": "HF hub name, HF dir, sentence-transformers dir or densir dir"})
    pooling: Optional[str] = field(default=None, metadata={
        "help": "cls | mean | last; default: what the checkpoint says (densir or sentence-transformers dir), else cls"})
    normalize: Optional[bool] = field(default=None, metadata={
        "help": "L2-normalize embeddings; default: what the checkpoint says, else off"})
    untie_encoder: bool = field(default=False, metadata={"help": "separate query and passage encoders"})
    query_prefix: Optional[str] = field(default=None, metadata={"help": "text put before every query, e.g. 'query: '"})
    passage_prefix: Optional[str] = field(default=None, metadata={"help": "text put before every passage"})


def parse_args(*dataclass_types):
    """Parse flags, or one ``.json`` argument file, into the given dataclasses."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        return parser.parse_json_file(json_file=sys.argv[1])
    return parser.parse_args_into_dataclasses()
