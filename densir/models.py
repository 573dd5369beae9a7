"""Where a model comes from and what its checkpoint says: one resolver for the encoder and the re-ranker.

    resolved = resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2", revision="main")
    resolved.local_dir   # .../hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/<commit>
    read_sentence_transformers_config(resolved.local_dir)
    # {'pooling': 'mean', 'normalize': True, 'max_seq_length': 256}

A name is a **local directory** (used as is) or a **Hugging Face hub id**, which is looked up in
the Hugging Face cache first (``HF_HUB_CACHE`` / ``HF_HOME``, or ``cache_dir``) and downloaded
only when it is not there and ``HF_HUB_OFFLINE`` is unset. Cache first, so that a pipeline's
stages (train, encode, re-rank, on nodes that may have no internet) all read the same snapshot
and never wait on the network for a model they already have; pass ``revision=<commit>`` to pin
one, or refresh the cache (``hf download NAME``) to pick up a newer ``main``. Every file is then
read from ``resolved.local_dir``, so a hub id and the same files in a local dir give the same
settings: the sentence-transformers files (pooling, normalize, prompts, max_seq_length) are read
from wherever the model lives.

Settings are merged by one rule, :func:`merge_settings`: an explicit flag wins over what the
checkpoint says, which wins over densir's defaults; each setting is logged with where it came
from (``pooling=mean (from 1_Pooling/config.json)``).

Files read (each optional; only what is found is returned):

    modules.json                    the module list: a Pooling module, a Normalize module
    <pooling dir>/config.json       pooling_mode (ST >= 5) or pooling_mode_*_token flags (older)
    config_sentence_transformers.json   prompts {query, document|passage}; model_type; activation_fn
    sentence_bert_config.json       max_seq_length (legacy sentence_<arch>_config.json names too)
    config.json                     CrossEncoders: num_labels, activation (ST 4: sentence_transformers.activation_fn,
                                    ST < 4: sbert_ce_default_activation_function), max_position_embeddings
    tokenizer_config.json           CrossEncoders without max_seq_length: model_max_length, as ST reads it
    densir_config.json / densir_reranker.json   densir's own saves (win over the ST files: densir writes both)
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from densir.io import InputError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"     # a peft adapter dir (LoRA): base model + adapter weights
ENCODER_CONFIG = "densir_config.json"      # = densir.retriever.modeling.CONFIG_NAME
RERANKER_CONFIG = "densir_reranker.json"   # = densir.reranker.modeling.CONFIG_NAME
RERANKER_MAX_LEN = 512                     # = densir.reranker.modeling.DEFAULT_MAX_LEN

# sentence-transformers pooling names -> densir's; other ST modes (max, weightedmean, ...) are kept
# by name so that the error names them, see load_encoder_settings
_ST_POOLING_NAMES = {"cls": "cls", "mean": "mean", "lasttoken": "last"}
_ST_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                     "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                     "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
DENSIR_POOLINGS = ("cls", "mean", "last")
_ST_CONFIG_FILES = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                    "sentence_camembert_config.json", "sentence_albert_config.json",
                    "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
_VERY_LARGE = 10 ** 9  # transformers' "no limit" model_max_length is ~1e30


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved to a directory on this machine."""

    local_dir: Path   # read every file from here
    name: str         # as the user gave it
    source: str       # "local dir /x" or "hub cache <snapshot dir> (revision main)", for logs and metadata


class CheckpointSettings(dict):
    """Settings read from a checkpoint; ``sources[key]`` is the file (relative to the model dir) it came from."""

    def __init__(self, *args, sources: Mapping[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sources = dict(sources or {})

    def put(self, key: str, value, source: str) -> None:
        self[key] = value
        self.sources[key] = source

    def update_from(self, other: CheckpointSettings) -> None:
        for key, value in other.items():
            self.put(key, value, other.sources.get(key, "checkpoint"))


# --------------------------------------------------------------------------- public entry points
def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """A local directory as is; else the hub id's snapshot in the Hugging Face cache, downloaded if missing.

    The cache is tried first (``local_files_only=True``); the hub only when the snapshot is not
    cached and ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is unset. A name found nowhere
    raises :class:`densir.io.InputError` with one line naming it, the revision and the cache dir.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if revision not in (None, "main"):
            logger.warning("%s is a local dir: --model_revision %s is ignored", name, revision)
        local = path.resolve()
        check_safetensors(local)
        return ResolvedModel(local, name, f"local dir {local}")
    if _looks_like_path(name):
        raise InputError(name, None, "no such model directory" if not path.exists() else "is a file, not a model dir")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    shown_revision = revision or "main"
    shown_cache = os.fspath(cache_dir) if cache_dir is not None else _default_hub_cache()
    where = f"revision {shown_revision}, cache dir {shown_cache}"
    try:
        local = snapshot_download(name, revision=revision, cache_dir=cache_dir, local_files_only=True)
        return _hub_model(local, name, shown_revision)
    except HFValidationError as e:
        raise InputError(name, None, f"not a local dir and not a valid Hugging Face model id ({_first_line(e)})") from None
    except LocalEntryNotFoundError as e:  # not cached, or cached incompletely: the hub may still have it
        cache_error = e
    if hub_offline():
        raise InputError(name, None, f"not a local dir and not in the Hugging Face cache ({where}; "
                         "HF_HUB_OFFLINE is set, so the hub was not asked)") from None
    try:
        local = snapshot_download(name, revision=revision, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 (no network, unknown repo, gated, hub down: all mean "not available")
        raise InputError(name, None, f"not a local dir and not in the Hugging Face cache ({where}), and the "
                         f"download failed: {type(e).__name__}: {_first_line(e)}") from None
    logger.info("downloaded %s (%s) after a cache miss: %s", name, shown_revision, _first_line(cache_error))
    return _hub_model(local, name, shown_revision)


def read_sentence_transformers_config(local_dir: str | os.PathLike) -> CheckpointSettings:
    """What a sentence-transformers model dir says, in densir's names; only keys actually found.

    Keys: ``pooling`` (cls | mean | last; another ST mode by its ST name), ``normalize``,
    ``query_prefix``, ``passage_prefix``, ``max_seq_length``; for a CrossEncoder also
    ``model_type`` ("CrossEncoder"), ``num_labels`` and ``activation_fn`` (a dotted path).
    ``max_seq_length`` is ``sentence_bert_config.json``'s; a CrossEncoder without one gets the
    tokenizer's ``model_max_length`` capped at ``max_position_embeddings``, which is what
    sentence-transformers' CrossEncoder truncates at. (A SentenceTransformer would fall back the
    same way, but densir's encoder keeps Tevatron's 32/128 token defaults for plain HF models,
    so that fallback is not applied to bi-encoders.) The result's ``sources[key]`` names the file.
    """
    d = Path(local_dir)
    found = CheckpointSettings()
    modules = _read_json(d, "modules.json")
    if isinstance(modules, list):
        has_pooling = False
        for module in modules:
            kind = str(module.get("type", ""))
            if kind.endswith("Pooling"):
                has_pooling = True
                rel = "/".join(p for p in (module.get("path", ""), "config.json") if p)
                pooling = _pooling_from_config(_read_json(d, rel) or {})
                if pooling is not None:
                    found.put("pooling", pooling, rel)
            elif kind.endswith("Normalize"):
                found.put("normalize", True, "modules.json")
        if has_pooling and "normalize" not in found:
            found.put("normalize", False, "modules.json")  # an embedding model without a Normalize module

    st_config = _read_json(d, "config_sentence_transformers.json") or {}
    prompts = st_config.get("prompts") or {}
    if prompts.get("query") is not None:
        found.put("query_prefix", prompts["query"], "config_sentence_transformers.json")
    for key in ("document", "passage"):
        if prompts.get(key) is not None:
            found.put("passage_prefix", prompts[key], "config_sentence_transformers.json")
            break
    for name in _ST_CONFIG_FILES:  # sentence-transformers tries these names in this order
        bert_config = _read_json(d, name)
        if bert_config is not None:
            if bert_config.get("max_seq_length") is not None:
                found.put("max_seq_length", int(bert_config["max_seq_length"]), name)
            break

    hf_config = _read_json(d, "config.json") or {}
    if _is_cross_encoder(st_config, hf_config):
        found.put("model_type", "CrossEncoder", "config_sentence_transformers.json"
                  if st_config.get("model_type") == "CrossEncoder" else "config.json")
        num_labels = hf_config.get("num_labels", len(hf_config.get("id2label") or {}) or None)
        if num_labels is not None:
            found.put("num_labels", int(num_labels), "config.json")
        activation = _cross_encoder_activation(st_config, hf_config)
        if activation is not None:
            found.put("activation_fn", *activation)
        if "max_seq_length" not in found:
            tokenizer_max = read_tokenizer_max_length(d)
            if tokenizer_max is not None:
                found.put("max_seq_length", *tokenizer_max)
    return found


def read_tokenizer_max_length(local_dir: str | os.PathLike) -> tuple[int, str] | None:
    """(``model_max_length`` capped at ``max_position_embeddings``, its source), as sentence-transformers reads it.

    None when the tokenizer states no limit (transformers' 1e30 placeholder) and the model none either.
    """
    d = Path(local_dir)
    tokenizer_max = (_read_json(d, "tokenizer_config.json") or {}).get("model_max_length")
    positions = (_read_json(d, "config.json") or {}).get("max_position_embeddings")
    if tokenizer_max is not None and tokenizer_max < _VERY_LARGE:
        if isinstance(positions, int) and positions > 0 and positions < tokenizer_max:
            return positions, "config.json"
        return int(tokenizer_max), "tokenizer_config.json"
    if isinstance(positions, int) and positions > 0:
        return positions, "config.json"
    return None


def read_json_settings(local_dir: str | os.PathLike, filename: str, keys) -> CheckpointSettings:
    """The ``keys`` present in ``local_dir/filename`` (densir_config.json, densir_reranker.json)."""
    raw = _read_json(Path(local_dir), filename) or {}
    return CheckpointSettings({k: raw[k] for k in keys if k in raw}, sources={k: filename for k in keys if k in raw})


def merge_settings(explicit: Mapping, checkpoint: Mapping, defaults: Mapping, what: str) -> tuple[dict, dict]:
    """An explicit (non-None) value wins over the checkpoint's, which wins over the default.

    The settings are the keys of ``defaults`` and ``explicit``; a checkpoint key outside them is
    not a setting of this caller and is left out. Returns ``(settings, provenance)``, where
    ``provenance[key]`` is ``"flag"``, ``"checkpoint <file>"`` (``checkpoint.sources``, when it
    has them) or ``"default"``; logs one INFO line per setting, prefixed by ``what``.
    """
    sources = getattr(checkpoint, "sources", {})
    settings, provenance = {}, {}
    for key in list(defaults) + [k for k in explicit if k not in defaults]:
        if explicit.get(key) is not None:
            settings[key], provenance[key] = explicit[key], "flag"
        elif key in checkpoint:
            settings[key] = checkpoint[key]
            provenance[key] = f"checkpoint {sources[key]}" if key in sources else "checkpoint"
        elif key in defaults:
            settings[key], provenance[key] = defaults[key], "default"
        else:
            continue  # an explicit None with no checkpoint value or default: not a setting
        logger.info("%s: %s=%s (%s)", what, key, _shown(settings[key]), _said_by(provenance[key]))
    return settings, provenance


def load_encoder_settings(name_or_path: str | os.PathLike, explicit: Mapping, defaults: Mapping,
                          revision: str | None = None,
                          cache_dir: str | os.PathLike | None = None) -> tuple[ResolvedModel, dict, dict]:
    """Resolve a bi-encoder checkpoint and merge its settings: ``(resolved, settings, provenance)``.

    ``defaults`` are :class:`densir.retriever.modeling.EncoderConfig`'s (``dataclasses.asdict(EncoderConfig())``),
    which are also the setting names; the checkpoint is the sentence-transformers files overlaid
    by ``densir_config.json`` where present. A pooling the checkpoint names but densir does not
    have (max, weightedmean, ...) is an InputError naming its file, unless ``--pooling`` overrides it.
    """
    resolved = resolve_model_dir(name_or_path, revision=revision, cache_dir=cache_dir)
    checkpoint = read_sentence_transformers_config(resolved.local_dir)
    checkpoint.update_from(read_json_settings(resolved.local_dir, ENCODER_CONFIG, list(defaults)))
    settings, provenance = merge_settings(explicit, checkpoint, defaults, f"encoder {resolved.name}")
    pooling = settings.get("pooling")
    if pooling is not None and pooling not in DENSIR_POOLINGS:
        raise InputError(resolved.local_dir / checkpoint.sources.get("pooling", ""), None,
                         f"pooling {pooling!r} is not one of densir's {', '.join(DENSIR_POOLINGS)}; pass --pooling")
    return resolved, settings, provenance


def load_reranker_settings(name_or_path: str | os.PathLike, max_len: int | None = None,
                           revision: str | None = None,
                           cache_dir: str | os.PathLike | None = None) -> tuple[ResolvedModel, dict, dict]:
    """Resolve a re-ranker checkpoint and its ``max_len``: ``(resolved, settings, provenance)``.

    ``max_len``: the flag; else ``densir_reranker.json``; else a CrossEncoder's
    ``max_seq_length`` (what sentence-transformers truncates at); else the tokenizer's
    ``model_max_length`` (capped at ``max_position_embeddings``); capped at 512 unless given as
    the flag (the re-ranker's rule before this module). ``settings`` also carries ``num_labels`` and
    ``activation_fn`` when the checkpoint is a CrossEncoder that states them.
    """
    resolved = resolve_model_dir(name_or_path, revision=revision, cache_dir=cache_dir)
    st = read_sentence_transformers_config(resolved.local_dir)
    checkpoint = CheckpointSettings()
    if st.get("model_type") == "CrossEncoder":
        for key, value in st.items():
            checkpoint.put("max_len" if key == "max_seq_length" else key, value, st.sources[key])
    if "max_len" not in checkpoint:
        tokenizer_max = read_tokenizer_max_length(resolved.local_dir)
        if tokenizer_max is not None:
            checkpoint.put("max_len", *tokenizer_max)
    if "max_len" in checkpoint and checkpoint["max_len"] > RERANKER_MAX_LEN:
        checkpoint.put("max_len", RERANKER_MAX_LEN, f"{checkpoint.sources['max_len']}, capped at {RERANKER_MAX_LEN}")
    checkpoint.update_from(read_json_settings(resolved.local_dir, RERANKER_CONFIG, ["max_len"]))
    defaults = {"max_len": RERANKER_MAX_LEN}
    for key in ("num_labels", "activation_fn"):
        if key in checkpoint:
            defaults[key] = None
    settings, provenance = merge_settings({"max_len": max_len}, checkpoint, defaults, f"reranker {resolved.name}")
    return resolved, settings, provenance


def adapter_base(local_dir: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(base model name or path, its revision)`` that a peft adapter dir names in
    ``adapter_config.json``, or None when ``local_dir`` is not an adapter dir."""
    config = _read_json(Path(local_dir), ADAPTER_CONFIG)
    if config is None:
        return None
    base = config.get("base_model_name_or_path")
    if not base:
        raise InputError(Path(local_dir) / ADAPTER_CONFIG, None, "names no base model", "base_model_name_or_path")
    return str(base), config.get("revision")


def load_pretrained(auto_class, local_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                    **hf_kwargs):
    """The one place a Hugging Face model is made from a resolved dir, for every loader.

    A plain model dir: ``auto_class.from_pretrained(local_dir)``. An adapter dir (a LoRA save,
    ``adapter_config.json``; :mod:`densir.lora`): its base model (``base_model_name_or_path``, a
    local dir or a hub id, resolved by :func:`resolve_model_dir`, cache first) with the adapter on
    top, unmerged (a ``peft.PeftModel``; :func:`densir.lora.merged` folds it in).
    """
    base = adapter_base(local_dir)
    if base is None:
        return auto_class.from_pretrained(str(local_dir), **hf_kwargs)
    from peft import PeftModel

    name, revision = base
    resolved = resolve_model_dir(name, revision=revision, cache_dir=cache_dir)
    logger.info("%s is an adapter of %s (%s)", local_dir, name, resolved.source)
    model = auto_class.from_pretrained(str(resolved.local_dir), **hf_kwargs)
    return PeftModel.from_pretrained(model, str(local_dir))


def is_decoder(config) -> bool:
    """A decoder-only (causal LM) backbone, e.g. Llama, Mistral, Qwen2: last-token pooling with an
    EOS appended is its rule (RepLLaMA); encoders (BERT & co., which also have a causal-LM head
    class) are told apart by having a masked-LM one."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


# the attention-probability dropout of the encoder families densir trains: the config key, and the
# module-name suffix of that dropout (not the hidden dropout after the attention output)
_ATTENTION_DROPOUT = (("attention_probs_dropout_prob", ".attention.self.dropout"),  # BERT, RoBERTa, XLM-R, ELECTRA
                      ("attention_dropout", ".attention.dropout"))  # DistilBERT


def set_attention_dropout(model, p: float) -> int:
    """Set the attention-probability dropout of a Hugging Face encoder to ``p``: the config (so a
    saved checkpoint carries it) and the dropout modules of every attention layer; return how many.

    With ``p = 0`` torch's ``scaled_dot_product_attention`` runs its fused (flash) kernel on the CPU
    in training too; with dropout it falls back to the unfused math path, which draws a Bernoulli
    mask over every ``heads x length x length`` score (benchmarks/train_throughput.py). The hidden
    dropout is untouched. Raises ValueError for a model type whose attention dropout it does not know.
    """
    import torch

    for key, suffix in _ATTENTION_DROPOUT:
        if hasattr(model.config, key):
            layers = [m for name, m in model.named_modules()
                      if name.endswith(suffix) and isinstance(m, torch.nn.Dropout)]
            if layers:
                setattr(model.config, key, float(p))
                for m in layers:
                    m.p = float(p)
                return len(layers)
    raise ValueError(f"--attention_dropout: no attention dropout known for model type "
                     f"'{getattr(model.config, 'model_type', '?')}' (known: BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT)")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


# --------------------------------------------------------------------------- helpers
def _hub_model(local: str, name: str, revision: str) -> ResolvedModel:
    local_dir = Path(local)
    check_safetensors(local_dir)
    return ResolvedModel(local_dir, name, f"hub cache {local_dir} (revision {revision})")


def check_safetensors(model_dir: Path) -> None:
    """Refuse a truncated or damaged ``*.safetensors`` of a model dir (and of its query_model/ and
    passage_model/) with one line naming the file, before any library reads it. Reads headers only:
    8 bytes of header length, the JSON header, and the size the tensors' offsets announce."""
    for f in sorted([*model_dir.glob("*.safetensors"), *model_dir.glob("*_model/*.safetensors")]):
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise InputError(f, None, f"not a complete safetensors file ({size} bytes, header length "
                                 f"{n if n >= 0 else 'unreadable'}): truncated or damaged; save or copy it again")
            try:
                header = json.loads(fh.read(n))
                end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise InputError(f, None, f"not a safetensors file (bad header: {e}); save or copy it again") from None
        if size != 8 + n + end:
            raise InputError(f, None, f"{size} bytes, but its header announces {8 + n + end}: truncated or "
                             "damaged; save or copy it again")


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else that is not a dir here was meant as a path."""
    return (name.startswith(("/", "./", "../", "~")) or name in (".", "..") or name.count("/") > 1
            or "\\" in name or Path(name).exists())


def _default_hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _shown(value) -> str:
    """``mean``, ``True``, ``256``; strings that would read ambiguously (empty, spaces) quoted."""
    if isinstance(value, str) and (not value or value != value.strip() or " " in value):
        return repr(value)
    return str(value)


def _said_by(provenance: str) -> str:
    if provenance == "flag":
        return "from the command line"
    if provenance.startswith("checkpoint "):
        return "from " + provenance[len("checkpoint "):]
    return provenance


def _read_json(d: Path, rel: str):
    path = d / rel
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"not valid JSON: {e.msg}") from None


def _pooling_from_config(config: dict) -> str | None:
    mode = config.get("pooling_mode")  # sentence-transformers >= 5
    if mode is None:
        modes = [name for flag, name in _ST_POOLING_FLAGS.items() if config.get(flag)]
        mode = modes[0] if len(modes) == 1 else modes or None
    if mode is None:
        return None
    if isinstance(mode, (list, tuple)):
        if len(mode) != 1:
            return "+".join(mode)  # concatenated poolings: not a densir pooling, reported by name
        mode = mode[0]
    return _ST_POOLING_NAMES.get(mode, mode)


def _is_cross_encoder(st_config: dict, hf_config: dict) -> bool:
    if st_config.get("model_type"):
        return st_config["model_type"] == "CrossEncoder"
    return any(str(a).endswith("ForSequenceClassification") for a in hf_config.get("architectures") or [])


def _cross_encoder_activation(st_config: dict, hf_config: dict) -> tuple[str, str] | None:
    """In sentence-transformers' order: its own config (>= 5), then config.json (4.x, then < 4)."""
    if st_config.get("activation_fn"):
        return st_config["activation_fn"], "config_sentence_transformers.json"
    st_section = hf_config.get("sentence_transformers") or {}
    if st_section.get("activation_fn"):
        return st_section["activation_fn"], "config.json"
    if hf_config.get("sbert_ce_default_activation_function"):
        return hf_config["sbert_ce_default_activation_function"], "config.json"
    return None

