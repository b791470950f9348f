"""The Fiji earthquake catalogue, shipped with the package.

R's ``quakes`` data set: 1,000 seismic events of body-wave magnitude > 4.0 in a cube near
Fiji since 1964 (Harvard PRIM-H project; Sibson's version of Woodhouse's data). Columns
``lat``, ``long`` (degrees east, 0..360), ``depth`` (km), ``mag`` (Richter magnitude),
``stations`` (number of stations reporting). ``quakes.rst`` beside this file is R's
documentation of it, as shipped in the ``pydataset`` package.
"""

from __future__ import annotations

import csv
from importlib import resources
from typing import NamedTuple

import numpy as np

COLUMNS = ("lat", "long", "depth", "mag", "stations")


class Quakes(NamedTuple):
    """The catalogue as NumPy arrays, one entry per event (N = 1000)."""

    lat: np.ndarray
    long: np.ndarray
    depth: np.ndarray
    mag: np.ndarray
    stations: np.ndarray

    @property
    def locations(self) -> np.ndarray:
        """``(N, 2)`` float array of ``(lat, long)``: the mixture model's 2-D locations."""
        return np.stack([self.lat, self.long], axis=1)

    @property
    def strengths(self) -> np.ndarray:
        """``(N,)`` integer array: stations reporting, the model's Poisson strength."""
        return self.stations


def load_quakes() -> Quakes:
    """Read the embedded catalogue (no download).

    Returns:
        :class:`Quakes` with ``locations`` ``(1000, 2)`` and ``strengths`` ``(1000,)``.
    """
    text = resources.files("vijax.data").joinpath("quakes.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    columns = {c: np.array([float(r[c]) for r in rows]) for c in COLUMNS}
    columns["stations"] = columns["stations"].astype(np.int64)
    return Quakes(**columns)


def describe_quakes() -> str:
    """R's documentation of the data set (provenance and columns)."""
    return resources.files("vijax.data").joinpath("quakes.rst").read_text()
