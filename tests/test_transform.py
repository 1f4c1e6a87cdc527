"""Coordinate systems: WGS-84 <-> GCJ-02 <-> BD-09, EPSG through pyproj, mix-up detection."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbsdispatch import crs
from lbsdispatch.crs import CHINA_BOX, OffsetCheck, detect_offset
from lbsdispatch.geo import great_circle_m, transform

LAT_MIN, LAT_MAX, LON_MIN, LON_MAX = CHINA_BOX
# Round trips are exact only where a point and its GCJ-02 image are both in
# the box (the forward map is not one-to-one within ~700 m of its edge), so
# properties draw points 0.02 degree (>= 1.5 km) inside it.
_MARGIN = 0.02
china_lat = st.floats(LAT_MIN + _MARGIN, LAT_MAX - _MARGIN)
china_lon = st.floats(LON_MIN + _MARGIN, LON_MAX - _MARGIN)

CM = 0.01  # the library's promise for round trips, in metres

CITIES = {  # WGS-84, city centres
    "Beijing": (39.9042, 116.4074),
    "Shanghai": (31.2304, 121.4737),
    "Guangzhou": (23.1291, 113.2644),
    "Shenzhen": (22.5431, 114.0579),
    "Hangzhou": (30.2741, 120.1551),
    "Chengdu": (30.5728, 104.0668),
    "Urumqi": (43.8256, 87.6168),
    "Harbin": (45.8038, 126.5350),
}
OUTSIDE = {  # clearly outside the GCJ-02 box
    "London": (51.5074, -0.1278),
    "New York": (40.7128, -74.0060),
    "Sydney": (-33.8688, 151.2093),
    "Sao Paulo": (-23.5505, -46.6333),
}


def china_points(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(LAT_MIN + _MARGIN, LAT_MAX - _MARGIN, n),
            rng.uniform(LON_MIN + _MARGIN, LON_MAX - _MARGIN, n))


# ----------------------------------------------------------------------------
# published reference points
# ----------------------------------------------------------------------------
# (wgs lat, wgs lon, gcj lat, gcj lon).  The first three are the test vectors
# of googollee/eviltransform (python/test.py); the last is the example of
# wandergis/coordtransform (test/app.js: wgs84togcj02(116.404, 39.915)).
WGS_GCJ = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),     # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),     # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),     # Beijing
    (39.915, 116.404, 39.91640428150164, 116.41024449916938),           # Beijing
]


@pytest.mark.parametrize("w_lat,w_lon,g_lat,g_lon", WGS_GCJ)
def test_gcj02_forward_matches_published_points(w_lat, w_lon, g_lat, g_lon):
    lat, lon = transform(w_lat, w_lon, "wgs84", "gcj02")
    # the references are float64 outputs of the same formula: agree to rounding
    assert lat == pytest.approx(g_lat, abs=1e-11)
    assert lon == pytest.approx(g_lon, abs=1e-11)


@pytest.mark.parametrize("w_lat,w_lon,g_lat,g_lon", WGS_GCJ)
def test_gcj02_inverse_recovers_published_points(w_lat, w_lon, g_lat, g_lon):
    lat, lon = transform(g_lat, g_lon, "gcj02", "wgs84")
    assert great_circle_m(lat, lon, w_lat, w_lon) < CM


def test_bd09_forward_matches_published_point():
    # wandergis/coordtransform test/app.js: gcj02tobd09(116.404, 39.915)
    lat, lon = transform(39.915, 116.404, "gcj02", "bd09")
    assert lat == pytest.approx(39.92133699351021, abs=1e-11)
    assert lon == pytest.approx(116.41036949371029, abs=1e-11)


def test_bd09_closed_form_matches_published_point_but_is_not_the_inverse():
    # wandergis/coordtransform test/app.js: bd09togcj02(116.404, 39.915) is the
    # widely copied closed form; ours reproduces it ...
    cf_lat, cf_lon = crs._bd09_to_gcj02_closed_form(np.array([39.915]), np.array([116.404]))
    assert cf_lat[0] == pytest.approx(39.90865673957631, abs=1e-11)
    assert cf_lon[0] == pytest.approx(116.39762729119315, abs=1e-11)
    # ... but the iterated inverse is the one that maps back onto the input
    lat, lon = transform(39.915, 116.404, "bd09", "gcj02")
    f_lat, f_lon = transform(lat, lon, "gcj02", "bd09")
    assert abs(f_lat - 39.915) < 1e-9 and abs(f_lon - 116.404) < 1e-9
    cf_back = transform(cf_lat[0], cf_lon[0], "gcj02", "bd09")
    assert great_circle_m(*cf_back, 39.915, 116.404) > CM
    assert great_circle_m(lat, lon, cf_lat[0], cf_lon[0]) > CM


def test_bd09_closed_form_error_is_centimetres():
    lat, lon = china_points(20_000, seed=7)
    b_lat, b_lon = transform(lat, lon, "gcj02", "bd09")
    cf = crs._bd09_to_gcj02_closed_form(b_lat, b_lon)
    err_cf = great_circle_m(lat, lon, *cf)
    err_it = great_circle_m(lat, lon, *transform(b_lat, b_lon, "bd09", "gcj02"))
    # measured: up to ~0.22 m, median a few cm; the iteration is exact
    assert err_cf.max() > CM
    assert err_cf.max() < 0.5
    assert err_it.max() < 1e-4


# ----------------------------------------------------------------------------
# offset magnitudes
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("city", sorted(CITIES))
def test_gcj02_offset_is_hundreds_of_metres_in_cities(city):
    lat, lon = CITIES[city]
    g = transform(lat, lon, "wgs84", "gcj02")
    assert 100.0 < great_circle_m(lat, lon, *g) < 700.0


@pytest.mark.parametrize("city", sorted(CITIES))
def test_bd09_is_about_a_kilometre_off_gcj02_in_cities(city):
    g = transform(*CITIES[city], "wgs84", "gcj02")
    b = transform(*g, "gcj02", "bd09")
    assert 750.0 < great_circle_m(*g, *b) < 1050.0
    # Baidu shifts north-east: +0.006 lat, +0.0065 lon, plus a small wobble
    assert 0.005 < b[0] - g[0] < 0.0075
    assert 0.005 < b[1] - g[1] < 0.0075


def test_beijing_gcj02_shift_direction():
    # In Beijing GCJ-02 moves points east (by ~0.006 deg) and slightly north.
    lat, lon = CITIES["Beijing"]
    g_lat, g_lon = transform(lat, lon, "wgs84", "gcj02")
    assert 0.004 < g_lon - lon < 0.008
    assert 0.0 < g_lat - lat < 0.003


# ----------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------
@given(china_lat, china_lon)
def test_wgs84_gcj02_round_trip(lat, lon):
    g = transform(lat, lon, "wgs84", "gcj02")
    assert great_circle_m(lat, lon, *transform(*g, "gcj02", "wgs84")) < CM


@given(china_lat, china_lon)
def test_gcj02_inverse_then_forward(lat, lon):
    w = transform(lat, lon, "gcj02", "wgs84")
    assert great_circle_m(lat, lon, *transform(*w, "wgs84", "gcj02")) < CM


@given(st.floats(-89.9, 89.9), st.floats(-179.9, 179.9))
def test_gcj02_bd09_round_trip_everywhere(lat, lon):
    b = transform(lat, lon, "gcj02", "bd09")
    assert great_circle_m(lat, lon, *transform(*b, "bd09", "gcj02")) < CM
    g = transform(lat, lon, "bd09", "gcj02")
    assert great_circle_m(lat, lon, *transform(*g, "gcj02", "bd09")) < CM


@given(china_lat, china_lon)
def test_wgs84_bd09_round_trip(lat, lon):
    b = transform(lat, lon, "wgs84", "bd09")
    assert great_circle_m(lat, lon, *transform(*b, "bd09", "wgs84")) < CM
    # the chain goes through GCJ-02
    g = transform(lat, lon, "wgs84", "gcj02")
    assert transform(*g, "gcj02", "bd09") == b


@given(st.lists(st.tuples(china_lat, china_lon), min_size=1, max_size=40),
       st.sampled_from([("wgs84", "gcj02"), ("gcj02", "wgs84"), ("gcj02", "bd09"),
                        ("bd09", "gcj02"), ("wgs84", "bd09"), ("bd09", "wgs84"),
                        ("bd09", "EPSG:4547"), ("EPSG:4490", "gcj02")]))
def test_scalar_equals_array(points, pair):
    lat = np.array([p[0] for p in points])
    lon = np.array([p[1] for p in points])
    a_lat, a_lon = transform(lat, lon, *pair)
    for j in range(len(points)):
        s_lat, s_lon = transform(float(lat[j]), float(lon[j]), *pair)
        assert type(s_lat) is float and type(s_lon) is float
        # rows iterate independently, so a row's answer does not depend on its batch
        assert (s_lat, s_lon) == (a_lat[j], a_lon[j])


def test_round_trip_100k_points_vectorised():
    lat, lon = china_points(100_000, seed=1)
    g_lat, g_lon = transform(lat, lon, "wgs84", "gcj02")
    w_lat, w_lon = transform(g_lat, g_lon, "gcj02", "wgs84")
    assert great_circle_m(lat, lon, w_lat, w_lon).max() < CM
    # the iteration stops on the residual of the forward map, not a guess
    f_lat, f_lon = transform(w_lat, w_lon, "wgs84", "gcj02")
    assert np.abs(f_lat - g_lat).max() < 1e-9
    assert np.abs(f_lon - g_lon).max() < 1e-9
    b_lat, b_lon = transform(lat, lon, "wgs84", "bd09")
    assert great_circle_m(lat, lon, *transform(b_lat, b_lon, "bd09", "wgs84")).max() < CM
    # every point was actually moved (an identity would pass the round trips)
    assert great_circle_m(lat, lon, g_lat, g_lon).min() > 0.5
    assert great_circle_m(g_lat, g_lon, b_lat, b_lon).min() > 500.0


def test_inverse_iteration_is_bounded():
    assert 1 <= crs._MAX_ITER <= 100
    assert crs._TOL_DEG <= 1e-9


# ----------------------------------------------------------------------------
# outside China, identity, names
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("city", sorted(OUTSIDE))
def test_outside_china_passes_through_gcj02(city):
    lat, lon = OUTSIDE[city]
    assert transform(lat, lon, "wgs84", "gcj02") == (lat, lon)
    assert transform(lat, lon, "gcj02", "wgs84") == (lat, lon)
    # BD-09's offset has no region: it still moves the point
    assert great_circle_m(lat, lon, *transform(lat, lon, "gcj02", "bd09")) > 500.0


@given(st.floats(-90, 90), st.floats(-180, 180))
def test_gcj02_moves_exactly_the_points_in_the_box(lat, lon):
    inside = LAT_MIN <= lat <= LAT_MAX and LON_MIN <= lon <= LON_MAX
    g = transform(lat, lon, "wgs84", "gcj02")
    assert (g != (lat, lon)) == inside
    w = transform(lat, lon, "gcj02", "wgs84")
    assert (w != (lat, lon)) == inside


@pytest.mark.parametrize("name", ["wgs84", "gcj02", "bd09", "EPSG:4490", "EPSG:3857"])
def test_identity_returns_new_equal_arrays(name):
    lat = np.array([30.0, 31.5, 29.25])
    lon = np.array([120.0, 121.5, 119.75])
    out_lat, out_lon = transform(lat, lon, name, name)
    np.testing.assert_array_equal(out_lat, lat)
    np.testing.assert_array_equal(out_lon, lon)
    assert not np.shares_memory(out_lat, lat) and not np.shares_memory(out_lon, lon)


@pytest.mark.parametrize("spelling,canonical", [
    ("WGS84", "wgs84"), ("WGS-84", "wgs84"), ("EPSG:4326", "wgs84"), ("epsg:4326", "wgs84"),
    ("GCJ-02", "gcj02"), ("Gcj02", "gcj02"), ("BD-09", "bd09"), ("BD09", "bd09"),
    ("bd09ll", "bd09"), (" gcj_02 ", "gcj02"),
])
def test_spellings(spelling, canonical):
    lat, lon = CITIES["Shanghai"]
    other = "gcj02" if canonical != "gcj02" else "wgs84"
    assert transform(lat, lon, spelling, other) == transform(lat, lon, canonical, other)
    assert transform(lat, lon, other, spelling) == transform(lat, lon, other, canonical)


# ----------------------------------------------------------------------------
# EPSG through pyproj
# ----------------------------------------------------------------------------
@given(china_lat, china_lon)
def test_cgcs2000_is_wgs84_to_a_micro_degree(lat, lon):
    c_lat, c_lon = transform(lat, lon, "wgs84", "EPSG:4490")
    assert abs(c_lat - lat) < 1e-6 and abs(c_lon - lon) < 1e-6


# EPSG:4547 is CGCS2000 / 3-degree Gauss-Kruger CM 114E (false easting 500 km)
gk_lat = st.floats(18.0, 45.0)
gk_lon = st.floats(112.5, 115.5)


@given(gk_lat, gk_lon)
def test_gauss_kruger_round_trip(lat, lon):
    n, e = transform(lat, lon, "wgs84", "EPSG:4547")
    assert great_circle_m(lat, lon, *transform(n, e, "EPSG:4547", "wgs84")) < 1e-3
    # and from GCJ-02, through WGS-84
    g = transform(lat, lon, "wgs84", "gcj02")
    n2, e2 = transform(*g, "gcj02", "EPSG:4547")
    assert math.hypot(n2 - n, e2 - e) < 1e-3
    assert great_circle_m(*g, *transform(n2, e2, "EPSG:4547", "gcj02")) < 1e-3


def _grs80_meridian_arc(lat_deg):
    """Metres from the equator along the GRS80 meridian (CGCS2000 shares a, f)."""
    a = 6378137.0
    f = 1 / 298.257222101
    e2 = f * (2 - f)
    phi = np.linspace(0.0, math.radians(lat_deg), 200_001)
    m = a * (1 - e2) / (1 - e2 * np.sin(phi) ** 2) ** 1.5
    return float(np.sum((m[1:] + m[:-1]) / 2 * np.diff(phi)))


@pytest.mark.parametrize("lat", [22.5, 30.0, 39.9])
def test_gauss_kruger_order_and_values_on_central_meridian(lat):
    # (northing, easting) come back in the (lat, lon) positions
    n, e = transform(lat, 114.0, "wgs84", "EPSG:4547")
    assert e == pytest.approx(500_000.0, abs=1e-6)
    assert n == pytest.approx(_grs80_meridian_arc(lat), abs=1e-3)


@given(st.floats(-80.0, 80.0), st.floats(-179.0, 179.0))
def test_web_mercator_order_and_values(lat, lon):
    r = 6378137.0
    y, x = transform(lat, lon, "wgs84", "EPSG:3857")
    assert x == pytest.approx(r * math.radians(lon), abs=1e-6)
    assert y == pytest.approx(r * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)),
                              abs=1e-6)


def test_epsg_to_epsg_matches_the_chain_through_wgs84():
    lat, lon = china_points(200, seed=3)
    lat = np.clip(lat, 20, 45)
    lon = 112.5 + (lon - LON_MIN) / (LON_MAX - LON_MIN) * 3.0
    y, x = transform(lat, lon, "wgs84", "EPSG:3857")
    direct = transform(y, x, "EPSG:3857", "EPSG:4547")
    via = transform(*transform(y, x, "EPSG:3857", "wgs84"), "wgs84", "EPSG:4547")
    assert np.hypot(direct[0] - via[0], direct[1] - via[1]).max() < 1e-3


# ----------------------------------------------------------------------------
# inputs and errors
# ----------------------------------------------------------------------------
def test_types_scalar_and_array():
    lat, lon = transform(30.0, 120.0, "wgs84", "gcj02")
    assert type(lat) is float and type(lon) is float
    lat, lon = transform(np.float32(30.0), np.int64(120), "wgs84", "gcj02")
    assert type(lat) is float
    a_lat, a_lon = transform([30.0, 31.0], (120, 121), "wgs84", "gcj02")
    assert a_lat.dtype == np.float64 and a_lon.dtype == np.float64
    assert a_lat.shape == (2,) and a_lat.flags.writeable


def test_read_only_arrays():
    lat, lon = china_points(50, seed=4)
    lat.flags.writeable = False
    lon.flags.writeable = False
    keep = lat.copy()
    for dst in ("gcj02", "bd09", "EPSG:4547", "wgs84"):
        out_lat, out_lon = transform(lat, lon, "wgs84", dst)
        assert out_lat.flags.writeable and out_lon.flags.writeable
        assert out_lat.shape == out_lon.shape == (50,)
    g = transform(lat, lon, "gcj02", "wgs84")
    assert great_circle_m(lat, lon, *transform(*g, "wgs84", "gcj02")).max() < CM
    np.testing.assert_array_equal(lat, keep)


@pytest.mark.parametrize("src,dst", [("wgs84", "gcj02"), ("gcj02", "wgs84"), ("bd09", "wgs84"),
                                     ("gcj02", "EPSG:4547"), ("EPSG:3857", "EPSG:4547"),
                                     ("EPSG:3857", "bd09")])
def test_empty_arrays(src, dst):
    lat, lon = transform(np.array([]), [], src, dst)
    assert lat.shape == (0,) and lon.shape == (0,)
    assert lat.dtype == np.float64 and lon.dtype == np.float64


def test_pandas_series():
    import pandas as pd

    lat, lon = china_points(30, seed=5)
    s_lat = pd.Series(lat, index=np.arange(100, 130))
    s_lon = pd.Series(lon, index=np.arange(100, 130))
    out = transform(s_lat, s_lon, "wgs84", "bd09")
    ref = transform(lat, lon, "wgs84", "bd09")
    np.testing.assert_array_equal(out[0], ref[0])
    np.testing.assert_array_equal(out[1], ref[1])


@pytest.mark.parametrize("lat,lon,match", [
    ([30.0, 31.0, math.nan], [120.0, 121.0, 122.0], r"^lat\[2\] = nan"),
    ([30.0, 31.0], [120.0, math.inf], r"^lon\[1\] = inf"),
    ([30.0, -90.5], [120.0, 121.0], r"^lat\[1\] = -90\.5 is outside \[-90, 90\]"),
    ([30.0, 31.0, 32.0], [120.0, 121.0, 180.25], r"^lon\[2\] = 180\.25 is outside"),
    (91.0, 120.0, r"^lat = 91\.0 is outside"),
    ([30.0, 31.0], [120.0], "different lengths"),
    (None, 120.0, "^lat"),
    (["x"], [120.0], "^lat"),
])
@pytest.mark.parametrize("src", ["wgs84", "gcj02", "bd09", "EPSG:4490"])
def test_invalid_geographic_input(lat, lon, match, src):
    with pytest.raises(ValueError, match=match):
        transform(lat, lon, src, "wgs84" if src != "wgs84" else "gcj02")


def test_invalid_projected_input():
    with pytest.raises(ValueError, match=r"^lat\[1\] = nan"):
        transform([3.3e6, math.nan], [5e5, 5e5], "EPSG:4547", "wgs84")
    with pytest.raises(ValueError, match=r"^lon = inf"):
        transform(3.3e6, math.inf, "EPSG:4547", "wgs84")
    with pytest.raises(ValueError, match="different lengths"):
        transform([3.3e6, 3.4e6], [5e5], "EPSG:4547", "gcj02")
    # a point PROJ cannot map is named, not returned as inf
    with pytest.raises(ValueError, match=r"^lat\[1\] = 1e\+30.*PROJ cannot transform"):
        transform([3.3e6, 1e30], [5e5, 1e30], "EPSG:4547", "gcj02")
    # metres are not checked against degree ranges
    n, e = transform(3.3e6, 5e5, "EPSG:4547", "wgs84")
    assert 29 < n < 31 and 113.9 < e < 114.1


@pytest.mark.parametrize("bad", ["wgs", "mars", "gcj", "EPSG:", "EPSG:abc", "epsg 4326",
                                 "EPSG:999999", "EPSG:4978", "", 4326, None])
@pytest.mark.parametrize("arg", ["src", "dst"])
def test_unknown_crs(bad, arg):
    kwargs = {"src": "wgs84", "dst": "gcj02"}
    kwargs[arg] = bad
    with pytest.raises(ValueError) as info:
        transform(30.0, 120.0, **kwargs)
    text = str(info.value)
    assert text.startswith(arg) and repr(bad) in text
    for spelling in ("'wgs84'", "'gcj02'", "'bd09'", "EPSG:"):
        assert spelling in text


def test_bd09_stays_valid_near_the_antimeridian_and_poles():
    lat, lon = transform([89.999, 0.0, -89.999], [179.999, -179.999, 0.0], "gcj02", "bd09")
    assert np.all(np.abs(lat) <= 90) and np.all(np.abs(lon) <= 180)
    back = transform(lat, lon, "bd09", "gcj02")
    assert np.all(np.abs(back[0]) <= 90) and np.all(np.abs(back[1]) <= 180)
    # away from the pole the wrapped longitude still inverts
    assert great_circle_m(0.0, -179.999, back[0][1], back[1][1]) < CM


# ----------------------------------------------------------------------------
# detect_offset
# ----------------------------------------------------------------------------
def _event(lat0, lon0, seed, n_leaders=80, n_orders=20_000, spread_deg=0.15, radius_m=300.0):
    """Leaders scattered over a city; orders within ``radius_m`` of a random leader."""
    rng = np.random.default_rng(seed)
    l_lat = lat0 + rng.uniform(-spread_deg, spread_deg, n_leaders)
    l_lon = lon0 + rng.uniform(-spread_deg, spread_deg, n_leaders)
    pick = rng.integers(0, n_leaders, n_orders)
    r = radius_m * np.sqrt(rng.uniform(0, 1, n_orders))
    a = rng.uniform(0, 2 * np.pi, n_orders)
    m_per_deg = math.pi / 180 * 6_371_008.8
    o_lat = l_lat[pick] + r * np.cos(a) / m_per_deg
    o_lon = l_lon[pick] + r * np.sin(a) / (m_per_deg * np.cos(np.radians(l_lat[pick])))
    return o_lat, o_lon, l_lat, l_lon


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("city", ["Hangzhou", "Beijing", "Chengdu", "Harbin"])
def test_detects_bd09_orders_against_gcj02_leaders(city, seed):
    o_lat, o_lon, l_lat, l_lon = _event(*CITIES[city], seed)
    b_lat, b_lon = transform(o_lat, o_lon, "gcj02", "bd09")
    check = detect_offset(b_lat, b_lon, l_lat, l_lon)
    assert isinstance(check, OffsetCheck)
    assert check.suspect
    assert (check.likely_src, check.likely_dst) == ("bd09", "gcj02")
    assert check.median_m_after <= 0.7 * check.median_m_before
    assert check.median_m_after < 300.0 < check.median_m_before
    # Baidu's shift is north-east
    assert check.shift_east_m > 200.0 and check.shift_north_m > 200.0
    assert "BD-09" in check.message and "GCJ-02" in check.message
    assert "transform(..., 'bd09', 'gcj02')" in check.message
    assert f"{check.median_m_before:,.0f} m" in check.message


@pytest.mark.parametrize("seed", range(3))
def test_detects_gcj02_orders_against_wgs84_leaders(seed):
    o_lat, o_lon, l_lat, l_lon = _event(*CITIES["Hangzhou"], seed)
    g_lat, g_lon = transform(o_lat, o_lon, "wgs84", "gcj02")
    check = detect_offset(g_lat, g_lon, l_lat, l_lon)
    assert check.suspect
    assert (check.likely_src, check.likely_dst) == ("gcj02", "wgs84")
    # and the other way round
    w_lat, w_lon = transform(o_lat, o_lon, "gcj02", "wgs84")
    check = detect_offset(w_lat, w_lon, l_lat, l_lon)
    assert (check.suspect, check.likely_src, check.likely_dst) == (True, "wgs84", "gcj02")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("city", ["Hangzhou", "Shenzhen", "Urumqi"])
def test_clean_dump_is_not_suspect(city, seed):
    o_lat, o_lon, l_lat, l_lon = _event(*CITIES[city], seed)
    check = detect_offset(o_lat, o_lon, l_lat, l_lon)
    assert not check.suspect
    assert check.likely_src is None and check.likely_dst is None
    assert check.median_m_before < 300.0
    assert math.hypot(check.shift_east_m, check.shift_north_m) < 30.0
    assert "no sign" in check.message


@pytest.mark.parametrize("city", sorted(OUTSIDE))
def test_outside_china_is_not_suspect(city):
    o_lat, o_lon, l_lat, l_lon = _event(*OUTSIDE[city], seed=0)
    assert not detect_offset(o_lat, o_lon, l_lat, l_lon).suspect
    # a WGS-84/GCJ-02 "mix" changes nothing outside the box
    g_lat, g_lon = transform(o_lat, o_lon, "wgs84", "gcj02")
    check = detect_offset(g_lat, g_lon, l_lat, l_lon)
    assert not check.suspect
    assert check.median_m_before < 300.0


def test_detect_offset_is_deterministic_and_subsamples():
    o_lat, o_lon, l_lat, l_lon = _event(*CITIES["Hangzhou"], seed=0, n_orders=12_000)
    b_lat, b_lon = transform(o_lat, o_lon, "gcj02", "bd09")
    first = detect_offset(b_lat, b_lon, l_lat, l_lon)
    assert detect_offset(b_lat, b_lon, l_lat, l_lon) == first
    # the default sample of 5,000 differs from looking at every order ...
    full = detect_offset(b_lat, b_lon, l_lat, l_lon, max_orders=12_000)
    assert full.median_m_before != first.median_m_before
    # ... but tells the same story
    assert (full.suspect, full.likely_src, full.likely_dst) == (True, "bd09", "gcj02")
    small = detect_offset(b_lat, b_lon, l_lat, l_lon, max_orders=300, seed=9)
    assert (small.suspect, small.likely_src) == (True, "bd09")


def test_detect_offset_edge_cases():
    o_lat, o_lon, l_lat, l_lon = _event(*CITIES["Hangzhou"], seed=0, n_orders=100)
    check = detect_offset([], [], l_lat, l_lon)
    assert not check.suspect and math.isnan(check.median_m_before)
    check = detect_offset(o_lat, o_lon, [], [])
    assert not check.suspect
    with pytest.raises(ValueError, match=r"^order_lat\[3\] = nan"):
        bad = o_lat.copy()
        bad[3] = math.nan
        detect_offset(bad, o_lon, l_lat, l_lon)
    with pytest.raises(ValueError, match=r"^leader_lon\[0\] = 200\.0 is outside"):
        bad = l_lon.copy()
        bad[0] = 200.0
        detect_offset(o_lat, o_lon, l_lat, bad)
    with pytest.raises(ValueError, match="different lengths"):
        detect_offset(o_lat, o_lon[:-1], l_lat, l_lon)
    with pytest.raises(ValueError, match="max_orders"):
        detect_offset(o_lat, o_lon, l_lat, l_lon, max_orders=0)
    with pytest.raises(ValueError, match="min_reduction"):
        detect_offset(o_lat, o_lon, l_lat, l_lon, min_reduction=1.5)


@settings(deadline=None)
@given(lat=st.floats(18.0, 53.0), lon=st.floats(74.0, 134.0),
       src=st.sampled_from(["gcj02", "bd09", "EPSG:4547"]))
def test_point_path_equals_the_array_path(lat, lon, src):
    """The dispatcher's one-point conversion (Python floats, libm) agrees with
    `transform` (numpy) to far below a millimetre."""
    from lbsdispatch.crs import point_to_wgs84
    a, b = transform(lat, lon, "wgs84", src)
    x, y = point_to_wgs84(a, b, src)
    u, v = transform(a, b, src, "wgs84")
    assert abs(x - u) < 1e-11 and abs(y - v) < 1e-11
    assert abs(x - lat) < 1e-8 and abs(y - lon) < 1e-8      # and round-trips
