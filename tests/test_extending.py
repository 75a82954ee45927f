"""Your own networks and your own models: custom modules saved by import path (never pickled),
plugin models from the ``aevb.models`` entry points and ``register_model``, and the public
model checks failing where a model breaks the contract."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import aevb
from aevb.config.run import load_config
from aevb.errors import ConfigError, PluginError
from aevb.inference.objectives import ElboTerms
from aevb.models import MODELS, Batch, register_model
from aevb.models.registry import ModelRegistry
from aevb.models.vae import VAE, VAEConfig
from aevb.nn.custom import CustomNetConfig, ModuleSpec
from aevb.testing import ModelCheckError, check_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "aevb-vampprior" / "src"
AEVB = [sys.executable, "-m", "aevb"]

NETS = '''
from torch import nn


class DigitEncoder(nn.Module):
    """x (B, 1, 8, 8) -> features (B, width)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(8 * 64, width), nn.ReLU())

    def forward(self, x):
        return self.net(x)


class DigitDecoder(nn.Module):
    """z (N, codes) -> features (N, width)."""

    def __init__(self, codes: int, width: int = 32):
        super().__init__()
        self.codes, self.width = codes, width
        self.net = nn.Sequential(nn.Linear(codes, width), nn.ReLU())

    def forward(self, z):
        return self.net(z)


class Forgetful(nn.Module):
    """Does not keep its argument as an attribute: a run could not rebuild it."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Linear(64, width)

    def forward(self, x):
        return self.net(x.flatten(1))
'''


def digits() -> np.ndarray:
    return load_digits().data.astype(np.float32) / 16


def cli(*args: str, path: list[Path] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [ROOT / "src", *(path or [])]))}
    return subprocess.run([*AEVB, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


@pytest.fixture
def nets_module(tmp_path, monkeypatch):
    """A module of the user's own networks, importable in this process and by PYTHONPATH."""
    home = tmp_path / "user_code"
    home.mkdir()
    (home / "digit_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(home))
    import digit_nets

    yield home, digit_nets
    sys.modules.pop("digit_nets", None)


def test_a_vae_on_your_own_networks_saves_without_pickle_and_loads_elsewhere(
        tmp_path, nets_module, monkeypatch):
    home, nets = nets_module

    def no_pickle(*_, **__):
        raise AssertionError("pickle used")

    for name in ("dump", "dumps", "load", "loads"):
        monkeypatch.setattr(pickle, name, no_pickle)
    monkeypatch.setattr(torch, "save", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    run = tmp_path / "run"
    fitted = aevb.fit(digits().reshape(-1, 1, 8, 8), latent_dim=3, epochs=2, run_dir=run,
                      encoder=nets.DigitEncoder(width=24), decoder=nets.DigitDecoder(3, width=16),
                      progress=False, threads=1)
    net = fitted.config.model.net
    assert isinstance(net, CustomNetConfig)
    assert (net.encoder.module, net.encoder.args) == ("digit_nets:DigitEncoder", {"width": 24})
    assert net.decoder.args == {"codes": 3, "width": 16}
    assert "module = \"digit_nets:DigitEncoder\"" in (run / "config.toml").read_text()
    codes = fitted.encode(digits()[:5].reshape(-1, 1, 8, 8))
    assert codes.shape == (5, 3)
    monkeypatch.undo()
    for file in run.rglob("*"):  # nothing in the run is a pickle
        assert not (file.is_file() and file.read_bytes()[:1] == b"\x80"), file

    # a fresh process rebuilds the networks by importing them, and evaluates
    done = cli("evaluate", str(run), "--threads", "1", "--k", "10", path=[home])
    assert done.returncode == 0, done.stderr
    assert "log p(x)" in done.stdout
    code = ("import aevb, numpy as np, sys; f = aevb.load(sys.argv[1]);"
            " print(f.encode(np.load(sys.argv[2]))[0, 0])")
    np.save(tmp_path / "x.npy", digits()[:5].reshape(-1, 1, 8, 8))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(home)])}
    loaded = subprocess.run([sys.executable, "-c", code, str(run), str(tmp_path / "x.npy")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert float(loaded.stdout) == pytest.approx(float(codes[0, 0]), abs=1e-5)

    # without the module on the path: one line naming the class and the run
    missing = cli("evaluate", str(run), "--threads", "1")
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0, missing.stderr
    assert "cannot import digit_nets:DigitEncoder" in missing.stderr
    assert str(run) in missing.stderr


def test_a_config_file_names_your_networks(tmp_path, nets_module):
    home, _ = nets_module
    (tmp_path / "custom.toml").write_text(textwrap.dedent('''
        [data]
        name = "digits"
        [model]
        latent_dim = 2
        [model.net]
        kind = "custom"
        encoder = {module = "digit_nets:DigitEncoder", args = {width = 16}}
        decoder = {module = "digit_nets:DigitDecoder", args = {codes = 2}}
        [train]
        epochs = 1
    '''))
    config = load_config(tmp_path / "custom.toml")
    assert config.model.net.decoder.args == {"codes": 2}
    done = cli("train", str(tmp_path / "custom.toml"), "--out", str(tmp_path / "run"),
               "--quiet", "--threads", "1", path=[home])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "report.md").exists()


def test_what_does_not_fit_is_one_clear_error(nets_module):
    _, nets = nets_module
    x = digits().reshape(-1, 1, 8, 8)
    with pytest.raises(ConfigError, match=r"has no attribute 'width': store each constructor"):
        aevb.fit(x, encoder=nets.Forgetful(8), decoder=nets.DigitDecoder(20))

    class Local(nets.DigitEncoder):
        pass

    with pytest.raises(ConfigError, match="define the class in a module of its own"):
        aevb.fit(x, encoder=Local(), decoder=nets.DigitDecoder(20))
    with pytest.raises(ConfigError, match=r"DigitDecoder fails on a batch of shape \(2, 20\)"):
        aevb.fit(x, encoder=nets.DigitEncoder(), decoder=nets.DigitDecoder(5), progress=False)
    with pytest.raises(ConfigError, match="give both encoder= and decoder="):
        aevb.fit(x, encoder=nets.DigitEncoder())
    with pytest.raises(ConfigError, match="model 'conv-ae' takes no networks of your own"):
        aevb.fit(x, model="conv-ae", encoder=nets.DigitEncoder(), decoder=nets.DigitDecoder(20))
    with pytest.raises(ConfigError, match="with your own networks set label_input false"):
        aevb.fit(x, y=load_digits().target, model="m2", encoder=nets.DigitEncoder(),
                 decoder=nets.DigitDecoder(30), label_input=True)
    with pytest.raises(ConfigError, match=r"net.encoder.args.width is a set"):
        CustomNetConfig(ModuleSpec("digit_nets:DigitEncoder", {"width": {1}}))
    with pytest.raises(PluginError, match="module 'digit_nets' has no 'Nope'"):
        ModuleSpec("digit_nets:Nope").build("net.encoder")


# -- plugin models ---------------------------------------------------------------------------

def plugin_site(tmp_path: Path, entries: str) -> Path:
    """A directory that importlib.metadata reads as an installed distribution publishing
    ``entries`` in the group aevb.models (as ``pip install`` would leave it)."""
    site = tmp_path / "site"
    info = site / "aevb_vampprior-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aevb-vampprior\n"
                                   "Version: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[aevb.models]\n{entries}\n")
    return site


def test_an_installed_plugin_model_gets_the_cli_evaluation_and_report(tmp_path):
    site = plugin_site(tmp_path, "vampprior = aevb_vampprior:VampPriorVAE")
    listing = cli("models", path=[site, EXAMPLE])
    assert listing.returncode == 0, listing.stderr
    line = next(row for row in listing.stdout.splitlines() if row.startswith("vampprior"))
    assert "VampPrior" in line and "entry point aevb_vampprior:VampPriorVAE" in line
    assert "aevb-vampprior 0.1.0" in line
    keys = cli("models", "vampprior", path=[site, EXAMPLE])
    assert "components = 100" in keys.stdout
    run = tmp_path / "run"
    trained = cli("train", "--model", "vampprior", "--dataset", "digits", "--epochs", "1",
                  "--latent_dim", "4", "--hidden", "32", "--components", "10", "--out",
                  str(run), "--quiet", "--threads", "1", path=[site, EXAMPLE])
    assert trained.returncode == 0, trained.stderr
    evaluated = cli("evaluate", str(run), "--threads", "1", "--k", "10",
                    path=[site, EXAMPLE])
    assert evaluated.returncode == 0, evaluated.stderr
    report = (run / "report.md").read_text()
    assert "vampprior" in report and "log p(x)" in report
    assert (run / "samples.png").exists()
    without = cli("evaluate", str(run), "--threads", "1")  # the plugin not installed here
    assert without.returncode != 0
    assert "trained with the model 'vampprior', which is not registered here" in without.stderr


def test_a_broken_or_clashing_plugin_is_a_warning_not_a_crash(tmp_path):
    site = plugin_site(tmp_path, "broken = no_such_package:Model\n"
                                 "vae = aevb_vampprior:VampPriorVAE\n"
                                 "notamodel = aevb_vampprior:VampPrior")
    listing = cli("models", path=[site, EXAMPLE])
    assert listing.returncode == 0, listing.stderr
    assert "'broken'" in listing.stderr and "failed to import" in listing.stderr
    assert "'vae'" in listing.stderr and "that name is taken by aevb" in listing.stderr
    assert "'notamodel'" in listing.stderr and "not a subclass" in listing.stderr
    vae = next(row for row in listing.stdout.splitlines() if row.startswith("vae "))
    assert "variational autoencoder" in vae  # the built-in one, not the plugin


def test_register_model_in_one_process():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from aevb_vampprior import VampPriorVAE
    finally:
        sys.path.remove(str(EXAMPLE))
    registry = ModelRegistry({})
    registry._plugins_loaded = True  # this registry reads no entry points
    registry.register("vampprior", VampPriorVAE, "register_model (test)")
    assert registry["vampprior"] is VampPriorVAE
    another = type("AnotherVampPrior", (VampPriorVAE,), {})
    with pytest.raises(ConfigError, match="that name is taken by aevb_vampprior:VampPriorVAE"):
        registry.register("vampprior", another, "register_model (test)")
    with pytest.raises(ConfigError, match="its config's name is 'vampprior'"):
        registry.register("other", VampPriorVAE, "register_model (test)")
    with pytest.raises(ConfigError, match="that name is taken by aevb.models.vae:VAE"):
        register_model("vae", type("MyVAE", (VAE,), {}))
    assert "vampprior" not in MODELS or MODELS.origin("vampprior") != "aevb"


def test_the_example_plugin_passes_the_model_checks():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from aevb_vampprior import VampPriorVAE
    finally:
        sys.path.remove(str(EXAMPLE))
    check_model(VampPriorVAE)
    assert "vampprior" not in MODELS  # checked, not left registered


# -- the checks fail, naming the check, on a model that breaks the contract -----------------

@dataclass(frozen=True)
class DetachedConfig(VAEConfig):
    name: str = "detached-vae"


class DetachedDecoderVAE(VAE):
    """A decoder whose gradient never arrives: its features are detached."""

    description = "a VAE whose decoder gets no gradient (a deliberate bug)"
    config_class = DetachedConfig

    def likelihood(self, z):
        return self.likelihood_head(self.decoder(z).detach())


@dataclass(frozen=True)
class SummedKLConfig(VAEConfig):
    name: str = "summed-kl-vae"


class SummedKLVAE(VAE):
    """ELBO terms whose KL part is summed over dimensions: (B,), not (B, D)."""

    description = "a VAE whose ELBO terms have the wrong shape (a deliberate bug)"
    config_class = SummedKLConfig

    def elbo_terms(self, batch: Batch, samples: int = 1) -> ElboTerms:
        terms = super().elbo_terms(batch, samples)
        return ElboTerms(terms.rec, {"z": terms.kl["z"].sum(-1)})


def test_the_checks_name_a_broken_gradient():
    with pytest.raises(ModelCheckError,
                       match=r"check every_parameter_gets_a_gradient failed: no gradient"
                             r" reaches \['decoder"):
        check_model(DetachedDecoderVAE, checks=["every_parameter_gets_a_gradient"])


def test_the_checks_name_a_wrong_shaped_elbo_term():
    with pytest.raises(ModelCheckError) as failed:
        check_model(SummedKLVAE, checks=["elbo_terms_are_per_example", "loss_and_metrics"])
    message = str(failed.value)
    assert "check elbo_terms_are_per_example failed" in message
    assert "each KL part must be (B, D), got {'z': (5,)}" in message
    assert "loss_and_metrics" not in message  # only what failed is listed



@pytest.fixture
def registry_kept():
    """MODELS as it was before the test (a page that registers a model leaves no trace)."""
    models, origins = dict(MODELS._models), dict(MODELS._origins)
    yield
    MODELS._models, MODELS._origins = models, origins


def test_the_extending_page_runs(tmp_path, monkeypatch, registry_kept):
    page = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```(python|bash|toml)\n(.*?)```", page, flags=re.S)
    assert [kind for kind, _ in blocks].count("bash") >= 3
    site = plugin_site(tmp_path, "vampprior = aevb_vampprior:VampPriorVAE")  # as if installed
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [work, site, EXAMPLE]))}
    namespace: dict = {}
    for kind, code in blocks:
        first = code.splitlines()[0]
        if first.startswith("# file: "):
            (work / first.removeprefix("# file: ")).write_text(code)
        elif kind == "python":
            exec(compile(code, str(ROOT / "docs" / "extending.md"), "exec"), namespace)
        elif kind == "bash":
            for line in code.strip().splitlines():
                done = subprocess.run(["bash", "-c", f'aevb() {{ "{sys.executable}" -m aevb'
                                       f' "$@"; }}; {line}'], cwd=work, env=env,
                                      capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"{line}: {done.stderr}"
                assert "Warning" not in done.stderr, done.stderr
    assert (work / "runs" / "shapes-cli" / "report.md").exists()
    assert (work / "runs" / "vamp" / "evaluation.json").exists()
    sample = namespace["model"].sample(2)
    assert sample.shape == (2, 3, 32, 32)


def test_m2_the_cvae_and_the_hierarchy_take_your_own_networks(tmp_path, nets_module):
    _, nets = nets_module
    x, y = digits().reshape(-1, 1, 8, 8), load_digits().target
    m2 = aevb.fit(x, y=y, model="m2", latent_dim=4, labelled=100, epochs=2, progress=False,
                  encoder=nets.DigitEncoder(width=32), decoder=nets.DigitDecoder(14),
                  threads=1)  # the decoder reads [z, one-hot y]: 4 + 10
    assert m2.config.model.label_input is False
    assert isinstance(m2.model.classifier[0], nets.DigitEncoder)  # q(y|x) on a copy of it
    assert m2.encode(x[:3]).shape == (3, 4)
    cvae = aevb.fit(x, y=y, model="cvae", latent_dim=4, epochs=1, progress=False,
                    encoder=nets.DigitEncoder(), decoder=nets.DigitDecoder(14), threads=1)
    assert cvae.sample(2, label=3).shape == (2, 1, 8, 8)
    for inference, decoder_inputs in (("bottom-up", 4), ("top-down", 24)):  # z1 or the state
        hvae = aevb.fit(x, model="hvae", latent_dims=(4, 2), layer_hidden=(16,), state_dim=24,
                        inference=inference, epochs=1, progress=False, threads=1,
                        encoder=nets.DigitEncoder(), decoder=nets.DigitDecoder(decoder_inputs))
        assert np.isfinite(hvae.log_likelihood(x[:4], k=5)).all()
    for name in ("ae", "sparse-ae"):  # a linear code layer and a pixel layer around them
        ae = aevb.fit(x, model=name, latent_dim=3, epochs=1, progress=False, threads=1,
                      encoder=nets.DigitEncoder(), decoder=nets.DigitDecoder(3))
        assert ae.reconstruct(x[:2]).shape == (2, 1, 8, 8)


def test_a_plugin_model_trains_under_torchrun(tmp_path):
    site = plugin_site(tmp_path, "vampprior = aevb_vampprior:VampPriorVAE")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(map(str, [ROOT / "src", site, EXAMPLE]))}
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "aevb", "train", "--model", "vampprior", "--dataset", "digits", "--epochs", "1",
         "--latent_dim", "2", "--hidden", "16", "--components", "5", "--batch_size", "50",
         "--is_samples", "4", "--quiet", "--out", str(run)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "report.md").exists() and "vampprior" in (run / "config.toml").read_text()
