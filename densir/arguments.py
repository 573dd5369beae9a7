"""Argument dataclasses for every stage, parsed by ``transformers.HfArgumentParser``.

A stage takes flags or a single ``.json`` file holding the same names, so a run is reproducible
from its argument file. Names follow Tevatron's where one exists.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from densir.io import ParameterError

RANKING_METRICS = ("nDCG@10", "MRR@10")  # validation's default metrics (the bi-encoder adds Recall@100)


@dataclass
class BaseTrainingArguments(TrainingArguments):
    """HF ``TrainingArguments`` (every Trainer flag) with densir's defaults; the base of every densir
    trainer's arguments (bi-encoder here, cross-encoder re-ranker too).

    ``--resume_from_checkpoint auto`` resumes from the latest ``checkpoint-*`` in ``output_dir``
    (starting afresh when there is none); a path resumes from that checkpoint.
    """

    # the batch dicts are nested ({"query": ..., "passage": ...}): nothing to drop by signature
    remove_unused_columns: bool = field(default=False, metadata={"help": "kept False: densir batches are nested"})
    report_to: Optional[str] = field(default="none", metadata={"help": "integrations to report to (HF flag)"})
    logging_steps: float = field(default=10, metadata={"help": "log every N optimizer steps"})
    warmup_ratio: Optional[float] = field(default=None, metadata={
        "help": "warmup as a fraction of all steps (Tevatron's flag; transformers 5 spells it --warmup_steps 0.1)"})

    grad_cache: bool = field(default=False, metadata={
        "help": "gradient cache (densir.gradcache): a step's batch in chunks of bounded memory (--gc_*_chunk_size), "
                "the exact gradients of the whole batch"})
    # validation during training (densir.validation.Validator)
    eval_depth: int = field(default=100, metadata={
        "help": "passages retrieved (bi-encoder) or hits re-ranked (re-ranker) per eval query"})
    eval_metrics: Optional[list[str]] = field(default=None, metadata={
        "help": "metrics logged as eval_<name> (densir.evaluation names or ir_measures ones); default nDCG@10 "
                "MRR@10, and Recall@100 for the bi-encoder"})
    default_eval_metrics = RANKING_METRICS  # the family's (a class attribute, not a flag)

    def resolve_best_metric(self) -> None:
        """The best model is chosen on nDCG@10 unless told otherwise (HF would pick eval_loss, which
        densir's validators do not compute); a name matches ``eval_metrics`` case-insensitively."""
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            self.metric_for_best_model = "nDCG@10"
        if self.metric_for_best_model:
            bare = self.metric_for_best_model.removeprefix("eval_")
            names = {m.lower(): m for m in self.eval_metrics}
            if bare.lower() in names:
                self.metric_for_best_model = names[bare.lower()]

    def __post_init__(self):
        import torch

        if self.eval_depth < 1:
            raise ParameterError(f"`eval_depth` must be >= 1, got {self.eval_depth}")
        self.eval_metrics = list(self.eval_metrics or self.default_eval_metrics)
        self.resolve_best_metric()
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ParameterError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps and self.warmup_ratio:
                raise ParameterError("give `warmup_ratio` or `warmup_steps`, not both")
            self.warmup_steps = self.warmup_steps or self.warmup_ratio

        if not torch.cuda.is_available():
            # without it HF refuses --bf16, and under torchrun accelerate sees no distributed CPU
            # setup (each rank would train alone on the whole data): CPU means gloo DDP
            self.use_cpu = True
            self.dataloader_pin_memory = False  # nothing to pin to (and a warning per epoch)
        super().__post_init__()


def backend_fields(recipe_example: str) -> tuple:
    """The ``--backend``, ``--quantize`` and ``--backend_recipe`` fields shared by the encode and the
    re-rank stages (densir.backends); ``recipe_example`` says what a calibrated recipe calibrates on."""
    return (
        field(default="torch", metadata={
            "help": "torch | onnx | openvino: what runs the model (densir.backends; onnx/openvino: CPU only, "
                    "exported once and cached beside the checkpoint)"}),
        field(default="none", metadata={"help": "none | int8 (with --backend onnx or openvino)"}),
        field(default=None, metadata={
            "help": f"a named recipe of densir.backends.RECIPES instead of the backend's default for --quantize "
                    f"(e.g. ov-int8-static, calibrated on {recipe_example})"}),
    )


def parse_args(*dataclass_types, argv: Optional[list[str]] = None):
    """Parse flags (``argv``, default ``sys.argv[1:]``), or one ``.json`` argument file, into the dataclasses."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser(dataclass_types)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


