"""Devices and precision: which device a run uses, whether bfloat16 pays on this CPU, the peak
memory a run took; and distribution argument checks, off in the hot loops."""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from aevb.errors import ConfigError

__all__ = ["BF16_SPEEDUP_NEEDED", "bf16_matmuls_pay", "peak_memory", "resolve_device",
           "resolve_precision", "unchecked_args"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device name") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available")
    return device


BF16_SPEEDUP_NEEDED = 1.25
"""How many times as fast as float32's a CPU's bfloat16 matmuls must be for ``auto`` to pick
bfloat16: autocast's casts eat a smaller gain."""


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """Training's autocast dtype: ``auto`` is bfloat16 on a CPU where it pays, else float32."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and bf16_matmuls_pay() else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


@functools.cache
def bf16_matmuls_pay() -> bool:
    """Whether this CPU has native bf16 units and its bfloat16 matmuls run ``BF16_SPEEDUP_NEEDED``
    times as fast as float32's on a (100, 784) @ (784, 500) product, timed once per process (tens
    of ms). The units alone do not say it: with avx512_bf16, an AMD EPYC's bf16 matmuls ran
    2.3-3.9x float32's (training 1.5x), an Intel Xeon's without AMX 0.55x (training 0.7x;
    benchmarks/training.py)."""
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    generator = torch.Generator().manual_seed(0)
    pairs = {dtype: (torch.randn(100, 784, generator=generator).to(dtype),
                     torch.randn(500, 784, generator=generator).to(dtype))
             for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, math.inf)
    for round_ in range(6):  # in turn, the best of five rounds after a warm-up round
        for dtype, (a, w) in pairs.items():
            started = time.perf_counter()
            for _ in range(10):
                torch.mm(a, w.T)
            if round_:
                best[dtype] = min(best[dtype], time.perf_counter() - started)
    return best[torch.float32] >= BF16_SPEEDUP_NEEDED * best[torch.bfloat16]


def peak_memory(device: torch.device, before: dict[str, int] | None = None) -> dict[str, int]:
    """Peak resident memory as ``rss_bytes`` and, on CUDA, peak tensor memory as ``cuda_bytes``,
    each the larger of it and ``before`` (a resumed run's earlier sessions)."""
    peak = dict(before or {})
    try:
        import resource  # not on Windows

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak["rss_bytes"] = max(peak.get("rss_bytes", 0),
                                rss if sys.platform == "darwin" else 1024 * rss)  # KiB on Linux
    except ImportError:
        pass
    if device.type == "cuda":
        peak["cuda_bytes"] = max(peak.get("cuda_bytes", 0), torch.cuda.max_memory_allocated(device))
    return peak


@contextmanager
def unchecked_args() -> Iterator[None]:
    """No distribution argument checks inside: the data was checked once when loaded, and
    checking every distribution of every step costs several percent."""
    validating = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(validating)
