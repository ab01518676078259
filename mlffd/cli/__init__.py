"""Thin click command-line interfaces; each command calls one library function."""
