"""Experiments over many runs: model comparisons, sweeps, the paper's reproduction."""
