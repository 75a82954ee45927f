"""The ``aevb`` command line: a few lines per command over the library's functions."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aevb.engine.distributed import launched
from aevb.errors import AevbError, ConfigError

__all__ = ["main"]

EXAMPLES = """examples:
  aevb train --dataset digits --epochs 2 --out runs/digits
  aevb train configs/mnist.toml --latent_dim 2 --out runs/mnist-2d
  aevb train --out runs/digits --resume --epochs 4
  aevb evaluate runs/digits --json
  aevb train --dataset digits --objective iwae --iw_samples 5 --kl_warmup 0.3 --epochs 3
  aevb models vae
  aevb compare --dataset digits --models ae,pca,denoising-ae --epochs 5 --out runs/ae-compare
  aevb sweep --beta 0.1,0.3,1,3,10 --dataset digits --binarize none --likelihood gaussian-fixed
  aevb reproduce fig2 --budget 1e6
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are ``aevb: error: ...`` on one line, exit status 2, as ours."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{message} (`{self.prog} --help` lists the options)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """``torch.set_num_threads(count)`` for the block (a command's ``--threads``)."""
    if not count:
        yield
        return
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _parse_overrides(tokens: Sequence[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs left over by argparse → {"key": "value"}."""
    overrides: dict[str, str] = {}
    tokens = list(tokens)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"unexpected argument {token!r}; overrides look like --key value")
        key, _, value = token[2:].partition("=")
        if not _:
            if not tokens or tokens[0].startswith("--"):
                raise ConfigError(f"--{key} needs a value")
            value = tokens.pop(0)
        overrides[key] = value
    return overrides


def _cmd_train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.config.overrides import apply_overrides
    from aevb.config.run import Config, load_config
    from aevb.engine.checkpoint import run_config
    from aevb.engine.distributed import is_main
    from aevb.engine.loop import train
    from aevb.evaluation.evaluate import evaluate_run
    from aevb.reporting.report import write_report

    overrides = _parse_overrides(extra)
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        base = load_config(args.config) if args.config else run_config(args.out)
    else:
        base = load_config(args.config) if args.config else Config()
    config = apply_overrides(base, overrides)
    out = Path(args.out or f"runs/{Path(config.data.name).stem}-{config.model.name}-"
               f"{time.strftime('%Y%m%d-%H%M%S')}")
    result = train(config, out, resume=args.resume, progress=not args.quiet)
    if not is_main():  # under torchrun rank 0 alone evaluates, draws and reports
        # A rank > 0 has nothing left to write; leaving without the interpreter's teardown
        # avoids a native abort ("terminate called without an active exception") that torch's
        # distributed teardown raised now and then at the exit of such a rank.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    last = result.history[-1] if result.history else {}
    print(f"trained {config.model.name} on {config.data.name}: {len(result.history)} epochs,"
          f" best valid {result.model.selection[0]} at epoch {result.best_epoch};"
          f" run directory {out}")
    if not args.no_eval:
        evaluation = evaluate_run(out, config.eval, progress=not args.quiet,
                                  dataset=result.dataset, device=result.device)
        _print_evaluation(evaluation)
    elif last:
        print(", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith("valid_")))
    if config.eval.plots:
        _draw(out, result.dataset, result.device)
    print(f"report: {write_report(out)}")
    return 0


def _draw(run_dir: Path, dataset: Any = None, device: Any = "cpu") -> None:
    from aevb.reporting.figures import draw_run_figures

    draw_run_figures(run_dir, dataset, device)


def _print_evaluation(result: dict[str, Any]) -> None:
    parts = [f"{result['split']} ({result['points']} points)"]
    if "elbo_nats" in result:
        parts.append(f"ELBO {result['elbo_nats']:.2f} ± {result['elbo_se']:.2f} nats")
        parts.append(f"log p(x) {result['log_px_nats']:.2f} ± {result['log_px_se']:.2f} nats"
                     f" (K={result['is_samples']}{_precision_note(result)})")
    if "rate_nats" in result:
        parts.append(f"rate {result['rate_nats']:.2f}, distortion {result['distortion_nats']:.2f}"
                     " nats")
    if "recon_error_per_image" in result:
        parts.append(f"squared error {result['recon_error_per_image']:.2f} per image")
        parts.append(f"active units {result['active_units']}/{result['latent_dim']}")
    metrics = [f"{key.removeprefix('test_')} {value:.4g}" for key, value in result.items()
               if key.startswith("test_")]  # a model without a likelihood: its own metrics
    if metrics:
        parts.append(", ".join(metrics))
    if "classification_error" in result:
        parts.append(f"classification error {100 * result['classification_error']:.2f} %")
    print("; ".join(parts))


def _precision_note(result: dict[str, Any]) -> str:
    """How a bfloat16 log p(x) agreed with float32's, where one was asked for."""
    if "bf16_agreement_nats" not in result:
        return ""
    agreed = (f"bfloat16 vs float32: {result['bf16_agreement_nats']:.4f} nats/point on the first"
              f" {result['bf16_agreement_points']} points")
    if result.get("is_precision") == "bfloat16":
        return f", {agreed}"
    return f", float32: {agreed}, above the 0.02 allowed"


def _cmd_evaluate(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from dataclasses import replace

    from aevb.engine.checkpoint import load_model
    from aevb.evaluation.evaluate import evaluate_run
    from aevb.files import atomic_write_text
    from aevb.reporting.report import write_report

    config, _, _ = load_model(args.run, args.checkpoint)
    eval_config = replace(config.eval, **{k: v for k, v in (
        ("is_samples", args.k), ("max_points", args.max_points),
        ("is_precision", args.precision)) if v is not None})
    # First, so that a model or dataset it cannot judge fails before the long evaluation.
    quality = _sample_quality(args, config) if args.sample_quality else {}
    result = evaluate_run(args.run, eval_config, args.split, args.checkpoint,
                          progress=not (args.json or args.quiet), device=args.device,
                          data_name=args.dataset)
    if quality:
        result.update(quality)
        atomic_write_text(Path(args.run) / result["file"], json.dumps(result, indent=2) + "\n")
    write_report(args.run)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_evaluation(result)
        if quality:
            _print_quality(quality)
        print(f"written to {Path(args.run) / result['file']}")
    return 0


def _sample_quality(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """Sample-quality keys for ``evaluate --sample-quality``, added to evaluation.json."""
    from dataclasses import replace

    from aevb.data.datasets import load_dataset
    from aevb.engine.checkpoint import load_model
    from aevb.evaluation.quality import sample_quality

    if config.data.features is not None:
        raise ConfigError(f"--sample-quality compares images, and {args.run} models codes"
                          f" (data.features = {config.data.features}), not images")
    _, model, _ = load_model(args.run, args.checkpoint)
    # Grey levels, every training image: the classifier must not depend on the run's binarization.
    data = load_dataset(replace(config.data, name=args.dataset or config.data.name,
                                binarize="none", train_size=None, labelled=None),
                        base_dir=args.run)
    return sample_quality(model, data, n=args.quality_samples, seed=config.train.seed,
                          cache_dir=config.data.cache_dir)


def _print_quality(quality: dict[str, Any]) -> None:
    print(f"{quality['fd_classifier_name']} {quality['fd_classifier']:.3g} over"
          f" {quality['quality_samples']} samples (real test vs train:"
          f" {quality['fd_test_vs_train']:.3g}); confidence {quality['sample_confidence']:.3f};"
          f" classifier test accuracy {quality['quality_classifier_accuracy']:.3f}")


def _cmd_sample(args: argparse.Namespace, extra: Sequence[str]) -> int:
    import numpy as np
    import torch

    from aevb.engine.checkpoint import load_model
    from aevb.models import Conditional, Generative
    from aevb.reporting import plots

    _, model, _ = load_model(args.run, args.checkpoint)
    if not isinstance(model, Generative):
        raise AevbError(f"model {model.config.name!r} is not generative: it has no prior to"
                        " sample from")
    condition, source = None, "p(z)"
    if args.label is not None:
        if not isinstance(model, Conditional) or model.classes is None:
            raise AevbError(f"model {model.config.name!r} is not conditioned on class labels:"
                            " it takes no --label")
        if not 0 <= args.label < model.classes:
            raise AevbError(f"--label {args.label} is no class of this model"
                            f" (0..{model.classes - 1})")
        condition, source = model.condition_of(torch.tensor(args.label)), f"p(z|y={args.label})"
    # Never over the run's own samples.png (training draws it): a file of its own by default.
    label = "" if args.label is None else f"-label{args.label}"
    last = "-last" if args.checkpoint == "last" else ""
    out = Path(args.out or Path(args.run) / f"samples-n{args.n}-seed{args.seed}{label}{last}.png")
    if not out.parent.is_dir():
        raise AevbError(f"directory {out.parent} does not exist")
    shape = tuple(model.data.event_shape)
    if out.suffix != ".npy" and not plots.is_image_shape(shape):
        raise AevbError(f"this run's examples have shape {shape}, not images: write the samples"
                        " as an array with --out FILE.npy")
    torch.manual_seed(args.seed)
    with torch.no_grad():
        samples = model.sample(args.n, condition).numpy()
    if out.suffix == ".npy":
        np.save(out, samples)
    else:
        plots.image_grid(samples, out, title=f"{args.n} samples from {source}")
    print(f"{args.n} samples written to {out}")
    return 0


def _cmd_plot(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.engine.rundir import locked
    from aevb.reporting.report import write_report

    with locked(args.run):  # one writer at a time: a training run may be drawing too
        _draw(Path(args.run))
        print(write_report(args.run))
    return 0


def _cmd_data(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb import data

    if args.action == "list":
        for name, description in data.list_datasets():
            print(f"{name:16} {description}")
        return 0
    if not args.name:
        raise AevbError(f"aevb data {args.action} needs a dataset name")
    # a folder of images is read as train reads it: --image-channels, --image-size H,W
    size = _sizes(args.image_size)
    if args.action == "fetch":
        print(data.fetch(args.name, args.cache_dir or "", channels=args.image_channels,
                         image_size=size))
    else:
        info = data.dataset_info(args.name, args.cache_dir or "", args.image_channels, size)
        print(json.dumps(info, indent=2, default=str))
    return 0


def _sizes(text: str | None) -> tuple[int, ...]:
    """``--image-size 32,32`` as a checked (H, W) (empty: each folder's first image's size)."""
    from aevb.config.schema import DataConfig

    try:
        size = tuple(int(v) for v in (text or "").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--image-size takes H,W, got {text!r}") from None
    return DataConfig(image_size=size).image_size


def _cmd_compare(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.config.overrides import apply_overrides
    from aevb.config.run import Config, load_config
    from aevb.experiments.compare import AUTOENCODERS, compare_models, comparison_table

    config = apply_overrides(load_config(args.config) if args.config else Config(),
                             _parse_overrides(extra))
    models = [m for m in args.models.split(",") if m] if args.models is not None else list(
        AUTOENCODERS)
    out = Path(args.out or f"runs/compare-{Path(config.data.name).stem}-"
               f"{time.strftime('%Y%m%d-%H%M%S')}")
    table = comparison_table(compare_models(config, models, out, progress=not args.quiet))
    (out / "comparison.md").write_text(table)
    print(table, end="")
    print(f"table: {out / 'comparison.md'}")
    return 0


def _cmd_sweep(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.config.overrides import apply_overrides
    from aevb.config.run import Config, load_config
    from aevb.experiments.sweep import TABLE, sweep, sweep_table

    config = apply_overrides(load_config(args.config) if args.config else Config(),
                             _parse_overrides(extra))
    try:
        betas = [float(b) for b in args.beta.split(",") if b]
    except ValueError:
        raise ConfigError(f"--beta takes comma-separated numbers, got {args.beta!r}") from None
    for beta in betas:  # each one checked before the first run trains
        if not (math.isfinite(beta) and beta >= 0):
            raise ConfigError(f"--beta takes finite numbers >= 0, got {beta}")
    out = Path(args.out or f"runs/sweep-{Path(config.data.name).stem}-"
               f"{time.strftime('%Y%m%d-%H%M%S')}")
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


def _cmd_models(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.config.run import model_keys
    from aevb.models import MODELS, model_class

    if not args.name:
        for name, cls in sorted(MODELS.items()):
            print(f"{name:16} {cls.description}")
        return 0
    cls = model_class(args.name)
    print(f"{args.name}: {cls.description}\n\n[model] keys (--KEY VALUE on the command line):")
    rows = model_keys(args.name)
    width = max(len(f"{key} = {default}") for key, default, _ in rows)
    for key, default, doc in rows:
        print(f"  {f'{key} = {default}':{width}}  {doc}".rstrip())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aevb", description="Autoencoders and variational autoencoders (AEVB) on PyTorch.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model, evaluate it and write its report",
        description="Train a model. Any config key is an option: --epochs 5, --latent_dim 2,"
        " --model.hidden 400,400, --dataset digits (data.name), --model vae (model.name).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
    )
    train.add_argument("config", nargs="?", help="a TOML config file (default: built-in defaults)")
    train.add_argument("--out", help="the run directory (default: runs/DATASET-MODEL-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(handler=_cmd_train)

    # --threads for the commands without config overrides (train, compare, sweep: a config key)
    threads = _Parser(add_help=False)
    threads.add_argument("--threads", type=_positive_int, help="CPU threads for PyTorch")

    evaluate = commands.add_parser(
        "evaluate", help="test ELBO and importance-sampled log p(x)", parents=[threads],
        description="Evaluate a run's checkpoint. The run's own evaluation (test split, its K"
        " and points, best checkpoint) is RUN/evaluation.json, which the report shows; any other"
        " is written beside it, named by what differs (RUN/evaluation-valid-k10.json).")
    evaluate.add_argument("run", help="a run directory")
    evaluate.add_argument("--k", type=_positive_int,
                          help="importance samples K (default: the run's eval.is_samples)")
    evaluate.add_argument("--precision", choices=["float32", "bfloat16"],
                          help="matmuls of log p(x) (default: the run's eval.is_precision);"
                          " bfloat16 is kept only within 0.02 nats/point of float32")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--max-points", type=_positive_int,
                          help="evaluate only the first N points")
    evaluate.add_argument("--dataset", help="evaluate on this dataset instead of the run's own")
    evaluate.add_argument("--checkpoint", default="best", choices=["best", "last"])
    evaluate.add_argument("--device", default="auto",
                          help="auto (a GPU where there is one) | cpu | cuda | cuda:N | mps")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.add_argument("--sample-quality", action="store_true",
                          help="also a Fréchet distance of samples to the test set in the features"
                          " of a classifier trained (once, cached) on the dataset: labelled data")
    evaluate.add_argument("--quality-samples", type=_positive_int, default=10_000,
                          help="samples drawn for --sample-quality (default 10000)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    sample = commands.add_parser("sample", help="decode samples from the prior", parents=[threads])
    sample.add_argument("run", help="a run directory")
    sample.add_argument("--n", type=_positive_int, default=64, help="how many samples")
    sample.add_argument("--out", help="a .png grid or a .npy array in an existing directory"
                        " (default: RUN/samples-nN-seedS.png)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--label", type=int,
                        help="draw samples of this class (a model conditioned on labels)")
    sample.add_argument("--checkpoint", default="best", choices=["best", "last"])
    sample.set_defaults(handler=_cmd_sample)

    plot = commands.add_parser("plot", help="redraw a run's pictures and report",
                               parents=[threads])
    plot.add_argument("run", help="a run directory")
    plot.set_defaults(handler=_cmd_plot)

    data = commands.add_parser("data", help="list, fetch or describe datasets", parents=[threads])
    data.add_argument("action", choices=["list", "fetch", "info"])
    data.add_argument("name", nargs="?", help="a dataset name")
    data.add_argument("--cache-dir", help="where data is kept (default: $AEVB_CACHE or ~/.cache/aevb)")
    data.add_argument("--image-channels", type=int, choices=[1, 3], default=1,
                      help="a folder of images: 1 (grey) or 3 (RGB), as data.image_channels")
    data.add_argument("--image-size", help="a folder of images: resize to H,W (data.image_size)")
    data.set_defaults(handler=_cmd_data)

    compare = commands.add_parser(
        "compare", help="train several models with one budget; one table of test errors",
        description="Train each model with the same config and budget (any config key is an"
        " option, as for train), evaluate it on the test split and print one Markdown table.",
        allow_abbrev=False,
    )
    compare.add_argument("config", nargs="?", help="a TOML config file (default: built-in defaults)")
    compare.add_argument("--models", help="comma-separated names (default: every autoencoder)")
    compare.add_argument("--out", help="the directory of the runs (default: runs/compare-DATASET-TIME)")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(handler=_cmd_compare)

    sweep = commands.add_parser(
        "sweep", help="train one model per beta; the rate-distortion curve and one table",
        description="Train the model once per beta with the same config and budget (any config"
        " key is an option, as for train), evaluate each on the test split, draw the test rate"
        " against the distortion (OUT/rate_distortion.png) and print one Markdown table"
        " (OUT/sweep.md). The model needs a beta key (vae).",
        allow_abbrev=False,
    )
    sweep.add_argument("config", nargs="?", help="a TOML config file (default: built-in defaults)")
    sweep.add_argument("--beta", required=True, help="comma-separated KL weights, e.g. 0.1,1,10")
    sweep.add_argument("--out", help="the directory of the runs (default: runs/sweep-DATASET-TIME)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    sweep.set_defaults(handler=_cmd_sweep)

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

    models = commands.add_parser("models", help="list the models, or one model's config keys",
                                 parents=[threads])
    models.add_argument("name", nargs="?", help="a model: print its keys, defaults and docs")
    models.set_defaults(handler=_cmd_models)
    return parser


TRAIN_FLAGS = {"--out": True, "--resume": False, "--no-eval": False, "--quiet": False,
               "-h": False, "--help": False}
"""``aevb train``'s own options (True: takes a value); any other --key value is an override."""
COMPARE_FLAGS = {"--out": True, "--models": True, "--quiet": False, "-h": False, "--help": False}
SWEEP_FLAGS = {"--out": True, "--beta": True, "--quiet": False, "-h": False, "--help": False}


def _split_argv(
    argv: list[str], flags: dict[str, bool] = TRAIN_FLAGS
) -> tuple[list[str], list[str]]:
    """Separate config overrides from a command's own arguments (``flags``) before argparse
    sees them (``train``, ``compare`` and ``sweep`` take any config key as an option).

    Otherwise the value of an override (``--epochs 2``) could be taken for the config file.
    """
    own, overrides = [], []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        name = token.split("=", 1)[0]
        if not token.startswith("-") or name in flags:
            own.append(token)
            if flags.get(name) and "=" not in token and tokens:
                own.append(tokens.pop(0))
        else:
            overrides.append(token)
            if "=" not in token and tokens and not tokens[0].startswith("--"):
                overrides.append(tokens.pop(0))
    return own, overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    flags = {"train": TRAIN_FLAGS, "compare": COMPARE_FLAGS, "sweep": SWEEP_FLAGS}
    if argv and argv[0] in flags:
        own, extra = _split_argv(argv[1:], flags[argv[0]])
        argv = [argv[0], *own]
    try:
        args = parser.parse_args(argv)
        if argv and argv[0] != "train" and launched():
            raise ConfigError(f"only `aevb train` runs data-parallel under torchrun; run"
                              f" `aevb {argv[0]}` as one process (every rank would write the"
                              f" same files)")
        with _threads(getattr(args, "threads", None)):
            return int(args.handler(args, extra))
    except AevbError as error:
        print(f"aevb: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"aevb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aevb: interrupted; a training run continues with --resume --out RUN_DIR",
              file=sys.stderr)
        return 130

