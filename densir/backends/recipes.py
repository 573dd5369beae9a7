"""The recipe registry: :data:`RECIPES` by name, :data:`DEFAULT_RECIPES` per (backend, quantize),
:func:`register_recipe` (``benchmarks/backend_probe.py`` registers the recipes only it measures).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from densir.backends.quantize import nncf_int8, ort_dynamic

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZE = ("none", "int8")
TASKS = ("encoder", "cross-encoder")
DEFAULT_CALIBRATION_SIZE = 300  # calibration texts a calibrated recipe uses (the first ones given)
TORCH_RECIPE = "torch-fp32"  # the checkpoint itself, run by torch


@dataclass(frozen=True)
class Recipe:
    """One way to turn a checkpoint into a runtime; ``name`` goes into the cache key and the shard json;
    ``quantizer``: None (fp32) or one of :mod:`densir.backends.quantize`'s kind."""
    name: str
    backend: str
    quantize: str
    description: str
    calibrated: bool = False  # static int8: needs calibration texts
    options: dict = field(default_factory=dict)
    quantizer: Callable | None = field(default=None, compare=False, repr=False)


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to :data:`RECIPES` (a name already there must be the same recipe)."""
    if recipe.backend not in BACKENDS[1:] or recipe.quantize not in QUANTIZE:
        raise ValueError(f"recipe {recipe.name!r}: backend must be one of {BACKENDS[1:]}, quantize one of {QUANTIZE}")
    if (recipe.quantize == "int8") != (recipe.quantizer is not None):
        raise ValueError(f"recipe {recipe.name!r}: an int8 recipe has a quantizer, an fp32 one none")
    if RECIPES.setdefault(recipe.name, recipe) != recipe:
        raise ValueError(f"recipe {recipe.name!r} is already registered as another recipe")
    return recipe


for _recipe in (
    Recipe("ort-fp32", "onnx", "none",
           "torch.onnx export (eager attention) + onnxruntime transformer optimizer (fused ops), fp32"),
    Recipe("ort-int8-dynamic-keep-ffn-out", "onnx", "int8",
           "onnxruntime quantize_dynamic of the optimized graph, MatMul only: int8 weights per channel (QInt8), "
           "activations quantized per tensor at run time (u8); the fused Attention and the FFN output "
           "projections (input: GELU output) left in fp32", quantizer=ort_dynamic,
           options={"per_channel": True, "reduce_range": False, "weight_type": "QInt8", "op_types": ("MatMul",),
                    "exclude": ("ffn_out",)}),
    Recipe("ov-fp32", "openvino", "none",
           "openvino.convert_model of the ONNX export, INFERENCE_PRECISION_HINT=f32",
           options={"precision_hint": "f32"}),
    Recipe("ov-int8-static", "openvino", "int8",
           "nncf.quantize (static, model_type=TRANSFORMER: SmoothQuant, per-channel weights), "
           "calibrated on real passages; the rest in f32", calibrated=True, quantizer=nncf_int8,
           options={"precision_hint": "f32", "ignore": ()}),
    Recipe("ov-int8-static-keep-ffn-out", "openvino", "int8",
           "as ov-int8-static, the FFN output projections left unquantized", calibrated=True, quantizer=nncf_int8,
           options={"precision_hint": "f32", "ignore": ("ffn_out",)}),
    Recipe("ov-int8-weights-dynamic", "openvino", "int8",
           "nncf.compress_weights INT8_ASYM (weights only) + the CPU plugin's dynamic activation "
           "quantization (DYNAMIC_QUANTIZATION_GROUP_SIZE=32)", quantizer=nncf_int8,
           options={"precision_hint": "f32", "dynamic_group_size": 32}),
):
    register_recipe(_recipe)

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


def resolve_recipe(backend: str, quantize: str = "none", task: str = "encoder",
                   recipe: str | None = None) -> Recipe | None:
    """The recipe a request runs (None: torch runs the checkpoint itself); ValueError naming the
    parameter when ``backend``, ``quantize``, ``task`` and ``recipe`` do not go together."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if backend == "torch":
        if quantize != "none":
            raise ValueError("quantize int8 runs through backend onnx or openvino (torch's own dynamic int8 "
                             "is neither fast nor accurate on CPU)")
        return None
    name = recipe or DEFAULT_RECIPES[(backend, quantize)]
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    spec = RECIPES[name]
    if spec.backend != backend or spec.quantize != quantize:
        raise ValueError(f"recipe {spec.name!r} is {spec.backend}/{spec.quantize}, not {backend}/{quantize}")
    return spec


def recipe_name(backend: str, quantize: str = "none", recipe: str | None = None, task: str = "encoder") -> str:
    """The recipe a (backend, quantize[, recipe]) request runs (``torch-fp32`` for the checkpoint itself);
    a request that does not go together raises ValueError. Cheap: nothing is exported or imported."""
    spec = resolve_recipe(backend, quantize, task, recipe)
    return spec.name if spec is not None else TORCH_RECIPE


def library_versions(backend: str) -> dict:
    """Versions of the libraries an export or a runtime depends on (part of the cache key)."""
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    names = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino", "nncf")}.get(backend, ())
    for name in names:
        module = __import__(name)
        versions[name] = getattr(module, "__version__", None) or module.get_version()
    return versions
