"""The training loop's state, named once: what it carries from epoch to epoch and every
checkpoint's metadata holds of it, checked field by field by :func:`misfit`.

Each field's type says what a checkpoint may hold there (an ``int`` is a count, never negative;
a ``TypedDict`` a JSON table with at least its keys), its annotation how an error names it.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import (
    Annotated,
    Any,
    Literal,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

__all__ = ["ArrayPrint", "Change", "Fingerprint", "RunState", "fits", "misfit"]


class Change(TypedDict):
    """A training setting changed when the run was resumed, from ``epoch`` on."""

    epoch: int
    key: str
    old: Any
    new: Any


class ArrayPrint(TypedDict):
    """One array of the data a run trained on: its shape, dtype and BLAKE2b hash."""

    shape: list[int]
    dtype: str
    blake2b: str


Fingerprint = dict[str, dict[str, ArrayPrint]]
"""Per split (train, valid, test), per array (x, y, c): its print."""


@dataclass
class RunState:
    """The loop's state after ``epoch`` epochs; a checkpoint holds it as it was at its epoch."""

    epoch: Annotated[int, "a count"] = 0  # epochs finished
    step: Annotated[int, "a count"] = 0  # optimizer steps (minibatches) taken
    seconds: Annotated[float, "a number"] = 0.0  # training time so far, validation included
    schedule_steps: Annotated[int, "a count"] = 0
    """The run's planned steps, fixed when it starts: the total its schedules see."""
    best_value: Annotated[float, "a number"] = -math.inf  # of the selection metric, validated
    best_epoch: Annotated[int, "a count"] = 0  # the epoch that gave it (checkpoints/best)
    history: Annotated[list[dict[str, float]], "a list of rows"] = field(default_factory=list)
    """One row of metrics per epoch (metrics.csv)."""
    changes: Annotated[list[Change], "a list of {epoch, key, old, new}"] = field(
        default_factory=list)  # the settings changed on resuming (aevb.engine.resume)
    data_fingerprint: Annotated[Fingerprint | None,
                                "a table of splits' arrays' shape, dtype and hash"] = None
    """The data trained on; None in checkpoints written before runs kept it."""
    peak_memory: Annotated[dict[str, int], "byte counts"] = field(default_factory=dict)
    """The largest memory use seen so far, in bytes (aevb.engine.device.peak_memory)."""
    metrics: Annotated[dict[str, float], "a row of numbers"] = field(default_factory=dict)
    """The last epoch's row of ``history``."""
    selection: Annotated[tuple[str, Literal["max", "min"]], "[metric, max|min]"] = ("loss", "min")
    """The metric that picks the best checkpoint, and whether more is better."""
    metric_names: Annotated[dict[str, tuple[str, str]], "a table of [name, unit]"] = field(
        default_factory=dict)  # each metric's readable name and unit (the report's)
    precision: Annotated[str, "a string"] = "float32"  # the training matmuls' dtype
    skipped_updates: Annotated[int, "a count"] = 0
    """Updates skipped so far for their gradient norm (``train.grad_skip``)."""

    def header(self) -> dict[str, Any]:
        """The fields as a checkpoint's JSON metadata holds them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_header(cls, header: dict[str, Any], **missing: Any) -> RunState:
        """The state a checkpoint's metadata (checked by :func:`misfit`) holds; a field it
        lacks (written before the field existed) from ``missing``, else its default."""
        names = [f.name for f in dataclasses.fields(cls)]
        state = cls(**{**missing, **{k: header[k] for k in names if k in header}})
        state.selection = (state.selection[0], state.selection[1])  # JSON gave a list
        state.metric_names = {k: (v[0], v[1]) for k, v in state.metric_names.items()}
        return state


FIELDS: dict[str, Any] = get_type_hints(RunState, include_extras=True)


def misfit(header: dict[str, Any]) -> str | None:
    """What is wrong with the first RunState field of ``header`` that does not fit its type,
    as "its epoch is not a count: -1"; None when every field present fits."""
    for name, annotated in FIELDS.items():
        tp, meaning = get_args(annotated)
        if name in header and not fits(header[name], tp):
            return f"its {name} is not {meaning}: {str(header[name])[:80]}"
    return None


def fits(value: Any, tp: Any) -> bool:
    """Whether JSON ``value`` is of type ``tp`` (an int is a count: >= 0; a tuple a list of
    its length; a TypedDict a table with at least its keys)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return True
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, type(None)):
        return isinstance(value, tp)
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is tuple:
        return (isinstance(value, (list, tuple)) and len(value) == len(args)
                and all(fits(v, a) for v, a in zip(value, args, strict=True)))
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and fits(v, args[1])
                                               for k, v in value.items())
    if is_typeddict(tp):
        return isinstance(value, dict) and all(k in value and fits(value[k], t)
                                               for k, t in get_type_hints(tp).items())
    raise TypeError(f"fits knows no type {tp!r}")
