"""Runtimes: a checkpoint (torch) or its export (onnxruntime, OpenVINO) as a callable on token tensors,
returning ``last_hidden_state`` (task ``encoder``) or the one-logit ``logits`` (``cross-encoder``).
OpenVINO gets an explicit precision hint (the recipe's; its own default is bf16 on bf16 CPUs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from densir.backends.export import MARKER, export_model, load_hf
from densir.backends.recipes import TORCH_RECIPE, library_versions, resolve_recipe


def load_runtime(model_dir, backend: str, quantize: str = "none", task: str = "encoder", threads: int | None = None,
                 max_len: int = 512, cache_root=None, recipe: str | None = None,
                 calibration: Sequence | None = None) -> "Runtime":
    """A callable ``(input_ids, attention_mask, token_type_ids=None) -> torch.float32`` for ``model_dir``.

    Exports on first use (:func:`densir.backends.export.export_model`, same arguments). ``threads``
    defaults to :func:`default_threads`. Backend ``"torch"`` wraps the Hugging Face model itself (fp32).
    """
    threads = threads or default_threads()
    spec = resolve_recipe(backend, quantize, task, recipe)
    if spec is None:
        return TorchRuntime(model_dir, task, threads)
    path = export_model(model_dir, backend, quantize, task, max_len, cache_root, recipe, calibration)
    meta = json.loads((path / MARKER).read_text())
    return (OnnxRuntime if spec.backend == "onnx" else OpenVinoRuntime)(path, meta, threads)


def default_threads() -> int:
    """The cores this process may use: :func:`densir.threads.cpu_threads` (the one thread policy)."""
    from densir.threads import cpu_threads

    return cpu_threads()[0]


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


class TorchRuntime(Runtime):
    backend, quantize, recipe = "torch", "none", TORCH_RECIPE

    def __init__(self, model_dir, task: str, threads: int):
        super().__init__(model_dir, task, threads)
        torch.set_num_threads(threads)
        self.model = load_hf(model_dir, task).eval()

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        return (out.logits if self.task == "cross-encoder" else out.last_hidden_state).float()


class ExportedRuntime(Runtime):
    """A runtime of an export directory (its ``export.json`` is ``meta``); subclasses set ``input_names``."""

    def __init__(self, path: Path, meta: dict, threads: int):
        super().__init__(path, meta["task"], threads)
        self.meta = meta
        self.backend, self.quantize, self.recipe = meta["backend"], meta["quantize"], meta["recipe"]
        self.model_file = str(path / meta["files"]["model"])
        self.input_names: list[str] = []

    def _feeds(self, input_ids, attention_mask, token_type_ids) -> dict:
        feeds = {"input_ids": _int64(input_ids), "attention_mask": _int64(attention_mask)}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = (np.zeros_like(feeds["input_ids"]) if token_type_ids is None
                                       else _int64(token_type_ids))
        return feeds


class OnnxRuntime(ExportedRuntime):
    def __init__(self, path: Path, meta: dict, threads: int):
        import onnxruntime as ort

        super().__init__(path, meta, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(self.model_file, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        out = self.session.run(None, self._feeds(input_ids, attention_mask, token_type_ids))[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


class OpenVinoRuntime(ExportedRuntime):
    def __init__(self, path: Path, meta: dict, threads: int):
        import openvino as ov

        super().__init__(path, meta, threads)
        options = meta["options"]
        # OpenVINO's own default on CPUs with bf16 units is bf16, which is not fp32: always say which
        config = {"INFERENCE_PRECISION_HINT": options.get("precision_hint", "f32"),
                  "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if options.get("dynamic_group_size"):
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = options["dynamic_group_size"]
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(self.model_file), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]

    def __call__(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        self.request.infer(self._feeds(input_ids, attention_mask, token_type_ids))
        # the request reuses its output buffer: copy before the next call
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True))


def _int64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.int64)
