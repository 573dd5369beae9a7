"""Exporting a checkpoint for a CPU backend, cached: ``torch.onnx.export`` (TorchScript exporter, eager
attention, dynamic batch and sequence axes), then onnxruntime's transformer optimizer (``onnx``)
or ``openvino.convert_model`` (``openvino``), then the recipe's quantizer for int8.

Cache: ``<model_dir>/.densir-export/<backend>-<quantize>-<hash>/``, the hash over the weight and
config files, task, recipe, library versions and (calibrated recipes) max_len and calibration
texts. Built under a temporary name, ``export.json`` written last, then renamed into place; a
read-only ``model_dir`` falls back to ``cache_root`` (default ``~/.cache/densir/exports``).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from densir.backends.quantize import warnings_quiet
from densir.backends.recipes import DEFAULT_CALIBRATION_SIZE, Recipe, library_versions, resolve_recipe

logger = logging.getLogger(__name__)

EXPORT_DIR = ".densir-export"
MARKER = "export.json"
DEFAULT_CACHE_ROOT = Path("~/.cache/densir/exports")
_FORMAT_VERSION = 1  # bump when the export layout or the export code changes what it writes


def export_model(model_dir, backend: str, quantize: str = "none", task: str = "encoder", max_len: int = 512,
                 cache_root=None, recipe: str | None = None, calibration: Sequence | None = None) -> Path:
    """Export (or reuse) ``model_dir`` for ``backend``; return the export directory.

    ``calibration``: texts (strings, or (query, passage) pairs for the cross-encoder) for a
    calibrated recipe, cut at ``max_len`` tokens; the first :data:`DEFAULT_CALIBRATION_SIZE` are used.
    """
    model_dir = Path(model_dir)
    spec = resolve_recipe(backend, quantize, task, recipe)
    if spec is None:
        raise ValueError("backend 'torch' runs the checkpoint itself: there is nothing to export")
    calib = _calibration_texts(spec, calibration)
    key = _cache_key(model_dir, spec, task, max_len, calib)
    name = f"{spec.backend}-{spec.quantize}-{key}"
    candidates = _cache_dirs(model_dir, cache_root)
    for base in candidates:
        if (base / name / MARKER).exists():
            logger.info("reusing cached export %s", base / name)
            return base / name
    base = _first_writable(candidates)
    final = base / name
    tmp = Path(tempfile.mkdtemp(prefix=name + ".tmp-", dir=base))
    try:
        start = time.perf_counter()
        logger.info("exporting %s for %s (%s, %s): %s", model_dir, spec.backend, spec.name, task, final)
        files = _build(model_dir, spec, task, max_len, calib, tmp)
        meta = {"format_version": _FORMAT_VERSION, "source": str(model_dir.resolve()), "task": task,
                "backend": spec.backend, "quantize": spec.quantize, "recipe": spec.name,
                "description": spec.description, "options": _jsonable(spec.options),
                "max_len": max_len if calib is not None else None,
                "calibration": _calibration_digest(calib), "files": files["files"], "inputs": files["inputs"],
                "versions": library_versions(spec.backend), "export_seconds": round(time.perf_counter() - start, 1)}
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")  # last: marks a complete export
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared checkpoint's export from its other users
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MARKER).exists():
                raise
            # another process finished the same export first: keep its directory (a reader may
            # have it open) and drop ours
            shutil.rmtree(tmp, ignore_errors=True)
            logger.info("reusing cached export %s (written concurrently)", final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --------------------------------------------------------------------------- building an export
def _build(model_dir: Path, spec: Recipe, task: str, max_len: int, calib: list | None, out: Path) -> dict:
    """Write the export into ``out``; return ``{"files": {"model": file name}, "inputs": [names]}``."""
    shutil.copyfile(model_dir / "config.json", out / "config.json")  # the runtime's .config
    with tempfile.TemporaryDirectory(prefix="work-", dir=out) as work:
        work = Path(work)
        raw, names = _export_onnx(model_dir, task, work / "raw.onnx")
        calib_feeds = _calibration_feeds(model_dir, names, calib, max_len) if calib is not None else None
        if spec.backend == "onnx":
            fused = _optimize_onnx(model_dir, raw, work / "fused.onnx")
            if spec.quantizer is None:
                os.replace(fused, out / "model.onnx")
            else:
                spec.quantizer(fused, out / "model.onnx", spec.options, calib_feeds, work)
            return {"files": {"model": "model.onnx"}, "inputs": names}
        import openvino as ov

        model = ov.convert_model(str(raw))
        if spec.quantizer is not None:
            model = spec.quantizer(model, spec.options, calib_feeds)
        ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
        return {"files": {"model": "model.xml"}, "inputs": names}


def _export_onnx(model_dir: Path, task: str, path: Path) -> tuple[Path, list[str]]:
    """torch.onnx.export with dynamic batch and sequence axes; eager attention.

    Eager attention and the TorchScript exporter give the graph pattern onnxruntime's transformer
    optimizer fuses into its Attention kernel (SDPA exports as a masked-select pattern it leaves
    unfused, and nncf quantizes it less accurately: min cosine 0.986 vs 0.995 on SciFact).
    """
    model = load_hf(model_dir, task, attn_implementation="eager").eval()
    if task == "cross-encoder" and not any(a.endswith("ForSequenceClassification")
                                           for a in (model.config.architectures or [])):
        logger.warning("%s has no classification head: the export gets a fresh random one; save the "
                       "reranker first (CrossEncoderReranker.save) and export that", model_dir)
    # token_type_ids only where the architecture takes them (BERT does, DistilBERT does not)
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")
    wrapper = _OutputOf(model, "logits" if task == "cross-encoder" else "last_hidden_state", names).eval()
    # two rows, one padded: the mask path must stay data-dependent in the traced graph
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 6251, 102, 0], [101, 2178, 2742, 102, 0, 0, 0, 0]])
    ids = ids.clamp(max=model.config.vocab_size - 1)
    mask = (ids != 0).long()
    mask[:, 0] = 1
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(example[n] for n in names)
    output = "logits" if task == "cross-encoder" else "last_hidden_state"
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"} if task == "cross-encoder" else {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings_quiet():
        torch.onnx.export(wrapper, args, str(path), input_names=list(names), output_names=[output],
                          dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False)
    return path, names


def _optimize_onnx(model_dir: Path, src: Path, dst: Path) -> Path:
    """onnxruntime's transformer optimizer; the plain graph when it cannot handle the architecture."""
    from onnxruntime.transformers import optimizer
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir))
    try:
        with warnings_quiet():
            optimized = optimizer.optimize_model(str(src), model_type="bert",
                                                 num_heads=getattr(config, "num_attention_heads", 0) or 0,
                                                 hidden_size=getattr(config, "hidden_size", 0) or 0)
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        logger.info("onnxruntime transformer optimizer fused %s", fused)
        optimized.save_model_to_file(str(dst))
    except Exception as e:  # an architecture the optimizer does not know: ORT's own graph passes still run
        logger.warning("onnxruntime transformer optimizer failed (%s); using the plain export", e)
        shutil.copyfile(src, dst)
    return dst


def _calibration_feeds(model_dir: Path, names: list[str], texts: list, max_len: int) -> list[dict]:
    """One unpadded input dict per calibration text (padding would skew the activation ranges)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    feeds = []
    for text in texts:
        pair = (text[0], text[1]) if isinstance(text, tuple) else (text,)
        enc = tokenizer(*pair, truncation="longest_first", max_length=max_len, return_tensors="np")
        ids = enc["input_ids"].astype(np.int64)
        feeds.append({n: enc[n].astype(np.int64) if n in enc else np.zeros_like(ids) for n in names})
    return feeds


# --------------------------------------------------------------------------- helpers
class _OutputOf(torch.nn.Module):
    """The HF module with positional inputs and one tensor out (what torch.onnx.export traces)."""

    def __init__(self, model, output: str, names: Sequence[str]):
        super().__init__()
        self.model, self.output, self.names = model, output, tuple(names)

    def forward(self, *args):
        return getattr(self.model(**dict(zip(self.names, args))), self.output)


def load_hf(model_dir, task: str, **kwargs):
    from transformers import AutoModel, AutoModelForSequenceClassification

    if task == "cross-encoder":
        return AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1, **kwargs)
    return AutoModel.from_pretrained(str(model_dir), **kwargs)


def _calibration_texts(spec: Recipe, calibration: Sequence | None) -> list | None:
    if not spec.calibrated:
        return None
    if not calibration:
        raise ValueError(f"recipe {spec.name!r} is calibrated: pass calibration texts (a few hundred real "
                         "passages of the corpus to encode)")
    return [tuple(t) if isinstance(t, (tuple, list)) else str(t) for t in islice(calibration, DEFAULT_CALIBRATION_SIZE)]


def _calibration_digest(texts: list | None) -> dict | None:
    if texts is None:
        return None
    h = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode())
    return {"count": len(texts), "sha256": h.hexdigest()[:16]}


def _cache_key(model_dir: Path, spec: Recipe, task: str, max_len: int, calib: list | None) -> str:
    """Hash of everything the export depends on: weights, config, recipe, task, library versions."""
    h = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name == "config.json"))
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise FileNotFoundError(f"{model_dir}: no model weights (*.safetensors / *.bin) to export")
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    settings = {"format": _FORMAT_VERSION, "task": task, "recipe": spec.name, "options": _jsonable(spec.options),
                "versions": library_versions(spec.backend)}
    if calib is not None:  # only calibrated exports depend on the texts and their length
        settings.update(max_len=max_len, calibration=_calibration_digest(calib))
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _cache_dirs(model_dir: Path, cache_root) -> list[Path]:
    """Beside the checkpoint first, then the per-user cache (keyed by the checkpoint's path)."""
    root = Path(cache_root or DEFAULT_CACHE_ROOT).expanduser()
    resolved = model_dir.resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return [model_dir / EXPORT_DIR, root / f"{resolved.name}-{tag}"]


def _first_writable(candidates: list[Path]) -> Path:
    for base in candidates:
        if _writable(base):
            return base
        logger.info("%s is not writable; trying the next export cache", base)
    raise PermissionError(f"no writable export cache among {[str(c) for c in candidates]}")


def _writable(base: Path) -> bool:
    """Create ``base`` and a file in it: the only check that holds for read-only mounts and ACLs too."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=base, prefix=".write-test-"):
            pass
        return True
    except OSError:
        return False


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
