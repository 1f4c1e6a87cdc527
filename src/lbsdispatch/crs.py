"""Coordinate systems of Chinese order systems: WGS-84, GCJ-02, BD-09 and EPSG codes.

Order dumps arrive in whatever system the app that captured the point used:

``wgs84``
    GPS and the WeChat mini-program's location call (``EPSG:4326``).
``gcj02``
    The "Mars" system required for maps published in China: AMap (Gaode),
    Tencent maps and WeChat's map picker.  It is WGS-84 plus a smooth,
    deliberately obscure offset of a few hundred metres, applied only inside
    a rough bounding box around China.
``bd09``
    Baidu maps: GCJ-02 with a second offset of about 1 km on top.
``EPSG:nnnn``
    Anything PROJ knows, through :mod:`pyproj`: e.g. CGCS2000 (``EPSG:4490``),
    its 3-degree Gauss-Kruger zones (``EPSG:4513``-``EPSG:4554``), Web
    Mercator (``EPSG:3857``).

GCJ-02 and BD-09 are not in PROJ.  Their forward transforms are the published
formulas; neither has a closed-form inverse, so both inverses here are solved
by fixed-point iteration to better than 1e-10 degree (about 0.01 mm), which
is far inside the 1 cm the library promises.

Axis order
----------
Every function takes and returns latitude first: ``(lat, lon)``.  For a
*projected* EPSG system the same two positions carry ``(y, x)`` =
``(northing, easting)`` in that system's units (metres for all the Chinese
grids), so ``transform(lat, lon, "wgs84", "EPSG:4547")`` returns
``(northing, easting)``.  The order in which the EPSG registry lists a
system's axes does not matter: PROJ is always driven in (x, y) order.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ._kdtree import EARTH_RADIUS_M, _as_coords, _as_points, check_coordinates

__all__ = ["CHINA_BOX", "OffsetCheck", "detect_offset", "transform"]

# ----------------------------------------------------------------------------
# constants of the published transforms
# ----------------------------------------------------------------------------
# GCJ-02 measures its offset in metres on the Krasovsky 1940 ellipsoid.
_KRASOVSKY_A = 6378245.0
_KRASOVSKY_EE = 0.00669342162296594323  # first eccentricity squared

#: ``(lat_min, lat_max, lon_min, lon_max)`` of the box, in degrees, inside
#: which GCJ-02 applies its offset.  It is the rough box every map SDK and
#: open-source port uses (not China's border): points outside it are the same
#: in WGS-84 and GCJ-02, as the maps have them.
CHINA_BOX = (0.8293, 55.8271, 72.004, 137.8347)

# BD-09 perturbs GCJ-02 in polar coordinates taken in *degree* space (that is
# what Baidu publishes), then shifts by a constant.
_BD_X_PI = math.pi * 3000.0 / 180.0
_BD_DLON = 0.0065
_BD_DLAT = 0.006

# Fixed-point iterations of the inverses stop once the forward transform of
# the estimate is within _TOL_DEG of the target in both coordinates.  The
# forward maps are the identity plus an offset whose derivative is of order
# 1e-3 (GCJ-02) or 1e-4 (BD-09), so each step gains about three decimal
# digits; 3-5 steps reach the tolerance from a start up to 1 km away.
# _MAX_ITER only bounds pathological input.
_TOL_DEG = 1e-10
_MAX_ITER = 30

# ----------------------------------------------------------------------------
# names of coordinate systems
# ----------------------------------------------------------------------------
_ALIASES = {
    "wgs84": "wgs84", "wgs-84": "wgs84", "wgs_84": "wgs84", "wgs 84": "wgs84",
    "epsg:4326": "wgs84",
    "gcj02": "gcj02", "gcj-02": "gcj02", "gcj_02": "gcj02",
    "bd09": "bd09", "bd-09": "bd09", "bd_09": "bd09", "bd09ll": "bd09",
}
_ACCEPTED = ("'wgs84', 'gcj02', 'bd09' (case-insensitive; also 'WGS-84', 'GCJ-02', "
             "'BD-09', 'bd09ll', 'EPSG:4326') or 'EPSG:<code>' for any system PROJ knows")
_EPSG_RE = re.compile(r"^\s*epsg\s*:\s*(\d+)\s*$", re.IGNORECASE)
# Distance of each of our three systems from WGS-84 along the chain
# wgs84 <-> gcj02 <-> bd09; EPSG systems hang off wgs84.
_LEVEL = {"wgs84": 0, "gcj02": 1, "bd09": 2}
_DISPLAY = {"wgs84": "WGS-84", "gcj02": "GCJ-02", "bd09": "BD-09"}


class _System(NamedTuple):
    key: str            # "wgs84", "gcj02", "bd09" or "EPSG:<code>"
    degrees: bool       # geographic in degrees: latitude/longitude ranges apply
    unit: str           # for messages


def _resolve(crs: Any, arg: str) -> _System:
    """The system named by ``crs``; ValueError naming ``arg`` if unknown."""
    if not isinstance(crs, str):
        # ValueError like every other bad argument of the library, not TypeError
        raise ValueError(  # noqa: TRY004
            f"{arg} must be a coordinate system name, got {crs!r}; accepted: {_ACCEPTED}")
    key = _ALIASES.get(crs.strip().lower())
    if key is not None:
        return _System(key, True, "degrees")
    m = _EPSG_RE.match(crs)
    if m is None:
        raise ValueError(f"{arg} = {crs!r} is not a coordinate system lbsdispatch knows; "
                         f"accepted: {_ACCEPTED}")
    code = f"EPSG:{int(m.group(1))}"
    if code == "EPSG:4326":  # spelt with spaces or leading zeros
        return _System("wgs84", True, "degrees")
    return _epsg_system(code, arg)


@functools.lru_cache(maxsize=64)
def _epsg_info(code: str) -> tuple[bool, str]:
    """``(is_degrees, unit)`` of an EPSG system; raises pyproj's CRSError."""
    from pyproj import CRS

    crs = CRS.from_user_input(code)
    if not (crs.is_geographic or crs.is_projected):
        raise ValueError("neither geographic nor projected")
    unit = crs.axis_info[0].unit_name if crs.axis_info else "unknown unit"
    # A geographic system in grads or radians is projected-like for our
    # purposes: no degree ranges to check.
    return bool(crs.is_geographic and unit.startswith("degree")), unit


def _epsg_system(code: str, arg: str) -> _System:
    from pyproj.exceptions import CRSError

    try:
        degrees, unit = _epsg_info(code)
    except CRSError as e:
        raise ValueError(f"{arg} = {code!r}: PROJ does not know this code ({e}); "
                         f"accepted: {_ACCEPTED}") from None
    except ValueError:
        raise ValueError(f"{arg} = {code!r} is neither a geographic nor a projected "
                         f"2-D system; accepted: {_ACCEPTED}") from None
    return _System(code, degrees, unit)


@functools.lru_cache(maxsize=64)
def _transformer(src: str, dst: str):
    """A cached pyproj Transformer, always in (x, y) = (lon/easting, lat/northing) order.

    Building one costs milliseconds (a database lookup); a dump has one or a
    few systems, so a small cache removes that from every call.  Transformer
    objects are thread-safe since pyproj 3.1.
    """
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def _pyproj(lat: np.ndarray, lon: np.ndarray, src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) -> (lat, lon) through PROJ; ValueError for a point it cannot map."""
    if lat.shape[0] == 0:
        return lat.copy(), lon.copy()
    x, y = _transformer(src, dst).transform(lon, lat, errcheck=False)
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(y) & np.isfinite(x)))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"lat[{j}] = {float(lat[j])!r}, lon[{j}] = {float(lon[j])!r}: PROJ "
                         f"cannot transform this point from {src} to {dst}")
    return y, x


# ----------------------------------------------------------------------------
# GCJ-02
# ----------------------------------------------------------------------------
def _in_china(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    lat_min, lat_max, lon_min, lon_max = CHINA_BOX
    return (lat >= lat_min) & (lat <= lat_max) & (lon >= lon_min) & (lon <= lon_max)


class _ScalarMath:
    """The numpy functions the formulas use, for one point at a time (the online
    path: numpy's per-call overhead on 1-element arrays is most of the cost)."""

    sin = staticmethod(math.sin)
    cos = staticmethod(math.cos)
    sqrt = staticmethod(math.sqrt)
    abs = staticmethod(abs)
    radians = staticmethod(math.radians)
    degrees = staticmethod(math.degrees)
    hypot = staticmethod(math.hypot)
    arctan2 = staticmethod(math.atan2)


def _gcj_offset(lat, lon, xp=np):
    """The GCJ-02 offset ``(dlat, dlon)`` in degrees at WGS-84 ``(lat, lon)``.

    No region test: callers decide where it applies.  ``xp`` is numpy for
    arrays or `_ScalarMath` for one point: one formula for both.  The published formula
    builds a northward and an eastward displacement in metres from a
    polynomial plus sines of the position relative to (35 N, 105 E), then
    turns metres into degrees with the Krasovsky meridian radius
    M = a (1 - e^2) / W^3 and prime-vertical radius N = a / W, where
    W = sqrt(1 - e^2 sin^2 lat).
    """
    x = lon - 105.0
    y = lat - 35.0
    pi = math.pi
    root = xp.sqrt(xp.abs(x))
    # The term in x shared by both components.
    wiggle = (20.0 * xp.sin(6.0 * pi * x) + 20.0 * xp.sin(2.0 * pi * x)) * (2.0 / 3.0)
    north = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * root + wiggle
             + (20.0 * xp.sin(pi * y) + 40.0 * xp.sin(pi * y / 3.0)) * (2.0 / 3.0)
             + (160.0 * xp.sin(pi * y / 12.0) + 320.0 * xp.sin(pi * y / 30.0)) * (2.0 / 3.0))
    east = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * root + wiggle
            + (20.0 * xp.sin(pi * x) + 40.0 * xp.sin(pi * x / 3.0)) * (2.0 / 3.0)
            + (150.0 * xp.sin(pi * x / 12.0) + 300.0 * xp.sin(pi * x / 30.0)) * (2.0 / 3.0))
    phi = xp.radians(lat)
    w2 = 1.0 - _KRASOVSKY_EE * xp.sin(phi) ** 2
    w = xp.sqrt(w2)
    m_per_rad_lat = _KRASOVSKY_A * (1.0 - _KRASOVSKY_EE) / (w2 * w)
    m_per_rad_lon = _KRASOVSKY_A / w * xp.cos(phi)
    return xp.degrees(north / m_per_rad_lat), xp.degrees(east / m_per_rad_lon)


def _wgs84_to_gcj02(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out_lat = lat.copy()
    out_lon = lon.copy()
    inside = np.flatnonzero(_in_china(lat, lon))
    if inside.size:
        dlat, dlon = _gcj_offset(lat[inside], lon[inside])
        out_lat[inside] += dlat
        out_lon[inside] += dlon
    return out_lat, out_lon


def _gcj02_to_wgs84(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse GCJ-02 by fixed-point iteration w <- w - (F(w) - g).

    The region test is made on the GCJ-02 input (the only thing we have) and
    the offset is then applied without it, so every WGS-84 point whose image
    lies inside the box round-trips exactly.  Within ~700 m of the box's edge
    the forward map is not one-to-one (a point just outside the box and the
    image of one just inside can coincide); there the inverse answers with
    the inside point.  The edge runs through sea and neighbouring countries.
    """
    out_lat = lat.copy()
    out_lon = lon.copy()
    rows = np.flatnonzero(_in_china(lat, lon))
    g_lat = lat[rows]
    g_lon = lon[rows]
    w_lat = g_lat.copy()
    w_lon = g_lon.copy()
    active = np.arange(rows.size)  # positions in rows still iterating
    for _ in range(_MAX_ITER):
        if active.size == 0:
            break
        a_lat = w_lat[active]
        a_lon = w_lon[active]
        dlat, dlon = _gcj_offset(a_lat, a_lon)
        r_lat = a_lat + dlat - g_lat[active]
        r_lon = a_lon + dlon - g_lon[active]
        w_lat[active] = a_lat - r_lat
        w_lon[active] = a_lon - r_lon
        # Converged rows drop out; the step just taken only improved them.
        active = active[(np.abs(r_lat) >= _TOL_DEG) | (np.abs(r_lon) >= _TOL_DEG)]
    out_lat[rows] = w_lat
    out_lon[rows] = w_lon
    return out_lat, out_lon


# ----------------------------------------------------------------------------
# BD-09
# ----------------------------------------------------------------------------
def _gcj02_to_bd09_raw(lat, lon, xp=np):
    """Baidu's published transform, before any wrapping of the result."""
    z = xp.hypot(lon, lat) + 0.00002 * xp.sin(lat * _BD_X_PI)
    theta = xp.arctan2(lat, lon) + 0.000003 * xp.cos(lon * _BD_X_PI)
    return z * xp.sin(theta) + _BD_DLAT, z * xp.cos(theta) + _BD_DLON


def _bd09_to_gcj02_closed_form(lat, lon, xp=np):
    """The widely copied "inverse": undo the shift, subtract the perturbations.

    It evaluates the perturbations at the BD-09 point instead of the unknown
    GCJ-02 one, so it is only approximate.  Measured on a 0.05-degree grid
    over the GCJ-02 box its error is up to 2e-6 degree, 0.22 m on the ground
    (median 6 cm over mainland China; 13 cm in central Beijing, 2 cm in
    Shenzhen) -- too coarse for the 1 cm promise, which
    ``tests/test_transform.py`` checks it breaks.  We use it only as the
    starting point of the iteration.
    """
    x = lon - _BD_DLON
    y = lat - _BD_DLAT
    z = xp.hypot(x, y) - 0.00002 * xp.sin(y * _BD_X_PI)
    theta = xp.arctan2(y, x) - 0.000003 * xp.cos(x * _BD_X_PI)
    return z * xp.sin(theta), z * xp.cos(theta)


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes back into [-180, 180], leaving those already inside untouched."""
    out = np.where(np.abs(lon) > 180.0, (lon + 180.0) % 360.0 - 180.0, lon)
    return out


def _gcj02_to_bd09(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 -> BD-09.

    Baidu's formula has no region test, so it applies everywhere.  Within
    0.0065 degree of the antimeridian the result is wrapped back into
    [-180, 180] and within 0.006 degree of a pole clipped to +-90, so that it
    stays a valid coordinate (there the transform is not invertible; nobody
    orders group-buying there).
    """
    b_lat, b_lon = _gcj02_to_bd09_raw(lat, lon)
    return np.clip(b_lat, -90.0, 90.0), _wrap_lon(b_lon)


def _bd09_to_gcj02(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse BD-09 by fixed-point iteration from the closed-form estimate."""
    g_lat, g_lon = _bd09_to_gcj02_closed_form(lat, lon)
    active = np.arange(lat.shape[0])
    for _ in range(_MAX_ITER):
        if active.size == 0:
            break
        a_lat = g_lat[active]
        a_lon = g_lon[active]
        f_lat, f_lon = _gcj02_to_bd09_raw(a_lat, a_lon)
        r_lat = f_lat - lat[active]
        # compare longitudes modulo 360 (the target may have been wrapped)
        r_lon = (f_lon - lon[active] + 180.0) % 360.0 - 180.0
        g_lat[active] = a_lat - r_lat
        g_lon[active] = a_lon - r_lon
        active = active[(np.abs(r_lat) >= _TOL_DEG) | (np.abs(r_lon) >= _TOL_DEG)]
    return np.clip(g_lat, -90.0, 90.0), _wrap_lon(g_lon)


_STEP_UP = {0: _wgs84_to_gcj02, 1: _gcj02_to_bd09}      # level i -> i + 1
_STEP_DOWN = {1: _gcj02_to_wgs84, 2: _bd09_to_gcj02}    # level i -> i - 1


def _along_chain(lat: np.ndarray, lon: np.ndarray, src: int, dst: int):
    while src < dst:
        lat, lon = _STEP_UP[src](lat, lon)
        src += 1
    while src > dst:
        lat, lon = _STEP_DOWN[src](lat, lon)
        src -= 1
    return lat, lon


# -- one point at a time: the same formulas and iterations on Python floats --------
def _point_up(lat: float, lon: float, level: int) -> tuple[float, float]:
    if level == 0:                       # WGS-84 -> GCJ-02, inside the box only
        if not _in_china(lat, lon):
            return lat, lon
        dlat, dlon = _gcj_offset(lat, lon, _ScalarMath)
        return lat + dlat, lon + dlon
    b_lat, b_lon = _gcj02_to_bd09_raw(lat, lon, _ScalarMath)       # GCJ-02 -> BD-09
    b_lon = (b_lon + 180.0) % 360.0 - 180.0 if abs(b_lon) > 180.0 else b_lon
    return min(max(b_lat, -90.0), 90.0), b_lon


def _point_down(lat: float, lon: float, level: int) -> tuple[float, float]:
    if level == 1:                       # GCJ-02 -> WGS-84
        if not _in_china(lat, lon):
            return lat, lon
        w_lat, w_lon = lat, lon
        for _ in range(_MAX_ITER):
            dlat, dlon = _gcj_offset(w_lat, w_lon, _ScalarMath)
            r_lat = w_lat + dlat - lat
            r_lon = w_lon + dlon - lon
            w_lat -= r_lat
            w_lon -= r_lon
            if abs(r_lat) < _TOL_DEG and abs(r_lon) < _TOL_DEG:
                break
        return w_lat, w_lon
    g_lat, g_lon = _bd09_to_gcj02_closed_form(lat, lon, _ScalarMath)   # BD-09 -> GCJ-02
    for _ in range(_MAX_ITER):
        f_lat, f_lon = _gcj02_to_bd09_raw(g_lat, g_lon, _ScalarMath)
        r_lat = f_lat - lat
        r_lon = (f_lon - lon + 180.0) % 360.0 - 180.0
        g_lat -= r_lat
        g_lon -= r_lon
        if abs(r_lat) < _TOL_DEG and abs(r_lon) < _TOL_DEG:
            break
    g_lon = (g_lon + 180.0) % 360.0 - 180.0 if abs(g_lon) > 180.0 else g_lon
    return min(max(g_lat, -90.0), 90.0), g_lon


def point_to_wgs84(lat: float, lon: float, src: str) -> tuple[float, float]:
    """One valid point from ``src`` to WGS-84, fast (no validation, no arrays).

    For the dispatcher's online path; ``src`` must be a key `_resolve` returns.
    GCJ-02/BD-09 go through the same formulas and iterations as `transform`
    on Python floats (results may differ from the array path in the last bit
    of a coordinate: libm against numpy's own sin and cos); EPSG systems
    through the cached PROJ transformer.
    """
    if src == "wgs84":
        return lat, lon
    level = _LEVEL.get(src)
    if level is None:
        x, y = _transformer(src, "EPSG:4326").transform(lon, lat, errcheck=False)
        return y, x
    while level > 0:
        lat, lon = _point_down(lat, lon, level)
        level -= 1
    return lat, lon


# ----------------------------------------------------------------------------
# the public transform
# ----------------------------------------------------------------------------
def _coerce(lat: Any, lon: Any, system: _System) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validated float64 copies-or-views of the input and whether it was scalar."""
    if system.degrees:
        # the same checks and messages as every other entry point of the library
        return _as_points(lat, lon)
    scalar = np.ndim(lat) == 0 and np.ndim(lon) == 0
    arrays = []
    for value, name in ((lat, "lat"), (lon, "lon")):
        if value is None:
            raise ValueError(f"{name} must be numbers in {system.unit} of {system.key}, got None")
        try:
            a = np.atleast_1d(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be numbers in {system.unit} of {system.key}: "
                             f"{e}") from None
        if a.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
        arrays.append(a)
    lat_a, lon_a = arrays
    if lat_a.shape[0] != lon_a.shape[0]:
        raise ValueError(f"lat and lon have different lengths "
                         f"({lat_a.shape[0]} and {lon_a.shape[0]})")
    for a, name in ((lat_a, "lat"), (lon_a, "lon")):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            j = int(bad[0])
            where = "" if scalar else f"[{j}]"
            raise ValueError(f"{name}{where} = {float(a[j])!r}: coordinates must be finite")
    return lat_a, lon_a, scalar


def transform(lat: ArrayLike, lon: ArrayLike, src: str, dst: str
              ) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Convert coordinates between WGS-84, GCJ-02, BD-09 and EPSG systems.

    Parameters
    ----------
    lat, lon : float or array_like of float, shape (n,)
        Latitude and longitude in degrees for a geographic system.  For a
        projected EPSG system: northing and easting (y, x) in its units, in
        the same positions (the latitude-like coordinate first).  Lists,
        read-only arrays and pandas Series are accepted.
    src, dst : str
        ``"wgs84"``, ``"gcj02"``, ``"bd09"`` (case-insensitive; the spellings
        ``"WGS-84"``, ``"GCJ-02"``, ``"BD-09"``, ``"bd09ll"`` and
        ``"EPSG:4326"`` also work) or ``"EPSG:<code>"`` for any geographic
        or projected system PROJ knows.

    Returns
    -------
    lat, lon : float or ndarray of float64
        In ``dst``, in the same order as the input (northing, easting for a
        projected ``dst``).  Two plain Python floats when both inputs are
        scalars, otherwise two new 1-D arrays of length n (never views of the
        input, even when ``src == dst``).

    Raises
    ------
    ValueError
        For an unknown ``src`` or ``dst`` (listing the accepted spellings),
        inputs of different lengths, a non-finite coordinate, or a latitude
        outside [-90, 90] or longitude outside [-180, 180] in a geographic
        ``src``; the message names the argument and the first bad row.  Also
        when PROJ cannot transform a point.

    Notes
    -----
    GCJ-02 offsets points inside :data:`CHINA_BOX` only; outside it GCJ-02
    equals WGS-84, as on the maps.  BD-09 is GCJ-02 plus Baidu's offset
    everywhere.  Conversions between GCJ-02/BD-09 and an EPSG system go
    through WGS-84 (``EPSG:4326``); between two EPSG systems PROJ's own
    pipeline is used.  Inverses of GCJ-02 and BD-09 are iterated until the
    forward transform reproduces the input to 1e-10 degree, so round trips
    are exact to well below a millimetre.

    Examples
    --------
    >>> from lbsdispatch.geo import transform
    >>> lat, lon = transform(39.915, 116.404, "wgs84", "gcj02")
    >>> round(lat, 6), round(lon, 6)
    (39.916404, 116.410244)
    >>> back = transform(lat, lon, "gcj02", "wgs84")
    >>> round(back[0], 9), round(back[1], 9)
    (39.915, 116.404)
    """
    s = _resolve(src, "src")
    d = _resolve(dst, "dst")
    lat_a, lon_a, scalar = _coerce(lat, lon, s)
    # Always hand back new arrays: the input may be read-only or the caller's.
    lat_a = np.array(lat_a, dtype=np.float64)
    lon_a = np.array(lon_a, dtype=np.float64)
    if lat_a.shape[0] and s.key != d.key:
        s_epsg = s.key not in _LEVEL
        d_epsg = d.key not in _LEVEL
        if s_epsg and d_epsg:
            lat_a, lon_a = _pyproj(lat_a, lon_a, s.key, d.key)
        else:
            if s_epsg:
                lat_a, lon_a = _pyproj(lat_a, lon_a, s.key, "EPSG:4326")
                lon_a = _wrap_lon(lon_a)
                level = 0
            else:
                level = _LEVEL[s.key]
            lat_a, lon_a = _along_chain(lat_a, lon_a, level, _LEVEL.get(d.key, 0))
            if d_epsg:
                lat_a, lon_a = _pyproj(lat_a, lon_a, "EPSG:4326", d.key)
    if scalar:
        return float(lat_a[0]), float(lon_a[0])
    return lat_a, lon_a


# ----------------------------------------------------------------------------
# mixed systems in one dump
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class OffsetCheck:
    """Result of :func:`detect_offset`.

    Attributes
    ----------
    suspect : bool
        True when converting the orders with one of the candidate transforms
        brings them substantially closer to their leaders.
    likely_src, likely_dst : str or None
        The conversion ``transform(..., likely_src, likely_dst)`` that fixes
        the orders (the orders look like ``likely_src`` while the leaders
        are ``likely_dst``); None when not suspect.
    median_m_before : float
        Median distance in metres from an order to its nearest leader, as given.
    median_m_after : float
        The same after the candidate conversion that lowers it most (reported
        even when not suspect; it may then be larger than before).
    shift_east_m, shift_north_m : float
        Mean displacement, in metres east and north, of the orders (as given)
        from their nearest leaders.  A mixed dump shows a systematic shift of
        several hundred metres; a clean one a few metres at most.
    message : str
        One sentence a person can act on.
    """

    suspect: bool
    likely_src: str | None
    likely_dst: str | None
    median_m_before: float
    median_m_after: float
    shift_east_m: float
    shift_north_m: float
    message: str


# The mix-ups that happen: WGS-84 from the mini-program, GCJ-02 from AMap,
# Tencent and WeChat's picker, BD-09 from Baidu.  Each pair is (what the
# orders look like, what the leaders are).
_CANDIDATES = (
    ("bd09", "gcj02"), ("gcj02", "bd09"),
    ("gcj02", "wgs84"), ("wgs84", "gcj02"),
    ("bd09", "wgs84"), ("wgs84", "bd09"),
)


def _mean_shift_m(lat: np.ndarray, lon: np.ndarray, to_lat: np.ndarray,
                  to_lon: np.ndarray) -> tuple[float, float]:
    """Mean (east, north) metres from ``to`` to the points, locally flat.

    At the sub-kilometre scale of a mix-up the equirectangular approximation
    is exact to a fraction of a percent.
    """
    k = math.pi / 180.0 * EARTH_RADIUS_M
    dlon = (lon - to_lon + 180.0) % 360.0 - 180.0
    east = dlon * np.cos(np.radians(0.5 * (lat + to_lat))) * k
    north = (lat - to_lat) * k
    return float(np.mean(east)), float(np.mean(north))


def detect_offset(order_lat: ArrayLike, order_lon: ArrayLike, leader_lat: ArrayLike,
                  leader_lon: ArrayLike, *, max_orders: int = 5000,
                  min_reduction: float = 0.3, seed: int = 0) -> OffsetCheck:
    """Check whether orders sit systematically off their leaders by a CRS mix-up.

    A dump that mixes BD-09 with GCJ-02, or GCJ-02 with WGS-84, is the classic
    silent error: every order lands 0.5-1 km from where it is, in the same
    direction, and dispatch quietly picks the wrong leaders.  This function
    finds each order's nearest leader, measures the mean displacement, and
    tries each candidate conversion of the orders (BD-09 <-> GCJ-02,
    GCJ-02 <-> WGS-84, BD-09 <-> WGS-84).

    Parameters
    ----------
    order_lat, order_lon : array_like of float, shape (n_orders,)
        Orders, in degrees, in whatever system the dump claims.
    leader_lat, leader_lon : array_like of float, shape (n_leaders,)
        Leaders, in degrees, in the system the dump claims.
    max_orders : int, default 5000
        At most this many orders are examined, a uniform sample drawn with
        ``seed`` so that the answer is repeatable and cheap on any dump.
    min_reduction : float, default 0.3
        Flag a conversion only if it lowers the median distance to the
        nearest leader by at least this fraction and also shrinks the mean
        displacement.
    seed : int, default 0
        Seed of the sample.

    Returns
    -------
    OffsetCheck

    Raises
    ------
    ValueError
        For invalid coordinates (naming the argument and the first bad row)
        or mismatched lengths.

    Notes
    -----
    The test needs orders that cluster around their leaders at a scale
    smaller than the offset (a few hundred metres, which is how group buying
    works).  Where leaders are much denser than 1 km, a shifted order simply
    has a different nearest leader at a similar distance and nothing can be
    seen; the check then reports "not suspect" rather than guess.

    Examples
    --------
    >>> import numpy as np
    >>> from lbsdispatch.crs import detect_offset, transform
    >>> rng = np.random.default_rng(1)
    >>> l_lat = 30.27 + rng.uniform(-0.1, 0.1, 60)
    >>> l_lon = 120.15 + rng.uniform(-0.1, 0.1, 60)
    >>> pick = rng.integers(0, 60, 2000)
    >>> o_lat = l_lat[pick] + rng.normal(0, 0.001, 2000)
    >>> o_lon = l_lon[pick] + rng.normal(0, 0.001, 2000)
    >>> b_lat, b_lon = transform(o_lat, o_lon, "gcj02", "bd09")
    >>> check = detect_offset(b_lat, b_lon, l_lat, l_lon)
    >>> check.suspect, check.likely_src, check.likely_dst
    (True, 'bd09', 'gcj02')
    """
    o_lat = _as_coords(np.atleast_1d(order_lat), "order_lat")
    o_lon = _as_coords(np.atleast_1d(order_lon), "order_lon")
    check_coordinates(o_lat, o_lon, "order_lat", "order_lon")
    l_lat = _as_coords(np.atleast_1d(leader_lat), "leader_lat")
    l_lon = _as_coords(np.atleast_1d(leader_lon), "leader_lon")
    check_coordinates(l_lat, l_lon, "leader_lat", "leader_lon")
    if isinstance(max_orders, bool) or not isinstance(max_orders, (int, np.integer)) \
            or max_orders < 1:
        raise ValueError(f"max_orders must be an integer >= 1, got {max_orders!r}")
    if not 0.0 < min_reduction < 1.0:
        raise ValueError(f"min_reduction must be in (0, 1), got {min_reduction!r}")

    n = o_lat.shape[0]
    if n == 0 or l_lat.shape[0] == 0:
        nan = float("nan")
        return OffsetCheck(False, None, None, nan, nan, nan, nan,
                           f"cannot check for a coordinate-system mix-up with {n} orders "
                           f"and {l_lat.shape[0]} leaders")
    if n > max_orders:
        take = np.sort(np.random.default_rng(seed).choice(n, int(max_orders), replace=False))
        o_lat = o_lat[take]
        o_lon = o_lon[take]

    from .index import LeaderIndex   # index.py imports this module for crs=

    index = LeaderIndex(l_lat, l_lon)
    d0, i0 = index.query(o_lat, o_lon)
    median0 = float(np.median(d0))
    east0, north0 = _mean_shift_m(o_lat, o_lon, l_lat[i0], l_lon[i0])

    best = None
    for src, dst in _CANDIDATES:
        c_lat, c_lon = transform(o_lat, o_lon, src, dst)
        d1, i1 = index.query(c_lat, c_lon)
        median1 = float(np.median(d1))
        if best is None or median1 < best[0]:
            east1, north1 = _mean_shift_m(c_lat, c_lon, l_lat[i1], l_lon[i1])
            best = (median1, src, dst, math.hypot(east1, north1))
    median1, src, dst, shift1 = best

    suspect = (median1 <= (1.0 - min_reduction) * median0
               and shift1 < math.hypot(east0, north0))
    if suspect:
        message = (f"orders look like {_DISPLAY[src]} while leaders are {_DISPLAY[dst]}: "
                   f"median distance to the nearest leader drops from {median0:,.0f} m to "
                   f"{median1:,.0f} m if the orders are converted with "
                   f"transform(..., '{src}', '{dst}')")
        return OffsetCheck(True, src, dst, median0, median1, east0, north0, message)
    message = (f"no sign of a coordinate-system mix-up: median distance to the nearest "
               f"leader is {median0:,.0f} m and no conversion between WGS-84, GCJ-02 and "
               f"BD-09 lowers it by {min_reduction:.0%} or more (best: {median1:,.0f} m)")
    return OffsetCheck(False, None, None, median0, median1, east0, north0, message)
