"""Argument dataclasses for every stage, parsed by ``transformers.HfArgumentParser``.

A stage takes flags or a single ``.json`` file holding the same names, so a run is reproducible
from its argument file. Names follow Tevatron's where one exists. A numeric field declares its range
in its metadata (``metadata={"range": at_least(1), "help": ...}``, :mod:`densir.checks`);
:func:`parse_args` checks every range before the stage starts (one line naming the flag and the
value), and each ``__post_init__`` checks them first too, so a cross-field check never blames the
wrong flag.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from densir.backends.recipes import DEFAULT_CALIBRATION_SIZE
from densir.checks import at_least, check_ranges, positive
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
    logging_steps: float = field(default=10, metadata={"range": positive(), "help": "log every N optimizer steps"})
    warmup_ratio: Optional[float] = field(default=None, metadata={
        "help": "warmup as a fraction of all steps (Tevatron's flag; transformers 5 spells it --warmup_steps 0.1)"})
    # HF's own fields, redeclared with the same defaults to declare their ranges
    per_device_train_batch_size: int = field(default=8, metadata={"range": at_least(1),
        "help": "the batch size per device for training"})
    gradient_accumulation_steps: int = field(default=1, metadata={"range": at_least(1),
        "help": "batches whose gradients are summed into one optimizer step"})
    learning_rate: float = field(default=5e-5, metadata={"range": at_least(0, float),
        "help": "the initial learning rate for the optimizer"})
    weight_decay: float = field(default=0.0, metadata={"range": at_least(0, float),
        "help": "the optimizer's weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"range": at_least(0, float),
        "help": "gradient clipping norm; 0 disables it"})
    num_train_epochs: float = field(default=3.0, metadata={"range": at_least(0, float),
        "help": "total number of training epochs (with --max_steps -1)"})
    warmup_steps: float = field(default=0, metadata={"range": at_least(0, float),
        "help": "linear warmup: steps, or a ratio of all steps in [0, 1)"})
    dataloader_num_workers: int = field(default=0, metadata={"range": at_least(0),
        "help": "data loading worker processes (0: in the main process)"})

    grad_cache: bool = field(default=False, metadata={
        "help": "gradient cache (densir.gradcache): a step's batch in chunks of bounded memory (--gc_*_chunk_size), "
                "the exact gradients of the whole batch"})
    # validation during training (densir.validation.Validator)
    eval_depth: int = field(default=100, metadata={"range": at_least(1),
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

        check_ranges(self)
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
                    f"(e.g. ov-int8-static, calibrated on the first {DEFAULT_CALIBRATION_SIZE} {recipe_example})"}),
    )


def parse_args(*dataclass_types, argv: Optional[list[str]] = None):
    """Parse flags (``argv``, default ``sys.argv[1:]``), or one ``.json`` argument file, into the
    dataclasses, and check every declared range (:func:`densir.checks.check_ranges`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(dataclass_types)
    if len(argv) == 1 and argv[0].endswith(".json"):
        parsed = parser.parse_json_file(json_file=argv[0])
    else:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    check_ranges(*parsed)
    return parsed


def _parser(dataclass_types):
    """``HfArgumentParser``, which hands a field's metadata to ``add_argument``: the ``range`` key is
    densir's (checked after parsing), not an argparse keyword."""
    import copy
    import types

    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):
            if "range" in field.metadata:
                metadata = {k: v for k, v in field.metadata.items() if k != "range"}
                metadata["help"] = f"{metadata.get('help', '')} ({field.metadata['range'].describe()})".strip()
                field = copy.copy(field)
                field.metadata = types.MappingProxyType(metadata)
            HfArgumentParser._parse_dataclass_field(parser, field)

    return Parser(dataclass_types)


