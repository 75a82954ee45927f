"""Training throughput of aevb against the usual hand-written PyTorch loop, in one run.

The baseline is how the common examples train a VAE: an ``nn.Module`` with the KL formula
written out, a ``DataLoader`` over a ``TensorDataset`` (batch 100, shuffled), Adam, and
``.item()`` on the loss every step. aevb trains the same network (same layer sizes,
activation, latent size, likelihood, optimizer and data) through its one loop, validation
pass and checkpoints included, twice: with its default precision (``train.precision = auto``:
bfloat16 matmuls on a CPU whose bf16 matmuls pay, float32 elsewhere) and forced to float32. All are
timed over the same number of epochs, in this process, one after the other, and the whole
round is repeated (``--rounds``) so that a burst of other work on the machine shows up as one
outlying round rather than a wrong median. The hand-written loop runs with subnormal floats
left on, as the usual examples do. The script prints median samples/s for each loop, and the
ratios to the hand-written loop per round and their median.

    python benchmarks/throughput.py --epochs 5 --rounds 3        # MNIST, 784-500-50 ReLU
    python benchmarks/throughput.py --dataset digits --epochs 2 --rounds 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aevb import Config, apply_overrides, load_dataset, train


class HandWrittenVAE(nn.Module):
    """The textbook VAE: one hidden layer each way, BCE reconstruction, closed-form KL."""

    def __init__(self, features: int, hidden: int, latent: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.features = features
        self.enc = nn.Sequential(nn.Linear(features, hidden), act())
        self.mu = nn.Linear(hidden, latent)
        self.log_var = nn.Linear(hidden, latent)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), act(), nn.Linear(hidden, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, self.features)
        h = self.enc(x)
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        logits = self.dec(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp())
        return (rec + kl) / len(x)


def run_hand_written(x: torch.Tensor, config: Config) -> float:
    """Seconds for ``config.train.epochs`` epochs of the hand-written loop."""
    torch.manual_seed(config.train.seed)
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[config.model.net.activation]
    features = x[0].numel()
    model = HandWrittenVAE(features, config.model.net.hidden[0], config.model.latent_dim, act)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    loader = DataLoader(TensorDataset(x), batch_size=config.train.batch_size, shuffle=True)
    started = time.perf_counter()
    for epoch in range(config.train.epochs):
        total = 0.0
        for (batch,) in loader:
            loss = model(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"  hand-written epoch {epoch + 1}: -ELBO {total / len(x):.2f}", flush=True)
    return time.perf_counter() - started


def run_aevb(config: Config, dataset) -> tuple[float, float]:
    """Seconds for aevb's ``train`` (validation and checkpoints included), last valid ELBO."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = train(config, out, progress=False, dataset=dataset)
        seconds = time.perf_counter() - started
    for row in result.history:
        print(f"  aevb epoch {row['epoch']}: train -ELBO {row['train_loss']:.2f}", flush=True)
    return seconds, result.history[-1]["valid_elbo"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--latent", type=int, default=50)
    parser.add_argument("--activation", default="relu", choices=["relu", "tanh"])
    parser.add_argument("--precision", nargs="+", default=["auto", "float32"],
                        choices=["auto", "float32", "bfloat16"],
                        help="aevb's train.precision settings to time")
    parser.add_argument("--rounds", type=int, default=3,
                        help="time every loop this many times, in turn; report medians")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    config = apply_overrides(Config(), {
        "dataset": args.dataset, "binarize": "static", "hidden": str(args.hidden),
        "latent_dim": args.latent, "activation": args.activation, "epochs": args.epochs,
        "optimizer": "adam", "lr": 1e-3, "batch_size": 100, "device": "cpu",
    })
    dataset = load_dataset(config.data)
    n = len(dataset.train)
    print(f"{args.dataset}: {n} training images, {args.epochs} epochs, "
          f"{math.prod(dataset.event_shape)}-{args.hidden}-{args.latent} {args.activation}, "
          f"{torch.get_num_threads()} threads")

    rounds: list[dict[str, float]] = []
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number} of {args.rounds}")
        # The usual example leaves subnormal floats on (aevb's train() flushes them while it
        # runs and restores the setting when it returns).
        torch.set_flush_denormal(False)
        seconds = {"hand": run_hand_written(dataset.train.values(), config)}
        elbos = {}
        for precision in args.precision:
            variant = apply_overrides(config, {"precision": precision})
            seconds[precision], elbos[precision] = run_aevb(variant, dataset)
        rounds.append({
            "hand_written_samples_per_s": n * args.epochs / seconds["hand"],
            **{f"aevb_{p}_samples_per_s": n * args.epochs / seconds[p] for p in args.precision},
            **{f"aevb_{p}_ratio": seconds["hand"] / seconds[p] for p in args.precision},
            **{f"aevb_{p}_valid_elbo": elbos[p] for p in args.precision},
        })
    figures = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print()
    print(f"medians over {args.rounds} rounds (each round times every loop once, in turn):")
    print(f"hand-written loop (DataLoader):  {figures['hand_written_samples_per_s']:9.0f} samples/s")
    for precision in args.precision:
        label = f"aevb, precision {precision}:"
        ratios = ", ".join(f"{r[f'aevb_{precision}_ratio']:.2f}" for r in rounds)
        print(f"{label:32s} {figures[f'aevb_{precision}_samples_per_s']:9.0f} samples/s"
              f"   ratio {figures[f'aevb_{precision}_ratio']:.2f}x (rounds: {ratios})"
              f"   valid ELBO {figures[f'aevb_{precision}_valid_elbo']:.2f} nats")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
