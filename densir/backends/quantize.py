"""The int8 quantizers a recipe names: ``onnx`` ones ``f(src, dst, options, feeds, work)`` write ``dst``,
``openvino`` ones ``f(model, options, feeds)`` return the model (``feeds``: calibration inputs or None).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Sequence


def ort_dynamic(src: Path, dst: Path, options: dict, feeds: list[dict] | None, work: Path) -> None:
    """int8 weights (per channel with ``options["per_channel"]``), activations quantized at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings_quiet():
        quantize_dynamic(str(src), str(dst), per_channel=options["per_channel"], reduce_range=options["reduce_range"],
                         weight_type=getattr(QuantType, options["weight_type"]),
                         op_types_to_quantize=list(options["op_types"]) if options["op_types"] else None,
                         nodes_to_exclude=excluded_nodes(src, options["exclude"]),
                         extra_options={"MatMulConstBOnly": True,
                                        # fused contrib ops defeat shape inference: their outputs are float
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})


def nncf_int8(model, options: dict, feeds: list[dict] | None):
    """Weights only (``options["dynamic_group_size"]``: the CPU plugin quantizes activations at run
    time), else static over ``feeds`` (``model_type=TRANSFORMER``), the ``options["ignore"]`` groups left in f32."""
    import nncf

    if options.get("dynamic_group_size"):
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    names = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"]
    ignored = matching(names, options.get("ignore", ()))
    with warnings_quiet():
        return nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                             model_type=nncf.ModelType.TRANSFORMER,
                             ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None)


def excluded_nodes(onnx_path: Path, groups: Sequence[str]) -> list[str]:
    """The MatMul node names of ``onnx_path`` in the layer ``groups`` (see :func:`matching`)."""
    if not groups:
        return []
    import onnx

    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node if n.op_type == "MatMul"]
    return matching(names, groups)


def matching(names: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Node names of the named layer groups; ``ffn_out``: each layer's FFN output projection."""
    out = []
    for group in groups:
        if group != "ffn_out":
            raise ValueError(f"unknown layer group {group!r}")
        out += [n for n in names if "/output/dense/" in n and "/attention/" not in n]
    return out


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
