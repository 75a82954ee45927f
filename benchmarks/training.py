"""Training throughput of aevb against Pythae 0.1.2's own trainer, with the matmul roofline.

Both train the same VAE: 784-H-L (``--hidden``, ``--latent``), one hidden layer each way,
``--activation`` relu and/or tanh (each its own comparison), a diagonal Gaussian posterior, a
Bernoulli decoder, Adam at lr 1e-3, batch 100, ``--epochs`` epochs on MNIST's training images
binarized dynamically (a fresh Bernoulli sample of an image every time it is drawn), with
MNIST's validation split scored after every epoch:

- aevb: ``aevb.train`` (``binarize = "dynamic"``), once per ``--precision`` (float32, and
  ``auto``: bfloat16 matmuls on a CPU whose bf16 matmuls pay, float32 elsewhere). Its time is the
  whole call: training, validation every epoch and the checkpoints it writes.
- Pythae 0.1.2, as a Pythae user trains it: its ``VAE`` with a custom ``BaseEncoder`` and
  ``BaseDecoder`` of the same sizes (``reconstruction_loss = "bce"`` on a sigmoid output), its
  ``BaseTrainer`` (``per_device_*_batch_size`` 100, Adam, ``no_cuda``), the training images
  in a ``BaseDataset`` subclass whose ``__getitem__`` returns a fresh ``torch.bernoulli`` of
  the image, and the validation split as ``eval_dataset``. Its time is ``trainer.train()``:
  training, its evaluation pass every epoch, its copy of the best model and the final save.
  It runs in a side virtual environment (``--pythae-venv``, built on first use with pip by
  ``evaluation.pythae_python``; never a dependency of aevb) that shares this environment's
  torch, in a subprocess; its logging and progress bars are switched off. Like the usual
  Pythae script it leaves subnormal floats on (aevb's ``train`` flushes them while it runs).

Every round trains Pythae and every aevb precision once, in turn, for every activation, and
measures the matmul roofline; the script prints each round, then medians and the ratio
aevb / Pythae per round and its median. Quality: the models trained in round 1 are scored
afterwards by one estimator written here (not either library's own) on the first
``--points`` test images, binarized once with a fixed seed (aevb's static test sample): the
test ELBO (analytic KL and one sample of z) and log p(x) importance-sampled with ``--k``
samples (``evaluation.plain_log_px``), as mean ± standard error, with the same random draws
for every model.

The roofline: the GEMMs of one training step at batch B = 100, for each Linear(n_in, n_out)
of the net: forward (B, n_in) @ (n_in, n_out), grad-input (B, n_out) @ (n_out, n_in) (not for
the first layer) and grad-weight (n_out, B) @ (B, n_in), each timed alone
(``evaluation.matmul_gflops``, float32 and bfloat16), give the samples/s that the matmuls
alone would allow; each implementation is printed as a fraction of it.

    python benchmarks/training.py --pythae-venv /tmp/pythae-venv        # 5 epochs, 3 rounds
    python benchmarks/training.py --epochs 1 --train-size 2000 --rounds 1 --points 50 \\
        --k 50 --activation relu                                         # a quick check
    python benchmarks/training.py --device cuda --precision float32 bfloat16   # on a GPU

``--device cuda`` trains both on the GPU (aevb with its data on the GPU; Pythae with
``no_cuda`` off, its DataLoader feeding the GPU as a Pythae user's would) and times the
roofline's matmuls there; the quality scores are computed on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from evaluation import PlainVAE, export, matmul_gflops, plain_log_px, pythae_python, synchronize

from aevb import Config, apply_overrides, load_dataset, train
from aevb.engine.device import resolve_precision

BATCH = 100
LR = 1e-3
LABELS = {"pythae": "Pythae", "aevb_float32": "aevb float32"}

PYTHAE_WORKER = """
import json, logging, os, sys, time
import torch
from torch import nn
from pythae.data.datasets import BaseDataset, DatasetOutput
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback
sys.path.insert(0, {script_dir!r})
from evaluation import ACTIVATIONS, layers_of

job = json.loads(sys.argv[1])
data = torch.load(job["data"])
torch.set_num_threads(job["threads"])
logging.disable(logging.INFO)  # the trainer's and its callbacks' console messages
act, features = ACTIVATIONS[job["activation"]], data["train"].shape[1]
hidden, latent = job["hidden"], job["latent"]

class Encoder(BaseEncoder):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), act(), nn.Linear(hidden, 2 * latent))
    def forward(self, x):
        mu, log_var = self.net(x).chunk(2, -1)
        return ModelOutput(embedding=mu, log_covariance=log_var)

class Decoder(BaseDecoder):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), act(), nn.Linear(hidden, features))
    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

class DynamicallyBinarized(BaseDataset):
    # a fresh Bernoulli sample of the image every time it is drawn
    def __init__(self, probabilities):
        super().__init__(probabilities, torch.zeros(len(probabilities)))
    def __getitem__(self, index):
        return DatasetOutput(data=torch.bernoulli(self.data[index]))

class History(TrainingCallback):
    def __init__(self):
        self.rows = []
    def on_log(self, training_config, logs, **kwargs):
        self.rows.append({{key: float(value) for key, value in logs.items()}})

torch.manual_seed(0)  # the initial weights (the trainer seeds the rest itself)
model = VAE(VAEConfig(input_dim=(features,), latent_dim=latent, reconstruction_loss="bce"),
            encoder=Encoder(), decoder=Decoder())
config = BaseTrainerConfig(
    output_dir=job["output_dir"], num_epochs=job["epochs"], learning_rate=job["lr"],
    per_device_train_batch_size=job["batch"], per_device_eval_batch_size=job["batch"],
    optimizer_cls="Adam", no_cuda=job["device"] == "cpu")
history = History()
trainer = BaseTrainer(model, train_dataset=DynamicallyBinarized(data["train"]),
                      eval_dataset=BaseDataset(data["valid"], torch.zeros(len(data["valid"]))),
                      training_config=config, callbacks=[history])
started = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - started
trained = trainer.model  # as after the last epoch (its saved final_model is the best one)
torch.save({{"encoder": layers_of(trained.encoder), "decoder": layers_of(trained.decoder)}},
           job["weights"])
print(json.dumps({{"seconds": seconds, "history": history.rows}}))
"""


def run_pythae(python: Path, work: Path, data: Path, activation: str,
               args: argparse.Namespace) -> tuple[float, dict]:
    """Seconds of Pythae's ``trainer.train()`` and the trained weights (``export``'s form)."""
    run = Path(tempfile.mkdtemp(dir=work))
    worker = work / "pythae_worker.py"
    worker.write_text(PYTHAE_WORKER.format(script_dir=str(Path(__file__).parent)))
    job = {"data": str(data), "output_dir": str(run / "pythae"), "weights": str(run / "w.pt"),
           "activation": activation, "hidden": args.hidden, "latent": args.latent,
           "epochs": args.epochs, "lr": LR, "batch": BATCH, "threads": args.threads,
           "device": args.device}
    done = subprocess.run(
        [str(python), str(worker), json.dumps(job)], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"})
    if done.returncode:
        raise RuntimeError(f"the Pythae worker failed: {done.stderr.strip()[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for epoch, row in enumerate(result["history"], 1):
        print(f"    Pythae epoch {epoch}: train -ELBO {row['train_epoch_loss']:.2f},"
              f" eval -ELBO {row['eval_epoch_loss']:.2f}", flush=True)
    weights = torch.load(run / "w.pt")
    return result["seconds"], {**weights, "activation": activation, "latent": args.latent}


def run_aevb(config: Config, dataset) -> tuple[float, dict]:
    """Seconds of aevb's ``train`` (validation and checkpoints included), trained weights."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(config, out, progress=False, dataset=dataset)
        synchronize(result.device)
        seconds = time.perf_counter() - started
    for row in result.history:
        print(f"    aevb epoch {row['epoch']}: train -ELBO {row['train_loss']:.2f},"
              f" valid ELBO {row['valid_elbo']:.2f}", flush=True)
    return seconds, export(result.model)


# ---------------------------------------------------------------------------------------------
# quality, one estimator for every model


@torch.no_grad()
def quality(weights: dict, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per test point: the ELBO (analytic KL, one sample of z) and log p(x) with K samples.
    Seeded, so every model gets the same draws."""
    model = PlainVAE(weights).eval()
    flat = x.flatten(1)
    torch.manual_seed(0)
    mu, log_var = model.enc(flat).chunk(2, -1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
    log_px_z = -F.binary_cross_entropy_with_logits(model.dec(z), flat, reduction="none").sum(-1)
    kl = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).sum(-1)
    torch.manual_seed(1)
    log_px = torch.cat([plain_log_px(model, flat[i:i + BATCH], k, chunk=BATCH)
                        for i in range(0, len(flat), BATCH)])
    return log_px_z - kl, log_px


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return values.mean().item(), se


# ---------------------------------------------------------------------------------------------
# the roofline


def training_gemms(sizes: list[tuple[int, int]]) -> list[tuple[str, int, int, int]]:
    """(name, rows, inner, cols) of every GEMM of one training step at batch BATCH, for the
    Linear(n_in, n_out) layers ``sizes`` in the order the forward pass runs them."""
    gemms = []
    for i, (n_in, n_out) in enumerate(sizes):
        gemms.append((f"fwd {n_in}x{n_out}", BATCH, n_in, n_out))
        if i:  # no gradient for the data
            gemms.append((f"dX {n_out}x{n_in}", BATCH, n_out, n_in))
        gemms.append((f"dW {n_out}x{n_in}", n_out, BATCH, n_in))
    return gemms


def roofline(gemms: list[tuple[str, int, int, int]], dtype: torch.dtype, device: str = "cpu"
             ) -> tuple[float, dict[str, float]]:
    """Samples/s that one step's GEMMs, each at its measured rate, allow; and the rates
    (GFLOP/s)."""
    rates = {name: matmul_gflops(rows, inner, cols, dtype, device=device)
             for name, rows, inner, cols in gemms}
    seconds = sum(2 * rows * inner * cols / (rates[name] * 1e9)
                  for name, rows, inner, cols in gemms)
    return BATCH / seconds, rates


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", nargs="+", default=["relu", "tanh"],
                        choices=["relu", "tanh"], help="each is its own comparison")
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--latent", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, help="the first N training images only")
    parser.add_argument("--precision", nargs="+", default=["auto", "float32"],
                        choices=["auto", "float32", "bfloat16"],
                        help="aevb's train.precision settings to time")
    parser.add_argument("--rounds", type=int, default=3,
                        help="train with every implementation this many times, in turn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--points", type=int, default=500, help="test points for quality")
    parser.add_argument("--k", type=int, default=1000, help="importance samples for log p(x)")
    parser.add_argument("--pythae-venv", type=Path,
                        default=Path(tempfile.gettempdir()) / "aevb-pythae-0.1.2")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: both train on the GPU")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    python, why_not = pythae_python(args.pythae_venv)
    if python is None:
        raise SystemExit(f"Pythae 0.1.2 is not available: {why_not}")
    overrides = {"dataset": "mnist", "binarize": "dynamic", "hidden": str(args.hidden),
                 "latent_dim": args.latent, "epochs": args.epochs, "optimizer": "adam",
                 "lr": LR, "batch_size": BATCH, "device": args.device,
                 "threads": args.threads}
    if args.train_size:
        overrides["train_size"] = args.train_size
    config = apply_overrides(Config(), overrides)
    dataset = load_dataset(config.data)
    n = len(dataset.train)
    features = math.prod(dataset.event_shape)
    x_test = dataset.test.values()[:args.points]  # a fixed binary sample (split_seed)
    sizes = [(features, args.hidden), (args.hidden, 2 * args.latent),
             (args.latent, args.hidden), (args.hidden, features)]
    gemms = training_gemms(sizes)
    names = ["pythae", *(f"aevb_{p}" for p in args.precision)]
    auto = str(resolve_precision("auto", torch.device(args.device))).removeprefix("torch.")
    where = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
             else f"{args.threads} threads")
    print(f"MNIST, {n} training images (dynamically binarized), {len(dataset.valid)} validation,"
          f" {args.epochs} epochs, {features}-{args.hidden}-{args.latent}, batch {BATCH},"
          f" {where}, {args.rounds} rounds; aevb's precision auto is {auto}"
          " here", flush=True)
    # Untimed warm-up of aevb in this process (first calls, lazy imports, the allocator), as
    # Pythae's worker gets one from its trainer's sanity check before train() is timed.
    small = apply_overrides(config, {"train_size": min(n, 2 * BATCH), "epochs": 1})
    small_dataset = load_dataset(small.data)
    for activation in args.activation:
        for precision in args.precision:
            with tempfile.TemporaryDirectory() as out:
                train(apply_overrides(small, {"activation": activation, "precision": precision}),
                      out, progress=False, dataset=small_dataset)

    rounds: dict[str, list[dict[str, float]]] = {a: [] for a in args.activation}
    roofs: list[dict[str, float]] = []
    trained: dict[str, dict[str, dict]] = {a: {} for a in args.activation}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data.pt"  # what Pythae gets: grey levels to binarize, fixed validation
        torch.save({"train": dataset.train.values().flatten(1),
                    "valid": dataset.valid.values().flatten(1)}, data)
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}", flush=True)
            roof: dict[str, float] = {}
            for key, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
                roof[f"roofline_{key}"], rates = roofline(gemms, dtype, args.device)
                roof.update({f"gflops_{key}_{name}": rate for name, rate in rates.items()})
            roofs.append(roof)
            print(f"  matmul roofline: float32 {roof['roofline_float32']:,.0f} samples/s,"
                  f" bfloat16 {roof['roofline_bfloat16']:,.0f} samples/s", flush=True)
            for activation in args.activation:
                print(f"  {activation}:", flush=True)
                torch.set_flush_denormal(False)
                seconds = {}
                seconds["pythae"], weights = run_pythae(python, work, data, activation, args)
                trained[activation].setdefault("pythae", weights)
                for precision in args.precision:
                    variant = apply_overrides(config, {"activation": activation,
                                                       "precision": precision})
                    name = f"aevb_{precision}"
                    seconds[name], weights = run_aevb(variant, dataset)
                    trained[activation].setdefault(name, weights)
                row = {f"{name}_seconds": s for name, s in seconds.items()}
                row.update({f"{name}_samples_per_s": n * args.epochs / s
                            for name, s in seconds.items()})
                row.update({f"{name}_ratio": seconds["pythae"] / seconds[name]
                            for name in names[1:]})
                rounds[activation].append(row)
                print(f"  {activation} round {number}: " + ", ".join(
                    f"{name} {row[f'{name}_seconds']:.1f} s"
                    f" ({row[f'{name}_samples_per_s']:,.0f} samples/s"
                    + (f", {row[f'{name}_ratio']:.2f}x" if name != "pythae" else "") + ")"
                    for name in names), flush=True)

    roof = {key: statistics.median(r[key] for r in roofs) for key in roofs[0]}
    figures: dict = {"settings": {k: (str(v) if isinstance(v, Path) else v)
                                  for k, v in vars(args).items()} | {"train_images": n},
                     "roofline": roof}
    print(f"\nmedians over {args.rounds} rounds; {n} training images x {args.epochs} epochs,"
          f" {where}")
    for key in ("float32", "bfloat16"):
        rates = ", ".join(f"{name.split('_', 2)[2]} {rate:.0f}" for name, rate in roof.items()
                          if name.startswith(f"gflops_{key}_"))
        print(f"matmul roofline, {key:8s}: {roof[f'roofline_{key}']:9,.0f} samples/s"
              f"   (GFLOP/s at batch {BATCH}: {rates})")
    for activation in args.activation:
        rows = rounds[activation]
        median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        print(f"\n{features}-{args.hidden}-{args.latent} {activation}:")
        print(f"  {'':22s} {'seconds':>8s} {'samples/s':>10s} {'of f32 roofline':>16s}"
              f" {'x Pythae':>9s}   (rounds)")
        for name in names:
            label = "Pythae 0.1.2 trainer" if name == "pythae" else name.replace("_", ", ")
            rate = median[f"{name}_samples_per_s"]
            ratio = (f"{median[f'{name}_ratio']:9.2f}   ("
                     + ", ".join(f"{r[f'{name}_ratio']:.2f}" for r in rows) + ")"
                     if name != "pythae" else "")
            print(f"  {label:22s} {median[f'{name}_seconds']:8.1f} {rate:10,.0f}"
                  f" {rate / roof['roofline_float32']:16.1%} {ratio}")
        target = 4 * median["pythae_samples_per_s"]
        print(f"  4x Pythae would be {target:,.0f} samples/s = "
              f"{target / roof['roofline_float32']:.2f} x the float32 matmul roofline"
              f" ({target / roof['roofline_bfloat16']:.2f} x the bfloat16 one)")

        print(f"  quality of the round-1 models, first {len(x_test)} test images (fixed binary"
              f" sample), one estimator; mean ± standard error, nats:")
        # paired differences of log p(x) (same points, same draws) from these references
        references = [r for r in ("pythae", "aevb_float32") if r in names]
        print(f"  {'':22s} {'test ELBO':>17s} {f'log p(x), K={args.k}':>19s}"
              + "".join(f" {'- ' + LABELS.get(r, r) + ' (paired)':>23s}" for r in references))
        scores = {name: quality(trained[activation][name], x_test, args.k) for name in names}
        for name in names:
            elbo, log_px = scores[name]
            (e, e_se), (lp, lp_se) = mean_se(elbo), mean_se(log_px)
            label = "Pythae 0.1.2 trainer" if name == "pythae" else name.replace("_", ", ")
            paired = ""
            for reference in references:
                diff, diff_se = mean_se(log_px - scores[reference][1])
                if name == reference:
                    paired += " " * 24
                    continue
                paired += f" {f'{diff:+.2f} ± {diff_se:.2f}':>23s}"
                median[f"{name}_log_px_minus_{reference}"] = diff
                median[f"{name}_log_px_minus_{reference}_se"] = diff_se
            print(f"  {label:22s} {e:9.2f} ± {e_se:5.2f} {lp:9.2f} ± {lp_se:5.2f}{paired}")
            median.update({f"{name}_test_elbo": e, f"{name}_test_elbo_se": e_se,
                           f"{name}_log_px": lp, f"{name}_log_px_se": lp_se})
        median["four_x_pythae_over_roofline_float32"] = target / roof["roofline_float32"]
        median["four_x_pythae_over_roofline_bfloat16"] = target / roof["roofline_bfloat16"]
        figures[activation] = {"medians": median, "rounds": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
