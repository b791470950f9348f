"""Earthquake catalogues: the Fiji catalogue shipped with the package, and a user's own CSV.

R's ``quakes`` data set: 1,000 seismic events of body-wave magnitude > 4.0 in a cube near
Fiji since 1964 (Harvard PRIM-H project; Sibson's version of Woodhouse's data). Columns
``lat``, ``long`` (degrees east, 0..360), ``depth`` (km), ``mag`` (Richter magnitude),
``stations`` (number of stations reporting). ``quakes.rst`` beside this file is R's
documentation of it, as shipped in the ``pydataset`` package.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, NamedTuple

import numpy as np

from vijax import _checks

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
    columns, lines = _read_columns(io.StringIO(text), COLUMNS, "the embedded quakes.csv")
    values = {c: _floats(c, columns[c], "quakes.csv", lines) for c in COLUMNS}
    values["stations"] = _integers("stations", columns["stations"], "quakes.csv", lines)
    return Quakes(**values)


class Catalogue(NamedTuple):
    """A catalogue read by :func:`load_catalogue`: what :func:`vijax.cavi.fit` takes.

    Attributes:
        locations: ``(N, 2)`` float64, the two location columns in the order asked for.
        strengths: ``(N,)`` int64, the strength column (non-negative integers).
        rows: ``(N,)`` int64, each event's line number in the file (the header is line 1),
            to trace an event back to its row after rows with missing values were dropped.
    """

    locations: np.ndarray
    strengths: np.ndarray
    rows: np.ndarray


def load_catalogue(path: Any, locations: Sequence[str] = ("latitude", "longitude"),
                   strength: str = "nst", *, missing: str = "error") -> Catalogue:
    """Read a user's catalogue from a CSV file with a header row.

    The defaults fit a USGS ComCat export (``latitude``, ``longitude`` and ``nst``, the
    number of stations used); for the embedded Fiji file they would be ``("lat", "long")``
    and ``"stations"``. Values may be quoted; integer strengths may be written ``12`` or
    ``12.0``; other columns are ignored.

    Args:
        path: a ``str`` or ``os.PathLike`` to a (UTF-8, optionally BOM-prefixed) CSV file.
        locations: the names of the two location columns.
        strength: the name of the integer strength column.
        missing: what to do with a row whose location or strength is empty: ``"error"``
            (the default) raises, naming the line; ``"drop"`` leaves the row out (USGS
            exports leave ``nst`` empty for some events).

    Returns:
        :class:`Catalogue`.

    Raises:
        ValueError: naming the file, column and line, for a missing file or column, an
            empty file (no header or no events), a location that is not a finite number, a
            strength that is not a non-negative integer, or (with ``missing="error"``) an
            empty value. Nothing is returned partially.
    """
    path = _checks.check_path("path", path)
    names = _column_names(locations, strength)
    if missing not in ("error", "drop"):
        raise ValueError(f'missing must be "error" or "drop"; got {missing!r:.80}')
    if not path.is_file():
        raise ValueError(f"path {str(path)!r} is not a file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        columns, lines = _read_columns(f, names, f"path {str(path)!r}")
    where = f"path {str(path)!r}"
    if missing == "drop":
        keep = [i for i in range(len(lines)) if all(columns[c][i].strip() for c in names)]
        columns = {c: [columns[c][i] for i in keep] for c in names}
        lines = lines[keep]
        if not keep:
            raise ValueError(f"{where}: every row has an empty value in {list(names)}")
    loc = np.stack([_floats(c, columns[c], where, lines) for c in names[:2]], axis=1)
    return Catalogue(loc, _integers(strength, columns[strength], where, lines), lines)


def _column_names(locations: Any, strength: Any) -> tuple[str, str, str]:
    if (isinstance(locations, str) or not isinstance(locations, Sequence)
            or len(locations) != 2 or not all(isinstance(c, str) for c in locations)):
        raise ValueError(f"locations must be a pair of column names; got {locations!r:.80}")
    if not isinstance(strength, str):
        raise ValueError(f"strength must be a column name (str); got {strength!r:.80}")
    names = (locations[0], locations[1], strength)
    if len(set(names)) < 3:
        raise ValueError(f"locations and strength must name three different columns; got "
                         f"{locations!r} and {strength!r}")
    return names


def _read_columns(lines: Iterable[str], names: Sequence[str],
                  where: str) -> tuple[dict[str, list], np.ndarray]:
    """The raw text of the columns ``names`` of a CSV with a header, in one pass, and the
    line of the file each record starts on (blank lines skipped, quoted fields may span
    lines)."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{where} is empty: expected a header row and at least one event"
                         ) from None
    except csv.Error as e:
        raise ValueError(f"{where} is not a readable CSV file: {e}") from None
    absent = [c for c in names if c not in header]
    if absent:
        raise ValueError(f"{where} has no column {', '.join(map(repr, absent))}; its columns "
                         f"are {header}")
    index = [header.index(c) for c in names]
    columns: dict[str, list] = {c: [] for c in names}
    starts = []
    try:
        line = reader.line_num + 1  # where the next record starts
        for row in reader:
            if not row:
                line = reader.line_num + 1
                continue
            if len(row) < len(header):
                raise ValueError(f"{where}, line {line}: {len(row)} fields where the header "
                                 f"has {len(header)}")
            for c, i in zip(names, index, strict=True):
                columns[c].append(row[i])
            starts.append(line)
            line = reader.line_num + 1
    except csv.Error as e:
        raise ValueError(f"{where} is not a readable CSV file: {e}") from None
    if not columns[names[0]]:
        raise ValueError(f"{where} has a header but no events")
    return columns, np.asarray(starts, np.int64)


def _floats(column: str, text: list[str], where: str, lines: np.ndarray) -> np.ndarray:
    values = np.empty(len(text))
    for i, t in enumerate(text):
        try:
            values[i] = float(t)
        except ValueError:
            values[i] = np.nan
        if not math.isfinite(values[i]):
            line = int(lines[i])
            raise ValueError(f"{where}, column {column!r}, line {line}: expected a finite "
                             f"number; got {t!r:.40}")
    return values


def _integers(column: str, text: list[str], where: str, lines: np.ndarray) -> np.ndarray:
    values = np.empty(len(text), np.int64)
    for i, t in enumerate(text):
        try:
            x = float(t)
            ok = math.isfinite(x) and x >= 0 and x == int(x) and x < 2**53
        except ValueError:
            ok = False
        if not ok:
            line = int(lines[i])
            raise ValueError(f"{where}, column {column!r}, line {line}: expected a "
                             f"non-negative integer; got {t!r:.40}")
        values[i] = int(x)
    return values


def describe_quakes() -> str:
    """R's documentation of the data set (provenance and columns)."""
    return resources.files("vijax.data").joinpath("quakes.rst").read_text()
