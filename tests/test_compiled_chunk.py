"""The compiled importance-sampling chunk (``speed.compiled`` in ``speed.fast_log_weights``):
the same estimate as the eager path on the same draws, its fallback to eager, and the grouping
of ``softplus_sum``'s products."""

import pytest
import torch

from aevb.config.run import model_config
from aevb.evaluation import speed
from aevb.evaluation.speed import _decoded
from aevb.models import Batch, DataSpec, build_model
from aevb.nn.nets import MLPConfig

pytestmark = [pytest.mark.usefixtures("validate_distributions"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # torch.compile's

SPEC = DataSpec((1, 8, 8), "binary")


def vae(seed=0, **values):
    torch.manual_seed(seed)
    return build_model(model_config("vae", latent_dim=4, **values), SPEC).eval()


def estimate(model, x, samples, seed=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        return speed.fast_log_marginal(model, Batch(x), samples)


def binary(n, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *SPEC.event_shape, generator=generator) < 0.4).float()


@pytest.mark.parametrize("values", [
    {"net": MLPConfig((16,), activation="relu")},  # the fused Bernoulli head
    {"net": MLPConfig((12, 8), activation="tanh")},  # two hidden layers
    {"net": MLPConfig((16,)), "likelihood": "gaussian-fixed"},  # a distribution's log_prob
])
def test_compiled_chunk_is_the_eager_one_on_the_same_draws(values):
    model = vae(**values)
    x = binary(6) if values.get("likelihood") is None else torch.rand(6, *SPEC.event_shape)
    eager, eager_other = estimate(model, x, 40), estimate(model, x[:5], 40)
    with speed.compiled_kernels():
        compiled = estimate(model, x, 40)
        other_batch = estimate(model, x[:5], 40)  # another shape: compiled again, dynamic
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=0)
    torch.testing.assert_close(other_batch, eager_other, rtol=1e-5, atol=0)
    assert (estimate(model, x, 40, seed=4) - eager).abs().max() > 1e-3  # the draws matter


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken(fn, **kwargs):
        def fail(*args, **kwargs):
            raise RuntimeError("no C compiler")
        return fail

    model, x = vae(net=MLPConfig((16,), activation="relu")), binary(4)
    eager = estimate(model, x, 20)
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(speed, "_compiled_cache", [])  # no broken softplus_sum kept after
    with speed.compiled_kernels(), pytest.warns(UserWarning, match="torch.compile failed"):
        fallback = estimate(model, x, 20)
    torch.testing.assert_close(fallback, eager, rtol=0, atol=0)


def test_compiled_is_the_function_itself_outside_compiled_kernels():
    def fn(z):
        return z + 1

    assert speed.compiled(fn) is fn  # eval.is_compile = false: nothing is compiled
    with speed.compiled_kernels(enabled=False):
        assert speed.compiled(fn) is fn


def test_decoded_is_the_net_itself_when_not_compiling():
    model = vae(net=MLPConfig((16,), activation="relu"))
    z = torch.randn(3, 5, 4)
    torch.testing.assert_close(_decoded(model.decoder, z), model.decoder(z), rtol=0, atol=0)


@pytest.mark.parametrize("size", [3072, 1009, 4096])  # 64 products of 48, 1 of 1009, 64 of 64
def test_softplus_sum_products_do_not_overflow(size):
    values = torch.randn(2, 3, size, generator=torch.Generator().manual_seed(size)) * 30
    values[0, 0] = 0.0  # every factor 1 + exp(0) = 2, the largest: products of 64 twos
    values[0, 1] = -50.0  # every factor 1 to float rounding
    expected = torch.nn.functional.softplus(values.double()).sum(-1)
    got = speed.softplus_sum(values)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-3)
