"""The data client: where chunks go, and writing and reading them on R chunk servers."""
