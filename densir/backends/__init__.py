"""CPU inference backends: ONNX Runtime and OpenVINO, fp32 or int8, for the encoder and the cross-encoder.

    path = export_model(model_dir, "onnx", "int8", task="encoder", max_len=256)   # cached, reused
    runtime = load_runtime(model_dir, "onnx", "int8", task="encoder")
    hidden = runtime(input_ids, attention_mask, token_type_ids)    # torch.float32 [batch, seq, dim]
    runtime.describe()                                              # backend, quantize, recipe, versions

``model_dir`` is a Hugging Face model directory (for an untied densir encoder, its
``query_model/`` or ``passage_model/``); pooling stays in
:class:`~densir.retriever.modeling.DenseEncoder`. Only inference: no gradients, CPU only. The
parts, one module each:

- :mod:`densir.backends.recipes`: the recipe registry (:data:`RECIPES`, :data:`DEFAULT_RECIPES`,
  :func:`register_recipe`, :func:`recipe_name`);
- :mod:`densir.backends.export`: the ONNX export, optimization and the export cache;
- :mod:`densir.backends.quantize`: the int8 quantizers (onnxruntime dynamic, nncf weights-only or static);
- :mod:`densir.backends.runtime`: the runtimes (:func:`load_runtime`).

A model to score with (device, precision, backend, quantization, recipe, calibration) is loaded
by :mod:`densir.loading`, which uses these.
"""
from densir.backends.export import DEFAULT_CACHE_ROOT, EXPORT_DIR, MARKER, export_model
from densir.backends.quantize import warnings_quiet
from densir.backends.recipes import (
    BACKENDS,
    DEFAULT_CALIBRATION_SIZE,
    DEFAULT_RECIPES,
    QUANTIZE,
    RECIPES,
    TASKS,
    TORCH_RECIPE,
    Recipe,
    library_versions,
    recipe_name,
    register_recipe,
    resolve_recipe,
)
from densir.backends.runtime import OnnxRuntime, OpenVinoRuntime, Runtime, TorchRuntime, default_threads, load_runtime

__all__ = ["BACKENDS", "DEFAULT_CACHE_ROOT", "DEFAULT_CALIBRATION_SIZE", "DEFAULT_RECIPES", "EXPORT_DIR", "MARKER",
           "QUANTIZE", "RECIPES", "TASKS", "TORCH_RECIPE", "OnnxRuntime", "OpenVinoRuntime", "Recipe", "Runtime",
           "TorchRuntime", "default_threads", "export_model", "library_versions", "load_runtime", "recipe_name",
           "register_recipe", "resolve_recipe", "warnings_quiet"]
