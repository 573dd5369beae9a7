"""densir.backends: ONNX Runtime / OpenVINO runtimes against torch fp32 on real SciFact passages.

The bundled all-MiniLM-L6-v2 (copied to a temp dir, so exports cache there) encodes a few real
SciFact passages at 256 tokens; each backend's mean-pooled vectors are compared with torch fp32's.
The cache and read-only tests use the tiny random BERT (its export takes a second or two).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from densir import backends  # noqa: E402

MAX_LEN = 256
INT8_MIN_COSINE = 0.99
FP32_MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def passages(shared_data) -> list[str]:
    """16 real SciFact passages (title + text), plus 32 others to calibrate on."""
    out = []
    with open(shared_data / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.append(f"{r['title']} {r['text']}".strip())
            if len(out) == 48:
                break
    return out


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def batch(tokenizer, passages) -> dict:
    return dict(tokenizer(passages[:16], truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt"))


@pytest.fixture(scope="module")
def torch_vectors(minilm_copy, batch) -> torch.Tensor:
    return _pool(backends.load_runtime(minilm_copy, "torch")(**batch), batch)


@pytest.mark.parametrize("backend,quantize", [("onnx", "none"), ("openvino", "none"), ("onnx", "int8"),
                                              ("openvino", "int8")])
def test_runtime_matches_torch_fp32(minilm_copy, passages, batch, torch_vectors, backend, quantize):
    runtime = backends.load_runtime(minilm_copy, backend, quantize, max_len=MAX_LEN, calibration=passages[16:])
    hidden = runtime(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert hidden.dtype == torch.float32 and hidden.shape == (16, batch["input_ids"].shape[1], 384)
    cosine = (_pool(hidden, batch) * torch_vectors).sum(-1)
    bound = FP32_MIN_COSINE if quantize == "none" else INT8_MIN_COSINE
    assert float(cosine.min()) >= bound, f"{backend}/{quantize}: min cosine {float(cosine.min()):.5f}"
    described = runtime.describe()
    assert described["backend"] == backend and described["quantize"] == quantize
    assert described["recipe"] == backends.DEFAULT_RECIPES[(backend, quantize)]
    assert described["versions"]["torch"] == torch.__version__
    assert runtime.config.hidden_size == 384 and runtime.eval() is runtime and runtime.to("cpu") is runtime


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ov-int8-static", "ov-int8-static-keep-ffn-out"])
def test_other_int8_recipes_match_torch_fp32(minilm_copy, passages, batch, torch_vectors, recipe):
    spec = backends.RECIPES[recipe]
    runtime = backends.load_runtime(minilm_copy, spec.backend, spec.quantize, recipe=recipe, max_len=MAX_LEN,
                                    calibration=passages[16:])
    cosine = (_pool(runtime(**batch), batch) * torch_vectors).sum(-1)
    assert float(cosine.min()) >= INT8_MIN_COSINE, f"{recipe}: min cosine {float(cosine.min()):.5f}"
    assert runtime.describe()["recipe"] == recipe
    assert (runtime.describe()["calibration"] is not None) == spec.calibrated


def test_token_type_ids_default_to_zeros(minilm_copy, batch):
    runtime = backends.load_runtime(minilm_copy, "onnx")
    with_types = runtime(batch["input_ids"], batch["attention_mask"], torch.zeros_like(batch["input_ids"]))
    assert torch.equal(runtime(batch["input_ids"], batch["attention_mask"]), with_types)


def _cross_encoder(tmp_path, minilm_path, passages, tokenizer):
    """MiniLM with a seeded one-logit head saved to tmp_path/ce, a query, and its 16 tokenized pairs."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    head = tmp_path / "ce"
    AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1).save_pretrained(head)
    tokenizer.save_pretrained(head)
    query = "Vitamin D deficiency is associated with an increased risk of disease."
    pairs = tokenizer([query] * 16, passages[:16], truncation="only_second", max_length=MAX_LEN, padding=True,
                      return_tensors="pt")
    return head, query, pairs


def test_cross_encoder_ranks_like_torch(tmp_path, minilm_path, passages, tokenizer):
    head, _, pairs = _cross_encoder(tmp_path, minilm_path, passages, tokenizer)
    reference = backends.load_runtime(head, "torch", task="cross-encoder")(**pairs)
    logits = backends.load_runtime(head, "onnx", task="cross-encoder")(**pairs)
    assert logits.shape == (16, 1) and logits.dtype == torch.float32
    assert torch.allclose(logits, reference, atol=1e-4)
    assert torch.equal(torch.argsort(logits[:, 0], descending=True), torch.argsort(reference[:, 0], descending=True))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_cross_encoder_int8_ranks_close_to_torch(tmp_path, minilm_path, passages, tokenizer, backend):
    head, query, pairs = _cross_encoder(tmp_path, minilm_path, passages, tokenizer)
    reference = backends.load_runtime(head, "torch", task="cross-encoder")(**pairs)[:, 0].numpy()
    calibration = [(query, p) for p in passages[16:]]
    logits = backends.load_runtime(head, backend, "int8", task="cross-encoder", max_len=MAX_LEN,
                                   calibration=calibration)(**pairs)[:, 0].numpy()
    assert np.corrcoef(np.argsort(np.argsort(-logits)), np.argsort(np.argsort(-reference)))[0, 1] >= 0.9


def test_cached_export_is_reused(tiny_bert_dir, tmp_path, caplog):
    model = tmp_path / "tiny"
    shutil.copytree(tiny_bert_dir, model)
    first = backends.export_model(model, "onnx", "none", "encoder", MAX_LEN)
    assert first.parent == model / backends.EXPORT_DIR and (first / backends.MARKER).exists()
    assert not [p for p in first.parent.iterdir() if ".tmp-" in p.name]  # the temp dir was renamed
    stamp = (first / backends.MARKER).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="densir.backends"):
        runtime = backends.load_runtime(model, "onnx", "none")
    assert runtime.meta["recipe"] == "ort-fp32"
    assert "reusing cached export" in caplog.text
    assert (first / backends.MARKER).stat().st_mtime_ns == stamp
    assert list(first.parent.iterdir()) == [first]
    # other weights: another export beside it
    with open(model / "model.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x3f")  # the last float of the last tensor becomes 1.0
    other = backends.export_model(model, "onnx", "none", "encoder", MAX_LEN)
    assert other != first and other.parent == first.parent


def test_read_only_model_dir_falls_back_to_cache_root(tiny_bert_dir, tmp_path, monkeypatch):
    model = tmp_path / "readonly"
    shutil.copytree(tiny_bert_dir, model)
    os.chmod(model, 0o555)
    if os.geteuid() == 0:  # root writes through mode bits: make the model dir refuse as a read-only mount would
        real = backends.export._writable
        monkeypatch.setattr(backends.export, "_writable",
                            lambda base: not str(base).startswith(str(model)) and real(base))
    try:
        path = backends.export_model(model, "onnx", "none", "encoder", MAX_LEN, cache_root=tmp_path / "cache")
        assert Path(tmp_path / "cache") in path.parents and (path / backends.MARKER).exists()
        assert not (model / backends.EXPORT_DIR).exists()
        runtime = backends.load_runtime(model, "onnx", "none", cache_root=tmp_path / "cache")
        assert Path(runtime.meta["source"]) == model.resolve()
    finally:
        os.chmod(model, 0o755)


def test_bad_arguments(tiny_bert_dir):
    with pytest.raises(ValueError, match="backend"):
        backends.load_runtime(tiny_bert_dir, "tensorrt")
    with pytest.raises(ValueError, match="int8"):
        backends.load_runtime(tiny_bert_dir, "torch", "int8")
    with pytest.raises(ValueError, match="calibrat"):
        backends.export_model(tiny_bert_dir, "openvino", "int8", recipe="ov-int8-static")


def test_default_threads_follow_slurm(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert backends.default_threads() == cores
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert backends.default_threads() == 1


def _pool(hidden: torch.Tensor, batch: dict) -> torch.Tensor:
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
