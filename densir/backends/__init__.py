"""CPU inference backends: ONNX Runtime and OpenVINO, fp32 or int8, for the encoder and the cross-encoder.

    path = export_model(model_dir, "onnx", "int8", task="encoder", max_len=256)   # cached, reused
    runtime = load_runtime(model_dir, "onnx", "int8", task="encoder")
    hidden = runtime(input_ids, attention_mask, token_type_ids)    # torch.float32 [batch, seq, dim]

``model_dir``: a Hugging Face model dir (an untied densir encoder's ``query_model/`` or
``passage_model/``); inference only, on the CPU. One module per concern: :mod:`.recipes` (the
registry), :mod:`.export` (ONNX export and the export cache), :mod:`.quantize` (the int8
quantizers), :mod:`.runtime` (the runtimes). Stages load models through :mod:`densir.loading`.
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
