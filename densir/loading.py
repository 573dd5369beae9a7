"""The one model loader for inference: a checkpoint (local dir or hub id) -> a ready encoder or cross-encoder.

    encoder = load_model("BAAI/bge-small-en-v1.5", "encoder", backend="openvino", quantize="int8", max_len=128)
    reranker = load_model("runs/demo/rerank/model", "cross-encoder", device="auto", precision="auto")
    scores = reranker.predict(pairs, precision=reranker.inference.precision)

What a model runs on is one :class:`Inference` (:func:`inference`: device, precision, backend,
quantization, recipe, CPU threads), carried as its ``.inference``. A calibrated recipe calibrates
on the first :data:`densir.backends.DEFAULT_CALIBRATION_SIZE` texts of ``calibration`` (passages,
or (query, passage) pairs; an iterable or a function returning one, called only when needed). A
stage that checks the torch weights first (a shard fingerprint) loads in two steps:
``run = inference(...)``, then ``run.prepare(DenseEncoder.load(...))``.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Union

import torch

from densir.backends import DEFAULT_CALIBRATION_SIZE, RECIPES, recipe_name

logger = logging.getLogger(__name__)

Calibration = Union[Iterable, Callable[[], Iterable], None]


def check_backend(backend: str = "torch", quantize: str = "none", recipe: str | None = None,
                  precision: str = "fp32", task: str = "encoder") -> str:
    """The recipe a request runs (``torch-fp32``: the checkpoint itself); ValueError naming the parameter
    when ``backend``, ``quantize``, ``recipe`` and ``precision`` do not go together. Cheap: nothing loads."""
    name = recipe_name(backend, quantize, recipe, task)
    if backend != "torch" and precision not in ("fp32", "auto"):
        raise ValueError(f"backend {backend} runs in fp32 or int8 (quantize int8), not precision {precision}")
    return name


@dataclass(frozen=True)
class Inference:
    """How a loaded model runs. ``precision``: what runs (fp32 | fp16 | bf16), for ``precision=`` / ``autocast``."""

    device: torch.device
    precision: str
    backend: str = "torch"
    quantize: str = "none"
    recipe: str = "torch-fp32"
    threads: int | None = None

    def prepare(self, model, max_len: int | None = None, calibration: Calibration = None):
        """``model`` (a ``DenseEncoder`` or ``CrossEncoderReranker`` from its ``load``) ready to run: in
        eval mode on the device, or run by the backend (``with_backend``: exported once, cached beside
        the checkpoint; ``max_len``: the encoder's export length). The result carries ``.inference``."""
        if self.backend == "torch":
            model = model.eval().to(self.device)
        else:
            texts = None
            if RECIPES[self.recipe].calibrated:
                texts = calibration() if callable(calibration) else calibration
                texts = list(itertools.islice(texts or (), DEFAULT_CALIBRATION_SIZE))
            kwargs = {"max_len": max_len} if max_len is not None else {}
            model = model.with_backend(self.backend, self.quantize, recipe=self.recipe, calibration=texts,
                                       threads=self.threads, **kwargs)
            logger.info("backend %s", model.runtime_info)
        model.inference = self
        return model


def inference(device: str | torch.device | None = "auto", precision: str = "fp32", backend: str = "torch",
              quantize: str = "none", recipe: str | None = None, task: str = "encoder",
              threads: int | None = None) -> Inference:
    """Check a request (:func:`check_backend`) and resolve it here: the device (``auto``/None: CUDA
    when torch sees one; the CPU for ``onnx``/``openvino``), the precision, and the CPU threads
    (set when the device is the CPU). ValueError names the parameter at fault."""
    from densir.precision import resolve_device, resolve_precision
    from densir.threads import configure_cpu_threads

    name = check_backend(backend, quantize, recipe, precision, task)
    if backend != "torch":
        device, precision = "cpu", "fp32"
    device = resolve_device(device or "auto")
    if device.type == "cpu":
        if threads:
            torch.set_num_threads(threads)
        else:
            configure_cpu_threads()
    return Inference(device, resolve_precision(precision, device).name, backend, quantize, name, threads)


def load_model(model_name_or_path: str, task: str = "encoder", device: str | torch.device | None = "auto",
               precision: str = "fp32", backend: str = "torch", quantize: str = "none", recipe: str | None = None,
               calibration: Calibration = None, max_len: int | None = None, threads: int | None = None, **kwargs):
    """A model ready to run inference, with ``.inference`` (:class:`Inference`).

    Args:
        model_name_or_path: a local dir or a hub id, read as the model class's ``load`` reads it.
        task: ``"encoder"`` (a :class:`~densir.retriever.modeling.DenseEncoder`) or ``"cross-encoder"``
            (a :class:`~densir.reranker.modeling.CrossEncoderReranker`; any encoder gets a fresh, random head).
        device, precision, backend, quantize, recipe, threads: :func:`inference`'s.
        calibration: texts for a calibrated recipe (see the module docstring).
        max_len: the encoder's export length (default: the checkpoint's, else 512), or the
            cross-encoder's query + passage tokens (default: the checkpoint's).
        kwargs: the ``load``'s (``pooling``, ``normalize``, prefixes; ``revision``, ``cache_dir``).
    Returns:
        the model; e.g. ``model.predict(pairs, precision=model.inference.precision)`` for a cross-encoder.

    Example::

        encoder = load_model("sentence-transformers/all-MiniLM-L6-v2", "encoder", backend="openvino", quantize="int8")
        vectors = encode_texts(encoder, ["a query"], "query", max_len=64, batch_size=32)
    """
    run = inference(device, precision, backend, quantize, recipe, task, threads)
    if task == "cross-encoder":
        from densir.reranker.modeling import CrossEncoderReranker

        return run.prepare(CrossEncoderReranker.load(model_name_or_path, max_len=max_len, **kwargs),
                           calibration=calibration)
    from densir.retriever.modeling import DenseEncoder

    encoder = DenseEncoder.load(model_name_or_path, **kwargs)
    return run.prepare(encoder, max_len or encoder.config.max_seq_length or 512, calibration)


def load_reranker(path, max_len: int | None = None, device: str | torch.device | None = "auto", batch_size: int = 64,
                  precision: str = "fp32", backend: str = "torch", quantize: str = "none", recipe: str | None = None):
    """A finished re-ranker, ready to score: :func:`load_model`'s cross-encoder, with ``batch_size`` pairs per pass.

    Args:
        path: rerank.sh's ``OUT_DIR/rerank`` (or its ``model/``), a sequence-classification checkpoint
            dir, or a hub id. A local dir that is neither a finished densir re-ranker (``densir_reranker.json``)
            nor a classifier is refused (:class:`densir.io.InputError`): an encoder would get a random head.
        max_len, device, precision, backend, quantize, recipe: :func:`load_model`'s.
        batch_size: the model's :attr:`~densir.reranker.modeling.CrossEncoderReranker.batch_size`.
    Returns:
        a :class:`~densir.reranker.modeling.CrossEncoderReranker` (``predict``, ``rank``).

    Example::

        reranker = load_reranker("runs/demo/rerank")
        reranker.rank("what lowers blood pressure?", ["Aspirin ...", "Beta blockers ..."], top_k=1)
    """
    from densir.io import InputError, read_json
    from densir.reranker.modeling import CONFIG_NAME

    path = Path(path)
    if (path / "model" / CONFIG_NAME).exists():
        path = path / "model"
    if path.exists():
        if not path.is_dir():
            raise InputError(path, None, "not a re-ranker directory")
        if not (path / CONFIG_NAME).exists():
            config = path / "config.json"
            archs = (read_json(config).get("architectures") or []) if config.exists() else []
            if not any(a.endswith("ForSequenceClassification") for a in archs):
                raise InputError(path / CONFIG_NAME, None, "missing: not a finished re-ranker "
                                 "(rerank.sh's train stage writes it last) nor a cross-encoder checkpoint")
    elif path.is_absolute() or str(path).startswith("."):
        raise InputError(path, None, "no such re-ranker directory")
    # anything else is a hub id, resolved (cache first) by densir.models
    model = load_model(str(path), "cross-encoder", device, precision, backend, quantize, recipe, max_len=max_len)
    model.batch_size = batch_size
    return model


def checkpoint_dir(model) -> Path:
    """The checkpoint dir ``model`` was loaded from (its ``load`` sets ``.local_dir``): what a backend exports."""
    local = getattr(model, "local_dir", None)
    if local is None:
        raise ValueError(f"with_backend needs a model from {type(model).__name__}.load (its checkpoint files)")
    return local
