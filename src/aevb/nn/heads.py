"""Heads: features → ``torch.distributions`` objects.

The encoder head gives q(z|x); the decoder heads give p(x|z) with the data's event shape, for
any leading batch shape of the features (L samples × B examples, K × B, …), either from flat
features through a linear map (an MLP decoder) or straight from a convolutional decoder's
output map, which holds the parameters per pixel. Distribution parameters are always float32,
also when the layers before them run in bfloat16 (autocast), so log-densities and KL terms keep
full precision.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Normal,
)

from aevb.errors import ConfigError

P = ParamSpec("P")

__all__ = [
    "LIKELIHOODS",
    "BernoulliHead",
    "ContinuousBernoulliHead",
    "DecoderHead",
    "DiagonalGaussianHead",
    "GaussianHead",
    "compiled",
    "compiled_kernels",
    "decoder_head",
    "log_likelihood_of",
    "softplus_sum",
]


class DiagonalGaussianHead(nn.Module):
    """Features (..., F) → N(mu, diag sigma^2) over (..., D), parameterised by log sigma^2.

    The paper's Gaussian MLP encoder (appendix C.2): ``[mu, log sigma^2] = W h + b``.
    """

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, features: torch.Tensor) -> Independent:
        mu, log_var = self.linear(features).float().chunk(2, dim=-1)
        return Independent(Normal(mu, torch.exp(0.5 * log_var)), 1)


class DecoderHead(nn.Module):
    """Base for decoder heads: features → k parameters per data value, each (..., *event_shape).

    With ``in_features`` the features are flat (..., in_features) and a linear map gives the
    k × prod(event_shape) parameters. With ``in_features=None`` the features already are the
    parameters, as a convolutional decoder's last block emits them: (..., k * C, *rest) for
    event shape (C, *rest), the first C channels the first parameter, and so on.
    """

    params_per_value = 1
    """k: how many numbers the decoder gives per data value (2 for a mean and a variance)."""
    linear: nn.Linear | None

    def __init__(self, in_features: int | None, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.linear = None
        if in_features is not None:
            self.linear = nn.Linear(in_features,
                                    self.params_per_value * math.prod(self.event_shape))

    def _outputs(self, features: torch.Tensor) -> list[torch.Tensor]:
        k = self.params_per_value
        if self.linear is None:
            dims = len(self.event_shape)
            expected = (k * self.event_shape[0], *self.event_shape[1:])
            if tuple(features.shape[-dims:]) != expected:
                raise ValueError(f"a per-value head for event shape {self.event_shape} needs"
                                 f" features (..., {expected}), got {tuple(features.shape)}")
            return list(features.float().chunk(k, dim=-dims))
        out = self.linear(features).float()
        batch = features.shape[:-1]
        return [o.reshape(*batch, *self.event_shape) for o in out.chunk(k, dim=-1)]

    def _independent(self, base: Distribution) -> Independent:
        return Independent(base, len(self.event_shape))


class BernoulliHead(DecoderHead):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i)), for binary data (the paper's MNIST)."""

    def forward(self, features: torch.Tensor) -> Independent:
        (logits,) = self._outputs(features)
        return self._independent(Bernoulli(logits=logits))

    def log_likelihood(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """features (..., B, F) ↦ log p(x|z) (..., B) in nats, for binary x (B, *event_shape):
        ``self(features).log_prob(x)`` to float rounding, without building the distribution.

        log p(x|z) = sum_i [x_i l_i - softplus(l_i)], logits l = W h + b. Through a linear head
        in float32 the first sum is h . (W^T x) + b . x, and W^T x is formed here, once per
        data point: only the softplus needs every sample's logits. Logits rounded to bfloat16
        (autocast) would enter the two sums differently, so that their rounding errors no
        longer cancel; there, and for a per-pixel (convolutional) head, it is
        -sum_i softplus((1 - 2 x_i) l_i), each pixel's term from one logit.
        """
        x = x.flatten(-len(self.event_shape)).float()  # (B, P)
        flip = 1 - 2 * x
        linear = self.linear
        if not isinstance(linear, nn.Linear):  # per-pixel, or a BayesianLinear (full VB)
            dims = len(self.event_shape)
            return lambda features: _flipped(self._outputs(features)[0].flatten(-dims), flip)
        with torch.autocast(x.device.type, enabled=False):  # W^T x in float32
            x_weight, x_bias = x @ linear.weight.float(), x @ linear.bias.float()  # (B, F), (B,)

        def log_prob(features: torch.Tensor) -> torch.Tensor:
            if features.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
                return _flipped(linear(features), flip)
            # the bias added apart from the product: compiled (``compiled``), it is added
            # inside the softplus kernel, not written over the logits before the product
            logits = torch.matmul(features, linear.weight.T).add_(linear.bias)  # (..., B, P)
            return (features * x_weight).sum(-1) + x_bias - softplus_sum(logits)

        return log_prob


def _flipped(logits: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """-sum_i softplus(flip_i l_i) (..., B) for flat logits (..., B, P) and flip = 1 - 2x
    (B, P): sum_i log Bernoulli(x_i; sigmoid(l_i)) for binary x, in float32."""
    return -softplus_sum(logits.float() * flip)


def softplus_sum(values: torch.Tensor) -> torch.Tensor:
    """sum_i softplus(v_i) over the last dimension (...,), to float rounding; inside
    ``compiled_kernels`` one kernel compiled by torch.compile (2x faster on a CPU), or part
    of the kernel of a function being compiled (``compiled``)."""
    if torch.compiler.is_compiling():
        return _softplus_sum(values)
    if _compiled:
        try:
            return _compiled[0](values)
        except Exception as error:  # no compiler here: stay eager from now on
            warnings.warn(f"torch.compile failed, evaluating without it: {error}", stacklevel=2)
            _compiled.clear()
    return _softplus_sum(values)


_compiled: list[Callable[[torch.Tensor], torch.Tensor]] = []
"""The compiled ``_softplus_sum`` while ``compiled_kernels`` is on."""
_compiled_cache: list[Callable[[torch.Tensor], torch.Tensor]] = []


def compiled(fn: Callable[P, torch.Tensor]) -> Callable[P, torch.Tensor]:
    """``fn`` compiled by torch.compile inside ``compiled_kernels``, else ``fn`` itself.

    For a pure function of tensors called many times at few shapes (an importance-sampling
    chunk): Inductor fuses its elementwise work and reductions into the kernels after each
    matmul. torch.compile keeps its compiled graphs per code object, so a closure made anew
    for every batch is compiled once (once more, with dynamic sizes, at a second shape). If
    compiling fails, a warning, and everything runs eager from then on."""
    if not _compiled:
        return fn
    compiled_fn = torch.compile(fn)

    def run(*args: P.args, **kwargs: P.kwargs) -> torch.Tensor:
        if _compiled:
            try:
                return compiled_fn(*args, **kwargs)
            except Exception as error:  # no compiler here: stay eager from now on
                warnings.warn(f"torch.compile failed, evaluating without it: {error}",
                              stacklevel=2)
                _compiled.clear()
        return fn(*args, **kwargs)

    return run


@contextmanager
def compiled_kernels(enabled: bool = True) -> Iterator[None]:
    """Inside, ``softplus_sum`` (the Bernoulli heads' ``log_likelihood``) runs compiled, and
    ``compiled`` compiles: a few seconds to compile on first use, worth it for long
    evaluations only."""
    if not enabled:
        yield
        return
    if not _compiled_cache:
        _compiled_cache.append(torch.compile(_softplus_sum, dynamic=True))
    _compiled[:] = _compiled_cache
    try:
        yield
    finally:
        _compiled.clear()


def _softplus_sum(values: torch.Tensor) -> torch.Tensor:
    """``softplus_sum``: softplus(v) = relu(v) + log(1 + exp(-|v|)), the logarithms taken of
    products of up to 64 factors 1 + exp(-|v_i|), each in (1, 2] (no product overflows): one
    log per product instead of a log1p per value, which is what makes softplus slow. The
    values are viewed as (n, size / n) and multiplied along the n: each product step takes
    whole vectors of neighbouring values, so a compiled kernel keeps every SIMD lane busy."""
    size = values.shape[-1]
    n = max(d for d in range(1, min(size, 64) + 1) if size % d == 0)
    shape = (n, size // n)
    logs = torch.exp(-values.abs()).add_(1).unflatten(-1, shape).prod(-2).log_()
    return (logs + values.clamp(min=0).unflatten(-1, shape).sum(-2)).sum(-1)


class ContinuousBernoulliHead(DecoderHead):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), a proper density on [0, 1]."""

    def forward(self, features: torch.Tensor) -> Independent:
        (logits,) = self._outputs(features)
        return self._independent(ContinuousBernoulli(logits=logits))


class GaussianHead(DecoderHead):
    """p(x|z) = N(mu(z), sigma^2) with sigma fixed, one learned scalar, or one per pixel.

    ``fixed`` is the squared-error (rate-distortion) view; with ``pixel`` the network outputs
    log sigma^2 too. With ``sigmoid_mean`` mu = sigmoid(output), in (0, 1): with ``pixel``
    that is the paper's Frey Face decoder (appendix C.2, "gaussian-sigmoid"). Learned sigmas
    are kept above ``min_sigma`` so the density stays bounded on data with constant pixels.
    """

    def __init__(
        self,
        in_features: int | None,
        event_shape: tuple[int, ...],
        variance: str,
        sigma: float,
        min_sigma: float,
        sigmoid_mean: bool = False,
    ) -> None:
        if variance not in ("fixed", "learned", "pixel"):
            raise ConfigError(f"unknown Gaussian variance {variance!r}")
        self.params_per_value = 2 if variance == "pixel" else 1
        super().__init__(in_features, event_shape)
        self.variance = variance
        self.min_sigma = min_sigma
        self.sigmoid_mean = sigmoid_mean
        log_sigma = torch.tensor(math.log(sigma))
        if variance == "learned":
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def forward(self, features: torch.Tensor) -> Independent:
        outputs = self._outputs(features)
        mu = torch.sigmoid(outputs[0]) if self.sigmoid_mean else outputs[0]
        if self.variance == "fixed":
            scale = self.log_sigma.exp().expand_as(mu)
        elif self.variance == "learned":
            scale = (self.min_sigma + self.log_sigma.exp()).expand_as(mu)
        else:
            scale = self.min_sigma + torch.exp(0.5 * outputs[1])
        return self._independent(Normal(mu, scale))


LIKELIHOODS = {
    "bernoulli": "binary data: Bernoulli with logits",
    "continuous-bernoulli": "data in [0, 1]: the continuous Bernoulli",
    "gaussian-fixed": "real data: Gaussian with a fixed sigma (L2 distortion)",
    "gaussian-learned": "real data: Gaussian with one learned sigma",
    "gaussian-pixel": "real data: Gaussian with a per-pixel sigma from the decoder",
    "gaussian-sigmoid": "data in [0, 1]: Gaussian with sigmoid means and a per-pixel sigma"
                        " (the paper's Frey Face decoder)",
}


def log_likelihood_of(head: DecoderHead, x: torch.Tensor
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """features (..., B, F) ↦ log p(x|z) (..., B) in nats, ``head(features).log_prob(x)``,
    with what depends on x alone prepared once: a Bernoulli head's fused form
    (``BernoulliHead.log_likelihood``), any other head's distribution."""
    if isinstance(head, BernoulliHead):
        return head.log_likelihood(x)
    return lambda features: head(features).log_prob(x)


def decoder_head(
    likelihood: str,
    in_features: int | None,
    event_shape: tuple[int, ...],
    data_kind: str,
    sigma: float = 1.0,
    min_sigma: float = 1e-3,
) -> DecoderHead:
    """The decoder head for ``likelihood``, checked against the data it will model.

    ``in_features``: the size of flat decoder features, or None for a convolutional decoder
    that emits the head's ``params_per_value`` parameters per value itself (``DecoderHead``).
    ``data_kind`` is the dataset's: "binary" ({0, 1}), "unit" ([0, 1]) or "real".
    """
    if likelihood not in LIKELIHOODS:
        raise ConfigError(
            f"unknown likelihood {likelihood!r} (known: {', '.join(LIKELIHOODS)})"
        )
    if likelihood == "bernoulli" and data_kind != "binary":
        raise ConfigError(
            f"the bernoulli likelihood needs binary data, but this data is {data_kind!r}"
            " (values not all 0 or 1): set data.binarize to static, dynamic or threshold,"
            " or use likelihood continuous-bernoulli or gaussian-*"
        )
    if likelihood == "continuous-bernoulli" and data_kind == "real":
        raise ConfigError(
            "the continuous-bernoulli likelihood needs data in [0, 1], but this data is real-valued"
        )
    if likelihood == "bernoulli":
        return BernoulliHead(in_features, event_shape)
    if likelihood == "continuous-bernoulli":
        return ContinuousBernoulliHead(in_features, event_shape)
    if likelihood == "gaussian-sigmoid":
        return GaussianHead(in_features, event_shape, "pixel", sigma, min_sigma, sigmoid_mean=True)
    variance = likelihood.split("-", 1)[1]
    return GaussianHead(in_features, event_shape, variance, sigma, min_sigma)
