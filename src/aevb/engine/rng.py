"""The random streams: a block run from a fixed seed without touching them (:func:`seeded`),
and a training run's streams as its checkpoints keep them (:func:`rng_state`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from aevb.engine import distributed

__all__ = ["rng_state", "seeded"]


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Inside, torch's global generator (and a GPU ``device``'s) starts from ``seed``; after, every
    stream is as before."""
    gpu = device is not None and torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[device] if gpu else []):
        torch.manual_seed(seed)
        yield


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The global, CUDA and data-order RNG states as a checkpoint's ``rng.*`` tensors, ranks
    r > 0's as ``torch.rankR``, ``cuda.rankR``; every rank must call it."""
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if generator.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(generator.device)
    own = {k: v for k, v in state.items() if k != "data"}
    for r, theirs in enumerate(distributed.all_gather_object(own)[1:], 1):
        state.update({f"{k}.rank{r}": v for k, v in theirs.items()})
    return state
