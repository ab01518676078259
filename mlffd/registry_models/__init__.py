"""Shipped ``*.mlffd.pt`` artifacts (package data); see :mod:`mlffd.registry`."""
