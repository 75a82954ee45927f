"""The commands over one run: train, evaluate, sample, plot."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aevb.cli.args import EXAMPLES, configured, default_out, positive_int
from aevb.errors import AevbError, ConfigError

__all__ = ["add_commands"]


def _cmd_train(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.engine.checkpoint import run_config
    from aevb.engine.distributed import is_main
    from aevb.engine.loop import train
    from aevb.evaluation.evaluate import evaluate_run
    from aevb.reporting.figures import draw_run_figures
    from aevb.reporting.report import write_report

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
    resumed = args.resume and not args.config  # the run's own config, unless a file is given
    if args.tensorboard is not None:
        extra = [*extra, "--train.tensorboard", args.tensorboard]
    config = configured(args, extra, run_config(args.out) if resumed else None)
    out = default_out(args, f"{Path(config.data.name).stem}-{config.model.name}")
    result = train(config, out, resume=args.resume, progress=not args.quiet)
    if not is_main():  # under torchrun rank 0 alone evaluates, draws and reports
        # leaving without the interpreter's teardown avoids a native abort ("terminate called
        # without an active exception") that torch's distributed teardown raised now and then
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
        draw_run_figures(out, result.dataset, result.device)
    print(f"report: {write_report(out)}")
    return 0


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
    # first: a model or dataset it cannot judge fails before the long evaluation
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
    # grey levels, every training image: the classifier must not depend on the run's binarization
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
    # never over the run's own samples.png (training draws it)
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
    from aevb.reporting.figures import draw_run_figures
    from aevb.reporting.report import write_report

    with locked(args.run):  # one writer at a time: a training run may be drawing too
        draw_run_figures(Path(args.run))
        print(write_report(args.run))
    return 0


def add_commands(commands: Any, threads: argparse.ArgumentParser) -> None:
    """``train``, ``evaluate``, ``sample`` and ``plot`` on the subparsers ``commands``."""
    train = commands.add_parser(
        "train", help="train a model, evaluate it and write its report",
        description="Train a model. Any config key is an option: --epochs 5, --latent_dim 2,"
        " --model.hidden 400,400, --dataset digits (data.name), --model vae (model.name).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    train.add_argument("config", nargs="?", help="a TOML config file (default: built-in defaults)")
    train.add_argument("--out", help="the run directory (default: runs/DATASET-MODEL-TIME)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--tensorboard", nargs="?", const="", metavar="DIR",
                       help="log to TensorBoard in DIR (default RUN/tensorboard;"
                       " pip install -e .[tensorboard])")
    train.set_defaults(handler=_cmd_train, overrides=True)

    evaluate = commands.add_parser(
        "evaluate", help="test ELBO and importance-sampled log p(x)", parents=[threads],
        description="Evaluate a run's checkpoint. The run's own evaluation (test split, its K"
        " and points, best checkpoint) is RUN/evaluation.json, which the report shows; any other"
        " is written beside it, named by what differs (RUN/evaluation-valid-k10.json).")
    evaluate.add_argument("run", help="a run directory")
    evaluate.add_argument("--k", type=positive_int,
                          help="importance samples K (default: the run's eval.is_samples)")
    evaluate.add_argument("--precision", choices=["float32", "bfloat16"],
                          help="matmuls of log p(x) (default: the run's eval.is_precision);"
                          " bfloat16 is kept only within 0.02 nats/point of float32")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--max-points", type=positive_int, help="evaluate only the first N points")
    evaluate.add_argument("--dataset", help="evaluate on this dataset instead of the run's own")
    evaluate.add_argument("--checkpoint", default="best", choices=["best", "last"])
    evaluate.add_argument("--device", default="auto",
                          help="auto (a GPU where there is one) | cpu | cuda | cuda:N | mps")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.add_argument("--sample-quality", action="store_true",
                          help="also a Fréchet distance of samples to the test set in the features"
                          " of a classifier trained (once, cached) on the dataset: labelled data")
    evaluate.add_argument("--quality-samples", type=positive_int, default=10_000,
                          help="samples drawn for --sample-quality (default 10000)")
    evaluate.set_defaults(handler=_cmd_evaluate)

    sample = commands.add_parser("sample", help="decode samples from the prior", parents=[threads])
    sample.add_argument("run", help="a run directory")
    sample.add_argument("--n", type=positive_int, default=64, help="how many samples")
    sample.add_argument("--out", help="a .png grid or a .npy array in an existing directory"
                        " (default: RUN/samples-nN-seedS.png)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--label", type=int,
                        help="draw samples of this class (a model conditioned on labels)")
    sample.add_argument("--checkpoint", default="best", choices=["best", "last"])
    sample.set_defaults(handler=_cmd_sample)

    plot = commands.add_parser("plot", help="redraw a run's pictures and report", parents=[threads])
    plot.add_argument("run", help="a run directory")
    plot.set_defaults(handler=_cmd_plot)
