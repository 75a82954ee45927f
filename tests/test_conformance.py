"""One suite over every registered model: the public checks of ``aevb.testing`` (a plugin
author's model runs the same), each model and variant its own case, one test per check."""

import pytest

from aevb.models import MODELS
from aevb.testing import ModelCase, parametrize_with_checks

# Settings a model needs beyond the small defaults of ModelCase. The stacked autoencoder
# pretrains each of its 2 layers for 10 steps, so the 60 steps of the checks and the 2 epochs of
# 13 steps in training both pass through every phase.
EXTRA: dict[str, dict[str, str]] = {
    "stacked-ae": {"pretrain_steps": "10"},
    "conv-ae": {"channels": "8,16"},
    "conv-vae": {"net.channels": "8,16"},
    "hvae": {"latent_dims": "4,3", "layer_hidden": "16"},
}
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "hvae[ladder]": ("hvae", {**EXTRA["hvae"], "inference": "top-down", "posterior": "ladder"}),
    "hvae[residual]": ("hvae", {"latent_dims": "4,3,2", "layer_hidden": "16",
                                "inference": "top-down", "state_dim": "16",
                                "weight_norm": "true"}),
    "hvae[conv]": ("hvae", {**EXTRA["hvae"], "inference": "top-down", "net": "conv",
                            "net.channels": "8,16", "net.activation": "relu"}),
}
"""Configurations of a model that build other networks, checked as models of their own."""
BUILTIN = [name for name in MODELS if MODELS.origin(name) == "aevb"]
CASES = [ModelCase(name, EXTRA.get(name, {})) for name in sorted(BUILTIN)] + [
    ModelCase(name, overrides, id=case) for case, (name, overrides) in sorted(VARIANTS.items())]

pytestmark = pytest.mark.usefixtures("validate_distributions")


@parametrize_with_checks(CASES)
def test_builtin_model(check):
    check()
