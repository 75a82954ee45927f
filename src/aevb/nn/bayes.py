"""Full variational Bayes over network weights (Kingma & Welling 2014, appendix F).

The decoder's parameters θ get a diagonal Gaussian posterior q(θ) and a prior N(0, prior_std² I);
the data set's bound gains -KL(q(θ) || p(θ)), so each example's loss adds
``parameter_kl(decoder) / N``. One θ ~ q(θ) is drawn per forward pass, that is per minibatch, as
in the paper (no local reparameterisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

__all__ = ["BayesianLinear", "bayesianize_", "parameter_kl"]


def _inverse_softplus(sigma: float) -> float:
    return math.log(math.expm1(sigma))


class BayesianLinear(nn.Module):
    """A linear layer with q(θ) = N(μ, σ²) per weight and bias, σ = softplus(ρ), and prior
    N(0, prior_std²). In training every forward draws θ = μ + σ ⊙ ε once for the whole input
    (any leading shape: K × B rows share it); in eval mode it uses the mean μ.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 prior_std: float = 1.0, init_sigma: float = 1e-3,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        """Posterior means start as ``nn.Linear``'s, posterior standard deviations at
        ``init_sigma``."""
        super().__init__()
        if not prior_std > 0:
            raise ValueError(f"prior_std must be positive, got {prior_std}")
        if not init_sigma > 0:
            raise ValueError(f"init_sigma must be positive, got {init_sigma}")
        self.in_features = in_features
        self.out_features = out_features
        self.prior_std = float(prior_std)
        template = nn.Linear(in_features, out_features, bias, device=device, dtype=dtype)
        rho = _inverse_softplus(init_sigma)
        self.weight_mu = nn.Parameter(template.weight.detach().clone())
        self.weight_rho = nn.Parameter(torch.full_like(template.weight, rho))
        self.bias_mu: nn.Parameter | None = None
        self.bias_rho: nn.Parameter | None = None
        if template.bias is not None:
            self.bias_mu = nn.Parameter(template.bias.detach().clone())
            self.bias_rho = nn.Parameter(torch.full_like(template.bias, rho))

    @classmethod
    def from_linear(cls, layer: nn.Linear, prior_std: float = 1.0,
                    init_sigma: float = 1e-3) -> BayesianLinear:
        """A layer whose posterior mean is a copy of ``layer``'s weight and bias."""
        new = cls(layer.in_features, layer.out_features, layer.bias is not None, prior_std,
                  init_sigma, device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            new.weight_mu.copy_(layer.weight)
            if new.bias_mu is not None and layer.bias is not None:
                new.bias_mu.copy_(layer.bias)
        return new

    @torch.no_grad()
    def init_mean_(self, std: float) -> None:
        """Redraw the posterior means from N(0, std²) (``nets.init_normal_`` for this layer)."""
        self.weight_mu.normal_(0.0, std)
        if self.bias_mu is not None:
            self.bias_mu.normal_(0.0, std)

    def posterior(self) -> list[Normal]:
        """q(θ): one ``Normal`` for the weight (out, in) and, with a bias, one for it (out,)."""
        q = [Normal(self.weight_mu, F.softplus(self.weight_rho))]
        if self.bias_mu is not None and self.bias_rho is not None:
            q.append(Normal(self.bias_mu, F.softplus(self.bias_rho)))
        return q

    def prior(self) -> Normal:
        """p(θ) = N(0, prior_std²), a scalar distribution that broadcasts over every parameter."""
        zero = self.weight_mu.new_zeros(())
        return Normal(zero, zero + self.prior_std)

    def kl(self) -> torch.Tensor:
        """KL(q(θ) || p(θ)) in nats, analytic, summed over weight and bias: a 0-dim tensor."""
        prior = self.prior()
        return torch.stack([kl_divergence(q, prior).sum() for q in self.posterior()]).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight_mu, self.bias_mu)
        theta = [q.rsample() for q in self.posterior()]  # one draw for the whole input
        return F.linear(x, theta[0], theta[1] if len(theta) > 1 else None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features},"
                f" bias={self.bias_mu is not None}, prior_std={self.prior_std}")


def bayesianize_(module: nn.Module, prior_std: float = 1.0,
                 init_sigma: float = 1e-3) -> list[BayesianLinear]:
    """Replace every ``nn.Linear`` inside ``module`` (recursively, in place) by
    ``BayesianLinear.from_linear``; return the new layers in the order first met (one shared
    layer stays one). Convolutions and free parameters (a learned sigma) stay point estimates.
    """
    if isinstance(module, nn.Linear):
        raise TypeError("bayesianize_ replaces layers inside a module, not the module itself;"
                        " use BayesianLinear.from_linear")
    replaced: dict[nn.Linear, BayesianLinear] = {}

    def visit(parent: nn.Module) -> None:
        # not named_children(), which yields a module used twice in one parent only once
        for name, child in list(parent._modules.items()):
            if isinstance(child, nn.Linear):
                if child not in replaced:  # a layer used twice stays one (shared) layer
                    replaced[child] = BayesianLinear.from_linear(child, prior_std, init_sigma)
                    replaced[child].train(child.training)
                setattr(parent, name, replaced[child])
            elif child is not None:
                visit(child)

    visit(module)
    return list(replaced.values())


def parameter_kl(module: nn.Module) -> torch.Tensor:
    """Sum of ``kl()`` over every ``BayesianLinear`` inside ``module`` (itself included), in
    nats: a 0-dim tensor, 0. if there are none."""
    kls = [m.kl() for m in module.modules() if isinstance(m, BayesianLinear)]
    if not kls:
        parameter = next(module.parameters(), None)
        return torch.zeros(()) if parameter is None else parameter.new_zeros(())
    return torch.stack(kls).sum()
