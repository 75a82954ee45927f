"""The one training loop: learning, checkpoints, exact resume, and bad input."""

import json
import math

import pytest
import torch

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine import device as engine_device
from aevb.engine import loop as training
from aevb.engine.checkpoint import checkpoint_path, load_model, read_checkpoint
from aevb.engine.device import resolve_precision
from aevb.engine.loop import make_optimizer, train
from aevb.errors import AevbError, CheckpointError, ConfigError
from aevb.models import Batch, DataSpec, Step, build_model

SMALL = {"dataset": "digits", "hidden": "32", "latent_dim": "3", "batch_size": "50",
         "is_samples": "20"}


def small_config(**overrides) -> Config:
    return apply_overrides(Config(), {**SMALL, **{k: str(v) for k, v in overrides.items()}})


def test_training_raises_the_validation_elbo(tmp_path):
    result = train(small_config(epochs=6), tmp_path / "run", progress=False)
    elbos = [row["valid_elbo"] for row in result.history]
    assert len(elbos) == 6
    assert elbos[-1] > elbos[0] + 3.0
    assert all(row["train_elbo"] == -row["train_loss"] for row in result.history)
    assert result.best_epoch == max(range(6), key=lambda i: elbos[i]) + 1


def test_checkpoint_round_trip_is_exact(tmp_path):
    result = train(small_config(epochs=1), tmp_path / "run", progress=False)
    _, model, header = load_model(tmp_path / "run", "last")
    for (name, a), (_, b) in zip(result.model.state_dict().items(), model.state_dict().items(),
                                   strict=True):
        assert torch.equal(a, b), name
    assert header["epoch"] == 1 and header["step"] == 26
    sidecar = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert sidecar["config"]["model"]["latent_dim"] == 3
    tensors, _ = read_checkpoint(checkpoint_path(tmp_path / "run", "last"))
    assert any(k.startswith("optim.") for k in tensors)
    assert {"rng.torch", "rng.data"} <= set(tensors)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight = train(small_config(epochs=4), tmp_path / "straight", progress=False)
    train(small_config(epochs=2), tmp_path / "split", progress=False)
    resumed = train(small_config(epochs=4), tmp_path / "split", resume=True, progress=False)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(),
                                 resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]


def test_budget_in_training_samples(tmp_path):
    result = train(small_config(train_samples=300), tmp_path / "run", progress=False)
    assert result.history[-1]["step"] == 6  # 300 samples / M=50
    assert len(result.history) == 1


def test_early_stopping_with_patience(tmp_path, monkeypatch):
    # a VAE picks its best checkpoint by the validation ELBO (higher is better)
    elbos = iter([-5.0, -4.0, -4.5, -4.6, -3.0, -2.0])
    monkeypatch.setattr("aevb.engine.loop.validate", lambda *a, **k: {"elbo": next(elbos)})
    result = train(small_config(epochs=6, patience=2), tmp_path / "run", progress=False)
    # Best at epoch 2, no better in epochs 3 and 4: stop there.
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 2
    assert read_checkpoint(checkpoint_path(tmp_path / "run", "best"))[1]["epoch"] == 2


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path):
    train(small_config(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        train(small_config(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(small_config(epochs=1), tmp_path / "empty", resume=True, progress=False)


def test_resume_refuses_a_different_model(tmp_path):
    train(small_config(epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="latent_dim"):
        train(small_config(epochs=2, latent_dim=4), tmp_path / "run", resume=True, progress=False)


def test_unwritable_run_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match="not writable"):
        train(small_config(epochs=1), blocker / "run", progress=False)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no run directory"):
        load_model(tmp_path / "nothing")
    train(small_config(epochs=1), tmp_path / "run", progress=False)
    path = checkpoint_path(tmp_path / "run", "best")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "run")
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "run")


def test_an_interrupted_write_leaves_the_last_checkpoint_loadable(tmp_path, monkeypatch):
    train(small_config(epochs=1), tmp_path / "run", progress=False)
    before = checkpoint_path(tmp_path / "run", "last").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed in the middle of writing

    monkeypatch.setattr("aevb.engine.checkpoint.safetensors_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(epochs=2), tmp_path / "run", resume=True, progress=False)
    assert checkpoint_path(tmp_path / "run", "last").read_bytes() == before
    leftovers = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert sorted(leftovers) == ["best.json", "best.safetensors", "last.json", "last.safetensors"]
    load_model(tmp_path / "run", "last")


def test_bernoulli_decoder_refuses_data_outside_zero_one(tmp_path):
    x = torch.linspace(-1, 2, 40 * 6).reshape(40, 6).numpy()
    path = tmp_path / "real.npy"
    import numpy as np

    np.save(path, x)
    config = apply_overrides(Config(), {"dataset": str(path), "binarize": "none",
                                        "hidden": "8", "latent_dim": "2", "epochs": "1"})
    with pytest.raises(AevbError, match="bernoulli"):
        train(config, tmp_path / "run", progress=False)
    gaussian = apply_overrides(config, {"likelihood": "gaussian-learned", "batch_size": "10"})
    result = train(gaussian, tmp_path / "run2", progress=False)
    assert math.isfinite(result.history[0]["valid_elbo"])


def test_divergence_is_reported_not_hidden(tmp_path):
    with pytest.raises(AevbError, match="diverged"):
        train(small_config(epochs=3, lr=1e6, optimizer="sgd"), tmp_path / "run", progress=False)


def test_fused_optimizers_take_the_same_steps_as_the_reference_ones():
    for name in ("adam", "adagrad", "sgd"):
        config = small_config(optimizer=name, weight_decay=0.01).train
        torch.manual_seed(0)
        fused, reference = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
        reference.load_state_dict(fused.state_dict())
        fast = make_optimizer(config, fused.parameters())
        slow = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[
            name](reference.parameters(), lr=config.lr, weight_decay=0.01, foreach=False)
        assert fast.defaults["fused"] is True, name
        for _ in range(5):
            x = torch.randn(8, 6)
            for module, optimizer in ((fused, fast), (reference, slow)):
                optimizer.zero_grad()
                module(x).pow(2).sum().backward()
                optimizer.step()
        for a, b in zip(fused.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_precision_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("float32", cpu) == torch.float32
    assert resolve_precision("bfloat16", cpu) == torch.bfloat16
    for pays, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(engine_device, "bf16_matmuls_pay", lambda pays=pays: pays)
        assert resolve_precision("auto", cpu) == dtype
        assert resolve_precision("auto", torch.device("meta")) == torch.float32  # not a CPU


def test_bf16_needs_native_units_and_a_measured_gain(monkeypatch):
    assert isinstance(engine_device.bf16_matmuls_pay(), bool)  # timed on this CPU, once
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert engine_device.bf16_matmuls_pay.__wrapped__() is False  # no units: not even timed
    with pytest.raises(ConfigError, match="train.precision"):
        small_config(precision="float16")


def test_bfloat16_autocast_keeps_distributions_and_losses_in_float32():
    config = small_config()
    torch.manual_seed(0)
    model = build_model(config.model, DataSpec((1, 8, 8), "binary", 10))
    x = (torch.rand(32, 1, 8, 8) < 0.3).float()
    with torch.autocast("cpu", torch.bfloat16):
        posterior = model.posterior(x)
        likelihood = model.likelihood(posterior.rsample())
        torch.manual_seed(1)
        low, _ = model.loss(Batch(x), Step(0, 1))
    assert posterior.mean.dtype == likelihood.mean.dtype == low.dtype == torch.float32
    torch.manual_seed(1)
    full, _ = model.loss(Batch(x), Step(0, 1))
    # Only the matmuls are rounded to bfloat16 (8 bits of mantissa): the loss moves by < 1%.
    torch.testing.assert_close(low, full, rtol=1e-2, atol=0)
    assert low != full


def test_bfloat16_training_learns_as_well_as_float32(tmp_path):
    elbos = {}
    for precision in ("float32", "bfloat16"):
        result = train(small_config(epochs=6, precision=precision), tmp_path / precision,
                       progress=False)
        elbos[precision] = result.history[-1]["valid_elbo"]
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert abs(elbos["bfloat16"] - elbos["float32"]) < 0.005 * abs(elbos["float32"])


def test_an_interrupted_warmup_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = small_config(epochs=4, kl_warmup=0.7)  # rises over 73 of 104 steps
    straight = train(config, tmp_path / "straight", progress=False)
    real_write = training._write_metrics_csv

    def stop_after_two_epochs(run_dir, history):
        real_write(run_dir, history)
        if len(history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("aevb.engine.loop._write_metrics_csv", stop_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "split", progress=False)
    monkeypatch.undo()
    resumed = train(config, tmp_path / "split", resume=True, progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    weights = [row["train_kl_weight"] for row in resumed.history]
    assert weights == [row["train_kl_weight"] for row in straight.history]
    assert weights[0] < weights[1] < weights[2] < 1.0 == weights[3]


def test_an_extended_run_keeps_the_schedule_it_started_with(tmp_path):
    train(small_config(epochs=2, kl_warmup=0.9), tmp_path / "run", progress=False)
    result = train(small_config(epochs=4, kl_warmup=0.9), tmp_path / "run", resume=True,
                   progress=False)
    _, header = read_checkpoint(checkpoint_path(tmp_path / "run", "last"))
    assert header["schedule_steps"] == 52 and header["step"] == 104  # 26 steps an epoch
    # warm-up ended at 0.9 of the first 52 steps; a 104-step schedule would still be rising
    assert result.history[2]["train_kl_weight"] == 1.0


def test_train_restores_the_process_settings_it_changes(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(False)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    try:
        train(small_config(epochs=1, threads=2), tmp_path / "run", progress=False)
        assert torch.get_num_threads() == 1
        assert torch.equal(torch.get_rng_state(), rng)
        assert (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() != 0.0  # not flushed
    finally:
        torch.set_num_threads(threads)


def test_the_best_checkpoint_is_chosen_on_the_elbo_not_the_weighted_loss(tmp_path):
    result = train(small_config(epochs=5, beta=4.0), tmp_path / "run", progress=False)
    elbos = [row["valid_elbo"] for row in result.history]
    assert result.best_epoch == max(range(5), key=lambda i: elbos[i]) + 1
    _, header = read_checkpoint(checkpoint_path(tmp_path / "run", "best"))
    assert header["selection"] == ["elbo", "max"]
    assert header["best_value"] == max(elbos)


def test_the_iwae_learning_rate_schedule_sets_each_steps_rate(tmp_path, monkeypatch):
    """The loop hands the optimizer lr * factor(step) at every step, the step the model sees,
    and Adam gets train.adam_eps."""
    from aevb.inference.schedules import iwae_learning_rate_factor

    seen: list[tuple[int, float, float]] = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        group = self.param_groups[0]
        seen.append((len(seen), group["lr"], group["eps"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train(small_config(epochs=5, lr=0.01, lr_schedule="iwae", adam_eps=1e-4),
          tmp_path / "run", progress=False)
    per_epoch = 26
    assert len(seen) == 5 * per_epoch
    for index, lr, eps in seen:
        assert lr == pytest.approx(0.01 * iwae_learning_rate_factor(index / per_epoch))
        assert eps == 1e-4
    # stage 0 is the first pass, stage 1 the next three, stage 2 from the fifth
    rates = [lr for _, lr, _ in seen]
    assert rates[0] == rates[per_epoch - 1] == 0.01
    assert rates[per_epoch] == rates[4 * per_epoch - 1] == pytest.approx(0.01 * 10 ** (-1 / 7))
    assert rates[4 * per_epoch] == pytest.approx(0.01 * 10 ** (-2 / 7))
