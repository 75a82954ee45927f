"""The paper's baselines as objectives of the one VAE: wake-sleep (Hinton et al. 1995) and Monte
Carlo EM with HMC. Where the generative model is linear-Gaussian the exact posterior is known,
and the sleep phase and the HMC chains are checked against it."""

import math

import pytest
import tomllib
import torch

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, config_from_dict, dump_toml, model_config
from aevb.data.splits import Split
from aevb.engine.checkpoint import checkpoint_path, header_spec, load_weights, read_checkpoint
from aevb.engine.loop import train, validate
from aevb.errors import ConfigError
from aevb.inference.training import ElboConfig, IWAEConfig, MCEMConfig
from aevb.models import Batch, DataSpec, PerExampleState, Step, build_model
from aevb.nn.nets import MLPConfig

STEP = Step(0, 1)


def vae(spec: DataSpec, seed: int = 0, **values):
    torch.manual_seed(seed)
    values = {"latent_dim": 2, "net": MLPConfig((8,)), **values}
    return build_model(model_config("vae", **values), spec)


def binary_data(n: int, dim: int, seed: int = 1) -> torch.Tensor:
    """Digits-like binary data: noisy copies (10 % of pixels flipped) of 3 random prototypes."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(3, dim, generator=generator) < 0.4).float()
    x = prototypes[torch.randint(0, 3, (n,), generator=generator)]
    flip = torch.rand(x.shape, generator=generator) < 0.1
    return torch.where(flip, 1 - x, x)


def encoder_parameters(model):
    return [*model.encoder.parameters(), *model.posterior_head.parameters()]


def generative_parameters(model):
    return [p for p in [*model.decoder.parameters(), *model.likelihood_head.parameters()]
            if p.requires_grad]


# --- a linear-Gaussian generative model: p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I) ---

SIGMA = 0.5


def linear_gaussian(objective, seed: int = 0, **values):
    """A VAE with linear nets (hidden = ()) whose decoder is set to a fixed W, b and frozen.

    Exact posterior: S = (I + W^T W / sigma^2)^-1, mean S W^T (x - b) / sigma^2. W is chosen
    so that the posterior is strongly correlated: its marginal variances diag(S) then differ
    from the conditional ones 1 / diag(S^-1) that a diagonal q fitted by KL(q || p) would give.
    """
    w = torch.tensor([[1.0, 0.8], [0.6, 0.9], [0.2, -0.3], [0.9, 1.0]])
    b = torch.tensor([0.5, -0.5, 0.0, 1.0])
    model = vae(DataSpec((4,), "real", train_size=values.pop("train_size", None)), seed,
                likelihood="gaussian-fixed", sigma=SIGMA, net=MLPConfig(()),
                objective=objective, **values)
    with torch.no_grad():
        model.likelihood_head.linear.weight.copy_(w)
        model.likelihood_head.linear.bias.copy_(b)
    for p in [*model.decoder.parameters(), *model.likelihood_head.parameters()]:
        p.requires_grad_(False)
    precision = torch.eye(2) + w.T @ w / SIGMA**2
    covariance = torch.linalg.inv(precision)
    return model, w, b, covariance, precision


def exact_posterior_mean(x, w, b, covariance):
    return (x - b) @ w @ covariance / SIGMA**2  # S symmetric: (S W^T (x-b))^T = (x-b)^T W S


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["wake-sleep", "mcem"])
@pytest.mark.parametrize("values", [{"beta": 2.0}, {"kl_warmup": 0.1}, {"free_bits": 0.5},
                                    {"corruption": {"noise": "masking"}}])
def test_objectives_that_are_not_bounds_refuse_bound_weighting_and_corruption(objective, values):
    from aevb.nn.corruption import NoiseConfig

    if "corruption" in values:
        values = {"corruption": NoiseConfig(**values["corruption"])}
    with pytest.raises(ConfigError, match="not by a variational bound"):
        model_config("vae", objective=objective, **values)
    model_config("vae", objective="elbo", **values)  # fine for the bound itself


@pytest.mark.parametrize("values", [{"hmc_target_accept": 1.0}, {"hmc_target_accept": 0.0},
                                    {"hmc_leapfrog_steps": 0}, {"hmc_step_size": 0.0},
                                    {"hmc_transitions": 0}, {"hmc_adapt_rate": -1.0},
                                    {"objective": "hmc"}])
def test_hmc_keys_are_validated(values):
    with pytest.raises(ConfigError):
        model_config("vae", **values) if "objective" in values else MCEMConfig(**values)


def test_mcem_needs_the_training_set_size_and_the_batch_indices():
    with pytest.raises(ConfigError, match="needs the training set's size"):
        vae(DataSpec((6,), "binary"), objective="mcem")
    model = vae(DataSpec((6,), "binary", train_size=4), objective="mcem")
    with pytest.raises(ConfigError, match="batch.indices"):
        model.loss(Batch(binary_data(4, 6)), STEP)
    # other objectives keep no per-example state
    assert "chains" not in vae(DataSpec((6,), "binary", train_size=4)).state_dict()


def test_mcem_state_is_the_objectives_and_is_saved_under_todays_names():
    """The chains and the step size are the MCEM objective's (``model.objective``), declared
    as the model's per-example state; a checkpoint of today's format (tensors model.chains,
    model.hmc_step) loads into them, and a model's state is saved under those names."""
    spec = DataSpec((6,), "binary", train_size=8)
    model = vae(spec, objective="mcem")
    assert isinstance(model, PerExampleState)
    assert [t.data_ptr() for t in model.per_example_state()] == [
        model.objective.chains.data_ptr()]
    assert vae(spec).per_example_state() == []  # the elbo keeps none
    old = {f"model.{k}": v for k, v in model.state_dict().items()}
    old["model.chains"], old["model.hmc_step"] = torch.randn(8, 2), torch.tensor(0.37)
    assert {"model.chains", "model.hmc_step"} <= old.keys()
    assert not any("objective" in k for k in old)
    copy = vae(spec, seed=3, objective="mcem")
    load_weights(copy, old, "old.safetensors")
    assert torch.equal(copy.objective.chains, old["model.chains"])
    assert copy.objective.hmc_step.item() == pytest.approx(0.37)


def test_a_config_of_todays_format_reads_its_objective_and_hmc_keys():
    flat = {"name": "vae", "objective": "mcem", "iw_samples": 5, "hmc_step_size": 0.3,
            "hmc_leapfrog_steps": 4, "hmc_target_accept": 0.8, "hmc_adapt_rate": 0.05,
            "hmc_transitions": 2, "beta": 1.0}
    config = config_from_dict({"model": flat}).model
    assert config.objective == MCEMConfig(hmc_leapfrog_steps=4, hmc_step_size=0.3,
                                          hmc_target_accept=0.8, hmc_transitions=2)
    elbo = config_from_dict({"model": {**flat, "objective": "elbo"}}).model
    assert elbo.objective == ElboConfig()  # the hmc keys it never read are dropped
    assert config_from_dict({"model": {**flat, "objective": "iwae"}}).model.objective == (
        IWAEConfig(iw_samples=5))
    # today's format is the one written now: it reads back as itself
    again = apply_overrides(Config(), {"objective": "mcem", "hmc_step_size": "0.2"})
    assert config_from_dict(tomllib.loads(dump_toml(again))) == again
    assert again.model.objective.hmc_step_size == 0.2


def test_header_spec_reads_the_training_set_size_and_old_headers_without_it():
    old = {"data_spec": {"event_shape": [1, 8, 8], "kind": "binary", "num_classes": 10,
                         "condition_dim": None}}
    assert header_spec(old) == DataSpec((1, 8, 8), "binary", 10)
    assert header_spec(old).train_size is None
    new = {"data_spec": {**old["data_spec"], "train_size": 1000}}
    assert header_spec(new) == DataSpec((1, 8, 8), "binary", 10, None, 1000)


# --- log p(x, z) -------------------------------------------------------------------------------


def test_log_joint_is_the_prior_plus_the_likelihood_for_any_leading_shape():
    model = vae(DataSpec((6,), "binary"))
    x, z = binary_data(5, 6), torch.randn(3, 5, 2)
    expected = (torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
                + model.likelihood(z).log_prob(x))
    torch.testing.assert_close(model.log_joint(x, z), expected)
    assert model.log_joint(x, z[0]).shape == (5,)


# --- wake-sleep --------------------------------------------------------------------------------


def test_wake_sleep_loss_is_wake_plus_sleep_and_each_phase_reaches_only_its_own_model():
    model = vae(DataSpec((6,), "binary"), objective="wake-sleep")
    x = binary_data(16, 6)
    torch.manual_seed(3)
    loss, metrics = model.loss(Batch(x), STEP)
    loss.backward()
    # the same draws, in the order the phases make them: z ~ q, z' ~ p(z), x' ~ p(x|z')
    torch.manual_seed(3)
    posterior = model.posterior(x)
    z = posterior.sample()
    dream_z = model.prior().sample((16,))
    dream_x = model.likelihood(dream_z).sample()
    wake = model.log_joint(x, z).mean()
    sleep = model.posterior(dream_x).log_prob(dream_z).mean()
    torch.testing.assert_close(loss, -(wake + sleep))
    torch.testing.assert_close(metrics["wake"], wake.detach())
    torch.testing.assert_close(metrics["sleep"], sleep.detach())
    # the wake term gives the encoder nothing; the sleep term gives the decoder nothing
    encoder, generative = encoder_parameters(model), generative_parameters(model)
    assert all(g is None for g in torch.autograd.grad(wake, encoder, allow_unused=True,
                                                      retain_graph=True))
    assert all(g is None for g in torch.autograd.grad(sleep, generative, allow_unused=True,
                                                      retain_graph=True))
    for p, g in zip(generative, torch.autograd.grad(-wake, generative), strict=True):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(encoder, torch.autograd.grad(-sleep, encoder), strict=True):
        torch.testing.assert_close(p.grad, g)
    # the reported ELBO is the true one of q and p: rec at the wake phase's z, analytic KL
    kl = torch.distributions.kl_divergence(posterior, model.prior())
    rec = model.likelihood(z).log_prob(x)
    torch.testing.assert_close(metrics["elbo"], (rec - kl).mean())
    torch.testing.assert_close(metrics["kl"], kl.mean())


def test_wake_steps_raise_log_p_x_z_at_fixed_codes_and_leave_the_encoder_alone():
    model = vae(DataSpec((6,), "binary"), objective="wake-sleep")
    x, z = binary_data(16, 6), torch.randn(16, 2, generator=torch.Generator().manual_seed(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = model.log_joint(x, z).mean().item()
    for _ in range(5):
        optimizer.zero_grad()
        (-model.log_joint(x, z).mean()).backward()
        optimizer.step()
    assert model.log_joint(x, z).mean().item() > before + 0.1
    assert all(p.grad is None for p in encoder_parameters(model))


def test_sleep_phase_fits_q_to_the_exact_posterior_of_a_linear_gaussian_model():
    """The sleep phase minimises E_p(x) KL(p(z|x) || q(z|x)), whose minimiser over diagonal
    Gaussians with a linear encoder is the exact posterior mean and the *marginal* posterior
    variances diag(S) (moment matching), not the 1 / diag(S^-1) of KL(q || p).

    Tolerance 0.05 on every mean and variance: the posterior's variances are 0.33 and 0.29
    (standard deviations ~0.55) and its means on held-out x are O(1); after 600 Adam steps on
    4096 fresh dreams each (lr decayed at the end) the worst of 200 held-out points was off
    by <= 0.035 in the mean and <= 0.015 in the variance over four seeds, while diag(S) and
    1 / diag(S^-1) differ by 0.2, so the test also tells the two KL directions apart.
    """
    model, w, b, covariance, precision = linear_gaussian("wake-sleep")
    marginal, conditional = covariance.diagonal(), 1 / precision.diagonal()
    assert (marginal - conditional).min() > 0.15
    steps = 600
    optimizer = torch.optim.Adam(encoder_parameters(model), lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, 4 * (1 - i / steps)) + 0.02)
    torch.manual_seed(5)
    x = torch.randn(4096, 4)  # the wake phase's data (p is frozen); as many dreams are drawn
    for _ in range(steps):
        optimizer.zero_grad()
        loss, _ = model.loss(Batch(x), STEP)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        held_out = model.likelihood(model.prior().sample((200,))).sample()
        q = model.posterior(held_out)
    exact = exact_posterior_mean(held_out, w, b, covariance)
    assert (q.mean - exact).abs().max() < 0.05
    assert (q.variance - marginal).abs().max() < 0.05


# --- Monte Carlo EM ----------------------------------------------------------------------------


def test_mcem_chains_move_stay_finite_and_adapt_their_step_size_toward_the_target():
    spec = DataSpec((6,), "binary", train_size=32)
    model = vae(spec, objective=MCEMConfig(hmc_step_size=3.0, hmc_adapt_rate=0.3))
    x, indices = binary_data(32, 6), torch.arange(32)
    start = model.objective.chains.clone()
    accepts = []
    for _ in range(60):
        _, metrics = model.loss(Batch(x, indices=indices), STEP)
        accepts.append(metrics["accept"].item())
    assert torch.isfinite(model.objective.chains).all()
    assert (model.objective.chains - start).norm(dim=-1).min() > 0  # every chain has moved
    first, last = accepts[0], sum(accepts[-20:]) / 20
    assert first < 0.7  # a step size of 3 is far too large here
    assert abs(last - 0.9) < 0.06 and abs(last - 0.9) < abs(first - 0.9)
    assert model.objective.hmc_step < 3.0  # the adapted size is stored


def test_mcem_gradients_reach_p_from_the_m_step_and_q_from_its_fit_to_the_chains():
    spec = DataSpec((6,), "binary", train_size=8)
    model = vae(spec, objective="mcem")
    x, indices = binary_data(8, 6), torch.arange(8)
    loss, metrics = model.loss(Batch(x, indices=indices), STEP)
    # HMC took its gradients with respect to z only
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    z = model.objective.chains  # the states the step moved the chains to
    log_joint = model.log_joint(x, z).mean()
    fit_q = model.posterior(x).log_prob(z).mean()
    torch.testing.assert_close(loss, -(log_joint + fit_q))
    torch.testing.assert_close(metrics["log_joint"], log_joint.detach())
    generative, encoder = generative_parameters(model), encoder_parameters(model)
    for p, g in zip(generative, torch.autograd.grad(-log_joint, generative), strict=True):
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(encoder, torch.autograd.grad(-fit_q, encoder), strict=True):
        torch.testing.assert_close(p.grad, g)
    assert 0 <= metrics["accept"] <= 1
    assert {"elbo", "rec", "kl", "loss"} <= metrics.keys()


def test_mcem_runs_hmc_in_float32_under_bf16_autocast():
    spec = DataSpec((6,), "binary", train_size=8)
    model = vae(spec, objective="mcem")
    with torch.autocast("cpu", torch.bfloat16):
        loss, metrics = model.loss(Batch(binary_data(8, 6), indices=torch.arange(8)), STEP)
    assert model.objective.chains.dtype == torch.float32 and torch.isfinite(model.objective.chains).all()
    assert torch.isfinite(loss) and metrics["accept"] > 0


def test_validation_reports_the_elbo_and_leaves_the_chains_alone():
    spec = DataSpec((6,), "binary", train_size=16)
    for objective in ("wake-sleep", "mcem"):
        model = vae(spec, objective=objective)
        chains = {k: v.clone() for k, v in model.state_dict().items() if "chain" in k}
        metrics = validate(model, Split(binary_data(16, 6, seed=2)), 5, STEP)
        assert metrics.keys() == {"loss", "elbo", "rec", "kl"}
        assert metrics["loss"] == pytest.approx(-metrics["elbo"], rel=1e-5)
        assert model.training  # validate restores the mode
        for name, value in chains.items():
            assert torch.equal(model.state_dict()[name], value)


def test_chains_and_step_sizes_round_trip_through_the_state_dict_and_resume_exactly():
    spec = DataSpec((6,), "binary", train_size=8)
    model = vae(spec, objective="mcem")
    x, indices = binary_data(8, 6), torch.arange(8)
    model.loss(Batch(x, indices=indices), STEP)
    state = model.state_dict()
    assert state["chains"].shape == (8, 2) and state["hmc_step"].shape == ()
    copy = vae(spec, seed=9, objective="mcem")
    assert not torch.equal(copy.objective.chains, model.objective.chains)
    copy.load_state_dict(state)
    torch.manual_seed(6)
    loss, _ = model.loss(Batch(x, indices=indices), STEP)
    torch.manual_seed(6)
    loss_copy, _ = copy.loss(Batch(x, indices=indices), STEP)
    assert torch.equal(loss, loss_copy)
    assert torch.equal(model.objective.chains, copy.objective.chains)
    assert torch.equal(model.objective.hmc_step, copy.objective.hmc_step)


def test_mcem_chains_sample_the_exact_posterior_of_a_linear_gaussian_model():
    """With p frozen, the chains' states over many training steps are draws from p(z|x): their
    mean matches S W^T (x - b) / sigma^2 within 4 Monte Carlo standard errors (batch means
    over 10 batches of the trace, so autocorrelation is accounted for) plus 0.02, and their
    variance matches diag(S) within 20 %. The data sit far from the prior so that the
    posterior means (|.| ~ 1-3) are far from where the chains start."""
    n = 6
    model, w, b, covariance, _ = linear_gaussian(MCEMConfig(hmc_transitions=5, hmc_adapt_rate=0.2),
                                                 train_size=n)
    torch.manual_seed(7)
    x = 2.5 * torch.randn(n, 4)
    trace = []
    for step in range(140):
        model.loss(Batch(x, indices=torch.arange(n)), STEP)
        if step >= 40:  # burn-in, and the step sizes settle
            trace.append(model.objective.chains.clone())
    draws = torch.stack(trace)  # (100, n, 2), each 5 transitions apart
    exact = exact_posterior_mean(x, w, b, covariance)
    assert exact.abs().max() > 1.0
    batch_means = draws.reshape(10, 10, n, 2).mean(1)
    standard_error = batch_means.std(0) / math.sqrt(10)
    assert ((draws.mean(0) - exact).abs() < 4 * standard_error + 0.02).all()
    variance = draws.var(0).mean(0)  # pooled over the chains: every x has the same S
    torch.testing.assert_close(variance, covariance.diagonal(), rtol=0.2, atol=0.0)


# --- short runs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["wake-sleep", "mcem"])
def test_a_short_run_raises_the_validation_elbo(objective):
    n = 64
    spec = DataSpec((1, 8, 8), "binary", train_size=n)
    model = vae(spec, objective=objective, net=MLPConfig((16,)))
    data = binary_data(n + 32, 64).reshape(-1, 1, 8, 8)
    train_x, valid = data[:n], Split(data[n:])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    before = validate(model, valid, 32, STEP)["elbo"]
    losses = []
    for step in range(150):
        indices = torch.randperm(n)[:32]
        optimizer.zero_grad()
        loss, _ = model.loss(Batch(train_x[indices], indices=indices), Step(step, 150))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = validate(model, valid, 32, STEP)["elbo"]
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
    assert after > before + 5.0  # nats per example; the start is near 64 log 2 = 44 nats


def test_an_mcem_run_through_the_loop_keeps_its_chains_and_resumes_exactly(tmp_path):
    """The loop gives the model the training split's size; the chains go into the checkpoint
    with the data spec, and a run resumed after one epoch ends where an unbroken one does."""
    def config(epochs: int) -> Config:
        return apply_overrides(Config(), {
            "dataset": "digits", "latent_dim": "2", "hidden": "16", "precision": "float32",
            "threads": "1", "batch_size": "100", "objective": "mcem", "epochs": str(epochs)})

    whole = train(config(2), tmp_path / "whole", progress=False)
    train(config(1), tmp_path / "broken", progress=False)
    train(config(2), tmp_path / "broken", resume=True, progress=False)
    tensors, header = read_checkpoint(checkpoint_path(tmp_path / "whole", "last"))
    resumed, _ = read_checkpoint(checkpoint_path(tmp_path / "broken", "last"))
    size = len(whole.dataset.train)
    assert header["data_spec"]["train_size"] == size
    assert tensors["model.chains"].shape == (size, 2)
    assert tensors["model.hmc_step"].item() != 0.1
    for name, value in tensors.items():
        if name.startswith("model."):
            assert torch.equal(value, resumed[name]), name
    assert {"train_accept", "train_log_joint", "valid_elbo"} <= whole.history[-1].keys()
