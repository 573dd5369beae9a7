"""One precision policy for training, encoding, re-ranking and the stage scripts.

    p = resolve_precision("auto", device)     # Precision(name='bf16', reason='auto: CUDA device sm_90 supports bf16')
    with autocast(device, p): ...              # inference (encode, rerank); a no-op for fp32
    training_flags(p)                          # ['--bf16'], for the HF Trainer

    python -m densir.precision --device auto [--requested auto]           # prints fp32 | fp16 | bf16 (its CLI:
                                                                          # densir.driver.precision)
    python -m densir.precision --device auto --requested bf16 --flags     # prints --bf16 (or nothing)

The one vocabulary: :data:`PrecisionName` (fp32, fp16, bf16) runs, :data:`PrecisionRequest` adds
auto; library functions take it as ``precision=``. The CLI's ``--precision`` is a request, its
``--fp16``/``--bf16`` map here only (:func:`precision_from_flags`, back: :func:`training_flags`).
``requested`` is ``auto``, ``fp32``, ``fp16`` or ``bf16``. What runs:

    device   auto                                   fp16                     bf16
    CUDA     bf16 if the GPU has it (sm_80+),        fp16                     bf16; fp16 if the GPU has no
             else fp16                                                         bf16 (warning)
    CPU      bf16 if the CPU has native bf16          fp32 (warning: fp16       bf16 (warning when the CPU has
             (avx512_bf16 or amx_bf16), else fp32     autocast on CPU is slow   no native bf16: it is emulated
                                                      and lossy)                and slower than fp32)

``fp32`` is always fp32. The CPU column is what ``densir.driver.encode`` did before this module:
an impossible request falls back with a warning rather than failing, so one ``PRECISION``
serves a pipeline whose stages run on different machines. A GPU's bf16 is the hardware's
(``torch.cuda.is_bf16_supported(including_emulation=False)``): emulated bf16 on a V100/T4 is
slower than fp16. Every resolution logs one line, ``precision=bf16 (auto: ...)``.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from densir.io import ParameterError

logger = logging.getLogger(__name__)

PrecisionName = Literal["fp32", "fp16", "bf16"]
PrecisionRequest = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
REQUESTS: tuple[str, ...] = get_args(PrecisionRequest)
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """What will run (``name``: fp32 | fp16 | bf16) and why (``reason``, for logs and shard metadata)."""

    name: PrecisionName
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- public entry points
def resolve_precision(requested: PrecisionRequest, device: torch.device | str = "auto") -> Precision:
    """The precision that will run on ``device`` for ``requested`` (see the module docstring's table).

    ``device``: a ``torch.device``, ``"cpu"``, ``"cuda[:i]"`` or ``"auto"`` (CUDA when torch sees
    a GPU). A request outside auto/fp32/fp16/bf16, or a CUDA device torch cannot see, is a ValueError.
    """
    if requested not in REQUESTS:
        raise ParameterError(f"`precision` must be one of {', '.join(REQUESTS)}, got {requested!r}")
    device = resolve_device(device)
    if device.type == "cuda":
        precision = _on_cuda(requested, device)
    elif device.type == "cpu":
        precision = _on_cpu(requested)
    elif requested == "auto":
        precision = Precision("fp32", f"auto: no mixed-precision policy for {device.type} devices")
    else:
        precision = Precision(requested, f"requested, on {device.type}")
    logger.info("precision=%s (%s)", precision.name, precision.reason)
    return precision


def autocast(device: torch.device | str, precision: Precision | PrecisionName | None):
    """bf16/fp16 autocast on ``device`` (inference: encode, rerank), or a no-op for fp32 / None."""
    name = precision.name if isinstance(precision, Precision) else precision
    if name in (None, "fp32"):
        return contextlib.nullcontext()
    if name not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=_DTYPES[name])


def training_flags(precision: Precision | PrecisionName) -> list[str]:
    """The HF Trainer flags for a resolved precision: ``["--bf16"]``, ``["--fp16"]`` or ``[]``."""
    name = precision.name if isinstance(precision, Precision) else precision
    if name not in PRECISIONS:
        raise ValueError(f"a resolved precision is one of {', '.join(PRECISIONS)}, got {name!r}")
    return [] if name == "fp32" else [f"--{name}"]


def precision_from_flags(fp16: bool = False, bf16: bool = False) -> PrecisionName:
    """The precision that the ``fp16`` / ``bf16`` switches name (neither: fp32); both is a ParameterError."""
    if fp16 and bf16:
        raise ParameterError("`fp16` and `bf16` exclude each other")
    return "bf16" if bf16 else "fp16" if fp16 else "fp32"


def resolve_device(device: torch.device | str = "auto") -> torch.device:
    """``"auto"``: the first CUDA device when torch sees one, else the CPU."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bf16 in hardware (``avx512_bf16`` or ``amx_bf16`` in its flags).

    Without them torch still runs bf16 on the CPU, emulated and slower than fp32. Reads Linux's
    /proc/cpuinfo; elsewhere (no such file) the answer is False, i.e. fp32.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags") and any(flag in line.split() for flag in CPU_BF16_FLAGS):
                    return True
    except OSError:
        pass
    return False


# --------------------------------------------------------------------------- the policy
def _on_cuda(requested: str, device: torch.device) -> Precision:
    if not torch.cuda.is_available():
        raise ValueError(f"device {device} requested, but torch sees no CUDA GPU")
    major, minor = torch.cuda.get_device_capability(device)
    arch = f"sm_{major}{minor}"
    has_bf16 = _cuda_has_bf16()
    if requested == "auto":
        if has_bf16:
            return Precision("bf16", f"auto: CUDA device {arch} supports bf16")
        return Precision("fp16", f"auto: CUDA device {arch} has no bf16")
    if requested == "bf16" and not has_bf16:
        logger.warning("bf16 requested, but CUDA device %s has no bf16: fp16 autocast instead", arch)
        return Precision("fp16", f"bf16 requested, but CUDA device {arch} has no bf16")
    return Precision(requested, f"requested, on CUDA device {arch}")


def _on_cpu(requested: str) -> Precision:
    if requested == "auto":
        if cpu_has_native_bf16():
            return Precision("bf16", "auto: the CPU has native bf16 (avx512_bf16/amx_bf16)")
        return Precision("fp32", "auto: the CPU has no native bf16 (avx512_bf16/amx_bf16)")
    if requested == "fp16":
        logger.warning("fp16 autocast on CPU is slow and lossy: fp32 instead (bf16 is fast on CPUs with "
                       "avx512_bf16/AMX)")
        return Precision("fp32", "fp16 requested, but fp16 on CPU is slow and lossy")
    if requested == "bf16" and not cpu_has_native_bf16():
        logger.warning("this CPU has no native bf16 (avx512_bf16/amx_bf16): bf16 is emulated and SLOWER than "
                       "fp32 here")
        return Precision("bf16", "requested, on a CPU without native bf16 (emulated)")
    return Precision(requested, "requested, on CPU")


def _cuda_has_bf16() -> bool:
    """Hardware bf16 (sm_80+, or ROCm); torch's default also counts emulation, which is slower than fp16."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no such argument and does not count emulation
        return bool(torch.cuda.is_bf16_supported())


if __name__ == "__main__":  # the CLI is densir.driver.precision's (the library holds no argparse)
    from densir.driver.precision import main

    sys.exit(main())
