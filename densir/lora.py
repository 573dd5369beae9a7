"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through peft, for
both trainers: the bi-encoder (:class:`densir.retriever.modeling.DenseEncoder`) and the
cross-encoder (:class:`densir.reranker.modeling.CrossEncoderReranker`).

    --lora --lora_r 8 --lora_alpha 16 --lora_dropout 0.05 [--lora_target_modules q_proj,v_proj] [--lora_merge]

The transformer's weights are frozen and low-rank adapters are trained on the target modules
(default: peft's choice for the model type, e.g. ``q_proj,v_proj`` for Llama/Qwen2 and
``query,value`` for BERT). A cross-encoder's fresh score head trains in full beside them. A save
is an adapter dir (``adapter_config.json`` + ``adapter_model.safetensors``, the tokenizer, densir's
config); everything that loads a model reads it as base model + adapter through
:func:`densir.models.load_pretrained`. ``--lora_merge`` also writes ``<output_dir>/merged``, the
adapter folded into the weights: a plain model dir (sentence-transformers, onnx/openvino exports).
Checkpoints hold the adapter, so ``--resume_from_checkpoint`` restores it (:func:`load_adapter_weights`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from torch import nn

from densir.checks import at_least, between

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(kw_only=True)  # keyword-only: the classes that inherit it may declare required fields
class LoraArguments:
    """The ``--lora*`` flags: a mixin of the bi-encoder's and the re-ranker's model arguments."""

    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of every weight (densir.lora)"})
    lora_r: int = field(default=8, metadata={"range": at_least(1), "help": "LoRA rank"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"range": between(0, 1, high_open=True),
        "help": "dropout on the LoRA input"})
    lora_target_modules: Optional[str] = field(default=None, metadata={
        "help": "comma-separated module names to adapt (e.g. q_proj,k_proj,v_proj,o_proj, or all-linear); "
                "default: peft's for the model type"})
    lora_merge: bool = field(default=False, metadata={
        "help": "also save <output_dir>/merged: the adapter folded into the model"})


def lora_config(args, task: str):
    """A ``peft.LoraConfig`` from ``args.lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``;
    ``task``: ``"encoder"`` or ``"reranker"`` (sequence classification: the score head trains too)."""
    from peft import LoraConfig, TaskType

    for f in fields(LoraArguments):  # args may be any namespace, not one parse_args checked
        if "range" in f.metadata:
            f.metadata["range"].check(f"--{f.name}", getattr(args, f.name))
    targets = args.lora_target_modules
    if targets and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets or None,
                      task_type=TaskType.SEQ_CLS if task == "reranker" else TaskType.FEATURE_EXTRACTION)


def apply_lora(model: nn.Module, args, task: str, base_name: str | None = None,
               revision: str | None = None) -> nn.Module:
    """``model`` wrapped in fresh LoRA adapters (``peft.get_peft_model``); logs the trainable share.

    ``base_name`` (and ``revision``): the base model as the user named it (a hub id stays a hub id
    in ``adapter_config.json``, not this machine's cache path), so the adapter loads anywhere."""
    from peft import get_peft_model

    config = lora_config(args, task)
    if revision not in (None, "main"):
        config.revision = revision
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:  # peft: no default target modules for this model type, or a name not found
        raise ValueError(f"--lora: {e} (pass --lora_target_modules)") from None
    if base_name:
        peft_model.peft_config["default"].base_model_name_or_path = str(base_name)
    trainable, total = count_parameters(peft_model)
    logger.info("LoRA r=%d alpha=%s on %s: %d of %d parameters train (%.2f%%)", args.lora_r, args.lora_alpha,
                sorted(peft_model.peft_config["default"].target_modules), trainable, total, 100 * trainable / total)
    return peft_model


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def merged(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` with its adapter folded in (``model`` itself stays as it is); a
    model without an adapter is returned as is."""
    import copy

    if not is_peft(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def load_adapter_weights(model: nn.Module, adapter_dir) -> None:
    """Overwrite the adapter (and trained head) of a peft ``model`` in place from a saved adapter dir
    (checkpoint resume: the parameter objects, which the optimizer holds, stay the same)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise ValueError(f"{adapter_dir}: adapter weights {unexpected[:3]} do not fit this model")


def save_merged(load, model_dir) -> Path:
    """``<model_dir>/merged``: the LoRA model saved in ``model_dir`` (read back by ``load``, e.g.
    ``DenseEncoder.load``) with its adapter folded in, a plain model dir (``--lora_merge``)."""
    out = Path(model_dir) / "merged"
    load(str(model_dir)).merged().save(out)
    logger.info("merged LoRA model -> %s", out)
    return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
