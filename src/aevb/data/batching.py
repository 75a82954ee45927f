"""An epoch's order of training examples: a random permutation, or labelled and unlabelled
examples mixed in every minibatch (semi-supervised training).

With N_l labelled examples among n, a random permutation puts M N_l / n labelled examples in a
minibatch of M on average: 0.2 for 100 labels of MNIST's 50,000, so most batches hold none
and the classifier of M2 learns from a handful of batches per epoch. As in the M2 paper's
practice (Kingma et al. 2014), the labelled examples are oversampled instead: every minibatch
holds m of them, drawn from a permutation of the labelled set that is reshuffled each time it
is used up, and M - m unlabelled ones; an epoch is one pass over the unlabelled examples.

Everything here is index arithmetic on the device; every draw comes from the caller's
generator, so an epoch's order is a function of the generator's state (exact resume).
"""

from __future__ import annotations

import math

import torch

from aevb.errors import ConfigError

__all__ = ["default_labelled_per_batch", "epoch_order", "steps_per_epoch"]


def default_labelled_per_batch(batch_size: int, labelled: int, total: int) -> int:
    """m for a minibatch of M = ``batch_size``: M N_l / n rounded, but at least M / 10
    (rounded up), and at most M - 1. 10 for M = 100 and 100 labels of 50,000: each batch
    learns from labels while 90% of it still goes through the unlabelled data (an epoch
    takes 11% more steps than a plain one); with plentiful labels the proportion wins."""
    share = max(round(batch_size * labelled / total), math.ceil(batch_size / 10))
    return min(batch_size - 1, share)


def _mix(y: torch.Tensor | None, batch_size: int, labelled_per_batch: int | None
         ) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """(labelled indices, unlabelled indices, m) when ``y`` mixes labels >= 0 and hidden ones
    (< 0), else None."""
    if y is None:
        return None
    known = y >= 0
    count = int(known.sum())
    if count in (0, len(y)):
        return None
    m = labelled_per_batch or default_labelled_per_batch(batch_size, count, len(y))
    if not 1 <= m < batch_size:
        raise ConfigError(f"data.labelled_per_batch={m} must be in 1..{batch_size - 1}: a minibatch"
                          f" of train.batch_size={batch_size} holds m labelled and at least one"
                          " unlabelled example")
    return torch.nonzero(known).flatten(), torch.nonzero(~known).flatten(), m


def steps_per_epoch(y: torch.Tensor | None, n: int, batch_size: int,
                    labelled_per_batch: int | None = None) -> int:
    """Minibatches in an epoch of ``n`` examples with labels ``y`` (see :func:`epoch_order`)."""
    mix = _mix(y, batch_size, labelled_per_batch)
    if mix is None:
        return math.ceil(n / batch_size)
    _, unlabelled, m = mix
    return math.ceil(len(unlabelled) / (batch_size - m))


def epoch_order(y: torch.Tensor | None, n: int, batch_size: int, generator: torch.Generator,
                labelled_per_batch: int | None = None) -> torch.Tensor:
    """The indices of one epoch, to be cut into minibatches of ``batch_size`` in order.

    Without a mix of labelled (y >= 0) and unlabelled (y < 0) examples: ``torch.randperm(n)``.
    With one: S = ceil(n_u / (M - m)) minibatches, each m labelled examples followed by M - m
    unlabelled ones (the last fewer); the unlabelled ones are one permutation, the labelled
    ones ceil(S m / n_l) permutations end to end, cut at S m. m is ``labelled_per_batch`` or
    :func:`default_labelled_per_batch`. Shape (S m + n_u,), int64 on the generator's device.
    """
    device = generator.device
    mix = _mix(y, batch_size, labelled_per_batch)
    if mix is None:  # exactly the draw of every run before semi-supervised batches
        return torch.randperm(n, generator=generator, device=device)
    labelled, unlabelled, m = mix
    per_batch = batch_size - m
    steps = math.ceil(len(unlabelled) / per_batch)
    shuffled = unlabelled[torch.randperm(len(unlabelled), generator=generator, device=device)]
    cycles = math.ceil(steps * m / len(labelled))
    drawn = torch.cat([labelled[torch.randperm(len(labelled), generator=generator, device=device)]
                       for _ in range(cycles)])[: steps * m]
    padded = torch.full((steps * per_batch,), -1, dtype=torch.long, device=device)
    padded[: len(shuffled)] = shuffled
    order = torch.cat([drawn.view(steps, m), padded.view(steps, per_batch)], 1).flatten()
    return order[order >= 0]  # the last batch's missing unlabelled places
