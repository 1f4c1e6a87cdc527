"""`LeaderIndex`: exact great-circle nearest-leader queries."""
from __future__ import annotations

import numpy as np

from ._kdtree import _as_points, _check_workers, _LeaderTree, _run_chunks
from .crs import _resolve, transform

__all__ = ["LeaderIndex"]


class LeaderIndex(_LeaderTree):
    """Exact great-circle nearest-neighbour index over leaders.

    Parameters
    ----------
    lat, lon : array_like of float, shape (n_leaders,)
        Leader coordinates, WGS-84 degrees.
    ids : array_like of int or str, optional
        Leader ids, unique.  They decide ties: among leaders at the same
        distance the one with the smaller id comes first.  Defaults to the
        positions ``0 .. n_leaders - 1``.
    leafsize : int, default 16
        Most leaders in one leaf of the tree.
    crs : str, default "wgs84"
        Coordinate system of the leaders and of every query point:
        ``"wgs84"``, ``"gcj02"``, ``"bd09"`` or ``"EPSG:<code>"`` (see
        :func:`lbsdispatch.geo.transform`).  Points are converted to WGS-84 on
        the way in; ``lat``/``lon`` keep the converted values.

    Notes
    -----
    Leaders are stored as unit vectors and searched with a kd-tree on the
    chord, which is monotone in the great-circle distance; distances are
    exact on the sphere of radius 6,371,008.8 m, at the poles and across the
    antimeridian alike.  Results name leaders by position (like
    :class:`scipy.spatial.cKDTree`); a missing neighbour is the index
    ``n_leaders`` with distance ``inf``, so misusing it raises ``IndexError``.

    Examples
    --------
    >>> from lbsdispatch import LeaderIndex
    >>> index = LeaderIndex([30.27, 30.28], [120.15, 120.16], ids=["hz-001", "hz-002"])
    >>> d, i = index.query(30.279, 120.159)
    >>> index.ids[i]
    'hz-002'
    """

    # ``query`` is inherited from the compiled base class so that a scalar
    # call (the online path) never runs Python code of ours.  Only an index in
    # another coordinate system shadows it, per instance, with a converting one.

    def __init__(self, lat, lon, ids=None, leafsize=16, crs="wgs84"):
        system = _resolve(crs, "crs").key
        if system != "wgs84":
            lat, lon = transform(lat, lon, system, "wgs84")
        super().__init__(lat, lon, ids, leafsize)
        self._set_crs(system)

    def _set_crs(self, system):
        self.crs = system
        if system != "wgs84":
            self.query = self._query_converted

    def _to_wgs84(self, lat, lon):
        return transform(lat, lon, self.crs, "wgs84")

    def _query_converted(self, lat, lon, k=1, max_distance_m=None, workers=1):
        """``query`` for points in the index's own coordinate system."""
        lat, lon = self._to_wgs84(lat, lon)
        return _LeaderTree.query(self, lat, lon, k=k, max_distance_m=max_distance_m,
                                 workers=workers)

    def query_radius(self, lat, lon, r_m, workers=1):
        """Find all leaders within ``r_m`` metres of each point.

        Parameters
        ----------
        lat, lon : float or array_like of float, shape (n,)
            Query points, WGS-84 degrees.
        r_m : float or array_like of float, shape (n,)
            Radius in metres (inclusive), one for all points or one per point.
        workers : int, default 1
            Threads for large batches; -1 uses every core.

        Returns
        -------
        distance_m, index
            For a scalar point, two 1-D arrays sorted by distance (ties by id).
            For an array of points, two object arrays of length n holding such
            arrays, one pair per point.
        """
        if self.crs != "wgs84":
            lat, lon = self._to_wgs84(lat, lon)
        lat_a, lon_a, scalar = _as_points(lat, lon)
        n = lat_a.shape[0]
        try:
            r = np.asarray(r_m, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"r_m must be a number of metres, got {r_m!r}") from None
        if r.ndim > 1 or (r.ndim == 1 and r.shape[0] != n):
            raise ValueError(f"r_m must be a scalar or have one value per point ({n}), "
                             f"got shape {r.shape}")
        r = np.ascontiguousarray(np.broadcast_to(r, (n,)))
        bad = np.flatnonzero(~(r >= 0))
        if bad.size:
            j = int(bad[0])
            where = "" if r_m is None or np.ndim(r_m) == 0 else f"[{j}]"
            raise ValueError(f"r_m{where} = {float(r[j])!r}: radius must be >= 0 "
                             f"(NaN is not allowed)")
        parts = _run_chunks(self._ball_chunk, n, _check_workers(workers), (lat_a, lon_a, r))
        counts = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.intp)
        dist = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        idx = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.intp)
        if scalar:
            return dist, idx
        cuts = np.cumsum(counts)[:-1]
        out_d = np.empty(n, dtype=object)
        out_i = np.empty(n, dtype=object)
        out_d[:] = np.split(dist, cuts) if n else []
        out_i[:] = np.split(idx, cuts) if n else []
        return out_d, out_i

    def __eq__(self, other):
        if not isinstance(other, LeaderIndex):
            return NotImplemented
        return (self.leafsize == other.leafsize and self.crs == other.crs
                and np.array_equal(self.lat, other.lat)
                and np.array_equal(self.lon, other.lon)
                and self.ids.dtype == other.ids.dtype
                and np.array_equal(self.ids, other.ids))

    __hash__ = None

    def __reduce__(self):
        # lat/lon hold WGS-84 already: rebuild without converting them again
        return (_rebuild, (type(self), self.lat, self.lon, self.ids, self.leafsize, self.crs))

    def __repr__(self):
        crs = "" if self.crs == "wgs84" else f", crs={self.crs!r}"
        return f"LeaderIndex(n_leaders={self.n_leaders}, leafsize={self.leafsize}{crs})"


def _rebuild(cls, lat, lon, ids, leafsize, crs):
    """Unpickle an index from its WGS-84 coordinates and its coordinate system."""
    index = cls(lat, lon, ids=ids, leafsize=leafsize)
    index._set_crs(crs)
    return index
