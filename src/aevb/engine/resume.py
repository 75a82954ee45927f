"""Resuming a run: its checkpoint read back into the model, the optimizer and the RNGs, after
checking that it is the run that was started, on the same data.

A resumed run keeps its data, model, seed, optimizer and minibatch size (steps and schedules
are in minibatches of M); lr, weight decay, budget, patience, precision, device and threads may
change, each change kept in the checkpoints' ``changes`` as ``{"epoch", "key", "old", "new"}``
(the first epoch trained with the new value) and shown in the report.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch

from aevb.config.run import Config, config_to_dict
from aevb.config.schema import TrainConfig
from aevb.data.splits import SPLITS, Dataset
from aevb.engine import checkpoint, distributed
from aevb.engine.state import ArrayPrint, Change, Fingerprint, RunState
from aevb.errors import CheckpointError, ConfigError, DataError
from aevb.models import Model

__all__ = ["check_same_data", "data_fingerprint", "restore_run", "train_changes"]

FIXED_TRAIN_KEYS = {
    "optimizer": "its saved optimizer state is another optimizer's; start a new run (--out)",
    "seed": "the random state is restored from the checkpoint, so a new seed would be ignored",
    "batch_size": "its step count and schedules are in minibatches of the size it started with",
}
"""The training settings a resumed run cannot change, and why."""


def data_fingerprint(dataset: Dataset) -> Fingerprint:
    """Per split, per array (x, and y and c when present): its shape, dtype and a BLAKE2b
    hash of its bytes. x is hashed as the model sees it, float32 :meth:`Split.values`, whatever
    its storage (uint8, memory-mapped), in pieces: the digest of a float32 tensor's bytes.
    About 0.2 s for MNIST's 50k×784 training images."""
    prints: Fingerprint = {}
    for name in SPLITS:
        split = getattr(dataset, name)
        digest = hashlib.blake2b(digest_size=16)
        rows = max(1, FINGERPRINT_VALUES // max(1, math.prod(split.event_shape)))
        for start in range(0, len(split), rows):
            index = torch.arange(start, min(start + rows, len(split)), device=split.device)
            digest.update(_bytes(split.values(index)))
        prints[name] = {"x": ArrayPrint(shape=[len(split), *split.event_shape], dtype="float32",
                                        blake2b=digest.hexdigest())}
        for array, tensor in (("y", split.y), ("c", split.c)):
            if tensor is not None:
                prints[name][array] = ArrayPrint(
                    shape=list(tensor.shape), dtype=str(tensor.dtype).removeprefix("torch."),
                    blake2b=hashlib.blake2b(_bytes(tensor), digest_size=16).hexdigest())
    return prints


FINGERPRINT_VALUES = 1 << 22
"""Values of x hashed at a time: uint8 or memory-mapped data is never made float32 whole."""


def _bytes(tensor: torch.Tensor) -> Any:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def check_same_data(header: dict[str, Any], data: Dataset | Fingerprint, source: str,
                    hint: str = "") -> None:
    """Raise a DataError naming the split and array of ``data`` (a dataset from ``source``, or its
    fingerprint) unlike checkpoint ``header``'s, ``hint`` appended; one without prints passes."""
    if (saved := header.get("data_fingerprint")) is None:
        return
    current = data if isinstance(data, dict) else data_fingerprint(data)
    for split, arrays in saved.items():
        now = current.get(split, {})
        for array in sorted(arrays.keys() | now.keys()):
            old, new = arrays.get(array), now.get(array)
            if old == new:
                continue
            if old is None or new is None:
                what = "is present now" if old is None else "is missing now"
            elif (old["shape"], old["dtype"]) != (new["shape"], new["dtype"]):
                what = (f"is {tuple(new['shape'])} {new['dtype']} now;"
                        f" it was {tuple(old['shape'])} {old['dtype']}")
            else:
                what = "holds other values now (same shape and dtype)"
            raise DataError(f"{source} is not the data this run was trained on:"
                            f" the {split} split's {array} {what}" + (f"; {hint}" if hint else ""))


def train_changes(current: TrainConfig, saved: TrainConfig, epoch: int) -> list[Change]:
    """The ``[train]`` settings that differ, as change records applying from ``epoch``;
    a ConfigError for one a resumed run cannot honour (:data:`FIXED_TRAIN_KEYS`)."""
    now, before = config_to_dict(current), config_to_dict(saved)
    changes: list[Change] = []
    for key, value in now.items():
        if value == before[key]:
            continue
        if key in FIXED_TRAIN_KEYS:
            raise ConfigError(f"cannot resume with train.{key} = {value!r}: the run was started"
                              f" with {before[key]!r} and {FIXED_TRAIN_KEYS[key]}")
        changes.append({"epoch": epoch, "key": key, "old": before[key], "new": value})
    return changes


def _same_run(config: Config, saved: Config) -> None:
    """A resumed run must keep its data and model."""
    current, before = config_to_dict(config), config_to_dict(saved)
    for section in ("data", "model"):
        if current[section] != before[section]:
            key = next(k for k in {**before[section], **current[section]}
                       if current[section].get(k) != before[section].get(k))
            raise ConfigError(f"cannot resume with {section}.{key} = {current[section].get(key)!r}:"
                              f" the run was started with {before[section].get(key)!r}")


def _restore_rng(tensors: dict[str, torch.Tensor], generator: torch.Generator, path: Path,
                 seed: int) -> bool:
    """Restore the global and the data-order RNG; False when the data generator's state is
    another device's (the run moved between CPU and GPU): it is then seeded afresh. Rank r > 0
    restores its own (``rng.torch.rankR``), or seeds it afresh where the run had fewer."""
    if "rng.torch" not in tensors or "rng.data" not in tensors:
        raise checkpoint.corrupt(path, "it holds no RNG state (rng.torch, rng.data)")
    data = tensors["rng.data"]
    other = {torch.Generator().get_state().numel(), 16} - {generator.get_state().numel()}
    own = f".rank{distributed.rank()}" if distributed.rank() else ""
    try:
        if f"rng.torch{own}" in tensors:
            torch.set_rng_state(tensors[f"rng.torch{own}"])
        else:
            distributed.seed_rank(seed)
        if data.numel() in other:  # 16 bytes: a CUDA generator's seed and offset
            generator.manual_seed(seed)
            return False
        generator.set_state(data)
        if f"rng.cuda{own}" in tensors and generator.device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"rng.cuda{own}"], generator.device)
    except RuntimeError as error:
        raise checkpoint.corrupt(path, f"its RNG state does not restore: {error}") from None
    return True


def restore_run(run_dir: Path, config: Config, model: Model,
                optimizer: torch.optim.Optimizer | None, generator: torch.Generator,
                fingerprint: Fingerprint | None = None) -> RunState:
    """Load ``run_dir``'s last checkpoint into ``model``, ``optimizer`` and the RNGs, checking
    ``fingerprint`` (kept where it has none); the loop's state, with the settings changed now."""
    path = checkpoint.checkpoint_path(run_dir, "last")
    tensors, header = checkpoint.read_checkpoint(path)
    if header.get("format") == checkpoint.FORMAT_1:
        raise CheckpointError(f"{run_dir} was written by an older aevb (checkpoint format 1):"
                              " it can be evaluated and drawn, not resumed")
    saved = checkpoint.header_config(header)
    _same_run(config, saved)
    epoch = header["epoch"] + 1
    changes = train_changes(config.train, saved.train, epoch)
    state = RunState.from_header(header, data_fingerprint=fingerprint)
    if fingerprint is not None:
        check_same_data(header, fingerprint, f"cannot resume: {config.data.name}")
    spec = checkpoint.header_spec(header)
    if spec.train_size is None:  # written before train_size was recorded: nothing to compare
        spec = spec._replace(train_size=model.data.train_size)
    if spec != model.data:
        what = f"its data spec is {spec}; the data's is {model.data}"
        if header.get("data_fingerprint") is not None:  # the data was checked: the checkpoint is wrong
            raise checkpoint.corrupt(path, what)
        raise DataError(f"cannot resume on other data: {what}")
    checkpoint.load_weights(model, tensors, path)
    if optimizer is not None:
        checkpoint.restore_optimizer(optimizer, tensors, header["optimizer"], path)
    moved = not _restore_rng(tensors, generator, path, config.train.seed + header["step"])
    if moved and all(change["key"] != "device" for change in changes):
        device = generator.device.type
        changes.append({"epoch": epoch, "key": "device", "old": "cuda" if device == "cpu"
                        else "cpu", "new": device})
    state.changes.extend(changes)
    return state
