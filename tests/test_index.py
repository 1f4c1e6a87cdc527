"""LeaderIndex against a brute-force oracle, and its invariances.

Property tests draw three kinds of data:

uniform      coordinates anywhere on the globe (Hypothesis floats, so the
             bounds -90/90/-180/180 and signed zeros come up too);
clustered    a few centres with leaders and points offset around them by
             millimetres to hundreds of kilometres, near poles included;
adversarial  poles with many longitudes, the antimeridian (+-180, +-179.9999...),
             exact ties by symmetric placement (around a meridian, mirrored
             across the equator, rings around a pole), antipodes.

Every kind also gets duplicated leaders (exact ties) and query points placed
exactly on leaders.  See ``oracle.py`` for the tolerances and why.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import lbsdispatch
from lbsdispatch import EARTH_RADIUS_M, LeaderIndex, synth

import oracle
from oracle import check_query, check_radius, distance_matrix, tol

M_PER_DEG = 111_195.08  # metres per degree of latitude, only used to make data
HALF_CIRCUMFERENCE_M = np.pi * oracle.EARTH_RADIUS_M

lat_st = st.floats(-90.0, 90.0, allow_nan=False, allow_infinity=False)
lon_st = st.floats(-180.0, 180.0, allow_nan=False, allow_infinity=False)

SPECIAL_LAT = (-90.0, -89.9999999, -89.9999, -60.0, -45.0, -0.0, 0.0, 1e-300, 45.0, 60.0,
               89.9999, 89.9999999, 90.0)
SPECIAL_LON = (-180.0, -179.9999999, -179.9999, -90.0, -45.0, -0.0, 0.0, 45.0, 90.0,
               179.9999, 179.9999999, 180.0)
special_lat_st = st.sampled_from(SPECIAL_LAT)
special_lon_st = st.sampled_from(SPECIAL_LON)

KINDS = ("uniform", "clustered", "adversarial")


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def fix_lon(lon):
    """Wrap longitudes outside [-180, 180] back into it (values inside are kept)."""
    lon = np.asarray(lon, dtype=np.float64)
    wrapped = np.clip(((lon + 180.0) % 360.0) - 180.0, -180.0, 180.0)
    return np.where((lon >= -180.0) & (lon <= 180.0), lon, wrapped)


def fix_lat(lat):
    return np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)


def offset(lat0, lon0, north_m, east_m):
    """Points about ``north_m``/``east_m`` metres from (lat0, lon0), kept valid."""
    lat0 = np.asarray(lat0, dtype=np.float64)
    coslat = np.maximum(np.cos(np.radians(lat0)), 1e-9)
    return (fix_lat(lat0 + np.asarray(north_m) / M_PER_DEG),
            fix_lon(np.asarray(lon0) + np.asarray(east_m) / (M_PER_DEG * coslat)))


def _split(pairs):
    if not pairs:
        return np.zeros(0), np.zeros(0)
    a = np.array(pairs, dtype=np.float64)
    return a[:, 0].copy(), a[:, 1].copy()


@st.composite
def uniform_points(draw, min_size, max_size):
    return _split(draw(st.lists(st.tuples(lat_st, lon_st), min_size=min_size,
                                max_size=max_size)))


@st.composite
def clustered_points(draw, centres, spread_m, min_size, max_size):
    offs = draw(st.lists(st.tuples(st.integers(0, len(centres) - 1),
                                   st.floats(-1.0, 1.0), st.floats(-1.0, 1.0)),
                         min_size=min_size, max_size=max_size))
    if not offs:
        return np.zeros(0), np.zeros(0)
    c = np.array([centres[i] for i, _, _ in offs])
    north = np.array([o[1] for o in offs]) * spread_m
    east = np.array([o[2] for o in offs]) * spread_m
    return offset(c[:, 0], c[:, 1], north, east)


special_pairs = st.tuples(special_lat_st, special_lon_st)


@st.composite
def adversarial_layout(draw, max_leaders, max_points):
    """Leaders in tie-prone shapes around a few centres, and the points that tie."""
    centres = draw(st.lists(st.tuples(special_lat_st | lat_st, special_lon_st | lon_st),
                            min_size=1, max_size=3))
    leaders, points = [], []
    for a, b in centres:
        d = draw(st.sampled_from([1e-7, 1e-4, 0.01, 1.0, 30.0]))
        shape = draw(st.sampled_from(["cross", "meridian", "mirror", "ring", "antipode"]))
        if shape == "cross":          # four leaders d degrees N, S, E, W of the centre
            pts = [(a + d, b), (a - d, b), (a, b + d), (a, b - d)]
            points.append((a, b))
        elif shape == "meridian":     # N and S: equal great-circle distances
            pts = [(a + d, b), (a - d, b)]
            points.append((a, b))
        elif shape == "mirror":       # mirrored across the equator: ties on it
            pts = [(a, b), (-a, b)]
            points += [(0.0, b), (-0.0, b + d)]
        elif shape == "ring":         # a ring around a pole, one pole point
            pole = draw(st.sampled_from([90.0, -90.0]))
            lons = draw(st.lists(special_lon_st | lon_st, min_size=1, max_size=6))
            pts = [(pole - np.sign(pole) * d, lo) for lo in lons] + [(pole, lons[0])]
            points += [(pole, lo) for lo in lons[:2]]
        else:                          # leaders at and next to the antipode of a point
            pts = [(-a, b + 180.0), (-a + d, b + 180.0), (-a, b + 180.0 - d), (-a - d, b - 180.0)]
            points.append((a, b))
        leaders += pts
    leaders += draw(st.lists(special_pairs, max_size=max(0, max_leaders - len(leaders))))
    points += draw(st.lists(special_pairs | st.tuples(lat_st, lon_st), min_size=1,
                            max_size=max_points))
    lat, lon = _split(leaders[:max_leaders])
    qlat, qlon = _split(points)
    return (fix_lat(lat), fix_lon(lon)), (fix_lat(qlat), fix_lon(qlon))


seeds = st.integers(0, 2**32 - 1)


def shuffled(draw, n):
    """A permutation of range(n), drawn cheaply (one integer) through a seed."""
    return np.random.default_rng(draw(seeds)).permutation(n)


@st.composite
def ids_for(draw, n):
    """Leader ids: default (None), a permutation of positions, large signed ints
    (any order) or strings (whose order is not the numeric one: "10" < "9")."""
    kind = draw(st.sampled_from(["none", "perm", "big", "str"]))
    if kind == "none":
        return None
    if n == 0:  # (an empty list of ids has its own test)
        return np.zeros(0, dtype=np.int64 if kind != "str" else "U1")
    perm = shuffled(draw, n)
    if kind == "perm":
        return perm.tolist()
    if kind == "big":  # an odd multiplier is a bijection modulo 2**62
        return [(int(v) * 0x9E3779B97F4A7C15 + 12345) % 2**62 - 2**61 for v in perm]
    return [f"{v}" if v % 3 else f"L-{v:02d}" for v in perm.tolist()]


@dataclass
class Case:
    lat: np.ndarray
    lon: np.ndarray
    ids: Optional[list]
    leafsize: int
    qlat: np.ndarray
    qlon: np.ndarray

    @property
    def n(self):
        return len(self.lat)

    def index(self, **kw):
        kw.setdefault("leafsize", self.leafsize)
        return LeaderIndex(self.lat, self.lon, ids=self.ids, **kw)


@st.composite
def cases(draw, kind, min_leaders=0, max_leaders=40, max_points=25):
    if kind == "uniform":
        lat, lon = draw(uniform_points(min_leaders, max_leaders))
        qlat, qlon = draw(uniform_points(1, max_points))
    elif kind == "clustered":
        centres = draw(st.lists(st.tuples(lat_st, lon_st), min_size=1, max_size=4))
        spread = draw(st.sampled_from([1e-3, 1.0, 100.0, 1e4, 1e6]))
        lat, lon = draw(clustered_points(centres, spread, min_leaders, max_leaders))
        qlat, qlon = draw(clustered_points(centres, spread, 1, max_points))
    else:
        (lat, lon), (qlat, qlon) = draw(adversarial_layout(max_leaders, max_points))
    n = len(lat)
    if n:
        # duplicated leaders: exact ties that only the ids can break
        extra = draw(st.lists(st.integers(0, n - 1), max_size=min(n, 8)))
        lat = np.concatenate([lat, lat[extra]])
        lon = np.concatenate([lon, lon[extra]])
        perm = shuffled(draw, len(lat))
        lat, lon = lat[perm], lon[perm]
        # query points exactly on leaders
        at = draw(st.lists(st.integers(0, len(lat) - 1), max_size=5))
        qlat = np.concatenate([qlat, lat[at]])
        qlon = np.concatenate([qlon, lon[at]])
    ids = draw(ids_for(len(lat)))
    leafsize = draw(st.integers(1, 20))
    return Case(lat, lon, ids, leafsize, qlat, qlon)


def named(index, idx):
    """Leader ids of query results (None where missing)."""
    idx = np.asarray(idx)
    out = np.empty(idx.shape, dtype=object)
    for pos, i in np.ndenumerate(idx):
        out[pos] = None if i == index.n_leaders else index.ids[i].item()
    return out


def assert_same_knn(a, b):
    """Exactly the same (distance, index) answers."""
    oracle.ensure(np.shape(a[0]) == np.shape(b[0]) and np.array_equal(a[0], b[0])
                  and np.array_equal(a[1], b[1]),
                  lambda: f"answers differ:\n{a[0]!r}\n{b[0]!r}\n{a[1]!r}\n{b[1]!r}")


# ----------------------------------------------------------------------------
# k nearest against the oracle
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_query_matches_oracle(kind, data):
    case = data.draw(cases(kind), label="case")
    k = data.draw(st.integers(2, case.n + 3), label="k")
    ix = case.index()
    q = (case.qlat, case.qlon)

    d1, i1 = ix.query(*q)
    assert d1.shape == (len(case.qlat),) and i1.shape == d1.shape
    check_query(case.lat, case.lon, case.ids, *q, 1, None, d1, i1)

    dk, ik = ix.query(*q, k=k)
    assert dk.shape == (len(case.qlat), k) and ik.shape == dk.shape
    check_query(case.lat, case.lon, case.ids, *q, k, None, dk, ik)
    # the k=1 search and the first column of the k search agree exactly
    assert_same_knn((d1, i1), (dk[:, 0], ik[:, 0]))
    # rows of a large batch (which the library may reorder internally) are
    # answered exactly as on their own
    rows = np.random.default_rng(data.draw(seeds, label="seed")).integers(0, len(case.qlat), 600)
    db, ib = ix.query(case.qlat[rows], case.qlon[rows], k=k)
    assert_same_knn((db, ib), (dk[rows], ik[rows]))
    db, ib = ix.query(case.qlat[rows], case.qlon[rows])
    assert_same_knn((db, ib), (d1[rows], i1[rows]))


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_query_max_distance_matches_oracle(kind, data):
    case = data.draw(cases(kind), label="case")
    k = data.draw(st.integers(1, case.n + 2), label="k")
    D = distance_matrix(case.qlat, case.qlon, case.lat, case.lon)
    how = data.draw(st.sampled_from(["any", "zero", "pair", "pair+", "pair-"]), label="how")
    if how == "any" or case.n == 0:
        md = data.draw(st.floats(0.0, 2.1e7), label="max_distance_m")
    elif how == "zero":
        md = 0.0
    else:
        r = data.draw(st.integers(0, D.shape[0] - 1))
        c = data.draw(st.integers(0, D.shape[1] - 1))
        md = float(D[r, c])
        md = {"pair": md, "pair+": md + 2 * float(tol(md)), "pair-": max(0.0, md - 2 * float(tol(md)))}[how]
    ix = case.index()
    d, i = ix.query(case.qlat, case.qlon, k=k, max_distance_m=md)
    check_query(case.lat, case.lon, case.ids, case.qlat, case.qlon, k, md, d, i)
    # capping is filtering: the capped answer is the uncapped one without the far part
    du, iu = ix.query(case.qlat, case.qlon, k=k)
    du, iu = du.reshape(len(case.qlat), k), iu.reshape(len(case.qlat), k)
    d, i = np.reshape(d, du.shape), np.reshape(i, iu.shape)
    for r in range(du.shape[0]):
        keep = du[r] <= md
        exp_d = np.concatenate([du[r][keep], np.full(k - keep.sum(), np.inf)])
        exp_i = np.concatenate([iu[r][keep], np.full(k - keep.sum(), case.n)])
        oracle.ensure(np.array_equal(d[r], exp_d) and np.array_equal(i[r], exp_i), lambda: (
            f"point {r}: with max_distance_m={md!r} {i[r]} at {d[r]!r}, without it "
            f"{iu[r]} at {du[r]!r}"))


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_query_radius_matches_oracle(kind, data):
    case = data.draw(cases(kind), label="case")
    m = len(case.qlat)
    per_point = data.draw(st.booleans(), label="per_point")
    radius = st.sampled_from([0.0, 1e-3, 1.0, 100.0, 1e4, 1e6, 1e7, 2.5e7]) | st.floats(0, 2.1e7)
    if per_point:
        r_m = np.array(data.draw(st.lists(radius, min_size=m, max_size=m), label="r_m"))
    else:
        r_m = data.draw(radius, label="r_m")
    ix = case.index()
    dist, idx = ix.query_radius(case.qlat, case.qlon, r_m)
    assert dist.dtype == object and idx.dtype == object
    assert dist.shape == (m,) and idx.shape == (m,)
    check_radius(case.lat, case.lon, case.ids, case.qlat, case.qlon, r_m, dist, idx,
                 strict_ties=True)


# ----------------------------------------------------------------------------
# ties
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_max_distance_cut_through_duplicated_group(kind, data):
    """max_distance_m set to the library's own distance of a group of leaders at one
    position includes the whole group, smaller ids first."""
    case = data.draw(cases(kind, max_leaders=25, max_points=8), label="case")
    g = data.draw(st.integers(2, 5), label="group size")
    p = data.draw(st.tuples(lat_st, lon_st) | special_pairs
                  | st.tuples(st.just(float(case.qlat[0])), st.just(float(case.qlon[0]))),
                  label="group position")
    lat = np.concatenate([case.lat, np.full(g, p[0])])
    lon = np.concatenate([case.lon, np.full(g, p[1])])
    n = len(lat)
    perm = np.random.default_rng(data.draw(seeds, label="seed")).permutation(n)
    lat, lon = lat[perm], lon[perm]
    ids = np.random.default_rng(perm[0]).choice(10**6, size=n, replace=False)
    ix = LeaderIndex(lat, lon, ids=ids, leafsize=case.leafsize)
    group = np.flatnonzero((lat == p[0]) & (lon == p[1]))
    group_by_id = group[np.argsort(ids[group])]
    for qa, qo in zip(case.qlat.tolist(), case.qlon.tolist()):
        d_all, i_all = ix.query(qa, qo, k=n)
        dg = d_all[np.isin(i_all, group)]
        assert len(dg) == len(group) and (dg == dg[0]).all(), "a group at one position has one distance"
        cut = float(dg[0])
        d, i = ix.query(qa, qo, k=n, max_distance_m=cut)
        assert (d[np.isfinite(d)] <= cut).all()
        found = i[np.isfinite(d)]
        assert set(group.tolist()) <= set(found.tolist()), "every group member is within its own distance"
        assert found[np.isin(found, group)].tolist() == group_by_id.tolist(), "smaller ids first"
        d1, i1 = ix.query(qa, qo, max_distance_m=cut)
        assert d1 <= cut and i1 != n
        if d1 == cut and i1 in group:
            assert i1 == group_by_id[0]
        if cut == d_all[0]:
            assert (d1, i1) == (d_all[0], i_all[0])
        rd, ri = ix.query_radius(qa, qo, cut)
        assert set(group.tolist()) <= set(ri.tolist())
        assert ri[np.isin(ri, group)].tolist() == group_by_id.tolist()
        assert (rd <= cut).all()
    d, i = ix.query(case.qlat, case.qlon, k=min(n, g + 2), max_distance_m=None)
    check_query(lat, lon, ids, case.qlat, case.qlon, min(n, g + 2), None, d, i)


def test_duplicates_smallest_id_wins_deterministic():
    # five leaders at one place, ids deliberately out of order, plus a decoy far away
    lat = [30.27, 30.27, 31.0, 30.27, 30.27, 30.27]
    lon = [120.15, 120.15, 121.0, 120.15, 120.15, 120.15]
    ids = [40, 7, 1, 99, 8, 23]
    ix = LeaderIndex(lat, lon, ids=ids, leafsize=1)
    for q in [(30.27, 120.15), (30.28, 120.16), (29.0, 119.0), (-30.27, 120.15)]:
        d, i = ix.query(*q)
        assert ix.ids[i] == 7
        d, i = ix.query(*q, k=6)
        same = [int(ix.ids[j]) for j in i if lat[j] == 30.27]
        assert same == [7, 8, 23, 40, 99]
        assert (np.diff(d) >= 0).all()
        rd, ri = ix.query_radius(*q, 2e7)
        assert [int(ix.ids[j]) for j in ri if lat[j] == 30.27] == [7, 8, 23, 40, 99]


def test_string_ids_break_ties_lexicographically():
    ids = ["hz-10", "hz-2", "hz-010", "a", "hz-1"]
    ix = LeaderIndex([1.0] * 4 + [2.0], [1.0] * 4 + [2.0], ids=ids)
    d, i = ix.query(1.5, 1.0, k=5)
    assert list(ix.ids[i]) == ["a", "hz-010", "hz-10", "hz-2", "hz-1"]
    assert ix.ids[ix.query(1.0, 1.0)[1]] == "a"


@pytest.mark.parametrize("kind", ["adversarial"])
@given(data=st.data())
def test_equal_reported_distances_are_in_id_order(kind, data):
    """The tie rule as the caller sees it: whenever two neighbours of a row are
    reported at exactly the same distance, the smaller id comes first (in
    query and in query_radius)."""
    case = data.draw(cases(kind, max_leaders=30, max_points=15), label="case")
    ix = case.index()
    k = max(1, case.n)
    d, i = ix.query(case.qlat, case.qlon, k=k)
    check_query(case.lat, case.lon, case.ids, case.qlat, case.qlon, k, None, d, i,
                strict_ties=True)
    rd, ri = ix.query_radius(case.qlat, case.qlon, 2.1e7)
    check_radius(case.lat, case.lon, case.ids, case.qlat, case.qlon, 2.1e7, rd, ri,
                 strict_ties=True)


def test_two_leaders_at_exactly_120_degrees_come_out_in_metres_order():
    # Found by Hypothesis: two leaders at exactly 120 degrees from the query
    # (the squared chord 3 where the metres formula switches from asin to
    # atan2) were reported 1 ulp apart in decreasing order.
    lat = np.array([-0., -90., -89.9999999, -60., -90., -89.9999, -45., -89.9999999, -90.])
    lon = np.array([90., -180., -180., -90., -180., -180., -45., -180., -180.])
    q_lat, q_lon = np.array([-0.]), np.array([90.])
    ix = LeaderIndex(lat, lon, leafsize=1)
    for k in (8, 9):
        d, i = ix.query(q_lat, q_lon, k=k)
        check_query(lat, lon, None, q_lat, q_lon, k, None, d, i, strict_ties=True)


@pytest.mark.parametrize("leaders, query", [
    # the same pole under two longitudes
    (([-90.0, -90.0], [-179.9999999, -90.0]), (-45.0, -90.0)),
    (([90.0, 90.0], [10.0, 0.0]), (45.0, 0.0)),
    (([90.0, 90.0], [-180.0, 37.5]), (89.0, 100.0)),
    # the same meridian written as +180 and -180
    (([10.0, 10.0], [-180.0, 180.0]), (10.0, 179.0)),
    (([10.0, 10.0], [-180.0, 180.0]), (-40.0, -150.0)),
])
def test_same_place_on_the_globe_ties_by_id(leaders, query):
    """Two leaders at one place on the globe (a pole under two longitudes, or
    one meridian written as +180 and -180) are at equal distance from every
    point: the smaller id must come first."""
    D = distance_matrix([query[0]], [query[1]], *leaders)[0]
    assert abs(D[0] - D[1]) <= tol(D[0])
    for ids in ([0, 1], [1, 0]):
        ix = LeaderIndex(*leaders, ids=ids)
        d, i = ix.query(*query, k=2)
        assert list(ix.ids[i]) == [0, 1], f"ids={ids}: got ids {list(ix.ids[i])} at {d!r}"
        d1, i1 = ix.query(*query)
        assert ix.ids[i1] == 0
        rd, ri = ix.query_radius(*query, 2.1e7)
        assert list(ix.ids[ri]) == [0, 1]


@pytest.mark.parametrize("leaders, query", [
    # (45, 90) is exactly 120 degrees from both leaders
    (([-45.0, -45.0], [0.0, -180.0]), (45.0, 90.0)),
    # north and south of the query along its meridian
    (([10.0, -10.0], [33.0, 33.0]), (0.0, 33.0)),
    # on one circle of latitude around the pole that is queried
    (([-89.9999999, -89.9999999], [-180.0, -179.9999]), (-90.0, -180.0)),
    (([50.0, 50.0], [10.0, 30.0]), (90.0, 20.0)),
    (([1.0, 1.0, 90.0, 89.9999999, 31.0, -29.0], [150.0, -150.0, -180.0, -180.0, -180.0, -180.0]),
     (90.0, -180.0)),
    # the same, plus a leader at the antipode of the query
    (([-89.9999999, -89.9999999, -90.0, 90.0], [-180.0, -179.9999, -180.0, -180.0]),
     (-90.0, -180.0)),
])
def test_exactly_tied_leaders_in_id_order_everywhere(leaders, query):
    """Leaders placed exactly symmetrically about the query: wherever the
    library reports them at the same distance the smaller id comes first, and
    query, query with max_distance_m and query_radius all agree."""
    n = len(leaders[0])
    D = distance_matrix([query[0]], [query[1]], *leaders)[0]
    assert abs(D[0] - D[1]) <= tol(D[0]), "the first two leaders are tied"
    for ids in (list(range(n)), [1, 0] + list(range(2, n))):
        ix = LeaderIndex(*leaders, ids=ids)
        d, i = ix.query(*query, k=n)
        got = [int(ix.ids[j]) for j in i]
        assert oracle.row_order_ok(d, got), f"ids={ids}: ids {got} at {d!r}"
        for cap in np.unique(d):
            dc, ic = ix.query(*query, k=n, max_distance_m=cap)
            keep = d <= cap
            assert_same_knn((dc, ic), (np.r_[d[keep], np.full(n - keep.sum(), np.inf)],
                                       np.r_[i[keep], np.full(n - keep.sum(), n)]))
            rd, ri = ix.query_radius(*query, cap)
            assert_same_knn((rd, ri), (d[keep], i[keep]))
        d1, i1 = ix.query(*query)
        assert (d1, i1) == (d[0], i[0])


def test_empty_list_of_ids_for_empty_index():
    ix = LeaderIndex([], [], ids=[])
    assert ix.n_leaders == 0 and len(ix.ids) == 0
    assert ix.query(1.0, 2.0) == (np.inf, 0)


# ----------------------------------------------------------------------------
# poles, antimeridian, antipodes
# ----------------------------------------------------------------------------
def test_antimeridian_neighbours_are_close():
    ix = LeaderIndex([0.0, 0.0, 10.0], [179.9999, 0.0, -179.0])
    d, i = ix.query(0.0, -179.9999)
    assert i == 0
    exact = 0.0002 * np.pi / 180 * EARTH_RADIUS_M
    assert d == pytest.approx(exact, rel=1e-9, abs=1e-8)
    d, i = ix.query([0.0, 10.0], [180.0, 180.0])
    assert list(i) == [0, 2]
    d, i = ix.query(10.0, -180.0)
    assert d == pytest.approx(np.pi / 180 * np.cos(np.radians(10.0)) * EARTH_RADIUS_M, rel=1e-3)


def test_pole_queries_ignore_longitude():
    lat = np.array([89.0, 80.0, -89.0, 89.5])
    lon = np.array([-170.0, 20.0, 0.0, 123.0])
    ix = LeaderIndex(lat, lon)
    for qlon in (-180.0, -90.0, 0.0, 45.5, 180.0):
        d, i = ix.query(90.0, qlon, k=4)
        assert list(i) == [3, 0, 1, 2]
        exact = (90.0 - lat[i]) * np.pi / 180 * EARTH_RADIUS_M
        np.testing.assert_allclose(d, exact, rtol=1e-9, atol=1e-8)
        d, i = ix.query(-90.0, qlon)
        assert i == 2
        assert d == pytest.approx(np.pi / 180 * EARTH_RADIUS_M, rel=1e-9)


@pytest.mark.parametrize("leaders, query, nearest", [
    # the exact antipode (id 0) and a point 1.1 cm nearer to the query (id 1)
    (([-90.0, -89.9999999], [0.0, 0.0]), (90.0, 0.0), 1),
    (([0.0, 0.0], [180.0, 179.9999999]), (0.0, 0.0), 1),
    (([0.0, 1e-7], [-180.0, 180.0]), (0.0, 0.0), 1),
    # 10 cm apart, 8 km from the antipode (the chord still resolves them)
    (([-30.0, -30.0], [-60.0, -59.9999990]), (30.0, 120.09), 0),
])
def test_near_antipodal_leaders_are_ordered_by_distance(leaders, query, nearest):
    """Around the antipode of a query the chord is nearly flat (it saturates at
    2); the nearest leader must still be the nearest on the sphere."""
    ix = LeaderIndex(*leaders, ids=[0, 1])
    D = distance_matrix([query[0]], [query[1]], *leaders)[0]
    assert abs(D[0] - D[1]) > 1e-3, "the test needs leaders clearly apart"
    assert int(np.argmin(D)) == nearest
    d, i = ix.query(*query)
    assert i == nearest, f"reported {i} at {d!r}, oracle distances {D}"
    d, i = ix.query(*query, k=2)
    assert list(i) == [nearest, 1 - nearest] and d[0] <= d[1], (d, i)
    rd, ri = ix.query_radius(*query, 2.1e7)
    assert list(ri) == [nearest, 1 - nearest] and rd[0] <= rd[1]
    # a cap between the two distances keeps only the nearer one
    cap = float(D.min() + D.max()) / 2
    d, i = ix.query(*query, max_distance_m=cap)
    assert i == nearest


def test_antipodal_distance_is_half_circumference():
    ix = LeaderIndex([0.0, 45.0, 90.0], [0.0, -100.0, 17.0])
    d, i = ix.query([0.0, -45.0, -90.0], [180.0, 80.0, -3.0], k=3)
    np.testing.assert_allclose(d[:, -1], HALF_CIRCUMFERENCE_M, rtol=1e-12)
    assert list(i[:, -1]) == [0, 1, 2]


# ----------------------------------------------------------------------------
# invariances
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_shuffling_leaders_with_ids_changes_no_answer(kind, data):
    case = data.draw(cases(kind), label="case")
    n = case.n
    ids = np.asarray(case.ids) if case.ids is not None else np.arange(n)
    perm = np.random.default_rng(data.draw(seeds, label="seed")).permutation(n)
    leafsize2 = data.draw(st.integers(1, 40), label="leafsize2")
    a = LeaderIndex(case.lat, case.lon, ids=ids, leafsize=case.leafsize)
    b = LeaderIndex(case.lat[perm], case.lon[perm], ids=ids[perm], leafsize=leafsize2)
    q = (case.qlat, case.qlon)
    for k in (1, 3, n + 1):
        da, ia = a.query(*q, k=k)
        db, ib = b.query(*q, k=k)
        np.testing.assert_array_equal(da, db)
        assert (named(a, ia) == named(b, ib)).all()
    for r in (0.0, 50.0, 1e5, 1.5e7):
        ra, rb = a.query_radius(*q, r), b.query_radius(*q, r)
        for j in range(len(case.qlat)):
            np.testing.assert_array_equal(ra[0][j], rb[0][j])
            assert named(a, ra[1][j]).tolist() == named(b, rb[1][j]).tolist()


@pytest.mark.parametrize("leafsize", [1, 2, 3, 16, 1000])
def test_leafsize_changes_no_answer(leafsize):
    ev = synth.city_event(n_leaders=300, n_orders=2000, seed=3)
    ref = LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids, leafsize=16)
    ix = LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids, leafsize=leafsize)
    assert ix.leafsize == leafsize
    q = (ev.order_lat, ev.order_lon)
    assert_same_knn(ix.query(*q), ref.query(*q))
    assert_same_knn(ix.query(*q, k=5, max_distance_m=800.0),
                    ref.query(*q, k=5, max_distance_m=800.0))


@pytest.fixture(scope="module")
def city():
    """A city event with > 5000 orders, so that two workers really split the batch."""
    ev = synth.city_event(n_leaders=800, n_orders=9000, seed=11)
    return ev, LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids)


def test_city_batch_matches_oracle(city):
    ev, ix = city
    sl = slice(0, 400)
    q = (ev.order_lat[sl], ev.order_lon[sl])
    d, i = ix.query(*q, k=3)
    check_query(ev.leader_lat, ev.leader_lon, ev.leader_ids, *q, 3, None, d, i)
    d, i = ix.query(*q, max_distance_m=300.0)
    check_query(ev.leader_lat, ev.leader_lon, ev.leader_ids, *q, 1, 300.0, d, i)
    rd, ri = ix.query_radius(*q, 500.0)
    check_radius(ev.leader_lat, ev.leader_lon, ev.leader_ids, *q, 500.0, rd, ri)


@pytest.mark.parametrize("workers", [2, -1])
def test_workers_change_no_answer(city, workers):
    ev, ix = city
    q = (ev.order_lat, ev.order_lon)
    assert len(ev.order_lat) > 5000
    assert_same_knn(ix.query(*q, workers=workers), ix.query(*q, workers=1))
    assert_same_knn(ix.query(*q, k=4, max_distance_m=1000.0, workers=workers),
                    ix.query(*q, k=4, max_distance_m=1000.0, workers=1))
    r = np.where(np.arange(len(ev.order_lat)) % 3 == 0, 200.0, 600.0)
    ra = ix.query_radius(*q, r, workers=workers)
    rb = ix.query_radius(*q, r, workers=1)
    assert len(ra[0]) == len(rb[0]) == len(ev.order_lat)
    for j in range(len(ev.order_lat)):
        np.testing.assert_array_equal(ra[0][j], rb[0][j])
        np.testing.assert_array_equal(ra[1][j], rb[1][j])


@pytest.mark.parametrize("cuts", [[1], [2500, 2501, 7000], [4096], [13, 5000]])
def test_chunked_batches_change_no_answer(city, cuts):
    ev, ix = city
    lat, lon = ev.order_lat, ev.order_lon
    bounds = [0, *cuts, len(lat)]
    for k in (1, 3):
        whole = ix.query(lat, lon, k=k, workers=2)
        parts = [ix.query(lat[a:b], lon[a:b], k=k) for a, b in zip(bounds[:-1], bounds[1:])]
        assert_same_knn(whole, (np.concatenate([p[0] for p in parts]),
                                np.concatenate([p[1] for p in parts])))
    whole = ix.query_radius(lat, lon, 400.0, workers=2)
    parts = [ix.query_radius(lat[a:b], lon[a:b], 400.0) for a, b in zip(bounds[:-1], bounds[1:])]
    for col in (0, 1):
        joined = np.concatenate([p[col] for p in parts])
        assert len(joined) == len(lat)
        for j in range(0, len(lat), 7):
            np.testing.assert_array_equal(whole[col][j], joined[j])


# ----------------------------------------------------------------------------
# scalar and array paths
# ----------------------------------------------------------------------------
_LEADERS = synth.city_event(n_leaders=200, n_orders=10, seed=5)
_SCALAR_INDEX = LeaderIndex(np.concatenate([_LEADERS.leader_lat, [90.0, -90.0, 0.0, 0.0]]),
                            np.concatenate([_LEADERS.leader_lon, [0.0, 0.0, 180.0, -179.9999]]))


@given(lat=lat_st | special_lat_st | st.floats(29.9, 30.6), lon=lon_st | special_lon_st | st.floats(119.8, 120.5),
       md=st.none() | st.floats(0.0, 3e4))
@example(lat=30.2741, lon=120.1551, md=None)
@example(lat=90.0, lon=-180.0, md=0.0)
def test_scalar_and_array_paths_agree(lat, lon, md):
    ix = _SCALAR_INDEX
    d, i = ix.query(lat, lon, max_distance_m=md)
    assert type(d) is float and type(i) is int
    da, ia = ix.query([lat], [lon], max_distance_m=md)
    assert (d, i) == (da[0], ia[0])
    assert (d, i) == ix.query(np.float64(lat), np.float64(lon), max_distance_m=md)
    assert (d, i) == ix.query(np.array(lat), np.array(lon), max_distance_m=md)
    dk, ik = ix.query(lat, lon, k=3, max_distance_m=md)
    assert dk.shape == (3,) and ik.shape == (3,)
    dka, ika = ix.query([lat], [lon], k=3, max_distance_m=md)
    assert_same_knn((dk, ik), (dka[0], ika[0]))
    assert (dk[0], ik[0]) == (d, i)
    r = 5000.0 if md is None else md
    rd, ri = ix.query_radius(lat, lon, r)
    rda, ria = ix.query_radius([lat], [lon], [r])
    assert rd.dtype == np.float64 and ri.dtype.kind == "i"
    assert_same_knn((rd, ri), (rda[0], ria[0]))


def test_python_ints_and_numpy_scalars_are_accepted():
    ix = LeaderIndex([30, 31], [120, 121])  # ints for leaders too
    assert ix.lat.dtype == np.float64
    ref = ix.query(30.0, 120.0)
    assert ref == (0.0, 0)
    for lat, lon in [(30, 120), (np.float64(30), np.float64(120)), (np.int64(30), np.int32(120)),
                     (np.float64(30), 120), (30, np.float64(120.0))]:
        d, i = ix.query(lat, lon)
        assert (d, i) == ref and type(d) is float and type(i) is int
        d, i = ix.query(lat, lon, k=np.int64(2))
        assert list(i) == [0, 1]
        rd, ri = ix.query_radius(lat, lon, 10)
        assert list(ri) == [0]
    d, i = ix.query([30, 31], [120, 121], k=1, max_distance_m=0)
    assert list(i) == [0, 1] and list(d) == [0.0, 0.0]


# ----------------------------------------------------------------------------
# shapes and edge cases
# ----------------------------------------------------------------------------
def test_empty_index_answers_missing():
    ix = LeaderIndex([], [])
    assert ix.n_leaders == 0
    assert ix.query(10.0, 20.0) == (np.inf, 0)
    assert ix.query(10.0, 20.0, max_distance_m=5.0) == (np.inf, 0)
    d, i = ix.query([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert d.shape == (3,) and (d == np.inf).all() and (i == 0).all()
    d, i = ix.query([1.0, 2.0], [4.0, 5.0], k=3, max_distance_m=1e9)
    assert d.shape == (2, 3) and (d == np.inf).all() and (i == 0).all()
    d, i = ix.query(1.0, 2.0, k=2)
    assert list(d) == [np.inf, np.inf] and list(i) == [0, 0]
    rd, ri = ix.query_radius(1.0, 2.0, 1e9)
    assert rd.shape == (0,) and ri.shape == (0,)
    rd, ri = ix.query_radius([1.0, 2.0], [3.0, 4.0], 1e9)
    assert rd.shape == (2,) and all(len(x) == 0 for x in rd) and all(len(x) == 0 for x in ri)


def test_empty_queries_give_empty_results():
    ix = LeaderIndex([1.0, 2.0], [1.0, 2.0])
    e = np.zeros(0)
    d, i = ix.query(e, e)
    assert d.shape == (0,) and i.shape == (0,)
    d, i = ix.query([], [], k=4, max_distance_m=10.0)
    assert d.shape == (0, 4) and i.shape == (0, 4)
    rd, ri = ix.query_radius(e, e, 100.0)
    assert rd.shape == (0,) and ri.shape == (0,)
    rd, ri = ix.query_radius(e, e, e)
    assert rd.shape == (0,)


def test_one_leader():
    ix = LeaderIndex([-33.86], [151.21], ids=["syd"])
    d, i = ix.query([-33.86, 51.5, 90.0], [151.21, -0.13, 0.0], k=3)
    assert (i[:, 0] == 0).all() and (i[:, 1:] == 1).all()
    assert d[0, 0] == 0.0 and np.isinf(d[:, 1:]).all()
    np.testing.assert_allclose(d[:, 0], distance_matrix([-33.86, 51.5, 90.0], [151.21, -0.13, 0.0],
                                                        [-33.86], [151.21])[:, 0], rtol=1e-9, atol=1e-8)
    assert ix.query(51.5, -0.13, max_distance_m=1e6) == (np.inf, 1)


def test_k_larger_than_leader_count():
    ix = LeaderIndex([0.0, 0.0, 0.0], [0.0, 1.0, 2.0], ids=[30, 20, 10])
    d, i = ix.query([0.0, 0.0], [0.4, 2.0], k=5)
    assert i.tolist() == [[0, 1, 2, 3, 3], [2, 1, 0, 3, 3]]
    assert np.isinf(d[:, 3:]).all() and np.isfinite(d[:, :3]).all()
    d, i = ix.query(0.0, 0.4, k=5, max_distance_m=60_000.0)
    assert i.tolist() == [0, 3, 3, 3, 3]


def test_max_distance_is_inclusive():
    ix = LeaderIndex([0.0, 0.0], [0.0, 0.5])
    d, i = ix.query(0.0, 0.2)
    assert ix.query(0.0, 0.2, max_distance_m=d) == (d, i)
    assert ix.query(0.0, 0.2, max_distance_m=np.nextafter(d, 0)) == (np.inf, 2)
    dk, ik = ix.query(0.0, 0.2, k=2)
    d2, i2 = ix.query(0.0, 0.2, k=2, max_distance_m=dk[1])
    assert_same_knn((d2, i2), (dk, ik))
    rd, ri = ix.query_radius(0.0, 0.2, dk[1])
    assert_same_knn((rd, ri), (dk, ik))
    rd, ri = ix.query_radius(0.0, 0.2, np.nextafter(dk[1], 0))
    assert list(ri) == [0]
    # at distance zero
    assert ix.query(0.0, 0.5, max_distance_m=0.0) == (0.0, 1)
    assert list(ix.query_radius(0.0, 0.5, 0.0)[1]) == [1]


def test_attributes():
    ix = LeaderIndex([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], leafsize=7)
    assert ix.n_leaders == 3 and ix.leafsize == 7
    np.testing.assert_array_equal(ix.lat, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ix.lon, [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(ix.ids, [0, 1, 2])
    for arr in (ix.lat, ix.lon, ix.ids):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 0
    assert lbsdispatch.EARTH_RADIUS_M == 6371008.8


# ----------------------------------------------------------------------------
# pickling and input arrays
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("ids", [None, [5, -3, 12, 7], ["d", "a", "c", "b"]])
def test_pickle_round_trip(ids):
    lat = [30.2, 30.3, -89.0, 30.2]
    lon = [120.1, 120.2, 179.9, 120.1]
    ix = LeaderIndex(lat, lon, ids=ids, leafsize=2)
    back = pickle.loads(pickle.dumps(ix))
    assert back == ix and not (back != ix)
    assert type(back) is LeaderIndex and back.leafsize == 2
    assert back.ids.dtype == ix.ids.dtype and list(back.ids) == list(ix.ids)
    q = ([30.21, 0.0, -90.0], [120.11, 0.0, 0.0])
    assert_same_knn(back.query(*q, k=4), ix.query(*q, k=4))
    assert back.query(30.2, 120.1) == ix.query(30.2, 120.1)
    ra, rb = back.query_radius(*q, 2e6), ix.query_radius(*q, 2e6)
    for j in range(3):
        assert_same_knn((ra[0][j], ra[1][j]), (rb[0][j], rb[1][j]))
    empty = LeaderIndex([], [])
    assert pickle.loads(pickle.dumps(empty)) == empty


def test_equality():
    a = LeaderIndex([1.0, 2.0], [3.0, 4.0], ids=[1, 2])
    assert a == LeaderIndex([1.0, 2.0], [3.0, 4.0], ids=[1, 2])
    assert a != LeaderIndex([1.0, 2.0], [3.0, 4.0], ids=[2, 1])
    assert a != LeaderIndex([1.0, 2.0], [3.0, 4.5], ids=[1, 2])
    assert a != LeaderIndex([1.0, 2.0], [3.0, 4.0], ids=[1, 2], leafsize=3)
    assert a != LeaderIndex([1.0, 2.0], [3.0, 4.0], ids=["1", "2"])
    assert a != "not an index"


def test_read_only_inputs_work():
    lat = np.array([30.0, 30.1, 30.2])
    lon = np.array([120.0, 120.1, 120.2])
    ids = np.array([9, 8, 7])
    qlat = np.array([30.05, 30.15])
    qlon = np.array([120.05, 120.15])
    r = np.array([20_000.0, 5.0])
    for a in (lat, lon, ids, qlat, qlon, r):
        a.setflags(write=False)
    ix = LeaderIndex(lat, lon, ids=ids)
    d, i = ix.query(qlat, qlon, k=2)
    check_query(lat, lon, ids, qlat, qlon, 2, None, d, i)
    rd, ri = ix.query_radius(qlat, qlon, r)
    check_radius(lat, lon, ids, qlat, qlon, r, rd, ri)
    # and with views (non-owning, strided) as input
    big = np.linspace(0.0, 10.0, 40).reshape(20, 2)
    big.setflags(write=False)
    ix = LeaderIndex(big[:, 0], big[:, 1])
    d, i = ix.query(big[::3, 1], big[::3, 0])
    check_query(big[:, 0], big[:, 1], None, big[::3, 1], big[::3, 0], 1, None, d, i)


def test_caller_arrays_are_not_modified():
    rng = np.random.default_rng(0)
    arrays = {
        "lat": rng.uniform(-90, 90, 50), "lon": rng.uniform(-180, 180, 50),
        "ids": rng.permutation(50), "qlat": rng.uniform(-90, 90, 30),
        "qlon": rng.uniform(-180, 180, 30), "r": rng.uniform(0, 1e6, 30),
    }
    before = {k: v.copy() for k, v in arrays.items()}
    ix = LeaderIndex(arrays["lat"], arrays["lon"], ids=arrays["ids"])
    ix.query(arrays["qlat"], arrays["qlon"], k=3, max_distance_m=1e6)
    ix.query_radius(arrays["qlat"], arrays["qlon"], arrays["r"])
    for name, a in arrays.items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)
        assert a.flags.writeable, f"{name} was made read-only"


def test_index_does_not_share_the_callers_buffer():
    """Changing the caller's buffer after construction must not change the index
    (its ``lat``/``lon``, its answers or what it pickles to)."""
    base = np.array([10.0, 20.0, 30.0, 40.0])
    lon = np.zeros(3)
    ix = LeaderIndex(base[:3], lon)
    before = ix.query(20.0, 0.0)
    base[:3] = [50.0, 60.0, 70.0]   # the caller reuses its buffer
    np.testing.assert_array_equal(ix.lat, [10.0, 20.0, 30.0])
    assert ix.query(20.0, 0.0) == before
    assert pickle.loads(pickle.dumps(ix)).query(20.0, 0.0) == before


# -- coordinate systems (crs=) ----------------------------------------------------------------
@pytest.mark.parametrize("crs", ["gcj02", "BD-09", "EPSG:4547"])
def test_index_in_another_crs_equals_converting_first(crs):
    """An index built and queried in GCJ-02 / BD-09 / a Gauss-Kruger grid answers exactly
    what a WGS-84 index answers for the same points converted first."""
    from lbsdispatch.geo import transform
    rng = np.random.default_rng(7)
    lat = 30.2 + 0.2 * rng.random(300)
    lon = 120.0 + 0.3 * rng.random(300)
    qlat = 30.2 + 0.2 * rng.random(500)
    qlon = 120.0 + 0.3 * rng.random(500)
    plain = LeaderIndex(lat, lon)
    a, b = transform(lat, lon, "wgs84", crs)
    qa, qb = transform(qlat, qlon, "wgs84", crs)
    index = LeaderIndex(a, b, crs=crs)
    # the leaders went through a round trip: equal to well below a millimetre
    assert np.abs(index.lat - lat).max() < 1e-8 and np.abs(index.lon - lon).max() < 1e-8
    d0, i0 = plain.query(qlat, qlon, k=3)
    d1, i1 = index.query(qa, qb, k=3)
    assert np.array_equal(i0, i1)
    assert np.allclose(d0, d1, atol=1e-3, rtol=0)
    s0 = plain.query(float(qlat[0]), float(qlon[0]))
    s1 = index.query(float(qa[0]), float(qb[0]))
    assert s0[1] == s1[1] and abs(s0[0] - s1[0]) < 1e-3
    r0 = plain.query_radius(qlat[:20], qlon[:20], 3000.0)
    r1 = index.query_radius(qa[:20], qb[:20], 3000.0)
    assert all(np.array_equal(x, y) for x, y in zip(r0[1], r1[1]))


def test_index_crs_pickles_and_compares():
    from lbsdispatch.geo import transform
    lat, lon = transform([30.27, 30.28], [120.15, 120.16], "wgs84", "gcj02")
    index = LeaderIndex(lat, lon, crs="gcj02", ids=["a", "b"])
    back = pickle.loads(pickle.dumps(index))
    assert back == index and back.crs == "gcj02"
    assert back.query(30.279, 120.164) == index.query(30.279, 120.164)
    assert index != LeaderIndex(index.lat, index.lon, ids=["a", "b"])   # same points, WGS-84
    assert "crs='gcj02'" in repr(index)


def test_wgs84_index_keeps_the_compiled_query():
    """The online path stays the compiled method: no Python wrapper per call."""
    index = LeaderIndex([30.0], [120.0])
    assert index.crs == "wgs84" and "query" not in vars(index)


@pytest.mark.parametrize("crs", ["mars", "EPSG:999999", 4326, None])
def test_unknown_crs_is_named(crs):
    with pytest.raises(ValueError, match="crs"):
        LeaderIndex([30.0], [120.0], crs=crs)


def test_crs_checks_coordinates_with_their_names():
    with pytest.raises(ValueError, match=r"lat\[1\]"):
        LeaderIndex([30.0, 95.0], [120.0, 120.0], crs="gcj02")


# -- query order: Morton-sorted and as given answer alike -------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_morton_and_plain_query_order_agree_with_the_oracle(k):
    """Large batches may be searched in Morton order (always for k > 1, for k = 1 on
    large trees); the answers are those of the plain order, bit for bit, and the oracle's.
    The thresholds are moved so that a small test exercises both paths."""
    from lbsdispatch._kdtree import _set_morton_min
    rng = np.random.default_rng(11)
    l_lat = rng.uniform(-60, 60, 300)
    l_lon = rng.uniform(-180, 180, 300)
    l_lat[:20] = 30.0                  # a block of exact duplicates: ties by id
    l_lon[:20] = 120.0
    q_lat = rng.uniform(-60, 60, 700)
    q_lon = rng.uniform(-180, 180, 700)
    q_lat[:50] = 30.0
    q_lon[:50] = 120.0
    index = LeaderIndex(l_lat, l_lon)
    old = _set_morton_min(1, 0)
    try:
        morton = index.query(q_lat, q_lon, k=k)
        _set_morton_min(2**62, 2**62)
        plain = index.query(q_lat, q_lon, k=k)
    finally:
        _set_morton_min(*old)
    assert np.array_equal(morton[0], plain[0]) and np.array_equal(morton[1], plain[1])
    oracle.check_query(l_lat, l_lon, None, q_lat, q_lon, k, None, *morton)
