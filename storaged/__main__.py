"""``python -m storaged ...`` is ``shoal storaged ...``."""

import sys

from shoal.cli import main

sys.exit(main(["storaged", *sys.argv[1:]]))
