"""Brute-force reference answers for the nearest-leader index.

Everything here is O(n_points * n_leaders) NumPy and shares no code with
lbsdispatch: the distance is computed from latitude/longitude with the atan2
("Vincenty on the sphere") formula, not from unit vectors and chords as the
library does, so a mistake in one is unlikely to be repeated in the other.

Tolerances
----------
Distances are compared with ``rtol=1e-9`` plus ``atol=1e-8`` metres.  The
library puts points on the unit sphere and measures chords between them; each
component of a unit vector carries a rounding error of about 1e-16, which is an
*absolute* error of about R * 1e-16 ~ 1e-9 m on the sphere whatever the
distance.  At tiny distances (centimetres and below) that absolute error is a
large relative error, hence the absolute 1e-8 m term; at large distances the
relative term dominates.  The oracle itself is accurate to about the same
1e-9 m (the atan2 form has no cancellation problem at small or antipodal
separations).

Two candidates whose oracle distances are within ``GAP_M`` = 1e-6 m of each
other are considered indistinguishable: their order (and which of them is cut
by ``k`` or ``max_distance_m``) is not checked against the oracle, except when
the two leaders share an identical position, where the tie rule is exact.
"""
from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6371008.8  # the IUGG mean radius R1, as documented
RTOL = 1e-9
ATOL_M = 1e-8
GAP_M = 1e-6


def tol(d):
    """Allowed absolute error of a distance ``d`` (metres)."""
    return RTOL * np.abs(d) + ATOL_M


def great_circle_m(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres on the sphere of radius ``EARTH_RADIUS_M``.

    Broadcasts its arguments.  The atan2 form is well conditioned for every
    separation, from coincident points to antipodes.
    """
    p1 = np.deg2rad(np.asarray(lat1, dtype=np.float64))
    p2 = np.deg2rad(np.asarray(lat2, dtype=np.float64))
    dl = np.deg2rad(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    s1, c1 = np.sin(p1), np.cos(p1)
    s2, c2 = np.sin(p2), np.cos(p2)
    sdl, cdl = np.sin(dl), np.cos(dl)
    y = np.sqrt((c2 * sdl) ** 2 + (c1 * s2 - s1 * c2 * cdl) ** 2)
    x = s1 * s2 + c1 * c2 * cdl
    return EARTH_RADIUS_M * np.arctan2(y, x)


def distance_matrix(q_lat, q_lon, l_lat, l_lon):
    """Distances (n_points, n_leaders) in metres."""
    q_lat = np.asarray(q_lat, dtype=np.float64).reshape(-1, 1)
    q_lon = np.asarray(q_lon, dtype=np.float64).reshape(-1, 1)
    l_lat = np.asarray(l_lat, dtype=np.float64).reshape(1, -1)
    l_lon = np.asarray(l_lon, dtype=np.float64).reshape(1, -1)
    return great_circle_m(q_lat, q_lon, l_lat, l_lon)


def id_ranks(ids, n):
    """Rank of every leader's id among the sorted ids (0 = smallest)."""
    if ids is None:
        return np.arange(n)
    ids = list(ids)
    order = sorted(range(n), key=lambda i: ids[i])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def sorted_neighbours(D, rank):
    """Every leader of every row sorted by (distance, id): (distances, positions)."""
    n_pts, n = D.shape
    if n == 0:
        return np.zeros((n_pts, 0)), np.zeros((n_pts, 0), dtype=np.intp)
    order = np.lexsort((np.broadcast_to(rank, D.shape), D), axis=-1)
    return np.take_along_axis(D, order, axis=1), order


def clusters(d_sorted):
    """Split a sorted row of distances into runs whose neighbours are <= GAP_M apart.

    Returns a list of (start, stop) half-open position ranges.
    """
    out = []
    start = 0
    for j in range(1, len(d_sorted) + 1):
        if j == len(d_sorted) or not (d_sorted[j] - d_sorted[j - 1] <= GAP_M):
            out.append((start, j))
            start = j
    return out


def same_position_groups(lat, lon):
    """Map each leader position to the positions sharing its exact (lat, lon)."""
    groups = {}
    for i, key in enumerate(zip(np.asarray(lat).tolist(), np.asarray(lon).tolist())):
        groups.setdefault(key, []).append(i)
    return groups


# ----------------------------------------------------------------------------
# checks of library answers against the oracle
# ----------------------------------------------------------------------------
class Mismatch(AssertionError):
    """A library answer that disagrees with the oracle or breaks a documented rule."""


def ensure(cond, message):
    """Raise :class:`Mismatch` with ``message()`` unless ``cond``.

    Every check fails from this one place, so Hypothesis treats a wrong answer
    as one failure to shrink, not one per kind of symptom.
    """
    if not cond:
        raise Mismatch(message())


def row_order_ok(d, r, strict_ties=True):
    """True when a row is sorted by distance and, if ``strict_ties``, equal
    reported distances are in ascending id rank (the documented tie rule as the
    caller sees it)."""
    for j in range(len(d) - 1):
        if d[j] > d[j + 1] or (strict_ties and d[j] == d[j + 1] and r[j] > r[j + 1]):
            return False
    return True


def check_query(l_lat, l_lon, ids, q_lat, q_lon, k, max_distance_m, dist, idx,
                strict_ties=False):
    """Check ``index.query`` answers ``(dist, idx)`` against the oracle.

    ``dist``/``idx`` are the library's answers for the points ``q_lat, q_lon``
    against leaders ``l_lat, l_lon`` with ``ids`` (None = positions), shape
    (n,) for k=1 and (n, k) otherwise.

    Exact checks: shape of a row (found neighbours first, then ``inf`` and
    ``n_leaders``), no leader twice, distances ascending, nothing beyond
    ``max_distance_m``, and among leaders at one identical (lat, lon) the
    smaller id first.  ``strict_ties`` adds: equal reported distances in id
    order.  Against the oracle: every reported distance is the distance of the
    named leader, the number of neighbours and the distances of each column
    match, and the leaders match exactly except among candidates whose oracle
    distances are within ``GAP_M`` of each other.  Rows with an oracle
    distance within tolerance of ``max_distance_m`` are only checked exactly.
    """
    l_lat = np.asarray(l_lat, dtype=np.float64)
    l_lon = np.asarray(l_lon, dtype=np.float64)
    n = len(l_lat)
    m = len(q_lat)
    dist = np.asarray(dist).reshape(m, k)
    idx = np.asarray(idx).reshape(m, k)
    ensure(idx.dtype.kind in "iu", lambda: f"index dtype {idx.dtype}")
    ensure(dist.dtype == np.float64, lambda: f"distance dtype {dist.dtype}")
    rank = id_ranks(ids, n)
    D = distance_matrix(q_lat, q_lon, l_lat, l_lon)
    Ds, Is = sorted_neighbours(D, rank)
    groups = same_position_groups(l_lat, l_lon)
    for r in range(m):
        d_row, i_row = dist[r], idx[r]
        where = (f"point {r} ({float(q_lat[r])!r}, {float(q_lon[r])!r}), k={k}, "
                 f"max_distance_m={max_distance_m!r}")
        # --- the row on its own -------------------------------------------------
        finite = np.isfinite(d_row)
        n_found = int(finite.sum())
        ensure(finite[:n_found].all() and not finite[n_found:].any(),
               lambda: f"{where}: missing neighbours must come last: {d_row}")
        ensure((d_row[~finite] == np.inf).all(), lambda: f"{where}: {d_row}")
        ensure((i_row[~finite] == n).all(),
               lambda: f"{where}: a missing neighbour must be index n_leaders={n}: {i_row}")
        found = i_row[:n_found]
        ensure(((found >= 0) & (found < n)).all(), lambda: f"{where}: {i_row}")
        ensure(len(set(found.tolist())) == n_found, lambda: f"{where}: repeated leader {i_row}")
        ensure(row_order_ok(d_row[:n_found], rank[found], strict_ties),
               lambda: f"{where}: row not sorted by (distance, id): {d_row!r}, id ranks "
                       f"{rank[found]}, oracle distances {D[r, found]!r}")
        if max_distance_m is not None:
            ensure((d_row[:n_found] <= max_distance_m).all(), lambda: f"{where}: {d_row}")
        # reported distances are those of the named leaders
        true_d = D[r, found]
        ensure(np.all(np.abs(d_row[:n_found] - true_d) <= tol(true_d)),
               lambda: f"{where}: distances {d_row[:n_found]!r} vs oracle {true_d!r} "
                       f"for leaders {found}")
        # identical positions: the smaller id always comes first (exact)
        for j, p in enumerate(found.tolist()):
            for o in groups[(float(l_lat[p]), float(l_lon[p]))]:
                if rank[o] < rank[p]:
                    ensure(o in found[:j].tolist(), lambda: (
                        f"{where}: leader {p} (id rank {rank[p]}) returned in column {j} but "
                        f"leader {o} at the same position has a smaller id and is not before "
                        f"it: {i_row}"))
        # --- against the oracle -------------------------------------------------
        exp_d = np.full(k, np.inf)
        kk = min(k, n)
        exp_d[:kk] = Ds[r, :kk]
        if max_distance_m is not None:
            if np.any(np.abs(Ds[r, :kk] - max_distance_m) <= tol(max_distance_m)):
                continue  # an oracle distance within tolerance of the cut
            exp_d[exp_d > max_distance_m] = np.inf
        n_exp = int(np.isfinite(exp_d).sum())
        ensure(n_found == n_exp, lambda: (
            f"{where}: found {n_found} neighbours, oracle {n_exp}: {d_row!r} vs {exp_d!r}"))
        ensure(np.all(np.abs(d_row[:n_found] - exp_d[:n_found]) <= tol(exp_d[:n_found])),
               lambda: f"{where}: distances {d_row!r} vs oracle {exp_d!r}")
        for a, b in clusters(Ds[r]):
            if a >= n_found:
                break
            mine = set(i_row[a:min(b, n_found)].tolist())
            theirs = set(Is[r, a:b].tolist())
            if b <= n_found:
                ensure(mine == theirs, lambda: (
                    f"{where}: columns {a}:{b} hold leaders {sorted(mine)}, oracle "
                    f"{sorted(theirs)} (oracle distances {Ds[r, a:b]!r}, library "
                    f"{d_row[a:b]!r})"))
            else:
                ensure(mine <= theirs, lambda: (
                    f"{where}: columns {a}:{n_found} hold leaders {sorted(mine)}, not among "
                    f"the oracle's {sorted(theirs)} (oracle distances {Ds[r, a:b]!r})"))


def check_radius(l_lat, l_lon, ids, q_lat, q_lon, r_m, dist, idx, strict_ties=False):
    """Check ``index.query_radius`` answers for arrays of points against the oracle.

    ``dist``/``idx`` are sequences (one per point) of 1-D arrays.  Exact
    checks: no leader twice, nothing beyond the radius, sorted by distance
    (and, with ``strict_ties``, equal distances in id order), leaders at one
    identical position in or out together.  Against the oracle: distances of
    the named leaders, order up to ``GAP_M``, and the set of leaders within
    the radius, leaving out those within tolerance of it.
    """
    l_lat = np.asarray(l_lat, dtype=np.float64)
    l_lon = np.asarray(l_lon, dtype=np.float64)
    n = len(l_lat)
    m = len(q_lat)
    ensure(len(dist) == m and len(idx) == m, lambda: f"{len(dist)}, {len(idx)} rows for {m}")
    r_m = np.broadcast_to(np.asarray(r_m, dtype=np.float64), (m,))
    rank = id_ranks(ids, n)
    D = distance_matrix(q_lat, q_lon, l_lat, l_lon)
    groups = same_position_groups(l_lat, l_lon)
    for r in range(m):
        d_row = np.asarray(dist[r])
        i_row = np.asarray(idx[r])
        where = f"point {r} ({float(q_lat[r])!r}, {float(q_lon[r])!r}), r_m={float(r_m[r])!r}"
        ensure(d_row.ndim == 1 and d_row.shape == i_row.shape,
               lambda: f"{where}: shapes {d_row.shape}, {i_row.shape}")
        ensure(i_row.dtype.kind in "iu" and d_row.dtype == np.float64,
               lambda: f"{where}: dtypes {d_row.dtype}, {i_row.dtype}")
        got = i_row.tolist()
        ensure(len(set(got)) == len(got), lambda: f"{where}: repeated leader {got}")
        ensure(all(0 <= p < n for p in got), lambda: f"{where}: {got}")
        ensure((d_row <= r_m[r]).all(), lambda: f"{where}: beyond the radius: {d_row!r}")
        ensure(row_order_ok(d_row, rank[i_row], strict_ties), lambda: (
            f"{where}: not sorted by (distance, id): {d_row!r}, id ranks {rank[i_row]}, "
            f"oracle distances {D[r, i_row]!r}"))
        true_d = D[r, i_row]
        ensure(np.all(np.abs(d_row - true_d) <= tol(true_d)),
               lambda: f"{where}: distances {d_row!r} vs oracle {true_d!r}")
        # order agrees with the oracle up to indistinguishable neighbours
        if len(true_d):
            ensure(np.all(np.maximum.accumulate(true_d) - true_d <= GAP_M),
                   lambda: f"{where}: leaders {got} out of order, oracle distances {true_d!r}")
        # the set, leaving out leaders within tolerance of the radius
        amb = np.abs(D[r] - r_m[r]) <= tol(np.maximum(D[r], r_m[r]))
        exp = set(np.flatnonzero((D[r] <= r_m[r]) & ~amb).tolist())
        mine = {p for p in got if not amb[p]}
        ensure(mine == exp, lambda: (f"{where}: library-only {sorted(mine - exp)}, "
                                     f"oracle-only {sorted(exp - mine)}"))
        # identical positions are in or out together (exact)
        for p in got:
            for o in groups[(float(l_lat[p]), float(l_lon[p]))]:
                ensure(o in got, lambda: f"{where}: {p} returned but {o} at the same position is not")
