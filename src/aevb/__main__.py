"""``python -m aevb``: the command line (torchrun starts it as ``-m aevb``)."""

import sys

from .cli import main

sys.exit(main())
