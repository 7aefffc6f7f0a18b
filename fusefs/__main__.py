"""``python -m fusefs VOLUME MOUNTPOINT --meta ADDR --secret-file FILE ...``: a mount in the
foreground (fusefs/command.py); ``shoal mount --foreground`` is the same."""

import sys

from fusefs.command import main

sys.exit(main(sys.argv[1:]))
