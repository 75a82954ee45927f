"""The model checks: what a model must do to get aevb's loop, resume, evaluation, pictures,
report and CLI; run on a model of your own (``check_model(MyVAE)``, or one pytest test per
check with ``parametrize_with_checks``) as on each built-in one (``docs/extending.md``).

Each check trains the model briefly on scikit-learn's 8×8 digits (no download) with the small
settings of ``ModelCase``. A class that is not registered is registered under its config's
name while it is checked. The checks test abilities (``Encoder``, ``Generative``,
``Likelihood``, ...), never names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, config_keys, model_keys
from aevb.data import load_dataset
from aevb.data.splits import Dataset
from aevb.engine.checkpoint import load_model
from aevb.engine.loop import make_optimizer, train
from aevb.errors import ConfigError
from aevb.models import (
    MODELS,
    Batch,
    ClosedForm,
    Conditional,
    Corrupting,
    DataSpec,
    Encoder,
    Generative,
    Likelihood,
    Model,
    Posterior,
    Step,
    build_model,
)

__all__ = ["CHECKS", "ModelCase", "ModelCheckError", "check_model", "model_checks",
           "parametrize_with_checks"]

STEPS = 60
"""Gradient steps of the learning checks, on one minibatch of 64 digits."""


class ModelCheckError(AssertionError):
    """A model failed one or more checks; the message names each check and says why."""


@dataclass(frozen=True)
class ModelCase:
    """A model to check: its class or registered name, and config overrides beyond the small
    defaults (as on the command line: ``{"latent_dims": "4,3"}``); ``id`` names it in test
    ids (default: the model's name)."""

    model: str | type[Model]
    overrides: dict[str, str] = field(default_factory=dict)
    id: str | None = None

    @property
    def name(self) -> str:
        if isinstance(self.model, str):
            return self.model
        return str(self.model.config_class().name)

    @property
    def label(self) -> str:
        return self.id or self.name

    def config(self) -> Config:
        """The run's config: digits, 2 epochs, small nets, then ``overrides``."""
        cls = MODELS[self.name]
        keys = config_keys(cls.config_class)
        small = {"dataset": "digits", "model": self.name, "epochs": "2", "is_samples": "8",
                 "threads": "1"}
        if "latent_dim" in keys:
            small["latent_dim"] = "4"
        if any(key.endswith("hidden") for key in keys) and "net" not in self.overrides:
            small["hidden"] = "32"
        return apply_overrides(Config(), {**small, **self.overrides})


@dataclass
class _Trial:
    """What several checks look at: a model built from the case and trained STEPS steps on one
    minibatch, computed once."""

    case: ModelCase
    dataset: Dataset
    model: Model = field(init=False)
    batch: Batch = field(init=False)
    losses: list[float] = field(default_factory=list)
    metrics: list[dict[str, torch.Tensor]] = field(default_factory=list)
    reached: set[int] = field(default_factory=set)
    trainable: int = 0

    def __post_init__(self) -> None:
        torch.manual_seed(0)
        config = self.case.config()
        digits = self.dataset
        self.model = build_model(config.model, DataSpec(digits.event_shape, "binary",
                                                        digits.num_classes))
        index = torch.arange(64)
        labels = digits.train.y
        self.batch = Batch(digits.train.batch(index), None if labels is None else labels[index],
                           index)
        model, batch = self.model, self.batch
        if isinstance(model, ClosedForm):  # fitted in one go, not by gradient steps
            before = model.loss(batch, Step(0, 1))[0].item()
            model.fit_data(digits.train.values())
            self.losses = [before] * 5 + [model.loss(batch, Step(0, 1))[0].item()] * 5
            return
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.trainable = len(trainable)
        optimizer = make_optimizer(config.train, trainable)
        for step in range(STEPS):
            loss, metrics = model(batch, Step(step, STEPS))  # forward is the loss
            _require(loss.shape == () and bool(torch.isfinite(loss)),
                     f"the loss must be a finite scalar; step {step} gave {loss}")
            self.metrics.append(metrics)
            optimizer.zero_grad()
            loss.backward()
            self.reached |= {i for i, p in enumerate(trainable)
                             if p.grad is not None and bool(p.grad.any())}
            optimizer.step()
            self.losses.append(loss.item())


def _first(batch: Batch, n: int) -> Batch:
    return Batch(batch.x[:n], None if batch.y is None else batch.y[:n])


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ModelCheckError(message)


# -- the checks: each takes the case and a lazily built trial ---------------------------------

def check_config_is_documented(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """The model describes itself, owns a frozen config dataclass named for it, documents
    every key (for ``aevb models NAME``) and rejects an unknown one."""
    cls = MODELS[case.name]
    _require(bool(getattr(cls, "description", "")), "the class needs a one-line description")
    config = cls.config_class()
    _require(config.name == case.name, f"its config's name is {config.name!r}")
    try:
        config.name = "other"
        frozen = False
    except dataclasses.FrozenInstanceError:
        frozen = True
    _require(frozen, f"{cls.config_class.__name__} must be a frozen dataclass")
    undocumented = [key for key, _, doc in model_keys(case.name) if key != "name" and not doc]
    _require(not undocumented, f"keys without a docstring: {undocumented} (write a string"
                               " literal under each field)")
    try:
        apply_overrides(Config(), {"model": case.name, "no_such_key": "1"})
        rejected = False
    except ConfigError:
        rejected = True
    _require(rejected, "an unknown key must be a ConfigError")


def check_loss_and_metrics(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """``forward(batch, step)`` is ``loss``: a finite scalar and scalar metrics holding "loss"
    and the metric that picks the best checkpoint, each labelled in ``metric_names``."""
    t = trial()
    metric, mode = t.model.selection
    _require(mode in ("max", "min"), f"selection's mode must be max or min, got {mode!r}")
    for metrics in t.metrics[:1]:
        _require({"loss", metric} <= set(metrics),
                 f"the metrics {sorted(metrics)} must hold 'loss' and {metric!r}")
        _require(all(v.shape == () for v in metrics.values()), "every metric must be a scalar")
        unlabelled = set(metrics) - set(t.model.metric_names)
        _require(not unlabelled, f"metric_names must label {sorted(unlabelled)}")


def check_every_parameter_gets_a_gradient(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """Over the steps of training, each trainable parameter gets a nonzero gradient."""
    t = trial()
    if t.trainable:
        names = [n for n, p in t.model.named_parameters() if p.requires_grad]
        missed = [names[i] for i in range(t.trainable) if i not in t.reached]
        _require(not missed, f"no gradient reaches {missed[:5]}"
                             f"{' and more' if len(missed) > 5 else ''}")


def check_training_lowers_the_loss(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """60 steps on one minibatch bring the loss below 90 % of where it started (means of the
    first and last 5)."""
    losses = trial().losses
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    _require(last < 0.9 * first, f"the loss went from {first:.4g} to {last:.4g}")


def check_abilities_have_their_shapes(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """Each declared ability answers with the shapes the library reads: codes (B, code_dim),
    reconstructions like x, samples and decodings of the data's event shape, corruptions
    like x, a posterior whose mean is the code."""
    t = trial()
    model, x = t.model.eval(), t.batch.x[:5]
    batch, event_shape = Batch(x), tuple(x.shape[1:])
    with torch.no_grad():
        if not isinstance(model, Encoder):
            raise ModelCheckError("a model needs encode and reconstruct (aevb.models.Encoder)")
        code = model.encode(batch)
        _require(code.dim() == 2 and code.shape[0] == 5,
                 f"encode must give codes (B, code_dim), got {tuple(code.shape)}")
        code_dim = code.shape[1]
        _require(tuple(model.reconstruct(batch).shape) == tuple(x.shape),
                 "reconstruct must give x's shape")
        if isinstance(model, Generative):
            shape = tuple(model.sample(3).shape)
            _require(shape == (3, *event_shape), f"sample(3) gave {shape}")
            c = torch.zeros(2, 7, model.condition_dim) if isinstance(model, Conditional) else None
            shape = tuple(model.decode(torch.zeros(2, 7, code_dim), c).shape)
            _require(shape == (2, 7, *event_shape),
                     f"decode of codes (2, 7, {code_dim}) gave {shape}: any leading shape")
        if isinstance(model, Corrupting):
            _require(model.corruption(x).shape == x.shape, "corruption must keep x's shape")
        if isinstance(model, Posterior):
            posterior = model.posterior_of(batch)
            _require(bool(torch.allclose(posterior.mean, code, atol=1e-5)),
                     "the posterior's mean must be the code")
            _require(tuple(posterior.sample().shape) == (5, code_dim),
                     "a posterior draw must be shaped as a code")


def check_elbo_terms_are_per_example(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """A likelihood model's ELBO terms: reconstruction and ELBO (B,), each KL part (B, D),
    ELBO = rec - KL; ``log_marginal`` (B,) and finite."""
    t = trial()
    if not isinstance(t.model, Likelihood):
        return
    model, batch = t.model.eval(), _first(t.batch, 5)
    with torch.no_grad():
        terms = model.elbo_terms(batch)
        _require(tuple(terms.rec.shape) == (5,) and tuple(terms.elbo.shape) == (5,),
                 f"rec and elbo must be (B,) = (5,), got {tuple(terms.rec.shape)} and"
                 f" {tuple(terms.elbo.shape)}")
        bad = {k: tuple(v.shape) for k, v in terms.kl.items()
               if v.dim() != 2 or v.shape[0] != 5}
        _require(not bad, f"each KL part must be (B, D), got {bad}")
        _require(bool(torch.allclose(terms.elbo, terms.rec - terms.kl_total, atol=1e-4)),
                 "the ELBO must be rec - KL")
        log_px = model.log_marginal(batch, 7)
        _require(tuple(log_px.shape) == (5,) and bool(torch.isfinite(log_px).all()),
                 f"log_marginal must be finite, (B,) = (5,), got {tuple(log_px.shape)}")


def check_log_marginal_is_above_the_elbo(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """Where there is a likelihood, the importance-sampled log p(x) (K = 500) is not below the
    ELBO (mean of 500 draws) on 32 examples: the mean gap is above -3 standard errors."""
    t = trial()
    if not isinstance(t.model, Likelihood):
        return
    model, batch = t.model.eval(), _first(t.batch, 32)
    with torch.no_grad():
        torch.manual_seed(1)
        elbo = model.elbo_terms(batch, 500).elbo  # (B,), each the mean of 500 draws
        log_px = model.log_marginal(batch, 500)
    gap = log_px - elbo
    error = gap.std() / 32**0.5
    _require(float(gap.mean()) > -3 * float(error),
             f"log p(x) is {float(-gap.mean()):.3g} nats below the ELBO on average (s.e."
             f" {float(error):.2g}): log_marginal or elbo_terms is wrong")


def check_checkpoint_round_trip(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """Two epochs through the one loop improve the validation metric that picks the best
    checkpoint, and the last checkpoint loads back with equal weights."""
    with tempfile.TemporaryDirectory(prefix="aevb-check-") as tmp:
        run = Path(tmp) / "run"
        result = train(case.config(), run, dataset=trial().dataset, progress=False)
        if not (isinstance(result.model, ClosedForm) and not list(result.model.parameters())):
            metric, mode = result.model.selection
            first = result.history[0][f"valid_{metric}"]
            last = result.history[-1][f"valid_{metric}"]
            _require(last > first if mode == "max" else last < first,
                     f"valid_{metric} went from {first:.4g} to {last:.4g} in two epochs")
        _, loaded, _ = load_model(run, "last")
        state = loaded.state_dict()
        differ = [k for k, v in result.model.state_dict().items()
                  if k not in state or not torch.equal(v, state[k])]
        _require(not differ, f"the loaded weights differ in {differ[:5]}")


def check_resume_is_bit_exact(case: ModelCase, trial: Callable[[], _Trial]) -> None:
    """One epoch, then ``--resume`` to two, equals two epochs in one go, weight for weight."""
    config = case.config()
    one = apply_overrides(config, {"epochs": "1"})
    with tempfile.TemporaryDirectory(prefix="aevb-check-") as tmp:
        straight = train(config, Path(tmp) / "straight", dataset=trial().dataset,
                         progress=False)
        train(one, Path(tmp) / "split", dataset=trial().dataset, progress=False)
        resumed = train(config, Path(tmp) / "split", resume=True, dataset=trial().dataset,
                        progress=False)
    state = resumed.model.state_dict()
    differ = [k for k, v in straight.model.state_dict().items() if not torch.equal(v, state[k])]
    _require(not differ, f"a resumed run differs from an uninterrupted one in {differ[:5]}")


CHECKS: dict[str, Callable[[ModelCase, Callable[[], _Trial]], None]] = {
    "config_is_documented": check_config_is_documented,
    "loss_and_metrics": check_loss_and_metrics,
    "every_parameter_gets_a_gradient": check_every_parameter_gets_a_gradient,
    "training_lowers_the_loss": check_training_lowers_the_loss,
    "abilities_have_their_shapes": check_abilities_have_their_shapes,
    "elbo_terms_are_per_example": check_elbo_terms_are_per_example,
    "log_marginal_is_above_the_elbo": check_log_marginal_is_above_the_elbo,
    "checkpoint_round_trip": check_checkpoint_round_trip,
    "resume_is_bit_exact": check_resume_is_bit_exact,
}
"""Every check by name, in the order ``check_model`` runs them."""


@functools.cache
def _digits() -> Dataset:
    return load_dataset(ModelCase("vae").config().data)


@contextlib.contextmanager
def _registered(case: ModelCase) -> Iterator[None]:
    """A class not in the registry is registered under its config's name while checked."""
    if isinstance(case.model, str) or case.name in MODELS:
        yield
        return
    with MODELS.temporarily(case.name, case.model):
        yield


def _as_case(model: str | type[Model] | ModelCase) -> ModelCase:
    return model if isinstance(model, ModelCase) else ModelCase(model)


def model_checks(model: str | type[Model] | ModelCase
                 ) -> list[tuple[str, Callable[[], None]]]:
    """(name, check) for every check of ``model``; calling a check runs it (raising a
    ModelCheckError that names it), the checks of one model sharing one trained trial."""
    case = _as_case(model)
    trial: list[_Trial] = []

    def shared() -> _Trial:
        if not trial:
            trial.append(_Trial(case, _digits()))
        return trial[0]

    def runner(name: str, check: Callable[..., None]) -> Callable[[], None]:
        def run() -> None:
            with _registered(case), torch.random.fork_rng():
                try:
                    check(case, shared)
                except ModelCheckError as error:
                    raise ModelCheckError(f"{case.label}: check {name} failed: {error}"
                                          ) from None
                except Exception as error:  # a model that crashes fails the check it is in
                    raise ModelCheckError(f"{case.label}: check {name} failed: it raised"
                                          f" {type(error).__name__}: {error}") from error
        run.__name__ = name
        return run

    return [(name, runner(name, check)) for name, check in CHECKS.items()]


def check_model(model: str | type[Model] | ModelCase, checks: Sequence[str] | None = None
                ) -> None:
    """Run every check (or those named) on ``model`` (a class, a registered name or a
    ``ModelCase``); one ModelCheckError lists each check that failed and why."""
    unknown = sorted(set(checks or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown} (known: {', '.join(CHECKS)})")
    failures = []
    for name, run in model_checks(model):
        if checks is None or name in checks:
            try:
                run()
            except ModelCheckError as error:
                failures.append(str(error))
    if failures:
        raise ModelCheckError("\n".join(failures))


def parametrize_with_checks(models: Sequence[str | type[Model] | ModelCase]) -> Any:
    """A pytest decorator: one test per (model, check), with the id ``model-check``, each
    given its check as the argument ``check`` (call it). As scikit-learn's
    ``parametrize_with_checks``."""
    import pytest  # only where tests run

    params = [pytest.param(run, id=f"{_as_case(m).label}-{name}")
              for m in models for name, run in model_checks(m)]
    return pytest.mark.parametrize("check", params)
