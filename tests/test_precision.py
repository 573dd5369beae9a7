"""densir.precision: the one precision policy, with the hardware probes mocked (A100, V100, T4, CPUs)."""
from __future__ import annotations

import logging

import pytest
import torch
from conftest import run_cmd

from densir import precision
from densir.driver.precision import main as precision_cli
from densir.precision import (
    Precision,
    autocast,
    cpu_has_native_bf16,
    precision_from_flags,
    resolve_device,
    resolve_precision,
    training_flags,
)

GPUS = {  # name: (compute capability, hardware bf16)
    "A100": ((8, 0), True),
    "H100": ((9, 0), True),
    "V100": ((7, 0), False),
    "T4": ((7, 5), False),
}


def fake_gpu(monkeypatch, name: str) -> None:
    """torch sees one GPU of this kind; its bf16 is emulated (torch's default answer True) below sm_80."""
    capability, hardware_bf16 = GPUS[name]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: hardware_bf16 or including_emulation)


def fake_cpu(monkeypatch, native_bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda *a, **k: native_bf16)


# --------------------------------------------------------------------------- auto
@pytest.mark.parametrize("gpu, expected, reason", [
    ("A100", "bf16", "auto: CUDA device sm_80 supports bf16"),
    ("H100", "bf16", "auto: CUDA device sm_90 supports bf16"),
    ("V100", "fp16", "auto: CUDA device sm_70 has no bf16"),  # emulated bf16 is not bf16 support
    ("T4", "fp16", "auto: CUDA device sm_75 has no bf16"),
])
def test_auto_on_gpus(monkeypatch, caplog, gpu, expected, reason):
    fake_gpu(monkeypatch, gpu)
    with caplog.at_level(logging.INFO, logger="densir.precision"):
        p = resolve_precision("auto", "cuda")
    assert p == Precision(expected, reason)
    assert p.torch_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[expected]
    assert f"precision={expected} ({reason})" in caplog.messages


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpus(monkeypatch, native, expected):
    fake_cpu(monkeypatch, native)
    p = resolve_precision("auto", "cpu")
    assert p.name == expected
    assert p.reason == ("auto: the CPU has native bf16 (avx512_bf16/amx_bf16)" if native
                        else "auto: the CPU has no native bf16 (avx512_bf16/amx_bf16)")
    assert resolve_precision("auto", "auto").name == expected  # no GPU: auto device is the CPU


def test_auto_device_prefers_the_gpu(monkeypatch):
    fake_gpu(monkeypatch, "A100")
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_precision("auto", "auto").name == "bf16"
    assert resolve_precision("auto", torch.device("cuda:0")).name == "bf16"


# --------------------------------------------------------------------------- explicit requests
@pytest.mark.parametrize("gpu", ["A100", "V100"])
@pytest.mark.parametrize("requested", ["fp32", "fp16"])
def test_explicit_requests_on_gpus_are_kept(monkeypatch, gpu, requested):
    fake_gpu(monkeypatch, gpu)
    assert resolve_precision(requested, "cuda").name == requested


def test_bf16_on_a_gpu_without_it_falls_back_to_fp16(monkeypatch, caplog):
    fake_gpu(monkeypatch, "V100")
    with caplog.at_level(logging.WARNING, logger="densir.precision"):
        p = resolve_precision("bf16", "cuda")
    assert p.name == "fp16" and "no bf16" in p.reason
    assert any("no bf16" in m for m in caplog.messages)
    fake_gpu(monkeypatch, "A100")
    assert resolve_precision("bf16", "cuda").name == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_explicit_requests_on_cpus(monkeypatch, caplog, native):
    """What densir.driver.encode did: fp16 -> fp32 with a warning; bf16 kept (a warning when emulated)."""
    fake_cpu(monkeypatch, native)
    assert resolve_precision("fp32", "cpu").name == "fp32"
    with caplog.at_level(logging.WARNING, logger="densir.precision"):
        p = resolve_precision("fp16", "cpu")
    assert p.name == "fp32" and "fp16 requested" in p.reason
    assert any("fp16 autocast on CPU" in m for m in caplog.messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="densir.precision"):
        p = resolve_precision("bf16", "cpu")
    assert p.name == "bf16"
    assert any("emulated" in m for m in caplog.messages) == (not native)


def test_bad_requests(monkeypatch):
    fake_cpu(monkeypatch, False)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, fp16, bf16, got 'half'"):
        resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        resolve_precision("auto", "cuda")
    with pytest.raises(ValueError, match="exclude each other"):
        precision_from_flags(fp16=True, bf16=True)
    assert [precision_from_flags(), precision_from_flags(fp16=True), precision_from_flags(bf16=True)] == \
        ["fp32", "fp16", "bf16"]


# --------------------------------------------------------------------------- the probe, autocast, flags
def test_cpu_probe_reads_cpuinfo_flags(tmp_path):
    def cpuinfo(flags: str):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n")
        return str(path)

    assert cpu_has_native_bf16(cpuinfo("avx512f avx512_bf16"))
    assert cpu_has_native_bf16(cpuinfo("amx_tile amx_bf16"))
    assert not cpu_has_native_bf16(cpuinfo("avx512f avx512bw avx2"))
    assert not cpu_has_native_bf16(str(tmp_path / "no-such-file"))  # not Linux: fp32


def test_autocast():
    x = torch.ones(2, 4)
    with autocast("cpu", "fp32"):
        assert (x @ x.T).dtype == torch.float32
    with autocast(torch.device("cpu"), None):
        assert (x @ x.T).dtype == torch.float32
    with autocast("cpu", Precision("bf16", "test")):
        assert (x @ x.T).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        autocast("cpu", "int8")


def test_training_flags():
    assert training_flags("bf16") == ["--bf16"]
    assert training_flags(Precision("fp16", "x")) == ["--fp16"]
    assert training_flags("fp32") == []
    with pytest.raises(ValueError):
        training_flags("auto")  # resolve first


# --------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("gpu, args, out", [
    ("A100", [], "bf16"),
    ("V100", [], "fp16"),
    ("V100", ["--flags"], "--fp16"),
    ("A100", ["--requested", "fp32", "--flags"], ""),
    (None, ["--device", "cpu", "--requested", "fp16"], "fp32"),
    (None, ["--device", "cpu", "--requested", "bf16", "--flags"], "--bf16"),
])
def test_cli(monkeypatch, capsys, gpu, args, out):
    if gpu:
        fake_gpu(monkeypatch, gpu)
    else:
        fake_cpu(monkeypatch, False)
    assert precision_cli(args) == 0
    assert capsys.readouterr().out == out + "\n"


def test_cli_errors(monkeypatch, capsys):
    fake_cpu(monkeypatch, False)
    assert precision_cli(["--requested", "half"]) == 1
    assert precision_cli(["--device", "cuda"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: precision must be one of") and err[1].startswith("error: device cuda")


def test_cli_as_a_module():
    """What a stage script runs: the name on stdout, the reason on stderr."""
    proc = run_cmd(["python", "-m", "densir.precision", "--device", "cpu", "--requested", "fp32"])
    assert proc.stdout == "fp32\n"
    assert "precision=fp32 (requested, on CPU)" in proc.stderr
    proc = run_cmd(["python", "-m", "densir.precision", "--requested", "fp64"], check=False)
    assert proc.returncode == 1 and proc.stdout == ""
