"""The commands that look around: the datasets (``data``), the models (``models``), a
trained run's latent space in the browser (``explore``), and its networks taken out of Python
(``export``)."""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Sequence
from typing import Any

from aevb.errors import AevbError, ConfigError

__all__ = ["add_commands"]


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


def _cmd_models(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.config.run import model_keys
    from aevb.models import MODELS, model_class
    from aevb.models.registry import BUILTIN

    if not args.name:
        for name, cls in sorted(MODELS.items()):
            origin = MODELS.origin(name)
            print(f"{name:16} {cls.description}" + ("" if origin == BUILTIN else f"  [{origin}]"))
        return 0
    cls = model_class(args.name)
    print(f"{args.name}: {cls.description}\nfrom: {MODELS.origin(args.name)}"
          "\n\n[model] keys (--KEY VALUE on the command line):")
    rows = model_keys(args.name)
    width = max(len(f"{key} = {default}") for key, default, _ in rows)
    for key, default, doc in rows:
        print(f"  {f'{key} = {default}':{width}}  {doc}".rstrip())
    for line in _kinds(cls.config_class):
        print(line)
    return 0


def _kinds(config_class: type) -> list[str]:
    """For each key that is one of several sub-configs picked by ``kind`` (the objective; an
    MLP or a conv net): each kind, its doc and its keys with their defaults."""
    from dataclasses import fields, is_dataclass

    from aevb.config.run import field_docs

    lines, default = [], config_class()
    hints = typing.get_type_hints(config_class)
    for f in fields(config_class):
        kinds: list[Any] = [t for t in typing.get_args(hints[f.name]) if is_dataclass(t)]
        if len(kinds) < 2:
            continue
        lines.append(f"\n{f.name}: one of {len(kinds)} kinds (--{f.name} KIND: its defaults;"
                     " then its keys as --KEY VALUE):")
        for kind in kinds:
            config = getattr(default, f.name)
            config = config if type(config) is kind else kind()
            names = [k.name for k in fields(config)]  # a net's kind is no field: a ClassVar
            doc = field_docs(kind).get("kind", "") if "kind" in names else ""
            keys = ", ".join(f"{name} = {_toml(getattr(config, name))}" for name in names
                             if name != "kind")
            lines.append(f"  {kind.kind:11} {keys or '(no keys of its own)'}  {doc}".rstrip())
    return lines


def _toml(value: Any) -> str:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):  # a sub-table: its keys
        return json.dumps(asdict(value))
    return "(unset)" if value is None else json.dumps(value)


def _cmd_explore(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.engine.device import resolve_device
    from aevb.serve.explorer import BadRequest, Explorer
    from aevb.serve.server import serve

    try:
        explorer = Explorer(args.run, args.checkpoint, str(resolve_device(args.device)))
    except BadRequest as error:
        raise AevbError(str(error)) from None
    serve(explorer, args.host, args.port)
    return 0


def _cmd_export(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from aevb.serve.export import export_onnx

    meta = export_onnx(args.run, args.onnx, args.checkpoint)
    for part, graph in meta["graphs"].items():
        print(f"{part}: {args.onnx}/{graph['file']}  {graph['inputs']} -> {graph['outputs']}")
    print(f"shapes, names and the likelihood: {args.onnx}/model.json")
    return 0


def add_commands(commands: Any, threads: argparse.ArgumentParser) -> None:
    """``data``, ``models``, ``explore`` and ``export`` on the subparsers ``commands``."""
    data = commands.add_parser("data", help="list, fetch or describe datasets", parents=[threads])
    data.add_argument("action", choices=["list", "fetch", "info"])
    data.add_argument("name", nargs="?", help="a dataset name")
    data.add_argument("--cache-dir", help="where data is kept (default: $AEVB_CACHE or ~/.cache/aevb)")
    data.add_argument("--image-channels", type=int, choices=[1, 3], default=1,
                      help="a folder of images: 1 (grey) or 3 (RGB), as data.image_channels")
    data.add_argument("--image-size", help="a folder of images: resize to H,W (data.image_size)")
    data.set_defaults(handler=_cmd_data)

    models = commands.add_parser("models", help="list the models, or one model's config keys",
                                 parents=[threads])
    models.add_argument("name", nargs="?", help="a model: print its keys, defaults and docs")
    models.set_defaults(handler=_cmd_models)

    explore = commands.add_parser(
        "explore", parents=[threads],
        help="move through a run's latent space in the browser (a local page)")
    explore.add_argument("run", help="a run directory")
    explore.add_argument("--host", default="127.0.0.1",
                         help="the address to serve on (default 127.0.0.1: this machine only)")
    explore.add_argument("--port", type=int, default=8765, help="0: any free port")
    explore.add_argument("--checkpoint", choices=["best", "last"], default="best")
    explore.add_argument("--device", default="auto",
                         help="where the model decodes: auto (a GPU where there is one) | cpu | cuda")
    explore.set_defaults(handler=_cmd_explore)

    export = commands.add_parser("export", parents=[threads],
                                 help="write a run's encoder and decoder as ONNX graphs")
    export.add_argument("run", help="a run directory")
    export.add_argument("--onnx", required=True, metavar="OUT_DIR",
                        help="where encoder.onnx, decoder.onnx and model.json go")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best")
    export.set_defaults(handler=_cmd_export)
