"""The command line: ``aevb COMMAND``, a few lines per command over the public API."""

from aevb.cli.main import main

__all__ = ["main"]
