"""The catalogue loaders: the embedded Fiji file and a user's CSV (vijax.data.quakes)."""

import csv

import numpy as np
import pytest

from vijax import cavi
from vijax.data import load_catalogue, load_quakes


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def usgs(tmp_path):
    """The Fiji catalogue written as a USGS-style export (extra columns, other order)."""
    q = load_quakes()
    rows = [["2020-01-01T00:00:00Z", lat, lon, d, m, int(s), "us"]
            for lat, lon, d, m, s in zip(q.lat, q.long, q.depth, q.mag, q.stations, strict=True)]
    header = ["time", "latitude", "longitude", "depth", "mag", "nst", "net"]
    return _write(tmp_path / "usgs.csv", header, rows), q


def test_a_usgs_export_reads_back_the_catalogue_it_was_written_from(usgs):
    path, q = usgs
    c = load_catalogue(path)
    np.testing.assert_array_equal(c.locations, q.locations)
    np.testing.assert_array_equal(c.strengths, q.strengths)
    assert c.strengths.dtype == np.int64 and c.locations.dtype == np.float64
    np.testing.assert_array_equal(c.rows, np.arange(2, 1002))
    # what cavi.fit takes, checked without compiling anything
    obs = cavi.as_observations(c)
    assert obs.locations.shape == (1000, 2)


def test_column_names_pick_the_columns_in_the_order_given(tmp_path):
    path = _write(tmp_path / "c.csv", ["y", "x", "count"], [["1.5", "2", "3.0"], ["4", "5", "6"]])
    c = load_catalogue(path, locations=("x", "y"), strength="count")
    np.testing.assert_array_equal(c.locations, [[2.0, 1.5], [5.0, 4.0]])
    np.testing.assert_array_equal(c.strengths, [3, 6])


def test_missing_values_raise_naming_the_line_or_are_dropped(tmp_path):
    rows = [["1", "2", "3"], ["1", "2", ""], ["4", "5", "6"]]
    path = _write(tmp_path / "c.csv", ["latitude", "longitude", "nst"], rows)
    with pytest.raises(ValueError, match=r"'nst', line 3: expected a non-negative integer"):
        load_catalogue(path)
    c = load_catalogue(path, missing="drop")
    np.testing.assert_array_equal(c.strengths, [3, 6])
    np.testing.assert_array_equal(c.rows, [2, 4])


BAD_FILES = [
    # (header, rows, message)
    (None, [], "is empty"),
    (["latitude", "longitude", "nst"], [], "no events"),
    (["latitude", "lon", "nst"], [["1", "2", "3"]], "no column 'longitude'"),
    (["latitude", "longitude"], [["1", "2"]], "no column 'nst'"),
    (["latitude", "longitude", "nst"], [["1", "2", "3.5"]], "line 2: expected a non-negative"),
    (["latitude", "longitude", "nst"], [["1", "2", "-1"]], "line 2: expected a non-negative"),
    (["latitude", "longitude", "nst"], [["1", "2", "many"]], "expected a non-negative"),
    (["latitude", "longitude", "nst"], [["1", "2", "1e300"]], "expected a non-negative"),
    (["latitude", "longitude", "nst"], [["1", "2", "3"], ["x", "2", "3"]],
     "'latitude', line 3: expected a finite number"),
    (["latitude", "longitude", "nst"], [["1", "inf", "3"]], "'longitude', line 2"),
    (["latitude", "longitude", "nst"], [["1", "nan", "3"]], "'longitude', line 2"),
    (["latitude", "longitude", "nst"], [["1", "2"]], "line 2: 2 fields"),
]


@pytest.mark.parametrize("header, rows, message", BAD_FILES)
def test_bad_files_raise_a_value_error_naming_what_is_wrong(tmp_path, header, rows, message):
    path = _write(tmp_path / "bad.csv", header, rows)
    with pytest.raises(ValueError, match=message) as e:
        load_catalogue(path)
    assert "bad.csv" in str(e.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"path": 3}, "path must be a str"),
    ({"path": "/nonexistent/catalogue.csv"}, "is not a file"),
    ({"locations": "latitude"}, "locations must be a pair"),
    ({"locations": ("latitude",)}, "locations must be a pair"),
    ({"strength": 5}, "strength must be a column name"),
    ({"strength": "latitude"}, "three different columns"),
    ({"missing": "skip"}, "missing must be"),
])
def test_bad_arguments_raise_naming_the_argument(usgs, kwargs, message):
    kwargs = {"path": usgs[0], **kwargs}
    with pytest.raises(ValueError, match=message):
        load_catalogue(**kwargs)



def test_line_numbers_count_blank_lines_and_quoted_fields_spanning_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('latitude,longitude,nst,place\n1,2,3,"a"\n\n4,5,6,"two\nlines"\n'
                    '7,8,9,c\n7,8,x,d\n')
    with pytest.raises(ValueError, match=r"'nst', line 7: expected a non-negative integer"):
        load_catalogue(path)
    good = tmp_path / "good.csv"
    good.write_text('latitude,longitude,nst,place\n1,2,3,"a"\n\n4,5,6,"two\nlines"\n7,8,9,c\n')
    np.testing.assert_array_equal(load_catalogue(good).rows, [2, 4, 6])
