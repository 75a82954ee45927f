"""The fast importance-sampled log p(x): evaluation's speed tricks, which the models do not know.

The estimate is the models' own (``log_marginal``), composed from their parts, the same to
float rounding on the same draws: x is encoded once for every chunk of samples; a Bernoulli
head scores x without building p(x|z) (:func:`log_likelihood_of`: with logits l = W h + b,
log p(x|z) = h . (W^T x) + b . x - sum_i softplus(l_i), W^T x once per point, the softplus sum
by products, :func:`softplus_sum`); inside :func:`compiled_kernels` everything after the
(eager) draw of z runs under torch.compile (:func:`compiled`).

The parts: ``decoder`` and ``likelihood_head`` (p(x|z) = ``likelihood_head(decoder(z))``), and
either ``posterior(x)`` and ``prior()`` (a VAE) or ``proposal(x)``: k ↦ (z1, log p(z) -
log q(z|x)) (a hierarchy, an HVAE). Any other model is scored by its own ``log_marginal``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import torch
from torch import nn

from aevb.inference.objectives import importance_sampled
from aevb.models import Batch, Conditional, Likelihood
from aevb.nn.heads import BernoulliHead, DecoderHead

__all__ = ["compiled", "compiled_kernels", "fast_log_marginal", "fast_log_weights",
           "log_likelihood_of", "softplus_sum"]

P = ParamSpec("P")
T = TypeVar("T")


def fast_log_marginal(model: Likelihood, batch: Batch, samples: int) -> torch.Tensor:
    """``model.log_marginal(batch, samples)`` (B,) in nats, by :func:`fast_log_weights`."""
    draw = fast_log_weights(model, batch.x)
    if draw is None:
        return model.log_marginal(batch, samples)
    return importance_sampled(draw, samples, batch.x.numel(), batch.x.device)


def fast_log_weights(model: Any, x: torch.Tensor) -> Callable[[int], torch.Tensor] | None:
    """k ↦ k fresh log-weights log p(x, z_k) - log q(z_k|x) (k, B) of x (B, *event_shape), as
    the model's own, or None for a model without the parts (module docstring)."""
    decoder, head = getattr(model, "decoder", None), getattr(model, "likelihood_head", None)
    if not (isinstance(decoder, nn.Module) and isinstance(head, DecoderHead)):
        return None
    log_px_given = log_likelihood_of(head, x)
    if callable(proposal := getattr(model, "proposal", None)):
        draw = proposal(x)

        def hierarchical(k: int) -> torch.Tensor:
            z1, log_ratio = draw(k)
            return log_px_given(decoder(z1)) + log_ratio

        return hierarchical
    if isinstance(model, Conditional) or not (callable(getattr(model, "posterior", None))
                                              and callable(getattr(model, "prior", None))):
        return None  # a conditional model (q(z|x, c)) is scored by its own log_marginal
    posterior, prior = model.posterior(x), model.prior()

    def log_weights(z: torch.Tensor) -> torch.Tensor:
        return log_px_given(_decoded(decoder, z)) + prior.log_prob(z) - posterior.log_prob(z)

    weigh = compiled(log_weights)
    return lambda k: weigh(posterior.rsample((k,)))


def log_likelihood_of(head: DecoderHead, x: torch.Tensor
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """features (..., B, F) ↦ log p(x|z) (..., B) in nats, ``head(features).log_prob(x)`` to
    float rounding, what depends on x alone prepared once (a Bernoulli head's fused form)."""
    if isinstance(head, BernoulliHead):
        return _bernoulli(head, x)
    return lambda features: head(features).log_prob(x)


def _bernoulli(head: BernoulliHead, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """log p(x|z) = sum_i [x_i l_i - softplus(l_i)] for binary x, logits l = W h + b. Through a
    linear head in float32 the first sum is h . (W^T x) + b . x: only the softplus needs every
    sample's logits. In bfloat16 the two sums' rounding errors would no longer cancel; there,
    and for a per-pixel head, it is -sum_i softplus((1 - 2 x_i) l_i), one logit per term."""
    dims = len(head.event_shape)
    x = x.flatten(-dims).float()  # (B, P)
    flip = 1 - 2 * x
    linear = head.linear
    if not isinstance(linear, nn.Linear):  # per-pixel, or a BayesianLinear (full VB)
        return lambda features: _flipped(head(features).base_dist.logits.flatten(-dims), flip)
    with torch.autocast(x.device.type, enabled=False):  # W^T x in float32
        x_weight, x_bias = x @ linear.weight.float(), x @ linear.bias.float()  # (B, F), (B,)

    def log_prob(features: torch.Tensor) -> torch.Tensor:
        if features.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
            return _flipped(linear(features), flip)
        # the bias added apart from the product: compiled (``compiled``), it is added inside
        # the softplus kernel, not written over the logits before the product
        logits = torch.matmul(features, linear.weight.T).add_(linear.bias)  # (..., B, P)
        return (features * x_weight).sum(-1) + x_bias - softplus_sum(logits)

    return log_prob


def _flipped(logits: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """-sum_i softplus(flip_i l_i) (..., B) for flat logits (..., B, P) and flip = 1 - 2x
    (B, P): sum_i log Bernoulli(x_i; sigmoid(l_i)) for binary x, in float32."""
    return -softplus_sum(logits.float() * flip)


def _decoded(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``net(z)``; while torch.compile traces it, an ``nn.Sequential``'s linear layers as a
    matmul and a bias added apart, which Inductor adds inside the next activation's kernel (a
    compiled ``addmm`` writes the bias over its whole output first: one more pass per hidden
    layer). Not under autocast: a bfloat16 matmul rounded before its bias would round twice."""
    if (not (torch.compiler.is_compiling() and isinstance(net, nn.Sequential))
            or torch.is_autocast_enabled(z.device.type)):
        return net(z)
    for layer in net:
        if type(layer) is nn.Linear and layer.bias is not None:
            z = torch.matmul(z, layer.weight.T) + layer.bias
        else:
            z = layer(z)
    return z


def softplus_sum(values: torch.Tensor) -> torch.Tensor:
    """sum_i softplus(v_i) over the last dimension (...,), to float rounding; inside
    ``compiled_kernels`` one kernel compiled by torch.compile (2x faster on a CPU), or part
    of the kernel of a function being compiled (``compiled``)."""
    if torch.compiler.is_compiling() or not _compiled:
        return _softplus_sum(values)
    return _guarded(_compiled[0], _softplus_sum, values)


def _guarded(compiled_fn: Callable[P, T], fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
             ) -> T:
    """``compiled_fn(...)`` while compiling is on, else ``fn(...)``; a failed compile turns it off."""
    if _compiled:
        try:
            return compiled_fn(*args, **kwargs)
        except Exception as error:  # no compiler here: stay eager from now on
            warnings.warn(f"torch.compile failed, evaluating without it: {error}", stacklevel=3)
            _compiled.clear()
    return fn(*args, **kwargs)


_compiled: list[Callable[[torch.Tensor], torch.Tensor]] = []
"""The compiled ``_softplus_sum`` while ``compiled_kernels`` is on."""
_compiled_cache: list[Callable[[torch.Tensor], torch.Tensor]] = []


def compiled(fn: Callable[P, torch.Tensor]) -> Callable[P, torch.Tensor]:
    """``fn`` compiled by torch.compile inside ``compiled_kernels`` (eager once a compile failed),
    else ``fn`` itself. For a pure function of tensors called many times at few shapes (an importance-sampling
    chunk): Inductor fuses its elementwise work and reductions into the kernels after each
    matmul. torch.compile keeps its graphs per code object, so a closure made anew for every
    batch is compiled once (once more, with dynamic sizes, at a second shape)."""
    if not _compiled:
        return fn
    compiled_fn = torch.compile(fn)
    return lambda *args, **kwargs: _guarded(compiled_fn, fn, *args, **kwargs)


@contextmanager
def compiled_kernels(enabled: bool = True) -> Iterator[None]:
    """Inside, ``softplus_sum`` runs compiled, and ``compiled`` compiles: a few seconds to
    compile on first use, worth it for long evaluations only."""
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
    """softplus(v) = relu(v) + log(1 + exp(-|v|)), the logarithms taken of products of up to 64
    factors 1 + exp(-|v_i|), each in (1, 2] (no product overflows): one log per product instead
    of a log1p per value, which is what makes softplus slow. The values are viewed as
    (n, size / n) and multiplied along the n, whole vectors of neighbours at a time, so a
    compiled kernel keeps every SIMD lane busy."""
    size = values.shape[-1]
    n = max(d for d in range(1, min(size, 64) + 1) if size % d == 0)
    shape = (n, size // n)
    logs = torch.exp(-values.abs()).add_(1).unflatten(-1, shape).prod(-2).log_()
    return (logs + values.clamp(min=0).unflatten(-1, shape).sum(-2)).sum(-1)
