"""Where a run is, and the schedules that are pure functions of it.

A model's loss is told the step and the run's total steps; the total is fixed when the run
starts and kept in its checkpoint, so a resumed or extended run keeps its schedules where they
were (Kingma & Welling's Algorithm 1 has no schedule; warm-up is Bowman et al. 2016 and
Sønderby et al. 2016).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["IWAE_STAGES", "LEARNING_RATES", "Step", "iwae_learning_rate_factor", "learning_rate",
           "linear_warmup", "warmup_weight"]


@dataclass(frozen=True)
class Step:
    """The optimizer step about to be taken (0-based) and the run's planned number of steps."""

    index: int
    total: int

    @property
    def fraction(self) -> float:
        """How far through the run, in [0, 1]."""
        return min(1.0, self.index / self.total) if self.total > 0 else 1.0


def linear_warmup(step: Step, fraction: float) -> float:
    """A weight rising linearly from 0 at the first step to 1 after ``fraction`` of the run.

    ``fraction = 0`` means no warm-up: the weight is 1 from the start.
    """
    if fraction <= 0:
        return 1.0
    return min(1.0, step.fraction / fraction)


def warmup_weight(step: Step, fraction: float, steps: int = 0) -> float:
    """The warm-up weight of ``step``: over ``steps`` optimizer steps where that is > 0, else
    over ``fraction`` of the run (``linear_warmup``)."""
    if steps > 0:
        return min(1.0, step.index / steps)
    return linear_warmup(step, fraction)


IWAE_STAGES = 8
"""Burda et al. (2016), sec. 5: stage i = 0..7 lasts 3^i passes, 3280 passes in all."""


def iwae_learning_rate_factor(passes: float) -> float:
    """The IWAE paper's learning-rate schedule as a factor on the base rate, after ``passes``
    passes over the training set: 10^(-i/7) in stage i, which lasts 3^i passes (i = 0..7),
    and 10^(-1) after the 3280 passes of the whole schedule.

    A function of the passes, not of the run's fraction, so that a shorter budget is the
    paper's own run stopped early (13 passes: stages 0-2) and its curve can be read against
    theirs.
    """
    stage, end = 0, 1
    while stage < IWAE_STAGES - 1 and passes >= end:
        stage += 1
        end += 3**stage
    return 10 ** (-stage / 7)


LEARNING_RATES: dict[str, Callable[[float, float], float]] = {
    "constant": lambda lr, passes: lr,
    # by passes, not the run's fraction: a shorter run is the paper's stopped early
    "iwae": lambda lr, passes: lr * iwae_learning_rate_factor(passes),
}
"""``train.lr_schedule`` → (base rate, passes over the training set so far) ↦ the rate."""


def learning_rate(schedule: str, lr: float, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``schedule`` from the base
    rate ``lr``, with ``steps_per_epoch`` steps to a pass over the training set."""
    return LEARNING_RATES[schedule](lr, step / steps_per_epoch)
