"""Coordinates on the sphere: checks, unit vectors, metres and chords.

lbsdispatch measures every distance on the sphere of mean Earth radius
``EARTH_RADIUS_M`` (6,371,008.8 m, the IUGG mean radius R1).  A point is put
on the unit sphere as x = cos(lat)cos(lon), y = cos(lat)sin(lon), z = sin(lat);
the straight chord c between two such points gives the great-circle distance
d = 2 R asin(c / 2).
"""
from __future__ import annotations

import numpy as np

from ._kdtree import EARTH_RADIUS_M, _as_coords, _unit_vectors, check_coordinates

__all__ = ["EARTH_RADIUS_M", "unit_vectors", "great_circle_m", "validate_coordinates"]


def validate_coordinates(lat, lon, lat_name="lat", lon_name="lon"):
    """Coerce and check WGS-84 degrees.

    Parameters
    ----------
    lat, lon : array_like
        Latitudes in [-90, 90] and longitudes in [-180, 180], finite.
    lat_name, lon_name : str
        Names used in error messages.

    Returns
    -------
    lat, lon : ndarray of float64
        Contiguous 1-D copies (or views) of the input.

    Raises
    ------
    ValueError
        Naming the argument and the first bad row.
    """
    lat_a = _as_coords(np.atleast_1d(lat), lat_name)
    lon_a = _as_coords(np.atleast_1d(lon), lon_name)
    check_coordinates(lat_a, lon_a, lat_name, lon_name)
    return lat_a, lon_a


def unit_vectors(lat, lon):
    """Unit vectors of WGS-84 degrees on the sphere, shape ``(n, 3)``.

    Parameters
    ----------
    lat, lon : array_like
        Degrees; checked as in :func:`validate_coordinates`.

    Returns
    -------
    ndarray of float64, shape (n, 3)
    """
    lat_a, lon_a = validate_coordinates(lat, lon)
    return _unit_vectors(lat_a, lon_a)


def great_circle_m(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres (vectorised, NumPy only).

    Uses the atan2 ("Vincenty on the sphere") form, accurate for every pair of
    points including antipodes, where the haversine form loses precision.

    Parameters
    ----------
    lat1, lon1, lat2, lon2 : array_like
        Degrees; broadcast against each other.

    Returns
    -------
    ndarray of float64
    """
    p1, l1, p2, l2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2))
    dl = l2 - l1
    s1, c1, s2, c2 = np.sin(p1), np.cos(p1), np.sin(p2), np.cos(p2)
    sd, cd = np.sin(dl), np.cos(dl)
    num = np.hypot(c2 * sd, c1 * s2 - s1 * c2 * cd)
    den = s1 * s2 + c1 * c2 * cd
    return EARTH_RADIUS_M * np.arctan2(num, den)


# Conversions between the coordinate systems of Chinese order systems (WGS-84,
# GCJ-02, BD-09) and EPSG codes live in crs.py; ``geo.transform`` is the public
# entry point.  Imported last so that crs.py never sees a half-built geo.
from .crs import transform

__all__ += ["transform"]
