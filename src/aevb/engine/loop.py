"""The one training loop: every model, every dataset, resumable to the bit; the paper's
minibatch AEVB algorithm (Algorithm 1) when the model is a VAE.

Minibatches are index slices of a device-resident tensor, metrics are summed on the device and
read once per epoch, and each epoch ends with a validation pass and one atomic commit of its
checkpoints and metrics (:mod:`aevb.engine.rundir`). The model's ``selection`` metric picks the
best checkpoint and drives early stopping. The planned number of steps is fixed when the run
starts and kept in its checkpoints, so schedules do not shift when it is resumed or extended.

Under torchrun every process draws the same global minibatch (from the shared data generator),
takes positions ``rank::world`` of it and runs the model under DistributedDataParallel, its loss
weighted by its share, so that the averaged gradient is the global minibatch's mean. Metrics
are summed over the processes; rank 0 validates and alone writes the run directory.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from aevb.config.run import Config, dump_toml
from aevb.config.schema import TrainConfig
from aevb.data.splits import Dataset, Split
from aevb.engine import distributed, rundir
from aevb.engine.batches import batches, split_batch
from aevb.engine.checkpoint import checkpoint_path, encode_checkpoint
from aevb.engine.device import peak_memory, resolve_device, resolve_precision, unchecked_args
from aevb.engine.features import load_run_data
from aevb.engine.memory import check_model_fits
from aevb.engine.resume import data_fingerprint, restore_run
from aevb.engine.rng import rng_state, seeded
from aevb.engine.state import RunState
from aevb.engine.tensorboard import TensorBoardLog, open_log
from aevb.errors import AevbError, CheckpointError, ConfigError
from aevb.inference.schedules import learning_rate
from aevb.models import Batch, ClosedForm, DataSpec, Model, PerExampleState, Step, build_model

__all__ = ["RUN_FILES", "TrainResult", "better", "make_optimizer", "train", "validate"]


@dataclass
class TrainResult:
    run_dir: Path
    model: Model  # as at the end of training (the best one is in checkpoints/best)
    dataset: Dataset
    history: list[dict[str, float]]
    best_epoch: int
    device: torch.device


def make_optimizer(config: TrainConfig, parameters: Any) -> torch.optim.Optimizer:
    parameters = list(parameters)
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    # The fused kernels update every parameter in one pass, same arithmetic: a 50k-example epoch
    # of a 784-500-50 VAE on CPU went from 3.5 s to 2.2 s.
    if parameters and all(p.device.type in ("cpu", "cuda") for p in parameters):
        kwargs["fused"] = True
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, eps=config.adam_eps, **kwargs)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(parameters, **kwargs)
    return torch.optim.SGD(parameters, **kwargs)


def better(metric: float, best: float, mode: str) -> bool:
    """Whether ``metric`` beats ``best`` for a selection ``mode`` ("max" or "min")."""
    return metric > best if mode == "max" else metric < best


@torch.no_grad()
def validate(model: Model, split: Split, batch_size: int, step: Step, seed: int = 0
             ) -> dict[str, float]:
    """Mean of the model's metrics over ``split`` at ``step``, in eval mode, with a fixed seed
    (a forked RNG: validation neither perturbs nor depends on training's stream)."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    with seeded(seed, split.device):
        for batch in batches(split, batch_size):
            _, metrics = model(batch, step)
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0) + value.float() * len(batch.x)
    model.train(was_training)
    return {name: (total / len(split)).item() for name, total in sums.items()}


RUN_FILES = ("config.toml", "metrics.csv", rundir.LOCK, rundir.JOURNAL,
             *(f"checkpoints/{w}.{e}" for w in ("last", "best") for e in ("safetensors", "json")))
"""Every file training writes, relative to the run directory."""


def _write_metrics_csv(tx: rundir.Transaction, history: list[dict[str, float]]) -> None:
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    tx.write("metrics.csv", buffer.getvalue())


def _write_checkpoint(tx: rundir.Transaction, which: str, model: Model,
                      optimizer: torch.optim.Optimizer | None, config: Config,
                      state: RunState, rng: dict[str, torch.Tensor] | None = None) -> None:
    data, readable = encode_checkpoint(model, optimizer, config, state, rng)
    path = checkpoint_path(tx.run_dir, which)
    tx.write(path, data)
    tx.write(path.with_suffix(".json"), readable)


def _claim(run_dir: Path, resume: bool, stack: ExitStack) -> bool:
    """Rank 0's: fail before any work unless the run can be written where it is asked to be,
    lock it (until ``stack`` closes), and say whether the loop continues a committed epoch
    (``resume`` with none starts from scratch: a run killed in its first epoch has nothing)."""
    if resume and not run_dir.is_dir():
        raise CheckpointError(f"cannot resume: there is no run directory {run_dir}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"run directory {run_dir} is not writable: {error.strerror}") from None
    rundir.check_writable(run_dir, RUN_FILES)
    stack.enter_context(rundir.locked(run_dir))
    has_run = checkpoint_path(run_dir, "last").exists()
    if not resume and has_run:
        raise CheckpointError(f"{run_dir} already holds a run: pass --resume to continue it,"
                              " or choose another --out")
    return has_run


def _all_reduce_metrics(sums: dict[str, torch.Tensor], seen: int, device: torch.device
                        ) -> tuple[dict[str, torch.Tensor], int]:
    """An epoch's metric sums and example count over every rank (a metric absent adds 0)."""
    if distributed.world_size() == 1:
        return sums, seen
    names = list(dict.fromkeys(n for keys in distributed.all_gather_object(list(sums)) for n in keys))
    totals = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in
                          [*(sums.get(n, 0.0) for n in names), float(seen)]])
    distributed.all_reduce_sum(totals)
    return dict(zip(names, totals[:-1], strict=True)), int(totals[-1].item())


@contextmanager
def _process_settings(threads: int | None) -> Iterator[None]:
    """Training's process-wide settings, restored afterwards: thread count, flushing of
    subnormal floats, the global RNG state, distribution argument validation."""
    saved_threads = torch.get_num_threads()
    # torch has no getter for flush-denormal: a subnormal product reads 0 while it is on.
    flushing = (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        if threads:
            torch.set_num_threads(threads)
        # Subnormal floats make a ReLU/tanh VAE up to ~2x slower late in training; flushing
        # them to zero leaves the losses unchanged here.
        torch.set_flush_denormal(True)
        with unchecked_args():  # a diverged run is reported at the end of its epoch
            yield
    finally:
        torch.set_num_threads(saved_threads)
        torch.set_flush_denormal(flushing)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True,
          dataset: Dataset | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.data``, writing checkpoints and metrics to ``run_dir``.

    With ``resume`` the run continues from ``checkpoints/last``: same seed ⇒ the same weights as
    a run never interrupted, however it was interrupted; with no finished epoch it starts from
    scratch. The run directory is locked while training (a second writer fails at once with
    :class:`aevb.engine.rundir.RunDirInUse`); the process-wide settings training changes are
    restored when it returns. Under torchrun ``train.batch_size`` must be a multiple of the
    processes (:mod:`aevb.engine.distributed`)."""
    run_dir = Path(run_dir)
    with distributed.session(), _process_settings(config.train.threads), ExitStack() as stack:
        if config.train.batch_size % distributed.world_size():
            raise ConfigError(f"train.batch_size={config.train.batch_size} must be a multiple of"
                              f" the {distributed.world_size()} processes training together")
        restore = distributed.on_main(lambda: _claim(run_dir, resume, stack))
        return _train(config, run_dir, restore, progress, dataset)


@dataclass
class _Run:
    """What a run holds while it trains (``_set_up``); ``state`` is what its checkpoints keep."""

    config: Config
    run_dir: Path
    device: torch.device
    dataset: Dataset
    model: Model
    optimizer: torch.optim.Optimizer | None
    generator: torch.Generator
    precision: torch.dtype
    total_steps: int  # where this call stops (the schedules keep ``state.schedule_steps``)
    state: RunState
    log: TensorBoardLog | None = None  # rank 0's TensorBoard events (train.tensorboard)


def _train(config: Config, run_dir: Path, restore: bool, progress: bool,
           dataset: Dataset | None) -> TrainResult:
    run = _set_up(config, run_dir, restore, dataset)
    model, state, tc = run.model, run.state, config.train
    if not restore:
        if isinstance(model, ClosedForm):
            model.fit_data(run.dataset.train.values())
        distributed.seed_rank(tc.seed)
    net = distributed.parallel(model) if run.optimizer is not None else model
    per_example = model.per_example_state() if isinstance(model, PerExampleState) else []
    bar = tqdm(total=run.total_steps, initial=min(state.step, run.total_steps), unit="batch",
               disable=not (progress and distributed.is_main()), dynamic_ncols=True,
               desc=f"train {config.model.name}")
    model.train()
    run.log = open_log(config, run_dir, model) if distributed.is_main() else None
    stale = state.epoch - state.best_epoch
    while state.step < run.total_steps and not (tc.patience and stale >= tc.patience):
        started = time.perf_counter()
        sums, seen = _epoch(run, net, per_example, bar)
        row, improved = _end_epoch(run, sums, seen, started)
        stale = state.epoch - state.best_epoch
        rng = rng_state(run.generator)
        if not distributed.is_main():
            continue
        if run.log is not None:
            run.log.epoch(row, model, run.dataset)
        with rundir.transaction(run_dir) as tx:  # the epoch's files, all or none
            _write_checkpoint(tx, "last", model, run.optimizer, config, state, rng)
            if improved:
                _write_checkpoint(tx, "best", model, None, config, state)
            _write_metrics_csv(tx, state.history)
        bar.set_postfix({k: f"{v:.2f}" for k, v in row.items() if k.startswith("valid_")})
    bar.close()
    if run.log is not None:
        run.log.close(config, model, run.dataset, state.history)
    return TrainResult(run_dir, model, run.dataset, state.history, state.best_epoch, run.device)


def _set_up(config: Config, run_dir: Path, restore: bool, dataset: Dataset | None) -> _Run:
    """The run's data, model, optimizer and data generator, seeded, and its state: a new one,
    or the last checkpoint's (``restore``); config.toml written."""
    tc = config.train
    device = distributed.local_device(resolve_device(tc.device))
    torch.manual_seed(tc.seed)
    dataset = (dataset or load_run_data(config.data, run_dir, device)).to(device)
    spec = DataSpec(dataset.event_shape, dataset.kind, dataset.num_classes, dataset.condition_dim,
                    len(dataset.train))
    check_model_fits(config, spec, device)
    model = build_model(config.model, spec).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # A closed-form model (PCA) may have nothing for an optimizer to update.
    optimizer = make_optimizer(tc, trainable) if trainable else None
    generator = torch.Generator(device=device).manual_seed(tc.seed + 1)
    steps_per_epoch = dataset.train.steps_per_epoch(tc.batch_size)
    total_steps = (math.ceil(tc.train_samples / tc.batch_size) if tc.train_samples
                   else tc.epochs * steps_per_epoch)
    if optimizer is None:  # nothing to train: one epoch measures the fitted model
        total_steps = min(total_steps, steps_per_epoch)
    fingerprint = data_fingerprint(dataset)
    metric, mode = model.selection
    if restore:
        state = restore_run(run_dir, config, model, optimizer, generator, fingerprint)
    else:
        state = RunState(schedule_steps=total_steps, data_fingerprint=fingerprint,
                         best_value=-math.inf if mode == "max" else math.inf)
    state.selection = (metric, "max" if mode == "max" else "min")
    state.metric_names = {k: (v[0], v[1]) for k, v in model.metric_names.items()}
    precision = resolve_precision(tc.precision, device)
    state.precision = str(precision).removeprefix("torch.")
    if distributed.is_main():
        with rundir.transaction(run_dir) as tx:
            tx.write("config.toml", dump_toml(config))
    return _Run(config, run_dir, device, dataset, model, optimizer, generator, precision,
                total_steps, state)


def _epoch(run: _Run, net: Any, per_example: list[torch.Tensor], bar: Any
           ) -> tuple[dict[str, torch.Tensor], int]:
    """One pass over the training set in a fresh order, up to the run's last step: this
    rank's metric sums (each weighted by its examples) and how many examples it saw."""
    tc, state, optimizer, world = run.config.train, run.state, run.optimizer, distributed.world_size()
    train_split, device, precision = run.dataset.train, run.device, run.precision
    steps_per_epoch = train_split.steps_per_epoch(tc.batch_size)
    order = train_split.epoch_order(run.generator, tc.batch_size)
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    for start in range(0, len(order), tc.batch_size):
        if state.step >= run.total_steps:
            break
        index = order[start : start + tc.batch_size]
        batch = split_batch(train_split, index, run.generator)  # as one process draws it
        share, count = distributed.shard(len(index))
        if world > 1:  # this rank's examples; its weight makes DDP's mean the global one
            batch = Batch._make(None if f is None else f[share] for f in batch)
        step = Step(state.step, state.schedule_steps)
        with torch.autocast(device.type, precision, enabled=precision != torch.float32):
            loss, metrics = net(batch, step)
        if world > 1:
            loss = loss * (count * world / len(index))
        if optimizer is not None:
            rate = learning_rate(tc.lr_schedule, tc.lr, step.index, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = rate
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            taken = _guarded_step(run, optimizer, sums, count)
            if taken:
                optimizer.step()
            distributed.sync_rows(per_example, index, share, count)
            if not taken and not torch.isfinite(loss):  # skipped, and kept out of the means
                state.step += 1
                bar.update(1)
                continue
        if run.log is not None:  # reads the step's metrics to the host
            run.log.step(state.step, metrics, optimizer.param_groups[0]["lr"]
                         if optimizer is not None else None)
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0) + value.float() * count
        seen += count
        state.step += 1
        bar.update(1)
    return sums, seen


def _guarded_step(run: _Run, optimizer: torch.optim.Optimizer, sums: dict[str, torch.Tensor],
                  count: int) -> bool:
    """Clip the gradient to ``train.grad_clip`` and say whether to take the update: not where
    its norm is above ``train.grad_skip`` or not finite (counted in the run's state; a skipped
    step whose loss is not finite is also kept out of the epoch's means, so that one bad
    batch does not end the run as diverged). The norm joins the epoch's sums as
    ``grad_norm``, where it is finite."""
    tc = run.config.train
    if tc.grad_clip is None and tc.grad_skip is None:
        return True
    parameters = [p for group in optimizer.param_groups for p in group["params"]
                  if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(parameters, tc.grad_clip or math.inf).item()
    if math.isfinite(norm):  # one read of the norm a step: the skip needs it on the host
        sums["grad_norm"] = sums.get("grad_norm", 0) + torch.tensor(norm * count)
    if tc.grad_skip is not None and not norm <= tc.grad_skip:  # NaN is never <=
        run.state.skipped_updates += 1
        return False
    return True


def _end_epoch(run: _Run, sums: dict[str, torch.Tensor], seen: int, started: float
               ) -> tuple[dict[str, float], bool]:
    """The epoch's row (its training means over every rank, then rank 0's validation at the
    step that gave these weights) added to the state; whether it is the best epoch yet."""
    state, (metric, mode) = run.state, run.model.selection
    state.epoch += 1
    sums, seen = _all_reduce_metrics(sums, seen, run.device)
    row: dict[str, float] = {"epoch": state.epoch, "step": state.step}
    row.update({f"train_{k}": (v / seen).item() for k, v in sums.items()})
    if run.config.train.grad_skip is not None:  # this epoch's, as every rank skipped them
        row["skipped_updates"] = state.skipped_updates - sum(
            int(r.get("skipped_updates", 0)) for r in state.history)
    if not math.isfinite(row.get("train_loss", math.nan)):  # none: every step was skipped
        last = checkpoint_path(run.run_dir, "last")
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was kept"
        raise AevbError(f"training diverged: the loss is {row['train_loss']} in epoch"
                        f" {state.epoch}; {kept}. Lower train.lr or choose a bounded likelihood.")
    # the schedule as at the step whose update gave these weights
    step = Step(state.step - 1, state.schedule_steps)
    valid = distributed.broadcast_object(  # rank 0 validates: one `best` for all
        validate(run.model, run.dataset.valid, run.config.eval.batch_points, step,
                 run.config.train.seed) if distributed.is_main() else {})
    row.update({f"valid_{k}": v for k, v in valid.items()})
    if run.config.eval.test_curve and distributed.is_main():  # logged, never selected on
        test = validate(run.model, run.dataset.test, run.config.eval.batch_points, step,
                        run.config.train.seed)
        row.update({f"test_{k}": v for k, v in test.items()})
    state.seconds += time.perf_counter() - started
    row["seconds"] = round(state.seconds, 3)
    state.history.append(row)
    state.metrics = row
    improved = better(valid[metric], state.best_value, mode)
    if improved:
        state.best_value, state.best_epoch = valid[metric], state.epoch
    state.peak_memory = peak_memory(run.device, state.peak_memory)
    return row, improved
