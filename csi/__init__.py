"""Placeholder package: see the README's status table; built in a later issue."""
