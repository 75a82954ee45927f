"""The ways a VAE is trained, as objectives over the model (as Pyro's ELBOs are over a model and
a guide): the ELBO and the IWAE bound, and the paper's two baselines (sec. 5), wake-sleep
(Hinton et al. 1995) and Monte Carlo EM with an HMC posterior sampler.

``model.objective`` is one of the configs below, picked by its ``kind`` (``--objective mcem``:
that kind's defaults); ``OBJECTIVES`` maps each kind to its config and its objective. An
objective is an ``nn.Module`` called as ``objective(model, batch, step)`` → (loss, metrics),
for any ``LatentModel``; one that keeps state (MCEM's chains) holds it in buffers, so the
model that holds the objective checkpoints it with its weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.distributions import Distribution

from aevb.errors import ConfigError, check_choice, check_positive
from aevb.inference.hmc import adapt_step_size, hmc_step
from aevb.inference.objectives import (
    ElboTerms,
    elbo_terms,
    free_bits_kl,
    iwae_bound,
    kl_per_dimension,
)
from aevb.inference.schedules import Step, warmup_weight

__all__ = ["IWAE", "MCEM", "OBJECTIVES", "Elbo", "ElboConfig", "IWAEConfig", "LatentModel",
           "MCEMConfig", "Objective", "ObjectiveConfig", "WakeSleep", "WakeSleepConfig",
           "balance_coefficients", "bound_loss", "elbo_metrics", "kl_cost", "nest_objective_keys", "objective_config"]

Metrics = dict[str, torch.Tensor]


def _kind_is_its_own(config: Any) -> None:
    # the config reader picks the union's option by kind; this catches a kind given by hand
    if config.kind != type(config).kind:
        raise ValueError(f"kind must be one of {', '.join(OBJECTIVES)}; got {config.kind!r}")


@dataclass(frozen=True)
class ElboConfig:
    kind: str = "elbo"
    """The SGVB estimate of the ELBO (estimator and L samples: ``estimator``, ``samples``)."""

    def __post_init__(self) -> None:
        _kind_is_its_own(self)


@dataclass(frozen=True)
class IWAEConfig:
    kind: str = "iwae"
    """The importance-weighted bound of Burda et al. (2016)."""
    iw_samples: int = 5
    """K, the importance samples per datapoint."""

    def __post_init__(self) -> None:
        _kind_is_its_own(self)
        check_positive("model.objective.iw_samples", self.iw_samples)


@dataclass(frozen=True)
class WakeSleepConfig:
    kind: str = "wake-sleep"
    """Hinton et al. (1995): not a variational bound (no beta, warm-up, free bits, corruption)."""

    def __post_init__(self) -> None:
        _kind_is_its_own(self)


@dataclass(frozen=True)
class MCEMConfig:
    kind: str = "mcem"
    """Monte Carlo EM with HMC: not a variational bound (no beta, warm-up, free bits,
    corruption)."""
    hmc_leapfrog_steps: int = 10
    """Leapfrog steps per HMC transition (the paper: 10)."""
    hmc_step_size: float = 0.1
    """The initial leapfrog step size, then tuned at every step (shared by the chains)."""
    hmc_target_accept: float = 0.9
    """The acceptance probability the step size is tuned to (the paper: 90 %)."""
    hmc_adapt_rate: float = 0.05
    """Gain of the update log eps += rate (mean acceptance - target), once per transition; at
    a target of 0.9 the step size grows by at most rate/10 in log per transition."""
    hmc_transitions: int = 1
    """HMC transitions of each minibatch example's chain per training step."""

    def __post_init__(self) -> None:
        _kind_is_its_own(self)
        for key in ("hmc_leapfrog_steps", "hmc_step_size", "hmc_adapt_rate", "hmc_transitions"):
            check_positive(f"model.objective.{key}", getattr(self, key))
        if not 0 < self.hmc_target_accept < 1:
            raise ConfigError("model.objective.hmc_target_accept is a probability in (0, 1),"
                              f" got {self.hmc_target_accept}")


ObjectiveConfig = ElboConfig | IWAEConfig | WakeSleepConfig | MCEMConfig


def objective_config(value: ObjectiveConfig | str, kinds: tuple[str, ...]) -> ObjectiveConfig:
    """``value`` as an objective's config, one of ``kinds``; a kind's name gives its defaults."""
    kind = value if isinstance(value, str) else value.kind
    check_choice("model.objective", kind, kinds)
    return OBJECTIVES[kind][0]() if isinstance(value, str) else value


def nest_objective_keys(cls: type, section: dict[str, Any]) -> dict[str, Any]:
    """A ``[model]`` table of a run from before the objectives had configs of their own (its
    ``objective`` a name, ``iw_samples`` and ``hmc_*`` flat beside it) as ``cls`` reads it:
    the keys that objective takes in ``[model.objective]``, the others dropped. Any other
    table is returned as it is."""
    flat = {"iw_samples", *(f.name for f in fields(MCEMConfig))} - {"kind"}
    kind = section.get("objective", "elbo")
    if ("objective" not in {f.name for f in fields(cls)}
            or not (flat & section.keys() or isinstance(section.get("objective"), str))):
        return section
    nested = {k: v for k, v in section.items() if k not in flat}
    if isinstance(kind, str) and kind in OBJECTIVES:  # else the reader names the bad kind
        taken = {f.name for f in fields(OBJECTIVES[kind][0])}
        nested["objective"] = {"kind": kind, **{k: section[k] for k in flat & taken
                                                if k in section}}
    return nested


class LatentModel(Protocol):
    """What the objectives read of a model: q(z|x), p(z) and p(x|z), as distributions."""

    def posterior(self, x: torch.Tensor) -> Distribution: ...
    def prior(self) -> Distribution: ...
    def likelihood(self, z: torch.Tensor) -> Distribution: ...
    @property
    def corruption(self) -> Callable[[torch.Tensor], torch.Tensor]: ...


class Examples(Protocol):
    """A minibatch (``models.Batch``): x (B, *event_shape), the examples' indices (B,)."""

    @property
    def x(self) -> torch.Tensor: ...
    @property
    def indices(self) -> torch.Tensor | None: ...


class Weighting(Protocol):
    """The bound's estimator and KL weighting (``models.bound.BoundConfig``)."""

    @property
    def estimator(self) -> str: ...
    @property
    def samples(self) -> int: ...
    @property
    def beta(self) -> float: ...
    @property
    def kl_warmup(self) -> float: ...
    @property
    def kl_warmup_steps(self) -> int: ...
    @property
    def free_bits(self) -> float: ...
    @property
    def free_bits_per(self) -> str: ...
    @property
    def kl_balance(self) -> bool: ...


def elbo_metrics(loss: torch.Tensor, terms: ElboTerms) -> Metrics:
    """loss, and the ELBO's parts as the elbo objective reports them (batch means)."""
    return {"loss": loss.detach(), "elbo": terms.elbo.mean().detach(),
            "rec": terms.rec.mean().detach(), "kl": terms.kl_total.mean().detach()}


def balance_coefficients(groups: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each latent group's weight on its KL during warm-up (KL balancing, Vahdat & Kautz 2020):
    proportional to the group's minibatch KL per dimension (plus 0.01 nats, so that an unused
    group keeps a weight), scaled to average 1 over the groups; constants (no gradient)."""
    with torch.no_grad():
        per_dimension = {name: (kl.sum(-1).mean() + 0.01) / kl.shape[-1]
                         for name, kl in groups.items()}
        total = sum(per_dimension.values())
        return {name: len(groups) * value / total for name, value in per_dimension.items()}


def kl_cost(w: Weighting, groups: dict[str, torch.Tensor], warming: bool) -> torch.Tensor:
    """The minibatch KL as training pays it, a scalar: each group's mean KL (``groups``: name
    → (B, D_g)), floored by free bits per dimension or per group, weighed by KL balancing
    while ``warming`` (with more than one group)."""
    weights = (balance_coefficients(groups) if w.kl_balance and warming and len(groups) > 1
               else dict.fromkeys(groups, 1.0))
    cost = torch.zeros((), device=next(iter(groups.values())).device)
    for name, kl in groups.items():
        if w.free_bits > 0 and w.free_bits_per == "group":
            paid = kl.sum(-1).mean().clamp(min=w.free_bits)
        elif w.free_bits > 0:
            paid = free_bits_kl(kl, w.free_bits)
        else:
            paid = kl.sum(-1).mean()
        cost = cost + weights[name] * paid
    return cost


def bound_loss(w: Weighting, step: Step, terms: ElboTerms,
               iwae: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, Metrics]:
    """The loss -mean_b of the ELBO of ``terms`` or, with ``iwae`` = (log p(x|z_k),
    log p(z_k) - log q(z_k|x)), each (K, B), of the IWAE bound; its KL (or log-ratio) weighted
    by beta times the warm-up weight. Free bits and KL balancing change what the KL of
    ``terms.kl`` costs (``kl_cost``): exact for the ELBO; for IWAE the same correction is added
    to the bound. Metrics are the true, unweighted bound's: loss, elbo, rec, kl, kl_weight
    while warming up, and for IWAE ``bound``, the K-sample bound itself.
    """
    warm = warmup_weight(step, w.kl_warmup, w.kl_warmup_steps)
    weight = w.beta * warm
    if iwae is None:
        loss = -(terms.rec - weight * terms.kl_total).mean()
    else:
        loss = -iwae_bound(iwae[0] + weight * iwae[1]).mean()
    if w.free_bits > 0 or (w.kl_balance and warm < 1):
        paid = kl_cost(w, terms.kl, warm < 1)
        loss = loss + weight * (paid - sum(kl.sum(-1).mean() for kl in terms.kl.values()))
    metrics = elbo_metrics(loss, terms)
    if w.kl_warmup > 0 or w.kl_warmup_steps > 0:
        metrics["kl_weight"] = torch.tensor(weight, device=loss.device)
    if iwae is not None:
        metrics["bound"] = iwae_bound(iwae[0] + iwae[1]).mean().detach()
    return loss, metrics


class Objective(nn.Module, ABC):
    """One way of training a ``LatentModel``: ``forward(model, batch, step)`` → (loss, metrics),
    the metrics always the true ELBO's parts of the current q and p."""

    bound: ClassVar[bool] = True
    """A variational bound: validation scores it as trained; else validation scores the ELBO."""
    per_example: ClassVar[tuple[str, ...]] = ()
    """The buffers indexed by training example (N, ...), synced under data parallelism."""

    def __init__(self, config: Any, weighting: Weighting, train_size: int | None,
                 latent_dim: int) -> None:
        """``config`` this objective's (``OBJECTIVES``), ``weighting`` the model's bound keys;
        the training set's size N and the latent dimensions D size any per-example state."""
        super().__init__()
        self.config, self.weighting = config, weighting

    @abstractmethod
    def forward(self, model: LatentModel, batch: Examples, step: Step
                ) -> tuple[torch.Tensor, Metrics]: ...


class Elbo(Objective):
    """-(E_q[log p(x|z)] - w KL(q(z|x) || p(z))), w = beta times the warm-up weight, each
    dimension's KL floored at ``free_bits``; q reads the corrupted x~ (Im et al. 2017)."""

    def forward(self, model: LatentModel, batch: Examples, step: Step
                ) -> tuple[torch.Tensor, Metrics]:
        w, x = self.weighting, batch.x
        posterior, prior = model.posterior(model.corruption(x)), model.prior()
        return bound_loss(w, step, elbo_terms(x, posterior, prior, model.likelihood, w.samples,
                                              w.estimator))


class IWAE(Objective):
    """The K-sample bound log mean_k p(x|z_k) (p(z_k) / q(z_k|x))^w, weighted and floored as
    the ELBO (the floor added as a correction); ``bound`` reports it at w = 1."""

    def forward(self, model: LatentModel, batch: Examples, step: Step
                ) -> tuple[torch.Tensor, Metrics]:
        posterior, prior = model.posterior(model.corruption(batch.x)), model.prior()
        z = posterior.rsample((self.config.iw_samples,))  # (K, B, D)
        log_px_z = model.likelihood(z).log_prob(batch.x)
        terms = ElboTerms(log_px_z.mean(0), {"z": kl_per_dimension(posterior, prior, z)})
        return bound_loss(self.weighting, step, terms,
                          (log_px_z, prior.log_prob(z) - posterior.log_prob(z)))


def _log_joint(model: LatentModel, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return model.prior().log_prob(z) + model.likelihood(z).log_prob(x)


class WakeSleep(Objective):
    """-(mean wake + mean sleep): wake, log p(x, z) at z ~ q(z|x) drawn without
    reparameterisation (gradients reach p only); sleep, log q(z'|x') at a dream z' ~ p(z),
    x' ~ p(x|z') (gradients reach q only)."""

    bound = False

    def forward(self, model: LatentModel, batch: Examples, step: Step
                ) -> tuple[torch.Tensor, Metrics]:
        x = batch.x
        posterior, prior = model.posterior(x), model.prior()
        z = posterior.sample()  # (B, D), no path back to the encoder
        wake = _log_joint(model, x, z)
        with torch.no_grad():
            dream_z = prior.sample((len(x),))
            dream_x = model.likelihood(dream_z).sample()  # a sample, not the decoder's mean
        sleep = model.posterior(dream_x).log_prob(dream_z)
        loss = -(wake.mean() + sleep.mean())
        # the ELBO of the current q and p, from the wake phase's z: no extra decoder pass
        terms = ElboTerms(wake - prior.log_prob(z),
                          {"z": kl_per_dimension(posterior, prior, z.unsqueeze(0))})
        return loss, {**elbo_metrics(loss, terms), "wake": wake.mean().detach(),
                      "sleep": sleep.mean().detach()}


class MCEM(Objective):
    """Monte Carlo EM. Each training example keeps a persistent HMC chain (``chains`` (N, D))
    targeting p(z|x) ∝ p(z) p(x|z) under the current decoder; a step runs ``hmc_transitions``
    transitions of the batch's chains (the shared step size ``hmc_step`` tuned to a mean
    acceptance of ``hmc_target_accept``: a chain is visited once per epoch, too rarely to tune
    its own), then maximises log p(x, z) at their states (gradients reach p only) and fits
    q(z|x) to the same states by maximum likelihood, which changes nothing of the EM updates
    of p but gives an ELBO to report and a proposal for importance sampling."""

    bound = False
    per_example = ("chains",)
    chains: torch.Tensor
    hmc_step: torch.Tensor

    def __init__(self, config: MCEMConfig, weighting: Weighting, train_size: int | None,
                 latent_dim: int) -> None:
        super().__init__(config, weighting, train_size, latent_dim)
        if train_size is None:
            raise ConfigError("objective mcem keeps one HMC chain per training example and"
                              " needs the training set's size")
        self.register_buffer("chains", torch.randn(train_size, latent_dim))
        self.register_buffer("hmc_step", torch.tensor(config.hmc_step_size))

    def forward(self, model: LatentModel, batch: Examples, step: Step
                ) -> tuple[torch.Tensor, Metrics]:
        if batch.indices is None:
            raise ConfigError("objective mcem needs each example's index in the training split"
                              " (batch.indices) to find its HMC chain")
        z, accept = self._advance(model, batch.x, batch.indices)
        posterior = model.posterior(batch.x)
        log_joint = _log_joint(model, batch.x, z)
        fit_q = posterior.log_prob(z)
        loss = -(log_joint.mean() + fit_q.mean())
        with torch.no_grad():
            terms = elbo_terms(batch.x, posterior, model.prior(), model.likelihood)
        return loss, {**elbo_metrics(loss, terms), "log_joint": log_joint.mean().detach(),
                      "accept": accept.mean()}

    def _advance(self, model: LatentModel, x: torch.Tensor, indices: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the chains of examples ``indices``, adapting the step size, and store them;
        returns (states (B, D), each chain's mean acceptance probability (B,))."""
        config = self.config
        chains, step_size = self.chains[indices], self.hmc_step
        accept = torch.zeros(len(indices), device=chains.device)
        # accept/reject compares energies: in float32 even inside training's bf16 autocast
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(chains.dtype)
            for _ in range(config.hmc_transitions):
                step = hmc_step(lambda z: _log_joint(model, x, z), chains, step_size,
                                config.hmc_leapfrog_steps)
                step_size = adapt_step_size(step_size, step.accept_prob.mean(),
                                            config.hmc_target_accept, config.hmc_adapt_rate)
                chains, accept = step.z, accept + step.accept_prob
        self.chains[indices] = chains
        self.hmc_step.copy_(step_size)
        return chains, accept / config.hmc_transitions


OBJECTIVES: dict[str, tuple[type[Any], type[Objective]]] = {
    "elbo": (ElboConfig, Elbo),
    "iwae": (IWAEConfig, IWAE),
    "wake-sleep": (WakeSleepConfig, WakeSleep),
    "mcem": (MCEMConfig, MCEM),
}
"""kind → (its config, its objective): the ``objective`` key's choices."""
