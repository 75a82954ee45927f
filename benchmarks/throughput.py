"""Training throughput of aevb against the usual hand-written PyTorch loop, in one run.

The baseline is how the common examples train a VAE: an ``nn.Module`` with the KL formula
written out, a ``DataLoader`` over a ``TensorDataset`` (batch 100, shuffled), Adam, and
``.item()`` on the loss every step. aevb trains the same network (same layer sizes,
activation, latent size, likelihood, optimizer and data) through its one loop, validation
pass and checkpoints included. Both are timed over the same number of epochs, in this process,
one after the other; the script prints samples/s for each and their ratio.

    python benchmarks/throughput.py --epochs 20                # MNIST, 784-500-50 ReLU
    python benchmarks/throughput.py --dataset digits --epochs 5   # a quick check
"""

from __future__ import annotations

import argparse
import json
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
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[config.model.activation]
    features = x[0].numel()
    model = HandWrittenVAE(features, config.model.hidden[0], config.model.latent_dim, act)
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
          f"{dataset.train.x[0].numel()}-{args.hidden}-{args.latent} {args.activation}, "
          f"{torch.get_num_threads()} threads")

    figures: dict[str, float] = {}
    hand = run_hand_written(dataset.train.x, config)
    figures["hand_written_samples_per_s"] = n * args.epochs / hand
    seconds, valid_elbo = run_aevb(config, dataset)
    figures["aevb_samples_per_s"] = n * args.epochs / seconds
    figures["aevb_valid_elbo"] = valid_elbo
    figures["ratio"] = hand / seconds
    print()
    print(f"hand-written loop (DataLoader): {figures['hand_written_samples_per_s']:9.0f} samples/s")
    print(f"aevb:                           {figures['aevb_samples_per_s']:9.0f} samples/s"
          f"   ratio {figures['ratio']:.2f}x   valid ELBO {valid_elbo:.2f} nats")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
