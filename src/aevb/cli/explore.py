"""The commands that look around: the datasets (``data``) and the models (``models``)."""

from __future__ import annotations

import argparse
import json
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


def add_commands(commands: Any, threads: argparse.ArgumentParser) -> None:
    """``data`` and ``models`` on the subparsers ``commands``."""
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
