"""The ``shoal`` commands, by theme; ``shoal/cli.py`` builds the parser from them."""
