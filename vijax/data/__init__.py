"""Data sets and loaders. Everything here works offline."""

from vijax.data.mnist import MnistData, binarize, load_mnist, read_idx
from vijax.data.quakes import Catalogue, load_catalogue, load_quakes

__all__ = ["Catalogue", "load_catalogue", "load_quakes", "load_mnist", "binarize", "read_idx",
           "MnistData"]
