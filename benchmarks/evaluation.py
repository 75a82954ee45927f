"""Importance-sampled log p(x) throughput against the matmul roofline, in one run.

Three estimators of log p(x) ≈ log (1/K) sum_k p(x, z_k) / q(z_k|x) score the same test points
with the same weights (a VAE trained here for ``--epochs`` on statically binarized MNIST, one
net per ``--nets`` entry):

- aevb's evaluation (``aevb.evaluation.evaluate.log_likelihood``, what ``aevb evaluate`` runs per batch,
  with its compiled kernel as a long evaluation has it; ``--no-compile``: without), in
  float32 and with bfloat16 matmuls (``--precision bfloat16``);
- a plain batched estimator written here, as the usual examples write one: encode the batch,
  draw K samples in chunks of ``--plain-chunk``, decode, score each with
  ``binary_cross_entropy_with_logits`` and the two Gaussian log-densities, one logsumexp;
- Pythae 0.1.2's ``get_nll`` (one image at a time, K in batches of 100), on ``--pythae-points``
  of the points, run in a side virtual environment (``--pythae-venv``, built on first use
  with pip; never a dependency of aevb) that shares this environment's torch.

Beside them, the roofline: the sustained GFLOP/s of ``torch.mm`` for each of the decoder's
layer shapes, measured in the same run (float32 and bfloat16, the best of a few row counts),
turned into the (points x K)/s that the decoder's matmuls alone would allow. Every estimator
and the matmul rates are timed once per round, in turn, over ``--rounds`` rounds; the script
prints medians and each estimator's fraction of the roofline.

    python benchmarks/evaluation.py                                # 1000 points, K = 1000
    python benchmarks/evaluation.py --k 5000 --rounds 3 --nets 500 200,200
    python benchmarks/evaluation.py --no-pythae --epochs 0 --points 200   # a quick check
    python benchmarks/evaluation.py --device cuda --k 5000 --elements-per-chunk 16777216

``--device cuda`` runs everything on the GPU (training, the estimators, Pythae's ``get_nll``
and the matmuls of the roofline, at larger row counts), with the GPU synchronised before
every clock is read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def layers_of(sequential: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of every Linear in a module, in order."""
    return [(m.weight.detach().clone(), m.bias.detach().clone())
            for m in sequential.modules() if isinstance(m, nn.Linear)]


def mlp(layers: list[tuple[torch.Tensor, torch.Tensor]], activation: str,
        last_linear: bool) -> nn.Sequential:
    """Linear layers with these weights, the activation after each (but the last, where
    ``last_linear``)."""
    modules: list[nn.Module] = []
    for i, (weight, bias) in enumerate(layers):
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        modules.append(linear)
        if not (last_linear and i == len(layers) - 1):
            modules.append(ACTIVATIONS[activation]())
    return nn.Sequential(*modules)


def export(model) -> dict:
    """The weights of an aevb VAE as plain tensors: encoder layers (the Gaussian head last),
    decoder layers (the Bernoulli head last)."""
    return {"encoder": layers_of(model.encoder) + layers_of(model.posterior_head),
            "decoder": layers_of(model.decoder) + layers_of(model.likelihood_head),
            "activation": model.config.net.activation, "latent": model.config.latent_dim}


# ---------------------------------------------------------------------------------------------
# the plain batched estimator


class PlainVAE(nn.Module):
    def __init__(self, weights: dict) -> None:
        super().__init__()
        self.enc = mlp(weights["encoder"], weights["activation"], last_linear=True)
        self.dec = mlp(weights["decoder"], weights["activation"], last_linear=True)


@torch.no_grad()
def plain_log_px(model: PlainVAE, x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """log p(x) (B,) for x (B, P): K samples in chunks, every density written out."""
    mu, log_var = model.enc(x).chunk(2, -1)
    std = torch.exp(0.5 * log_var)
    log_w = []
    for start in range(0, k, chunk):
        eps = torch.randn(min(chunk, k - start), *mu.shape, device=mu.device)
        z = mu + std * eps
        logits = model.dec(z)
        log_px_z = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + log_var + math.log(2 * math.pi)).sum(-1)
        log_w.append(log_px_z + log_pz - log_qz)
    return torch.logsumexp(torch.cat(log_w), 0) - math.log(k)


# ---------------------------------------------------------------------------------------------
# Pythae, in its own environment


PYTHAE_WORKER = """
import json, sys, time
import torch
from torch import nn
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
sys.path.insert(0, {script_dir!r})
from evaluation import mlp

saved = torch.load(sys.argv[1])
weights, x, k = saved["weights"], saved["x"].to(saved["device"]), saved["k"]
torch.set_num_threads(saved["threads"])
shape = tuple(x.shape[1:])

class Encoder(BaseEncoder):
    def __init__(self):
        super().__init__()
        self.net = mlp(weights["encoder"], weights["activation"], last_linear=True)
    def forward(self, x):
        mu, log_var = self.net(x.flatten(1)).chunk(2, -1)
        return ModelOutput(embedding=mu, log_covariance=log_var)

class Decoder(BaseDecoder):
    def __init__(self):
        super().__init__()
        self.net = mlp(weights["decoder"], weights["activation"], last_linear=True)
    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, *shape))

model = VAE(VAEConfig(input_dim=shape, latent_dim=weights["latent"], reconstruction_loss="bce"),
            encoder=Encoder(), decoder=Decoder()).to(x.device).eval()
torch.manual_seed(0)
with torch.no_grad():
    started = time.perf_counter()
    log_px = model.get_nll(x, n_samples=k, batch_size=100)  # a mean log-likelihood, in nats
    seconds = time.perf_counter() - started  # get_nll's .item() per point waits for the GPU
print(json.dumps({{"seconds": seconds, "log_px": float(log_px)}}))
"""


def pythae_python(venv_dir: Path) -> tuple[Path | None, str]:
    """The side environment's python with Pythae 0.1.2, built there on first use; or None and
    why not."""
    python = venv_dir / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m, pythae;"
             " assert m.version('pythae') == '0.1.2'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, ""
    print(f"building Pythae 0.1.2 in {venv_dir} (a side environment sharing this torch) ...",
          flush=True)
    try:
        venv.create(venv_dir, with_pip=True, clear=True)
        site = next((venv_dir / "lib").glob("python*/site-packages"))
        # this environment's packages (torch, numpy, scipy, ...) under the side one's own
        shared = [p for p in sys.path if p.endswith("site-packages")]
        (site / "shared-with-aevb.pth").write_text("\n".join(shared) + "\n")
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        for args in (["--no-deps", "pythae==0.1.2"], ["pydantic>=2", "imageio"]):
            done = subprocess.run(pip + args, capture_output=True, text=True)
            if done.returncode:
                return None, f"pip install {' '.join(args)} failed: {done.stderr.strip()[-300:]}"
        if subprocess.run(check, capture_output=True).returncode:
            return None, "Pythae 0.1.2 does not import in the side environment"
    except (OSError, StopIteration, subprocess.SubprocessError) as error:
        return None, f"could not build the side environment: {error}"
    return python, ""


def run_pythae(python: Path, weights: dict, x: torch.Tensor, k: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "job.pt"
        torch.save({"weights": weights, "x": x.cpu(), "k": k, "threads": threads,
                    "device": str(x.device)}, saved)
        worker = Path(tmp) / "worker.py"
        worker.write_text(PYTHAE_WORKER.format(script_dir=str(Path(__file__).parent)))
        done = subprocess.run([str(python), str(worker), str(saved)], capture_output=True,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise RuntimeError(f"the Pythae worker failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the roofline


def synchronize(device: torch.device | str) -> None:
    """Wait for the GPU's queued work (nothing on CPU), before a clock is read."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(rows: int, n_in: int, n_out: int, dtype: torch.dtype,
                  seconds: float = 0.3, device: torch.device | str = "cpu") -> float:
    """Sustained GFLOP/s of (rows, n_in) @ (n_in, n_out) into a reused output."""
    a = torch.randn(rows, n_in, device=device).to(dtype)
    w = torch.randn(n_out, n_in, device=device).to(dtype)
    out = torch.empty(rows, n_out, dtype=dtype, device=device)
    for _ in range(3):
        torch.mm(a, w.T, out=out)
    synchronize(device)
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):  # a GPU queues them; the clock is read after it has run them
            torch.mm(a, w.T, out=out)
        reps += 10
        synchronize(device)
    elapsed = time.perf_counter() - started
    return 2 * rows * n_in * n_out * reps / elapsed / 1e9


ROOFLINE_ROWS = {"cpu": (1024, 4096), "cuda": (4096, 32768, 131072)}
"""Row counts at which each layer's matmul is timed (its best rate counts): a GPU fills its
multiprocessors only with many more rows than a CPU's caches hold."""


def roofline(shapes: list[tuple[int, int]], dtype: torch.dtype,
             device: torch.device | str = "cpu") -> tuple[float, list[float]]:
    """(points x K)/s the decoder's matmuls allow at the best measured rate of each layer
    shape, and those rates (GFLOP/s)."""
    rows_tried = ROOFLINE_ROWS[torch.device(device).type]
    rates = [max(matmul_gflops(rows, n_in, n_out, dtype, device=device) for rows in rows_tried)
             for n_in, n_out in shapes]
    seconds = sum(2 * n_in * n_out / (rate * 1e9)
                  for (n_in, n_out), rate in zip(shapes, rates, strict=True))
    return 1 / seconds, rates


# ---------------------------------------------------------------------------------------------


def trained_vae(hidden: tuple[int, ...], args: argparse.Namespace, dataset):
    from aevb import Config, apply_overrides, train
    from aevb.models import DataSpec, build_model

    config = apply_overrides(Config(), {
        "dataset": "mnist", "binarize": "static", "hidden": ",".join(map(str, hidden)),
        "latent_dim": args.latent, "activation": args.activation, "epochs": max(1, args.epochs),
        "batch_size": 100, "device": args.device, "precision": "float32"})
    if args.epochs == 0:
        torch.manual_seed(0)
        return build_model(config.model, DataSpec(dataset.event_shape, "binary")
                           ).to(args.device).eval()
    with tempfile.TemporaryDirectory() as out:
        return train(config, out, progress=False, dataset=dataset).model.eval()


def timed(fn, device: torch.device | str = "cpu"):
    torch.manual_seed(0)
    synchronize(device)
    started = time.perf_counter()
    value = fn()
    synchronize(device)
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["500", "200,200"],
                        help="hidden layer sizes of each net (784-H-...-latent)")
    parser.add_argument("--latent", type=int, default=50)
    parser.add_argument("--activation", default="relu", choices=sorted(ACTIVATIONS))
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (0: untrained)")
    parser.add_argument("--points", type=int, default=1000, help="test points")
    parser.add_argument("--k", type=int, default=1000, help="importance samples K")
    parser.add_argument("--batch-points", type=int, default=100)
    parser.add_argument("--plain-chunk", type=int, default=100,
                        help="samples per chunk of the plain estimator")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pythae-points", type=int, default=100)
    parser.add_argument("--pythae-venv", type=Path,
                        default=Path(tempfile.gettempdir()) / "aevb-pythae-0.1.2")
    parser.add_argument("--no-pythae", action="store_true")
    parser.add_argument("--no-compile", action="store_true",
                        help="aevb without torch.compile (eval.is_compile = false)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: everything on the GPU")
    parser.add_argument("--elements-per-chunk", type=int,
                        help="aevb's importance-sampling chunk in decoder outputs, on this"
                             " device (objectives.ELEMENTS_PER_CHUNK or _GPU; default: aevb's)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    from aevb import Config, apply_overrides, load_dataset
    from aevb.evaluation.evaluate import AGREEMENT_NATS
    from aevb.inference import objectives

    torch.set_num_threads(args.threads)
    if args.elements_per_chunk:
        objectives.ELEMENTS_PER_CHUNK = objectives.ELEMENTS_PER_CHUNK_GPU = args.elements_per_chunk
    # the same for every estimator: no distribution argument checks (aevb's evaluation turns
    # them off itself; the others build no distribution objects in their loops)
    torch.distributions.Distribution.set_default_validate_args(False)
    python, why_not = (None, "--no-pythae") if args.no_pythae else pythae_python(args.pythae_venv)
    dataset = load_dataset(apply_overrides(Config(), {"dataset": "mnist",
                                                      "binarize": "static"}).data)
    x = dataset.test.values()[:args.points].to(args.device)
    figures: dict[str, dict[str, float]] = {}
    for net in args.nets:
        hidden = tuple(int(h) for h in net.split(","))
        name = "-".join(map(str, (x[0].numel(), *hidden, args.latent)))
        print(f"\n{name} {args.activation}: training {args.epochs} epoch(s) ...", flush=True)
        figures[name], flops = measure(trained_vae(hidden, args, dataset), x, args, python)
        report(name, figures[name], flops, args, why_not, AGREEMENT_NATS)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


def measure(model, x: torch.Tensor, args: argparse.Namespace, python: Path | None
            ) -> tuple[dict[str, float], int]:
    """Median figures over the rounds for one model, and its decoder's FLOPs per point and
    sample."""
    from aevb.evaluation.evaluate import log_likelihood
    from aevb.evaluation.speed import compiled_kernels
    from aevb.models import Batch

    flat = x.flatten(1)
    sizes = [args.latent, *reversed(model.config.net.hidden), flat.shape[1]]
    shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
    weights = export(model)
    plain = PlainVAE(weights).to(x.device).eval()
    batches = range(0, len(x), args.batch_points)

    def aevb_run(precision: torch.dtype) -> torch.Tensor:
        with compiled_kernels(not args.no_compile):  # as evaluate does for long evaluations
            return torch.cat([log_likelihood(model, Batch(x[i:i + args.batch_points]), args.k,
                                             precision) for i in batches])

    def plain_run() -> torch.Tensor:
        return torch.cat([plain_log_px(plain, flat[i:i + args.batch_points], args.k,
                                       args.plain_chunk) for i in batches])

    work = len(x) * args.k
    started = time.perf_counter()
    # warm up, one batch at the full K: compiling at every chunk size the timed runs meet
    # (a size first seen inside a timed run would compile there), first calls, the allocator
    with compiled_kernels(not args.no_compile):
        for precision in (torch.float32, torch.bfloat16):
            log_likelihood(model, Batch(x[:args.batch_points]), args.k, precision)
    print(f"  aevb warm-up (compiling: {not args.no_compile}):"
          f" {time.perf_counter() - started:.1f} s", flush=True)
    plain_log_px(plain, flat[:args.batch_points], min(args.k, 100), args.plain_chunk)
    rounds = []
    for number in range(1, args.rounds + 1):
        row: dict[str, float] = {}
        row["roofline_float32"], rates32 = roofline(shapes, torch.float32, args.device)
        row["roofline_bfloat16"], rates16 = roofline(shapes, torch.bfloat16, args.device)
        seconds, log_px32 = timed(lambda: aevb_run(torch.float32), args.device)
        row["aevb_float32"], row["log_px_float32"] = work / seconds, log_px32.mean().item()
        seconds, log_px16 = timed(lambda: aevb_run(torch.bfloat16), args.device)
        row["aevb_bfloat16"], row["log_px_bfloat16"] = work / seconds, log_px16.mean().item()
        row["bf16_agreement_nats"] = (log_px16 - log_px32).abs().mean().item()
        seconds, log_px_plain = timed(plain_run, args.device)
        row["plain"], row["log_px_plain"] = work / seconds, log_px_plain.mean().item()
        if python is not None:
            n = min(args.pythae_points, len(x))
            result = run_pythae(python, weights, x[:n], args.k, args.threads)
            row["pythae"] = n * args.k / result["seconds"]
            row["log_px_pythae"] = result["log_px"]
            row["log_px_aevb_same_points"] = log_px32[:n].mean().item()
        for key, rates in (("float32", rates32), ("bfloat16", rates16)):
            for (n_in, n_out), gflops in zip(shapes, rates, strict=True):
                row[f"gflops_{key}_{n_in}x{n_out}"] = gflops
        print(f"  round {number}: " + ", ".join(
            f"{key} {row[key]:,.0f}/s" for key in
            ("roofline_float32", "aevb_float32", "roofline_bfloat16", "aevb_bfloat16",
             "plain", "pythae") if key in row), flush=True)
        rounds.append(row)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return median, sum(2 * a * b for a, b in shapes)


def report(name: str, m: dict[str, float], flops: int, args: argparse.Namespace, why_not: str,
           agreement_nats: float) -> None:
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"{args.threads} threads")
    print(f"\n{name} {args.activation}, {args.points} points, K = {args.k}, {where},"
          f" medians of {args.rounds} rounds; decoder {flops:,} FLOP per point and"
          " sample")
    for key in ("float32", "bfloat16"):
        rates = ", ".join(f"{k.rsplit('_', 1)[1]} {v:.0f}" for k, v in m.items()
                          if k.startswith(f"gflops_{key}_"))
        print(f"  matmul roofline, {key:8s}: {m[f'roofline_{key}']:10,.0f} (points x K)/s"
              f"   (GFLOP/s per layer: {rates})")
    print(f"  {'':36s} {'(points x K)/s':>15s} {'of f32 roofline':>16s}"
          f" {'of bf16 roofline':>17s}   log p(x), nats")
    rows = [("aevb evaluate, float32", "aevb_float32", "log_px_float32"),
            ("aevb evaluate, bfloat16", "aevb_bfloat16", "log_px_bfloat16"),
            (f"plain batched (chunks of {args.plain_chunk})", "plain", "log_px_plain")]
    if "pythae" in m:
        rows.append((f"Pythae 0.1.2 get_nll ({min(args.pythae_points, args.points)} points)",
                     "pythae", "log_px_pythae"))
    for label, key, value in rows:
        bf16 = f"{m[key] / m['roofline_bfloat16']:16.0%}" if "bfloat16" in key else " " * 16
        print(f"  {label:36s} {m[key]:15,.0f} {m[key] / m['roofline_float32']:16.0%} {bf16} "
              f"   {m[value]:.3f}")
    verdict = "kept" if m["bf16_agreement_nats"] <= agreement_nats else "refused"
    print(f"  bfloat16 vs float32, same draws: mean |difference| {m['bf16_agreement_nats']:.4f}"
          f" nats per point (allowed {agreement_nats}: {verdict})")
    if "pythae" in m:
        print(f"  Pythae's points in aevb float32: {m['log_px_aevb_same_points']:.3f} nats")
    else:
        print(f"  Pythae: not measured ({why_not})")
    print(f"  aevb float32 is {m['aevb_float32'] / m['plain']:.2f}x the plain estimator"
          + (f", {m['aevb_float32'] / m['pythae']:.2f}x Pythae" if "pythae" in m else ""))


if __name__ == "__main__":
    main()
