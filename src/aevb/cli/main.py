"""The ``aevb`` command line: a few lines per command over the library's functions; the
commands themselves are in :mod:`aevb.cli.runs`, :mod:`aevb.cli.explore` and
:mod:`aevb.cli.experiments`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from aevb.cli import experiments, explore, runs
from aevb.cli.args import EXAMPLES, Parser, positive_int
from aevb.engine.distributed import launched
from aevb.errors import AevbError, ConfigError

__all__ = ["main"]


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


def _parser() -> tuple[argparse.ArgumentParser, Mapping[str, argparse.ArgumentParser]]:
    """The parser and its subparsers by command name."""
    parser = Parser(
        prog="aevb", description="Autoencoders and variational autoencoders (AEVB) on PyTorch.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --threads for the commands without config overrides (train, compare, sweep: a config key)
    threads = Parser(add_help=False)
    threads.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch")
    for module in (runs, explore, experiments):
        module.add_commands(commands, threads)
    return parser, commands.choices


def _split_argv(argv: list[str], command: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """Separate config overrides from a command's own arguments before argparse sees them
    (``train``, ``compare`` and ``sweep`` take any config key as an option); the command's
    parser says which options are its own and which of those take a value.

    Otherwise the value of an override (``--epochs 2``) could be taken for the config file.
    """
    takes_value = {flag: action.nargs for flag, action in command._option_string_actions.items()}
    own, overrides = [], []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        name = token.split("=", 1)[0]
        if not token.startswith("-") or name in takes_value:
            own.append(token)
            nargs = takes_value.get(name)
            optional = nargs == "?" and bool(tokens) and tokens[0].startswith("-")
            if nargs != 0 and name in takes_value and "=" not in token and tokens and not optional:
                own.append(tokens.pop(0))
        else:
            overrides.append(token)
            if "=" not in token and tokens and not tokens[0].startswith("--"):
                overrides.append(tokens.pop(0))
    return own, overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser, commands = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if argv and argv[0] in commands and commands[argv[0]].get_default("overrides"):
        own, extra = _split_argv(argv[1:], commands[argv[0]])
        argv = [argv[0], *own]
    try:
        args = parser.parse_args(argv)
        if argv and argv[0] != "train" and launched():
            raise ConfigError(f"only `aevb train` runs data-parallel under torchrun; run"
                              f" `aevb {argv[0]}` as one process (every rank would write the"
                              f" same files)")
        with _threads(getattr(args, "threads", None)):
            return int(args.handler(args, extra))
    except (AevbError, OSError) as error:
        print(f"aevb: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aevb: interrupted; a training run continues with --resume --out RUN_DIR",
              file=sys.stderr)
        return 130
