"""``python -m fusefs ...`` is ``shoal mount --foreground ...``."""

import sys

from shoal.cli import main

sys.exit(main(["mount", "--foreground", *sys.argv[1:]]))
