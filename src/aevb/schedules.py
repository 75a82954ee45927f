"""Where a run is, and the schedules that are pure functions of it.

A model's loss is told the step and the run's total steps; the total is fixed when the run
starts and kept in its checkpoint, so a resumed or extended run keeps its schedules where they
were (Kingma & Welling's Algorithm 1 has no schedule; warm-up is Bowman et al. 2016 and
Sønderby et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Step", "linear_warmup"]


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
