"""``python -m aevb.cli``: the command line."""

import sys

from aevb.cli.main import main

sys.exit(main())
