"""CPU inference backends: ONNX Runtime and OpenVINO, fp32 or int8, for the encoder and the cross-encoder.

    path = export_model(model_dir, "onnx", "int8", task="encoder", max_len=256)   # cached, reused
    runtime = load_runtime(model_dir, "onnx", "int8", task="encoder")
    hidden = runtime(input_ids, attention_mask, token_type_ids)    # torch.float32 [batch, seq, dim]
    runtime.describe()                                              # backend, quantize, recipe, versions

``model_dir`` is a Hugging Face model directory (for an untied densir encoder, its
``query_model/`` or ``passage_model/``). Task ``"encoder"`` returns ``last_hidden_state``
(pooling stays in :class:`~densir.retriever.modeling.DenseEncoder`), task ``"cross-encoder"``
the one-logit ``logits`` ``[batch, 1]``. Only inference: no gradients, CPU only.

Export (one path for both backends): ``torch.onnx.export`` (TorchScript exporter, eager
attention, dynamic batch and sequence axes), then

- ``onnx``: onnxruntime's transformer optimizer (fused EmbedLayerNorm / Attention /
  SkipLayerNorm / BiasGelu) and, for int8, ``onnxruntime.quantization.quantize_dynamic``;
- ``openvino``: ``openvino.convert_model`` of the ONNX file (run with an explicit f32
  precision hint: OpenVINO's own default is bf16 on CPUs with bf16 units) and, for int8,
  ``nncf.compress_weights`` (int8 weights) with the CPU plugin's dynamic int8 quantization of
  the activations (groups of 32), or ``nncf.quantize`` (static, calibrated on real passages,
  ``model_type=TRANSFORMER``: recipe ``ov-int8-static``).

Which int8 recipe is the default, and why, is measured by ``benchmarks/backend_probe.py``;
:data:`RECIPES` lists all of them, :data:`DEFAULT_RECIPES` the one each (backend, quantize) uses.

Cache: ``<model_dir>/.densir-export/<backend>-<quantize>-<hash>/`` where the hash covers the
weight and config files, the task, the recipe, the library versions and (for calibrated recipes)
max_len and the calibration texts. A directory is built under a temporary name, its
``export.json`` written last, then renamed into place; a later call finding ``export.json``
reuses it. A read-only ``model_dir`` falls back to ``cache_root`` (default
``~/.cache/densir/exports``).
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZE = ("none", "int8")
TASKS = ("encoder", "cross-encoder")
EXPORT_DIR = ".densir-export"
MARKER = "export.json"
DEFAULT_CACHE_ROOT = Path("~/.cache/densir/exports")
DEFAULT_CALIBRATION_SIZE = 300
_FORMAT_VERSION = 1  # bump when the export layout or the export code changes what it writes


@dataclass(frozen=True)
class Recipe:
    """One way to turn a checkpoint into a runtime; ``name`` goes into the cache key and the shard json."""
    name: str
    backend: str
    quantize: str
    description: str
    calibrated: bool = False  # static int8: needs calibration texts
    options: dict = field(default_factory=dict)


RECIPES = {r.name: r for r in (
    Recipe("ort-fp32", "onnx", "none",
           "torch.onnx export (eager attention) + onnxruntime transformer optimizer (fused ops), fp32"),
    Recipe("ort-int8-dynamic", "onnx", "int8",
           "onnxruntime quantize_dynamic of the optimized graph: int8 weights per channel (QInt8), "
           "activations quantized per tensor at run time (u8), MatMul and Attention",
           options={"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "op_types": None,
                    "exclude": ()}),
    Recipe("ort-int8-dynamic-matmul", "onnx", "int8",
           "as ort-int8-dynamic, MatMul only (fused Attention left in fp32)",
           options={"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "op_types": ("MatMul",),
                    "exclude": ()}),
    Recipe("ort-int8-dynamic-keep-ffn-out", "onnx", "int8",
           "as ort-int8-dynamic-matmul, the FFN output projections (input: GELU output) left in fp32",
           options={"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "op_types": ("MatMul",),
                    "exclude": ("ffn_out",)}),
    Recipe("ort-int8-static", "onnx", "int8",
           "onnxruntime quantize_static, QDQ, MatMul only, per-channel s8 weights, u8 activations, "
           "MinMax calibration on real passages", calibrated=True,
           options={"per_channel": True, "activation_type": "QUInt8", "weight_type": "QInt8"}),
    Recipe("ov-fp32", "openvino", "none",
           "openvino.convert_model of the ONNX export, INFERENCE_PRECISION_HINT=f32",
           options={"precision_hint": "f32"}),
    Recipe("ov-bf16", "openvino", "none",
           "as ov-fp32 with INFERENCE_PRECISION_HINT=bf16 (fast only on CPUs with avx512_bf16 or AMX)",
           options={"precision_hint": "bf16"}),
    Recipe("ov-int8-static", "openvino", "int8",
           "nncf.quantize (static, model_type=TRANSFORMER: SmoothQuant, per-channel weights), "
           "calibrated on real passages; the rest in f32", calibrated=True,
           options={"precision_hint": "f32", "ignore": ()}),
    Recipe("ov-int8-static-keep-ffn-out", "openvino", "int8",
           "as ov-int8-static, the FFN output projections left unquantized", calibrated=True,
           options={"precision_hint": "f32", "ignore": ("ffn_out",)}),
    Recipe("ov-int8-weights-dynamic", "openvino", "int8",
           "nncf.compress_weights INT8_ASYM (weights only) + the CPU plugin's dynamic activation "
           "quantization (DYNAMIC_QUANTIZATION_GROUP_SIZE=32)",
           options={"precision_hint": "f32", "dynamic_group_size": 32}),
)}
DEFAULT_RECIPES = {
    ("onnx", "none"): "ort-fp32",
    # ort-int8-dynamic(-matmul) are faster but land at min cosine 0.989-0.993, and their per-tensor
    # activation scale spans the batch, so a vector depends on its batch mates
    ("onnx", "int8"): "ort-int8-dynamic-keep-ffn-out",
    ("openvino", "none"): "ov-fp32",
    # no calibration data, min cosine 0.999 on SciFact; ov-int8-static is faster (5.2x vs 3.6x ST
    # torch fp32 on a 2-core Zen 5) but needs calibration passages and sits nearer 0.99 (0.9935)
    ("openvino", "int8"): "ov-int8-weights-dynamic",
}


# --------------------------------------------------------------------------- public API
def export_model(model_dir, backend: str, quantize: str = "none", task: str = "encoder", max_len: int = 512,
                 cache_root=None, recipe: str | None = None, calibration: Sequence | None = None) -> Path:
    """Export (or reuse) ``model_dir`` for ``backend``; return the export directory.

    ``calibration``: texts (strings, or (query, passage) pairs for the cross-encoder) for a
    calibrated recipe, cut at ``max_len`` tokens; the first :data:`DEFAULT_CALIBRATION_SIZE` are used.
    """
    model_dir = Path(model_dir)
    spec = _resolve(backend, quantize, task, recipe)
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


def load_runtime(model_dir, backend: str, quantize: str = "none", task: str = "encoder", threads: int | None = None,
                 max_len: int = 512, cache_root=None, recipe: str | None = None,
                 calibration: Sequence | None = None) -> "Runtime":
    """A callable ``(input_ids, attention_mask, token_type_ids=None) -> torch.float32`` for ``model_dir``.

    Exports on first use (:func:`export_model`, same arguments). ``threads`` defaults to
    :func:`default_threads`. Backend ``"torch"`` wraps the Hugging Face model itself (fp32).
    """
    threads = threads or default_threads()
    spec = _resolve(backend, quantize, task, recipe)
    if spec is None:
        return TorchRuntime(model_dir, task, threads)
    path = export_model(model_dir, backend, quantize, task, max_len, cache_root, recipe, calibration)
    meta = json.loads((path / MARKER).read_text())
    if spec.backend == "onnx":
        return OnnxRuntime(path, meta, threads)
    return OpenVinoRuntime(path, meta, threads)


def recipe_name(backend: str, quantize: str = "none", recipe: str | None = None, task: str = "encoder") -> str:
    """The recipe a (backend, quantize[, recipe]) request runs (``torch-fp32`` for the checkpoint itself);
    a request that does not go together raises ValueError. Cheap: nothing is exported or imported."""
    spec = _resolve(backend, quantize, task, recipe)
    return spec.name if spec is not None else TorchRuntime.recipe


def default_threads() -> int:
    """The cores this process may use: :func:`densir.threads.cpu_threads` (the one thread policy)."""
    from densir.threads import cpu_threads

    return cpu_threads()[0]


def library_versions(backend: str) -> dict:
    """Versions of the libraries an export or a runtime depends on (part of the cache key)."""
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    names = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino", "nncf")}.get(backend, ())
    for name in names:
        module = __import__(name)
        versions[name] = getattr(module, "__version__", None) or module.get_version()
    return versions


# --------------------------------------------------------------------------- runtimes
class Runtime:
    """Inference-only stand-in for the Hugging Face module: call it with token tensors."""

    backend = quantize = recipe = task = ""

    def __init__(self, model_dir, task: str, threads: int):
        from transformers import AutoConfig

        self.task = task
        self.threads = threads
        self.config = AutoConfig.from_pretrained(str(model_dir))  # hidden_size etc., as on the HF module
        if task == "cross-encoder":
            self.config.num_labels = 1  # what the export computes, whatever the source config said
        self.meta: dict = {}

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """What made the vectors: goes into the shard json (search refuses to mix different ones)."""
        return {"backend": self.backend, "quantize": self.quantize, "recipe": self.recipe,
                "calibration": self.meta.get("calibration"), "threads": self.threads,
                "versions": self.meta.get("versions") or library_versions(self.backend)}

    # the encode driver calls these on whatever it holds as a model
    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self

    def _feeds(self, input_ids, attention_mask, token_type_ids) -> dict:
        feeds = {"input_ids": _int64(input_ids), "attention_mask": _int64(attention_mask)}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = (np.zeros_like(feeds["input_ids"]) if token_type_ids is None
                                       else _int64(token_type_ids))
        return feeds


class TorchRuntime(Runtime):
    backend, quantize, recipe = "torch", "none", "torch-fp32"

    def __init__(self, model_dir, task: str, threads: int):
        super().__init__(model_dir, task, threads)
        torch.set_num_threads(threads)
        self.model = _load_hf(model_dir, task).eval()

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        return (out.logits if self.task == "cross-encoder" else out.last_hidden_state).float()


class OnnxRuntime(Runtime):
    def __init__(self, path: Path, meta: dict, threads: int):
        import onnxruntime as ort

        super().__init__(path, meta["task"], threads)
        self.meta = meta
        self.backend, self.quantize, self.recipe = meta["backend"], meta["quantize"], meta["recipe"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path / meta["files"]["model"]), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        out = self.session.run(None, self._feeds(input_ids, attention_mask, token_type_ids))[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


class OpenVinoRuntime(Runtime):
    def __init__(self, path: Path, meta: dict, threads: int):
        import openvino as ov

        super().__init__(path, meta["task"], threads)
        self.meta = meta
        self.backend, self.quantize, self.recipe = meta["backend"], meta["quantize"], meta["recipe"]
        options = meta["options"]
        # OpenVINO's own default on CPUs with bf16 units is bf16, which is not fp32: always say which
        config = {"INFERENCE_PRECISION_HINT": options.get("precision_hint", "f32"),
                  "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if options.get("dynamic_group_size"):
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = options["dynamic_group_size"]
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path / meta["files"]["model"])), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        self.request.infer(self._feeds(input_ids, attention_mask, token_type_ids))
        # the request reuses its output buffer: copy before the next call
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True))


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
            if spec.quantize == "none":
                os.replace(fused, out / "model.onnx")
            elif spec.calibrated:
                _quantize_ort_static(fused, out / "model.onnx", spec.options, calib_feeds, work)
            else:
                _quantize_ort_dynamic(fused, out / "model.onnx", spec.options)
            return {"files": {"model": "model.onnx"}, "inputs": names}
        import openvino as ov

        model = ov.convert_model(str(raw))
        if spec.quantize == "int8":
            model = _quantize_openvino(model, spec, calib_feeds)
        ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
        return {"files": {"model": "model.xml"}, "inputs": names}


def _export_onnx(model_dir: Path, task: str, path: Path) -> tuple[Path, list[str]]:
    """torch.onnx.export with dynamic batch and sequence axes; eager attention.

    Eager attention and the TorchScript exporter give the graph pattern onnxruntime's transformer
    optimizer fuses into its Attention kernel (SDPA exports as a masked-select pattern it leaves
    unfused, and nncf quantizes it less accurately: min cosine 0.986 vs 0.995 on SciFact).
    """
    model = _load_hf(model_dir, task, attn_implementation="eager").eval()
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


def _quantize_ort_dynamic(src: Path, dst: Path, options: dict) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings_quiet():
        quantize_dynamic(str(src), str(dst), per_channel=options["per_channel"], reduce_range=options["reduce_range"],
                         weight_type=getattr(QuantType, options["weight_type"]),
                         op_types_to_quantize=list(options["op_types"]) if options["op_types"] else None,
                         nodes_to_exclude=_excluded_nodes(src, options["exclude"]),
                         extra_options={"MatMulConstBOnly": True,
                                        # fused contrib ops defeat shape inference: their outputs are float
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})


def _quantize_ort_static(src: Path, dst: Path, options: dict, feeds: list[dict], work: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    pre = work / "pre.onnx"
    try:
        # the symbolic shape inference knows onnxruntime's fused ops; without it the quantizer
        # cannot type their outputs and silently leaves the MatMuls behind them in fp32
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=False)
    except Exception as e:
        logger.warning("shape inference before static quantization failed (%s); quantizing as is", e)
        shutil.copyfile(src, pre)
    with warnings_quiet():
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        per_channel=options["per_channel"],
                        activation_type=getattr(QuantType, options["activation_type"]),
                        weight_type=getattr(QuantType, options["weight_type"]),
                        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})


def _quantize_openvino(model, spec: Recipe, feeds: list[dict] | None):
    import nncf

    if spec.options.get("dynamic_group_size"):  # weights only; activations are quantized at run time
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    names = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"]
    ignored = _matching(names, spec.options.get("ignore", ()))
    with warnings_quiet():
        return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                             model_type=nncf.ModelType.TRANSFORMER,
                             ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None)


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


def _load_hf(model_dir, task: str, **kwargs):
    from transformers import AutoModel, AutoModelForSequenceClassification

    if task == "cross-encoder":
        return AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1, **kwargs)
    return AutoModel.from_pretrained(str(model_dir), **kwargs)


def _resolve(backend: str, quantize: str, task: str, recipe: str | None) -> Recipe | None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if backend == "torch":
        if quantize != "none":
            raise ValueError("int8 runs through --backend onnx or openvino (torch's own dynamic int8 "
                             "is neither fast nor accurate on CPU)")
        return None
    name = recipe or DEFAULT_RECIPES[(backend, quantize)]
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    spec = RECIPES[name]
    if spec.backend != backend or spec.quantize != quantize:
        raise ValueError(f"recipe {spec.name!r} is {spec.backend}/{spec.quantize}, not {backend}/{quantize}")
    return spec


def _calibration_texts(spec: Recipe, calibration: Sequence | None) -> list | None:
    if not spec.calibrated:
        return None
    if not calibration:
        raise ValueError(f"recipe {spec.name!r} is calibrated: pass calibration texts (a few hundred real "
                         "passages of the corpus to encode)")
    return [tuple(t) if isinstance(t, (tuple, list)) else str(t) for t in list(calibration)[:DEFAULT_CALIBRATION_SIZE]]


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


def _excluded_nodes(onnx_path: Path, groups: Sequence[str]) -> list[str]:
    if not groups:
        return []
    import onnx

    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node if n.op_type == "MatMul"]
    return _matching(names, groups)


def _matching(names: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Node names of the named layer groups; ``ffn_out``: each layer's FFN output projection."""
    out = []
    for group in groups:
        if group != "ffn_out":
            raise ValueError(f"unknown layer group {group!r}")
        out += [n for n in names if "/output/dense/" in n and "/attention/" not in n]
    return out


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _int64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.int64)


@contextlib.contextmanager
def warnings_quiet():
    """Silence what the exporters and quantizers print that a user cannot act on.

    Tracer and deprecation warnings, and onnxruntime.quantization's per-tensor INFO lines, which
    it logs on the root logger.
    """
    import warnings

    root = logging.getLogger()
    level = root.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(max(level, logging.WARNING))
        try:
            yield
        finally:
            root.setLevel(level)
