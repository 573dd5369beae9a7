"""CrossEncoderReranker: a Hugging Face ``AutoModelForSequenceClassification`` with one logit.

The query and the passage are read jointly, ``[CLS] query [SEP] passage [SEP]``, and the single
logit is the relevance score. :meth:`CrossEncoderReranker.load` takes any HF sequence-
classification checkpoint, a sentence-transformers ``CrossEncoder`` dir or hub name, or a plain
encoder (BERT, MiniLM, a densir/sentence-transformers bi-encoder): the encoder weights are kept
and a fresh one-logit head is added.

Scores are **raw logits**, everywhere: :meth:`predict`, :meth:`rank`, the run files of
``densir.driver.rerank``. sentence-transformers' ``CrossEncoder`` applies a Sigmoid to one-logit
models unless the model says otherwise, so :meth:`save` writes the activation as
``torch.nn.modules.linear.Identity`` (in ``config_sentence_transformers.json``, and in
``config.json`` for sentence-transformers < 5) and ``CrossEncoder(path).predict(pairs)`` returns
the same numbers as :meth:`predict`. Raw logits rank exactly as sigmoids do, and do not
saturate into ties in float32 for confident pairs. A saved reranker is::

    model.safetensors config.json tokenizer files     the HF model (num_labels=1)
    modules.json sentence_bert_config.json            sentence-transformers CrossEncoder layout
    config_sentence_transformers.json                 (Identity activation)
    densir_reranker.json                              max_len; written last, marks a complete save

Pairs are tokenized in one place, :func:`tokenize_pairs`: the tokenizer's pair encoding,
truncating only the passage (``truncation='only_second'``) to ``max_len`` tokens in all. The
saved tokenizer's ``model_max_length`` is ``max_len``, so sentence-transformers cuts at the same
length; it truncates 'longest_first', which removes tokens from the passage only, exactly as
'only_second' does, while the query is no longer than what is left of the passage (any query
under ``(max_len - 3) / 2`` tokens). sentence-transformers is left on 'longest_first' because its
'only_second' raises on a query longer than ``max_len``; densir falls back to 'longest_first'
for such a pair (and only that pair).

A **decoder** (Llama, Mistral, Qwen2; :func:`densir.models.is_decoder`) is scored RankLLaMA's way:
every pair ends with the tokenizer's EOS and the score head reads the hidden state of the last
real token (:func:`densir.retriever.modeling.pool` with ``"last"``, right or left padding alike),
not the model's own pad-token rule (a tokenizer that pads with its EOS would hide the EOS from
it). Such a save (and a LoRA one, :mod:`densir.lora`) is densir's only: no sentence-transformers
files, ``densir_reranker.json`` says ``"head": "last_token"``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from densir.models import (
    RERANKER_CONFIG,
    RERANKER_MAX_LEN,
    adapter_base,
    is_decoder,
    load_pretrained,
    load_reranker_settings,
    resolve_model_dir,
)
from densir.precision import PrecisionName, autocast
from densir.ranking import rank_documents
from densir.tokenization import tokenize_pairs

logger = logging.getLogger(__name__)

CONFIG_NAME = RERANKER_CONFIG
ST_ACTIVATION = "torch.nn.modules.linear.Identity"  # scores are raw logits (see module docstring)
DEFAULT_MAX_LEN = RERANKER_MAX_LEN

Pair = tuple  # (query, passage): strings, or lists of token ids without special tokens


class CrossEncoderReranker(nn.Module):
    """A cross-encoder: (query, passage) -> one relevance logit, as sentence-transformers' ``CrossEncoder``.

    Args:
        model: a sequence-classification model with one label (an encoder, or a decoder scored at
            its last real token).
        tokenizer: its tokenizer.
        max_len: query + passage tokens per pair.

    Build one with :meth:`load` (a densir re-ranker dir, a sentence-transformers cross-encoder, or
    any encoder with a fresh head; a dir or a hub id), or :func:`densir.load_model` for a backend.
    :meth:`predict` returns the pairs' logits, :meth:`rank` the documents best first, in batches of
    ``batch_size`` pairs (32; :func:`densir.loading.load_reranker` sets it) and in the precision it was
    loaded for (``.inference``; fp32 when built directly), unless a call says otherwise.

    Example::

        reranker = CrossEncoderReranker.load("runs/demo/rerank/model")
        reranker.rank("what lowers blood pressure?", ["Aspirin ...", "Beta blockers ..."], top_k=1)
        # [{"corpus_id": 1, "score": 4.2}]
    """

    def __init__(self, model: nn.Module, tokenizer, max_len: int = DEFAULT_MAX_LEN):
        super().__init__()
        if getattr(model.config, "num_labels", 1) != 1:
            raise ValueError(f"a reranker has one output logit, this model has {model.config.num_labels}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_len = max_len
        config = getattr(model, "config", None)
        self.decoder = config is not None and is_decoder(config)
        if self.decoder and tokenizer is not None and tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked out: any token will do

    @property
    def eos_id(self) -> int | None:
        """A decoder's EOS, which ends every pair; None for an encoder."""
        return self.tokenizer.eos_token_id if self.decoder else None

    @property
    def is_lora(self) -> bool:
        from densir.lora import is_peft

        return is_peft(self.model)

    def apply_lora(self, lora_args) -> None:
        """Wrap the model in LoRA adapters (:func:`densir.lora.apply_lora`); the adapters and the score head train."""
        from densir.lora import apply_lora

        self.model = apply_lora(self.model, lora_args, "reranker", getattr(self, "model_name", None),
                                getattr(self, "revision", None))

    def merged(self) -> "CrossEncoderReranker":
        """The same re-ranker with its LoRA adapter folded into the weights (a plain model)."""
        from densir.lora import merged

        return type(self)(merged(self.model), self.tokenizer, self.max_len)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, model_name_or_path: str, max_len: int | None = None, revision: str | None = None,
             cache_dir: str | None = None, **hf_kwargs) -> "CrossEncoderReranker":
        """A densir reranker dir, a (sentence-transformers) cross-encoder, or any encoder + a new head;
        a local dir or a hub id, resolved by :func:`densir.models.load_reranker_settings`.

        ``max_len``: the flag, else what a densir dir says, else the CrossEncoder's / tokenizer's
        limit capped at 512 (the log says which).
        """
        resolved, settings, _ = load_reranker_settings(model_name_or_path, max_len, revision, cache_dir)
        path = str(resolved.local_dir)
        base = adapter_base(path)  # a LoRA save: the architecture is its base model's
        config_dir = path if base is None else resolve_model_dir(base[0], revision=base[1], cache_dir=cache_dir).local_dir
        config = AutoConfig.from_pretrained(str(config_dir))
        architectures = getattr(config, "architectures", None) or []
        is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
        if is_classifier and config.num_labels != 1:
            raise ValueError(f"{model_name_or_path} is a classifier with {config.num_labels} labels; "
                             "a reranker needs one relevance logit")
        model = load_pretrained(AutoModelForSequenceClassification, path, cache_dir=cache_dir, num_labels=1, **hf_kwargs)
        if not is_classifier:
            logger.info("%s has no classification head: a fresh one-logit head is initialised", model_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        reranker = cls(model, tokenizer, int(settings["max_len"]))
        reranker.source, reranker.local_dir = resolved.source, resolved.local_dir
        from densir.retriever.modeling import base_model_name

        reranker.model_name, reranker.revision = base_model_name(resolved), revision
        return reranker

    def with_backend(self, backend: str, quantize: str = "none", recipe: str | None = None, calibration=None,
                     threads: int | None = None) -> "CrossEncoderReranker":
        """The same re-ranker run by :mod:`densir.backends` (``onnx``/``openvino``, fp32 or int8; CPU,
        inference only), exported once and cached beside the checkpoint; ``calibration``: (query,
        passage) pairs for a calibrated recipe. ``backend="torch"`` with ``quantize="none"`` is ``self``."""
        from densir.backends import load_runtime
        from densir.loading import checkpoint_dir

        if backend == "torch" and quantize == "none" and recipe is None:
            return self
        local = checkpoint_dir(self)
        if self.decoder or self.is_lora:
            raise ValueError("--backend onnx/openvino runs encoder cross-encoders without adapters; a decoder or LoRA "
                             "re-ranker runs on torch (merge an adapter with --lora_merge)")
        runtime = load_runtime(local, backend, quantize, task="cross-encoder", threads=threads, max_len=self.max_len,
                               recipe=recipe, calibration=calibration)
        other = type(self)(runtime, self.tokenizer, self.max_len)
        other.source, other.local_dir, other.runtime_info = self.source, local, runtime.describe()
        return other

    def load_weights(self, model_dir, **hf_kwargs) -> None:
        """Overwrite the weights in place from a dir written by :meth:`save` (checkpoint resume).

        The module objects stay the same, so an optimizer's references to their parameters hold.
        """
        if self.is_lora:
            from densir.lora import load_adapter_weights

            load_adapter_weights(self.model, model_dir)
            return
        state = AutoModelForSequenceClassification.from_pretrained(str(model_dir), **hf_kwargs).state_dict()
        self.model.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ scoring
    def forward(self, batch: dict) -> torch.Tensor:
        """Relevance logits, shape ``[batch]``, for a batch from :func:`tokenize_pairs`."""
        if self.decoder:
            return self._last_token_logits(batch)
        out = self.model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
        return (out if isinstance(out, torch.Tensor) else out.logits).squeeze(-1)  # a runtime returns the logits

    def _last_token_logits(self, batch: dict) -> torch.Tensor:
        """A decoder's score: the head on the hidden state of each pair's last real token (its EOS)."""
        from densir.retriever.modeling import pool

        model = self.model.get_base_model() if self.is_lora else self.model  # LoRA layers sit inside, in place
        backbone = getattr(model, model.base_model_prefix)
        hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return model.score(pool(hidden, batch["attention_mask"], "last")).squeeze(-1)

    batch_size = 32  # pairs per forward pass when a call does not say

    @property
    def precision(self) -> PrecisionName:
        """The precision it scores in when a call does not say: its loader's (``.inference``), else fp32."""
        inference = getattr(self, "inference", None)
        return inference.precision if inference is not None else "fp32"

    def tokenize(self, pairs: Sequence[Pair]) -> dict:
        return tokenize_pairs(self.tokenizer, [q for q, _ in pairs], [p for _, p in pairs], self.max_len,
                              eos_id=self.eos_id)

    @torch.inference_mode()
    def predict(self, pairs: Sequence[Pair], batch_size: int | None = None, precision: PrecisionName | None = None,
                show_progress_bar: bool = False) -> np.ndarray:
        """Raw-logit scores (float32 array, input order) of (query, passage) pairs.

        Pairs are scored in batches of similar length (sorted longest first, so padding is small
        and an out-of-memory shows up on the first batch); ``precision`` is the autocast,
        ``"bf16"``, ``"fp16"`` or ``"fp32"`` (:mod:`densir.precision`). None: :attr:`batch_size`,
        :attr:`precision`.
        """
        if not len(pairs):
            return np.zeros(0, dtype=np.float32)
        batch_size, precision = batch_size or self.batch_size, precision or self.precision
        was_training = self.training
        self.eval()
        param = next(self.parameters(), None)  # none: a densir.backends runtime, on the CPU
        device = param.device if param is not None else torch.device("cpu")
        order = np.argsort([-_pair_length(p) for p in pairs], kind="stable")
        scores = np.empty(len(pairs), dtype=np.float32)
        from tqdm.auto import tqdm

        starts = range(0, len(pairs), batch_size)
        for start in tqdm(starts, desc="rerank", disable=not show_progress_bar, leave=False):
            idx = order[start:start + batch_size]
            batch = self.tokenize([pairs[i] for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, precision):
                logits = self(batch)
            scores[idx] = logits.float().cpu().numpy()
        self.train(was_training)
        return scores

    def rank(self, query, documents: Sequence, top_k: int | None = None, batch_size: int | None = None,
             precision: PrecisionName | None = None, return_documents: bool = False) -> list[dict]:
        """Score ``documents`` against ``query``; ``[{"corpus_id": index, "score": logit[, "text": doc]}]``
        best first.

        The shape sentence-transformers' ``CrossEncoder.rank`` returns (ties keep input order); e.g. the
        paragraphs of one document: ``reranker.rank(query, hit.text.split("\\n\\n"), top_k=3)``.
        """
        scores = self.predict([(query, d) for d in documents], batch_size=batch_size, precision=precision)
        return rank_documents(scores, documents, top_k, return_documents)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """``--gradient_checkpointing``: non-reentrant always (see DenseEncoder.activation_checkpointing_enable)."""
        kw = {**(activation_checkpointing_kwargs or {}), "use_reentrant": False}
        self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw, **kwargs)

    gradient_checkpointing_enable = activation_checkpointing_enable  # HF's name before transformers 5

    # ------------------------------------------------------------------ saving
    def save(self, output_dir, safe_serialization: bool = True) -> None:
        """Write a HF dir that ``CrossEncoderReranker.load`` and ``sentence_transformers.CrossEncoder`` read."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(output_dir / CONFIG_NAME)  # an interrupted re-save must not look complete
        # sentence-transformers < 5 reads the activation from config.json
        self.model.config.sentence_transformers = {"activation_fn": ST_ACTIVATION}
        self.model.save_pretrained(output_dir, safe_serialization=safe_serialization)
        self.tokenizer.model_max_length = self.max_len
        self.tokenizer.save_pretrained(output_dir)
        if self.decoder or self.is_lora:  # scored by densir's rule (last token, or base + adapter): densir's own
            tmp = output_dir / (CONFIG_NAME + ".tmp")
            tmp.write_text(json.dumps({"max_len": self.max_len, "score": "logit",
                                       "head": "last_token" if self.decoder else "model"}, indent=2))
            os.replace(tmp, output_dir / CONFIG_NAME)
            return
        files = {
            "modules.json": [{"idx": 0, "name": "0", "path": "",
                              "type": "sentence_transformers.base.modules.transformer.Transformer"}],
            "sentence_bert_config.json": {
                "transformer_task": "sequence-classification",
                "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                "module_output_name": "scores",
                "max_seq_length": self.max_len,
            },
            "config_sentence_transformers.json": {
                "activation_fn": ST_ACTIVATION, "model_type": "CrossEncoder",
                "prompts": {}, "default_prompt_name": None},
        }
        for name, obj in files.items():
            with open(output_dir / name, "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2)
        tmp = output_dir / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps({"max_len": self.max_len, "score": "logit"}, indent=2))
        os.replace(tmp, output_dir / CONFIG_NAME)


# --------------------------------------------------------------------------- tokenization
def _pair_length(pair: Pair) -> int:
    """Sort key for length bucketing: characters for strings, ids for pre-tokenized input."""
    return sum(len(x) for x in pair)


