"""DenseEncoder: any Hugging Face ``AutoModel`` + pooling (cls | mean | last) + optional L2 norm.

Tied (one model for queries and passages, the default) or untied (two models). A saved encoder
is a Hugging Face model directory::

    model.safetensors config.json tokenizer files      the transformer (tied)
    query_model/ passage_model/                        instead, when untied
    densir_config.json                                 pooling, normalize, untied, prefixes, append_eos
    adapter_config.json adapter_model.safetensors      instead of the model files, a LoRA save (densir.lora)
    modules.json 1_Pooling/config.json [2_Normalize/]  sentence-transformers layout (tied only):
    sentence_bert_config.json config_sentence_transformers.json   SentenceTransformer(path) loads it

:meth:`DenseEncoder.load` reads a densir dir, a sentence-transformers dir (pooling and normalize
taken from its modules), or any plain HF model/hub name (pooling from the arguments), or a LoRA
adapter dir (its base model + the adapter, :func:`densir.models.load_pretrained`).

Decoder backbones (Llama, Mistral, Qwen2; :func:`densir.models.is_decoder`) follow RepLLaMA's
rule: ``pooling="last"`` with ``append_eos`` (the default for a decoder pooled at the last token)
ends every query and passage with the tokenizer's EOS (:func:`densir.tokenization.ensure_eos`),
and the vector is the hidden state of the last real token whatever the padding side
(:func:`pool`). A tokenizer without a pad token pads with its EOS (the attention mask, not the
token, says what is padding). Prefixes (``query: ``/``passage: ``, or an instruction,
:func:`instruction_prefix`) and ``append_eos`` are saved in densir_config.json, so encoding
applies them as training did, without flags.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from densir.models import ENCODER_CONFIG, is_decoder, load_encoder_settings, load_pretrained

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "last")
CONFIG_NAME = ENCODER_CONFIG
INSTRUCTION_TEMPLATE = "Instruct: {task}\nQuery: "  # E5-mistral / Qwen3-embedding queries: the instruction, then the query
_ST_POOLING = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "last": "pooling_mode_lasttoken"}


@dataclass
class EncoderConfig:
    pooling: str = "cls"
    normalize: bool = False
    untied: bool = False
    query_prefix: str = ""
    passage_prefix: str = ""
    max_seq_length: int | None = None  # written to sentence_bert_config.json for ST users
    append_eos: bool | None = None  # None: yes for a decoder pooled at the last token (resolved at load)
    matryoshka_dims: list | None = None  # the sizes a Matryoshka loss trained (densir.retriever.matryoshka)
    bidirectional: bool = False  # a decoder whose tokens attend to every real token (set_bidirectional)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

    # HF's reporting callbacks (tensorboard, wandb, mlflow) read model.config like a PretrainedConfig
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(asdict(self), indent=2)


class DenseEncoder(nn.Module):
    """A bi-encoder: queries and passages to vectors (pooled, optionally normalized), tied or untied.

    Args:
        q_model: the query encoder (a transformers model).
        p_model: the passage encoder; None shares ``q_model`` (tied).
        config: pooling (cls | mean | last), normalize, prefixes, instruction, EOS rule
            (:class:`EncoderConfig`, saved as ``densir_config.json``).
        tokenizer: the tokenizer saved beside the weights.

    Build one with :meth:`build` (to train) or :meth:`load` (a densir dir, a sentence-transformers
    model, a LoRA adapter dir; a dir or a hub id), or :func:`densir.load_model` for a backend. The
    forward takes tokenized batches; :func:`densir.encode_texts` encodes text.

    Example::

        encoder = DenseEncoder.load("sentence-transformers/all-MiniLM-L6-v2")
        vectors = encode_texts(encoder, ["a query"], "query", max_len=64, batch_size=32)  # [1, 384]
    """

    def __init__(self, q_model: nn.Module, p_model: nn.Module | None = None,
                 config: EncoderConfig | None = None, tokenizer=None):
        super().__init__()
        self.config = config or EncoderConfig()
        self.q_model = q_model
        # untied: a second module; tied: the same object, registered once
        self.p_model = p_model if p_model is not None else q_model
        self.config.untied = p_model is not None
        self.tokenizer = tokenizer
        self.embedding_dim: int | None = None  # encode: keep the first d dimensions (Matryoshka), re-normalized

    @property
    def eos_id(self) -> int | None:
        """The token every query and passage ends with (``append_eos``), else None."""
        if not self.config.append_eos or self.tokenizer is None:
            return None
        if self.tokenizer.eos_token_id is None:
            raise ValueError("append_eos: the tokenizer has no EOS token")
        return self.tokenizer.eos_token_id

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, model_name_or_path: str, pooling: str | None = None, normalize: bool | None = None,
              untie_encoder: bool = False, query_prefix: str | None = None, passage_prefix: str | None = None,
              attention_dropout: float | None = None, query_instruction: str | None = None,
              **hf_kwargs) -> "DenseEncoder":
        """Start training from a checkpoint: a densir dir, a sentence-transformers dir or any HF model.

        Explicit arguments override what the checkpoint says; ``untie_encoder`` copies a tied
        checkpoint into two models; ``attention_dropout`` replaces the checkpoint's
        (:func:`densir.models.set_attention_dropout`); ``query_instruction`` is a task description
        made the query prefix by :func:`instruction_prefix`.
        """
        if query_instruction is not None:
            if query_prefix is not None:
                raise ValueError("give --query_instruction or --query_prefix, not both")
            query_prefix = instruction_prefix(query_instruction)
        enc = cls.load(model_name_or_path, pooling=pooling, normalize=normalize,
                       query_prefix=query_prefix, passage_prefix=passage_prefix, **hf_kwargs)
        if untie_encoder and not enc.config.untied:
            import copy

            untied = cls(enc.q_model, copy.deepcopy(enc.q_model), enc.config, enc.tokenizer)
            for attr in ("source", "local_dir", "model_name", "revision"):
                setattr(untied, attr, getattr(enc, attr, None))
            enc = untied
        if attention_dropout is not None:
            from densir.models import set_attention_dropout

            for model in {id(m): m for m in (enc.q_model, enc.p_model)}.values():
                set_attention_dropout(model, attention_dropout)
        return enc

    @classmethod
    def load(cls, model_name_or_path: str, pooling: str | None = None, normalize: bool | None = None,
             query_prefix: str | None = None, passage_prefix: str | None = None, revision: str | None = None,
             cache_dir: str | None = None, **hf_kwargs) -> "DenseEncoder":
        """A local dir or a hub id (resolved by :func:`densir.models.resolve_model_dir`, cache first),
        read the same way: densir_config.json, else the sentence-transformers modules, else defaults;
        explicit arguments win, and the log says where each setting came from."""
        resolved, settings, _ = load_encoder_settings(
            model_name_or_path, dict(pooling=pooling, normalize=normalize, query_prefix=query_prefix,
                                     passage_prefix=passage_prefix),
            asdict(EncoderConfig()), revision=revision, cache_dir=cache_dir)
        config = EncoderConfig(**settings)
        path = resolved.local_dir
        if config.untied:
            q_model = load_pretrained(AutoModel, path / "query_model", cache_dir=cache_dir, **hf_kwargs)
            p_model = load_pretrained(AutoModel, path / "passage_model", cache_dir=cache_dir, **hf_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(str(path / "query_model"))
        else:
            q_model = load_pretrained(AutoModel, path, cache_dir=cache_dir, **hf_kwargs)
            p_model = None
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        if config.append_eos is None:
            config.append_eos = config.pooling == "last" and is_decoder(q_model.config)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # decoders: padding is masked out, any token will do
        encoder = cls(q_model, p_model, config, tokenizer)
        if config.bidirectional:
            encoder.set_bidirectional(True)
        encoder.source, encoder.local_dir = resolved.source, path
        encoder.model_name, encoder.revision = base_model_name(resolved), revision
        return encoder

    def with_backend(self, backend: str, quantize: str = "none", recipe: str | None = None, max_len: int = 512,
                     calibration=None, threads: int | None = None) -> "DenseEncoder":
        """The same encoder run by :mod:`densir.backends` (``onnx``/``openvino``, fp32 or int8; CPU,
        inference only): a new DenseEncoder whose query and passage models are runtimes of this
        checkpoint's files (exported once, cached beside it). Pooling, normalization and prefixes
        stay here. ``backend="torch"`` with ``quantize="none"`` returns ``self``."""
        from densir.backends import load_runtime
        from densir.loading import checkpoint_dir

        if backend == "torch" and quantize == "none" and recipe is None:
            return self
        local = checkpoint_dir(self)
        if self.config.bidirectional:
            raise ValueError("--backend onnx/openvino exports causal attention: a bidirectional decoder runs on torch")
        if self.is_lora:
            raise ValueError("--backend onnx/openvino needs a plain model: train with --lora_merge and encode the "
                             "merged model (<output_dir>/merged)")
        dirs = [local / "query_model", local / "passage_model"] if self.config.untied else [local]
        runtimes = [load_runtime(d, backend, quantize, task="encoder", threads=threads, max_len=max_len,
                                 recipe=recipe, calibration=calibration) for d in dirs]
        enc = type(self)(runtimes[0], runtimes[1] if self.config.untied else None, self.config, self.tokenizer)
        enc.source, enc.local_dir = self.source, local
        enc.runtime_info = runtimes[0].describe()
        enc.embedding_dim = self.embedding_dim
        return enc

    # ------------------------------------------------------------------ forward
    def encode_query(self, batch: dict) -> torch.Tensor:
        return self._encode(self.q_model, batch)

    def encode_passage(self, batch: dict) -> torch.Tensor:
        return self._encode(self.p_model, batch)

    def forward(self, query: dict | None = None, passage: dict | None = None):
        q = self.encode_query(query) if query is not None else None
        p = self.encode_passage(passage) if passage is not None else None
        return q, p

    def set_bidirectional(self, on: bool = True) -> None:
        """A decoder's tokens attend to every real token, not only the earlier ones (LLM2Vec, NV-Embed):
        a padding-only 4-D mask replaces the causal one and the attention modules stop being causal.
        Saved in densir_config.json, so encoding applies it. Refused for encoders (already
        bidirectional) and decoder types not known to take a 4-D mask (:data:`BIDIRECTIONAL_TYPES`)."""
        kind = getattr(self.q_model.config, "model_type", None)
        from densir.io import ParameterError

        if on and not is_decoder(self.q_model.config):
            raise ParameterError("bidirectional", f"is for decoders; {kind} attends both ways already")
        if on and kind not in BIDIRECTIONAL_TYPES:
            raise ParameterError("bidirectional", f"model type {kind} is not one of {', '.join(BIDIRECTIONAL_TYPES)} "
                                 "(decoders whose attention takes a 4-D mask)")
        self.config.bidirectional = on
        for model in {id(m): m for m in (self.q_model, self.p_model)}.values():
            for module in model.modules():
                if hasattr(module, "is_causal"):
                    module.is_causal = not on

    def _encode(self, model: nn.Module, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.config.bidirectional and isinstance(model, nn.Module):
            inputs["attention_mask"] = padding_mask_4d(batch["attention_mask"], next(model.parameters()).dtype)
        out = model(**inputs)
        hidden = out if isinstance(out, torch.Tensor) else out.last_hidden_state  # a backends runtime: the tensor
        reps = pool(hidden, batch["attention_mask"], self.config.pooling)
        if self.embedding_dim is not None:
            reps = reps[:, : self.embedding_dim]
        if self.config.normalize:
            reps = F.normalize(reps, p=2, dim=-1)
        return reps

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Called by the HF Trainer for ``--gradient_checkpointing`` / ``--activation_checkpointing``.

        Non-reentrant checkpointing always (``use_reentrant=False``): the reentrant kind re-runs the
        forward inside backward, where DDP sees each parameter marked ready twice ("Expected to mark
        a variable ready only once") under torchrun. DDP keeps ``find_unused_parameters=True`` (HF's
        default for a model that is not a ``PreTrainedModel``): a BERT's pooler takes no part in
        densir's pooling, so some parameters do get no gradient, and non-reentrant checkpointing
        works with that setting.
        """
        kw = {**(activation_checkpointing_kwargs or {}), "use_reentrant": False}
        for model in self._models():
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kw, **kwargs)

    gradient_checkpointing_enable = activation_checkpointing_enable  # HF's name before transformers 5

    def _models(self) -> list[nn.Module]:
        return [self.q_model, self.p_model] if self.config.untied else [self.q_model]

    # ------------------------------------------------------------------ LoRA (densir.lora)
    @property
    def is_lora(self) -> bool:
        from densir.lora import is_peft

        return is_peft(self.q_model)

    def apply_lora(self, lora_args) -> None:
        """Wrap the transformer(s) in LoRA adapters (:func:`densir.lora.apply_lora`); only they train."""
        from densir.lora import apply_lora

        name, revision = getattr(self, "model_name", None), getattr(self, "revision", None)
        local = getattr(self, "local_dir", None)
        if self.config.untied and local is not None and (local / "query_model").is_dir():
            # an untied checkpoint: each adapter's base is its own subdir
            self.q_model = apply_lora(self.q_model, lora_args, "encoder", local and str(local / "query_model"))
            self.p_model = apply_lora(self.p_model, lora_args, "encoder", local and str(local / "passage_model"))
        else:
            self.q_model = apply_lora(self.q_model, lora_args, "encoder", name, revision)
            self.p_model = (apply_lora(self.p_model, lora_args, "encoder", name, revision) if self.config.untied
                            else self.q_model)

    def merged(self) -> "DenseEncoder":
        """The same encoder with its LoRA adapters folded into the weights (a plain model)."""
        from densir.lora import merged

        q = merged(self.q_model)
        return type(self)(q, merged(self.p_model) if self.config.untied else None, self.config, self.tokenizer)

    def load_weights(self, model_dir, **hf_kwargs) -> None:
        """Overwrite the weights in place from a dir written by :meth:`save` (checkpoint resume).

        The modules (and so the optimizer's references to their parameters) stay the same objects.
        """
        model_dir = Path(model_dir)
        saved = read_encoder_config(str(model_dir))
        if saved.untied != self.config.untied:
            raise ValueError(f"{model_dir}: saved encoder untied={saved.untied}, this one untied={self.config.untied}")
        subdirs = {"query_model": self.q_model, "passage_model": self.p_model} if self.config.untied else {"": self.q_model}
        for sub, model in subdirs.items():
            if self.is_lora:
                from densir.lora import load_adapter_weights

                load_adapter_weights(model, model_dir / sub)
                continue
            state = AutoModel.from_pretrained(str(model_dir / sub), **hf_kwargs).state_dict()
            model.load_state_dict(state, strict=True)

    # ------------------------------------------------------------------ saving
    def save(self, output_dir, tokenizer=None, safe_serialization: bool = True) -> None:
        """Write a HF model dir (+ sentence-transformers modules when tied) and densir_config.json."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = tokenizer or self.tokenizer
        if self.config.untied:
            for sub, model in (("query_model", self.q_model), ("passage_model", self.p_model)):
                model.save_pretrained(output_dir / sub, safe_serialization=safe_serialization)
                if tokenizer is not None:
                    tokenizer.save_pretrained(output_dir / sub)
        else:
            self.q_model.save_pretrained(output_dir, safe_serialization=safe_serialization)
            if tokenizer is not None:
                tokenizer.save_pretrained(output_dir)
            if not self.is_lora:  # an adapter dir is densir's (and peft's); --lora_merge writes a plain one
                self._write_sentence_transformers_files(output_dir)
        # written last: its presence marks a complete save
        with open(output_dir / (CONFIG_NAME + ".tmp"), "w") as f:
            json.dump(asdict(self.config), f, indent=2)
        os.replace(output_dir / (CONFIG_NAME + ".tmp"), output_dir / CONFIG_NAME)

    def _write_sentence_transformers_files(self, output_dir: Path) -> None:
        dim = self.q_model.config.hidden_size
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if self.config.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (output_dir / "2_Normalize").mkdir(exist_ok=True)
        (output_dir / "1_Pooling").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": dim, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                   "pooling_mode_lasttoken": False, "include_prompt": True}
        pooling[_ST_POOLING[self.config.pooling]] = True
        max_len = self.config.max_seq_length or getattr(self.q_model.config, "max_position_embeddings", 512)
        files = {
            "modules.json": modules,
            "1_Pooling/config.json": pooling,
            "sentence_bert_config.json": {"max_seq_length": max_len, "do_lower_case": False},
            "config_sentence_transformers.json": {
                "prompts": {"query": self.config.query_prefix, "document": self.config.passage_prefix},
                "default_prompt_name": None, "similarity_fn_name": "cosine" if self.config.normalize else "dot"},
        }
        for name, obj in files.items():
            with open(output_dir / name, "w") as f:
                json.dump(obj, f, indent=2)


BIDIRECTIONAL_TYPES = ("llama", "mistral", "qwen2", "qwen3")  # decoders tested to take a 4-D attention mask


def padding_mask_4d(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[batch, 1, len, len]`` additive mask: every position sees every real token (0), no padding (min)."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return ((1.0 - keep) * torch.finfo(dtype).min).expand(-1, 1, attention_mask.shape[1], -1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == "last":
        # the last position whose mask is 1: right padding, left padding or none alike
        positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
        last = (positions * attention_mask.ne(0)).argmax(1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}")


def base_model_name(resolved) -> str:
    """How an adapter names its base: a hub id as given, a local dir as an absolute path."""
    return str(resolved.local_dir) if resolved.source.startswith("local dir") else resolved.name


def instruction_prefix(task: str) -> str:
    """The query prefix of an instruction-following embedding model: ``"Instruct: {task}\nQuery: "``."""
    return INSTRUCTION_TEMPLATE.format(task=task)


def read_encoder_config(model_name_or_path: str) -> EncoderConfig:
    """The encoder settings a checkpoint holds (densir_config.json, else its sentence-transformers
    modules, else defaults), through the one reader :func:`densir.models.load_encoder_settings`."""
    return EncoderConfig(**load_encoder_settings(model_name_or_path, {}, asdict(EncoderConfig()))[1])
