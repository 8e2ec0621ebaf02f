"""``python -m liqsignal``: the liqsignal command."""

import sys

from liqsignal.cli import main

sys.exit(main())
