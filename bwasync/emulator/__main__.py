"""``python -m bwasync.emulator``: see :mod:`bwasync.emulator._cli`."""

import sys

from ._cli import main

sys.exit(main())
