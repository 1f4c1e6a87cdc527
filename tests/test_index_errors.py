"""Bad input raises ValueError naming the argument and the first bad row.

Every case checks the complete message (anchored), except where only its
beginning is specified (``r_m = -5.0: radius must be >= 0 ...``).
"""
import re

import numpy as np
import pytest

from lbsdispatch import LeaderIndex

nan, inf = float("nan"), float("inf")


def exactly(message):
    """A ``match`` pattern for exactly this message."""
    return "^" + re.escape(message) + "$"


def starts(message):
    """A ``match`` pattern for a message that begins with this text."""
    return "^" + re.escape(message)


@pytest.fixture(scope="module")
def index():
    return LeaderIndex([30.0, 30.1, 30.2], [120.0, 120.1, 120.2])


@pytest.fixture(scope="module", params=["three leaders", "empty"])
def any_index(request):
    """Validation does not depend on there being leaders."""
    if request.param == "empty":
        return LeaderIndex([], [])
    return LeaderIndex([30.0, 30.1, 30.2], [120.0, 120.1, 120.2])


# ----------------------------------------------------------------------------
# the leader constructor
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("lat, lon, message", [
    ([0.0, nan, 1.0], [0.0, 0.0, 0.0], "lat[1] = nan: coordinates must be finite"),
    ([0.0], [inf], "lon[0] = inf: coordinates must be finite"),
    ([-inf], [0.0], "lat[0] = -inf: coordinates must be finite"),
    ([0.0, 0.0, 91.0], [0.0, 0.0, 0.0], "lat[2] = 91.0 is outside [-90, 90]"),
    ([-90.5], [0.0], "lat[0] = -90.5 is outside [-90, 90]"),
    ([0.0], [200.0], "lon[0] = 200.0 is outside [-180, 180]"),
    ([0.0, 0.0], [0.0, -180.1], "lon[1] = -180.1 is outside [-180, 180]"),
    # the first bad row is named, whichever of lat and lon is wrong in it
    ([0.0, 0.0, 95.0, 0.0], [0.0, 0.0, 0.0, nan], "lat[2] = 95.0 is outside [-90, 90]"),
    ([0.0, 95.0], [nan, 0.0], "lon[0] = nan: coordinates must be finite"),
    ([nan], [nan], "lat[0] = nan: coordinates must be finite"),
    ([0.0, 1.0, 2.0], [0.0, 1.0], "lat and lon have different lengths (3 and 2)"),
    ([[0.0, 1.0], [2.0, 3.0]], [0.0, 1.0], "lat must be a 1-D array of degrees, got shape (2, 2)"),
    ([0.0, 1.0], [[0.0, 1.0]], "lon must be a 1-D array of degrees, got shape (1, 2)"),
    (1.0, 2.0, "lat must be a 1-D array of degrees, got shape ()"),
], ids=lambda v: repr(v)[:40])
def test_bad_leader_coordinates(lat, lon, message):
    with pytest.raises(ValueError, match=exactly(message)):
        LeaderIndex(lat, lon)


def test_non_numeric_leader_coordinates():
    with pytest.raises(ValueError, match=starts("lat must be numbers in degrees")):
        LeaderIndex(["north"], [1.0])
    with pytest.raises(ValueError, match=starts("lon must be numbers in degrees")):
        LeaderIndex([1.0], [None, "x"])


@pytest.mark.parametrize("ids, message", [
    ([5, 1, 5], "ids[2] = 5 duplicates ids[0]"),
    ([3, 7, 1, 7], "ids[3] = 7 duplicates ids[1]"),
    (np.array([3, 7, 1, 7], dtype=np.uint32), "ids[3] = 7 duplicates ids[1]"),
    (["a", "b", "a"], "ids[2] = 'a' duplicates ids[0]"),
    # the first row that repeats an earlier id, not the smallest repeated id
    ([5, 9, 9, 5], "ids[2] = 9 duplicates ids[1]"),
], ids=repr)
def test_duplicate_ids(ids, message):
    n = len(ids)
    with pytest.raises(ValueError, match=exactly(message)):
        LeaderIndex(np.zeros(n), np.zeros(n), ids=ids)


@pytest.mark.parametrize("ids, message", [
    ([1, 2], "ids must be a 1-D sequence of 3 ids, got shape (2,)"),
    ([[1, 2, 3]], "ids must be a 1-D sequence of 3 ids, got shape (1, 3)"),
    ([1.5, 2.5, 3.5], "ids must be integers or strings, got dtype float64"),
    ([True, False, True], "ids must be integers or strings, got dtype bool"),
    (np.array([1, "a", 2], dtype=object), "ids[1] = 'a': ids must be all integers or all strings, got int, str"),
    # a plain list mixing ints and strings is the same mistake
    ([1, "a", 2], "ids[1] = 'a': ids must be all integers or all strings, got int, str"),
], ids=repr)
def test_bad_ids(ids, message):
    with pytest.raises(ValueError, match=exactly(message)):
        LeaderIndex([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], ids=ids)


@pytest.mark.parametrize("leafsize", [0, -1, 2.5, None, "a"], ids=repr)
def test_bad_leafsize(leafsize):
    with pytest.raises(ValueError, match=exactly(f"leafsize must be an integer >= 1, got {leafsize!r}")):
        LeaderIndex([0.0], [0.0], leafsize=leafsize)


# ----------------------------------------------------------------------------
# query points (both methods, both paths)
# ----------------------------------------------------------------------------
CALLS = {
    "query": lambda ix, lat, lon: ix.query(lat, lon),
    "query k=3": lambda ix, lat, lon: ix.query(lat, lon, k=3),
    "query max_distance_m": lambda ix, lat, lon: ix.query(lat, lon, max_distance_m=1000.0),
    "query workers=2": lambda ix, lat, lon: ix.query(lat, lon, workers=2),
    "query_radius": lambda ix, lat, lon: ix.query_radius(lat, lon, 1000.0),
}


@pytest.mark.parametrize("call", CALLS, ids=str)
@pytest.mark.parametrize("lat, lon, message", [
    (nan, 0.0, "lat = nan: coordinates must be finite"),
    (np.float64(nan), 0.0, "lat = nan: coordinates must be finite"),
    (0.0, -inf, "lon = -inf: coordinates must be finite"),
    (91.0, 0.0, "lat = 91.0 is outside [-90, 90]"),
    (91, 0, "lat = 91.0 is outside [-90, 90]"),
    (np.float64(-90.5), 0.0, "lat = -90.5 is outside [-90, 90]"),
    (np.float32(100.0), 0.0, "lat = 100.0 is outside [-90, 90]"),
    (0.0, 180.5, "lon = 180.5 is outside [-180, 180]"),
    (0, -200, "lon = -200.0 is outside [-180, 180]"),
    (nan, 200.0, "lat = nan: coordinates must be finite"),
], ids=lambda v: repr(v)[:40])
def test_bad_scalar_point(any_index, call, lat, lon, message):
    with pytest.raises(ValueError, match=exactly(message)):
        CALLS[call](any_index, lat, lon)


@pytest.mark.parametrize("call", CALLS, ids=str)
@pytest.mark.parametrize("lat, lon, message", [
    ([0.0, 1.0, 2.0, nan], [0.0] * 4, "lat[3] = nan: coordinates must be finite"),
    ([0.0, 0.0], [200.0, 0.0], "lon[0] = 200.0 is outside [-180, 180]"),
    ([0.0, 0.0, 0.0], [0.0, inf, nan], "lon[1] = inf: coordinates must be finite"),
    ([0.0, 90.0, 90.5], [0.0, 0.0, 0.0], "lat[2] = 90.5 is outside [-90, 90]"),
    ([0.0, 95.0], [nan, 0.0], "lon[0] = nan: coordinates must be finite"),
    ([0.0, 1.0, 2.0], [0.0, 1.0], "lat and lon have different lengths (3 and 2)"),
    ([0.0], [0.0, 1.0], "lat and lon have different lengths (1 and 2)"),
    ([[0.0, 1.0], [2.0, 3.0]], [[0.0, 1.0], [2.0, 3.0]],
     "lat must be a 1-D array of degrees, got shape (2, 2)"),
    ([0.0, 1.0], [[0.0, 1.0]], "lon must be a 1-D array of degrees, got shape (1, 2)"),
], ids=lambda v: repr(v)[:40])
def test_bad_points(any_index, call, lat, lon, message):
    with pytest.raises(ValueError, match=exactly(message)):
        CALLS[call](any_index, lat, lon)
    with pytest.raises(ValueError, match=exactly(message)):
        CALLS[call](any_index, np.array(lat, dtype=object), np.array(lon, dtype=object))


@pytest.mark.parametrize("call", CALLS, ids=str)
def test_non_numeric_points(index, call):
    with pytest.raises(ValueError, match=starts("lat must be numbers in degrees")):
        CALLS[call](index, "north", 1.0)
    with pytest.raises(ValueError, match=starts("lon must be numbers in degrees")):
        CALLS[call](index, [1.0], ["east"])


# ----------------------------------------------------------------------------
# k, max_distance_m, workers, r_m
# ----------------------------------------------------------------------------
POINTS = {"scalar": (30.0, 120.0), "array": ([30.0, 30.1], [120.0, 120.1])}


@pytest.mark.parametrize("where", POINTS)
@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2", None], ids=repr)
def test_bad_k(any_index, where, k):
    with pytest.raises(ValueError, match=exactly(f"k must be an integer >= 1, got {k!r}")):
        any_index.query(*POINTS[where], k=k)


@pytest.mark.parametrize("where", POINTS)
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("m, message", [
    (-1, "max_distance_m must be >= 0, got -1"),
    (-0.5, "max_distance_m must be >= 0, got -0.5"),
    (-inf, "max_distance_m must be >= 0, got -inf"),
    (nan, "max_distance_m must be >= 0, got nan"),
    ("far", "max_distance_m must be a number of metres, got 'far'"),
], ids=repr)
def test_bad_max_distance(any_index, where, k, m, message):
    with pytest.raises(ValueError, match=exactly(message)):
        any_index.query(*POINTS[where], k=k, max_distance_m=m)


WORKER_CALLS = {
    "query": lambda ix, lat, lon, w: ix.query(lat, lon, workers=w),
    "query k=2": lambda ix, lat, lon, w: ix.query(lat, lon, k=2, workers=w),
    "query max_distance_m": lambda ix, lat, lon, w: ix.query(lat, lon, max_distance_m=1e3, workers=w),
    "query_radius": lambda ix, lat, lon, w: ix.query_radius(lat, lon, 1e3, workers=w),
}


@pytest.mark.parametrize("where", POINTS)
@pytest.mark.parametrize("call", WORKER_CALLS, ids=str)
@pytest.mark.parametrize("workers, message", [
    (0, "workers must be >= 1 or -1, got 0"),
    (-2, "workers must be >= 1 or -1, got -2"),
    (1.5, "workers must be an integer (-1 for all cores), got 1.5"),
    (True, "workers must be an integer (-1 for all cores), got True"),
    ("all", "workers must be an integer (-1 for all cores), got 'all'"),
], ids=repr)
def test_bad_workers(any_index, where, call, workers, message):
    with pytest.raises(ValueError, match=exactly(message)):
        WORKER_CALLS[call](any_index, *POINTS[where], workers)


@pytest.mark.parametrize("where, r_m, message", [
    ("scalar", -5.0, "r_m = -5.0: radius must be >= 0"),
    ("scalar", -1, "r_m = -1.0: radius must be >= 0"),
    ("scalar", nan, "r_m = nan: radius must be >= 0"),
    ("scalar", -inf, "r_m = -inf: radius must be >= 0"),
    ("array", -5.0, "r_m = -5.0: radius must be >= 0"),
    ("array", [1.0, -5.0], "r_m[1] = -5.0: radius must be >= 0"),
    ("array", np.array([nan, -5.0]), "r_m[0] = nan: radius must be >= 0"),
], ids=repr)
def test_bad_radius(any_index, where, r_m, message):
    with pytest.raises(ValueError, match=starts(message)):
        any_index.query_radius(*POINTS[where], r_m)


@pytest.mark.parametrize("where, r_m, message", [
    ("array", [1.0, 2.0, 3.0], "r_m must be a scalar or have one value per point (2), got shape (3,)"),
    ("array", [[1.0, 2.0]], "r_m must be a scalar or have one value per point (2), got shape (1, 2)"),
    ("scalar", [1.0, 2.0], "r_m must be a scalar or have one value per point (1), got shape (2,)"),
    ("scalar", "near", "r_m must be a number of metres, got 'near'"),
], ids=repr)
def test_bad_radius_shape(index, where, r_m, message):
    with pytest.raises(ValueError, match=exactly(message)):
        index.query_radius(*POINTS[where], r_m)
