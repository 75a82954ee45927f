"""Devices and precision: which device a run uses, whether bfloat16 pays on this CPU, and the
peak memory a run took."""

from __future__ import annotations

import functools
import math
import sys
import time

import torch

from aevb.errors import ConfigError

__all__ = ["BF16_SPEEDUP_NEEDED", "bf16_matmuls_pay", "peak_memory", "resolve_device", "resolve_precision"]


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
"""``auto`` picks bfloat16 on a CPU only where its matmuls ran at least this many times as fast
as float32's in :func:`bf16_matmuls_pay`'s probe: autocast's casts eat a smaller gain."""


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The dtype of training's autocast region: ``auto`` picks bfloat16 on a CPU whose bf16
    matmuls pay (:func:`bf16_matmuls_pay`), float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and bf16_matmuls_pay() else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


@functools.cache
def bf16_matmuls_pay() -> bool:
    """Whether this CPU has native bf16 units and its bfloat16 matmuls run at least
    ``BF16_SPEEDUP_NEEDED`` times as fast as float32's at a training step's size, a
    (100, 784) @ (784, 500) product, timed here once per process (a few tens of ms).

    The units alone do not say it: on an AMD EPYC with avx512_bf16 bfloat16 matmuls ran 2.3-3.9x
    float32's and training 1.5x as fast; on an Intel Xeon with avx512_bf16 but no AMX they ran
    at 0.55x and training at 0.7-0.75x (benchmarks/training.py, 2026-11-24)."""
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
    """This process's peak resident memory (``ru_maxrss``) as ``rss_bytes`` and, on CUDA,
    the peak memory allocated to tensors as ``cuda_bytes``; each the larger of it and
    ``before`` (a resumed run's earlier sessions)."""
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
