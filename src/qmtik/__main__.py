"""python -m qmtik: the same as the qmtik command."""

import sys

from .cli import main

sys.exit(main())
