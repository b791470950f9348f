"""Data sets and loaders. Everything here works offline."""

from vijax.data.quakes import load_quakes

__all__ = ["load_quakes"]
