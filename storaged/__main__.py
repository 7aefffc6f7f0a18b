"""``python -m storaged ...`` is ``shoal storaged ...`` (storaged/command.py)."""

import sys

from storaged.command import main

sys.exit(main(sys.argv[1:]))
