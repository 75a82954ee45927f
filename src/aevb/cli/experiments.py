"""The commands that train many runs: compare, sweep, reproduce."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aevb.cli.args import configured, default_out
from aevb.errors import ConfigError

__all__ = ["add_commands"]


def _cmd_compare(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.experiments.compare import autoencoders, compare_models, comparison_table

    config = configured(args, extra)
    models = [m for m in args.models.split(",") if m] if args.models is not None else autoencoders()
    out = default_out(args, f"compare-{Path(config.data.name).stem}")
    table = comparison_table(compare_models(config, models, out, progress=not args.quiet))
    (out / "comparison.md").write_text(table)
    print(table, end="")
    print(f"table: {out / 'comparison.md'}")
    return 0


def _cmd_sweep(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.experiments.sweep import TABLE, sweep, sweep_table

    config = configured(args, extra)
    try:
        betas = [float(b) for b in args.beta.split(",") if b]
    except ValueError:
        raise ConfigError(f"--beta takes comma-separated numbers, got {args.beta!r}") from None
    for beta in betas:  # each one checked before the first run trains
        if not (math.isfinite(beta) and beta >= 0):
            raise ConfigError(f"--beta takes finite numbers >= 0, got {beta}")
    out = default_out(args, f"sweep-{Path(config.data.name).stem}")
    print(sweep_table(sweep(config, betas, out, progress=not args.quiet)), end="")
    print(f"table and rate-distortion curve: {out / TABLE}")
    return 0


def _cmd_reproduce(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.experiments.reproduce import Budget, Settings, reproduce

    try:
        sizes = tuple(int(v) for v in (args.sizes or "").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--sizes takes comma-separated latent sizes, got {args.sizes!r}") from None
    if any(size <= 0 for size in sizes):
        raise ConfigError(f"--sizes takes positive latent sizes, got {args.sizes!r}")
    try:
        train_sizes = tuple(int(v) for v in args.train_sizes.split(",") if v.strip())
    except ValueError:
        train_sizes = ()
    if not train_sizes or min(train_sizes) <= 0:
        raise ConfigError(f"--train-sizes takes positive sizes, got {args.train_sizes!r}")
    settings = Settings(out=Path(args.out), budget=Budget.parse(args.budget), dataset=args.dataset,
                        sizes=sizes or None, train_sizes=train_sizes, threads=args.threads,
                        progress=not args.quiet)
    print(f"report: {reproduce(args.experiment, settings)}")
    return 0


def add_commands(commands: Any, threads: argparse.ArgumentParser) -> None:
    """``compare``, ``sweep`` and ``reproduce`` on the subparsers ``commands``."""
    compare = commands.add_parser(
        "compare", help="train several models with one budget; one table of test errors",
        description="Train each model with the same config and budget (any config key is an"
        " option, as for train), evaluate it on the test split and print one Markdown table.",
        allow_abbrev=False)
    compare.add_argument("config", nargs="?", help="a TOML config file (default: built-in defaults)")
    compare.add_argument("--models", help="comma-separated names (default: every autoencoder)")
    compare.add_argument("--out", help="the directory of the runs (default: runs/compare-DATASET-TIME)")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(handler=_cmd_compare, overrides=True)

    sweep = commands.add_parser(
        "sweep", help="train one model per beta; the rate-distortion curve and one table",
        description="Train the model once per beta with the same config and budget (any config"
        " key is an option, as for train), evaluate each on the test split, draw the test rate"
        " against the distortion (OUT/rate_distortion.png) and print one Markdown table"
        " (OUT/sweep.md). The model needs a beta key (vae).", allow_abbrev=False)
    sweep.add_argument("config", nargs="?", help="a TOML config file (default: built-in defaults)")
    sweep.add_argument("--beta", required=True, help="comma-separated KL weights, e.g. 0.1,1,10")
    sweep.add_argument("--out", help="the directory of the runs (default: runs/sweep-DATASET-TIME)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep.set_defaults(handler=_cmd_sweep, overrides=True)

    reproduce = commands.add_parser(
        "reproduce", help="the experiments of Kingma & Welling (2014): fig2, fig3, fig4, fig5",
        parents=[threads],
        description="Train and measure the paper's experiments: fig2 (lower bound against"
        " training samples, AEVB against wake-sleep), fig3 (marginal likelihood of AEVB,"
        " wake-sleep and Monte Carlo EM, appendix D estimator and importance sampling), fig4"
        " (2-D manifolds), fig5 (samples). Writes CSV, PNG and OUT/report.md; run it again to"
        " continue an interrupted run or to extend the budget.")
    reproduce.add_argument("experiment", choices=["fig2", "fig3", "fig4", "fig5", "all"])
    reproduce.add_argument("--budget", default="1e6",
                           help="training samples per run (1e6, the default) or minutes for the"
                           " whole command (60m); the paper's runs go to 1e8")
    reproduce.add_argument("--out", default="runs/reproduce", help="where the runs and the"
                           " report go (default: runs/reproduce)")
    reproduce.add_argument("--dataset", default="mnist",
                           help="the binary-image dataset in MNIST's place (tests use digits)")
    reproduce.add_argument("--sizes", help="latent sizes for fig2 and fig5 (default: the paper's)")
    reproduce.add_argument("--train-sizes", default="1000,50000",
                           help="fig3's training-set sizes (default: the paper's 1000,50000)")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(handler=_cmd_reproduce)
