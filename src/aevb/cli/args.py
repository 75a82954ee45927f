"""What the commands share: the parser that fails as ours do, typed values, config overrides."""

from __future__ import annotations

import argparse
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aevb.errors import ConfigError

__all__ = ["EXAMPLES", "Parser", "configured", "default_out", "parse_overrides", "positive_int"]

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


class Parser(argparse.ArgumentParser):
    """argparse whose errors are ``aevb: error: ...`` on one line, exit status 2, as ours."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{message} (`{self.prog} --help` lists the options)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parse_overrides(tokens: Sequence[str]) -> dict[str, str]:
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



def configured(args: argparse.Namespace, extra: Sequence[str], base: Any = None) -> Any:
    """The run config: ``base``, else the TOML file ``args.config``, else the defaults, with the
    ``--key value`` overrides in ``extra`` applied."""
    from aevb.config.overrides import apply_overrides
    from aevb.config.run import Config, load_config

    if base is None:
        base = load_config(args.config) if args.config else Config()
    return apply_overrides(base, parse_overrides(extra))


def default_out(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else ``runs/NAME-TIME``."""
    return Path(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
