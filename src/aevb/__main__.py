"""``python -m aevb``: the command line (torchrun starts it as ``-m aevb``)."""

import sys

from aevb.cli.main import main

sys.exit(main())
