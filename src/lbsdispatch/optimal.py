"""Optimal assignment of a whole dump of orders (issue 7).

:func:`solve` places a batch of orders on leaders so that first the most
orders are assigned, then the total distance is least (``objective="total"``)
or the largest distance is least and then the total (``"bottleneck"``),
under capacity, the global range, each leader's own radius and the active
flags.  It is the engine behind ``Dispatcher.assign_batch(..., mode="optimal")``
and knows nothing of order ids, bindings or outcomes: arrays in, arrays out.

How it works (details and the proof of exactness in ``docs/optimal.md``):

1. Candidates: the ``k`` nearest leaders of each order within the global
   range (one batch query of the :class:`~lbsdispatch.LeaderIndex`), kept if
   the leader is active, has room and serves that far.
2. The compiled solver (:mod:`lbsdispatch._flow`) finds the plan that is
   optimal on that candidate graph, with integer-metre costs, and returns a
   dual value per order.
3. Certificate: an order whose candidate list was cut at ``k`` is fine if its
   dual value is at most the cost of the first leader left out; otherwise (and
   for every order in a saturated region) its list is extended by a radius
   query, for those orders only, and the graph is solved again.  When every
   order passes, the plan is optimal on the full in-range graph.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._flow import max_bmatching, min_cost_bmatching, sort_rows
from ._kdtree import _LeaderTree, _run_chunks, check_coordinates

__all__ = ["OptimalPlan", "solve", "OBJECTIVES"]

#: Objectives understood by :func:`solve`.
OBJECTIVES = ("total", "bottleneck")

# "No leader was left out of this order's list": larger than any integer metre.
_W_INF = np.int64(2**62)
# Path sums inside the solver must stay below this (its INF is 2**61).
_COST_ROOM = 2**60


class OptimalPlan(NamedTuple):
    """The plan for one batch, one entry per order.

    Attributes
    ----------
    leader : ndarray of intp
        Position of the leader in the index, -1 when unassigned.
    distance_m : ndarray of float64
        Great-circle metres to that leader (``inf`` when unassigned).
    nearest : ndarray of bool
        The leader is at the distance of the nearest eligible leader (active,
        with room before the batch, in range); False when unassigned.
    nearest_distance_m : ndarray of float64
        Distance of the nearest eligible leader (``inf``: none in range), so
        that ``distance_m - nearest_distance_m`` is the distance an order gave
        up for the plan.
    info : dict
        How the plan was found: ``rounds`` (solves), ``edges`` (candidate
        edges in the final graph), ``extended`` (orders whose candidate list
        was extended), ``max_cost_m`` (the bottleneck objective's threshold,
        else the largest assigned cost), ``perturbed`` (tie ranks entered
        the costs; see docs/optimal.md).
    """

    leader: np.ndarray
    distance_m: np.ndarray
    nearest: np.ndarray
    nearest_distance_m: np.ndarray
    info: dict


def _metres(d):
    """Integer metres of the objective: distances rounded half up (not to even)."""
    return np.floor(d + 0.5).astype(np.int64)


# ----------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------
def _leader_column(x, name, m, dtype):
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, one per leader ({m})") from None
    if a.ndim == 0:
        a = np.full(m, a, dtype=dtype)
    if a.shape != (m,):
        raise ValueError(f"{name} must have one value per leader ({m}), got shape {a.shape}")
    return np.ascontiguousarray(a)


def _check_inputs(lat, lon, index, remaining, active, radius_m, max_distance_m, tie_rank,
                  objective, k):
    if not isinstance(index, _LeaderTree):
        raise ValueError(f"index must be a LeaderIndex, got {type(index).__name__}")
    m = index.n_leaders
    lat_a = np.ascontiguousarray(lat, dtype=np.float64)
    lon_a = np.ascontiguousarray(lon, dtype=np.float64)
    if lat_a.ndim != 1 or lon_a.ndim != 1:
        raise ValueError(f"lat and lon must be 1-D arrays, got shapes {lat_a.shape} and "
                         f"{lon_a.shape}")
    check_coordinates(lat_a, lon_a)         # names the first bad row
    rem_raw = np.asarray(remaining)
    if rem_raw.dtype.kind not in "iub":
        if rem_raw.dtype.kind != "f" or not np.all(np.isfinite(rem_raw)) or \
                not np.all(rem_raw == np.floor(rem_raw)):
            bad = np.flatnonzero(~(np.isfinite(rem_raw) & (rem_raw == np.floor(rem_raw)))) \
                if rem_raw.dtype.kind == "f" and rem_raw.ndim == 1 else np.array([0])
            j = int(bad[0]) if bad.size else 0
            raise ValueError(f"remaining[{j}]: remaining capacity must be whole numbers, "
                             f"got dtype {rem_raw.dtype}")
    rem = _leader_column(rem_raw, "remaining", m, np.int64)
    neg = np.flatnonzero(rem < 0)
    if neg.size:
        j = int(neg[0])
        raise ValueError(f"remaining[{j}] = {int(rem[j])}: remaining capacity must be >= 0")
    act = _leader_column(active, "active", m, bool)
    rad = _leader_column(np.inf if radius_m is None else radius_m, "radius_m", m, np.float64)
    bad = np.flatnonzero(~(rad >= 0))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"radius_m[{j}] = {float(rad[j])!r}: must be >= 0 (inf for no limit)")
    if max_distance_m is None:
        gmax = math.inf
    else:
        try:
            gmax = float(max_distance_m)
        except (TypeError, ValueError):
            raise ValueError(f"max_distance_m must be a number of metres, "
                             f"got {max_distance_m!r}") from None
        if not (gmax >= 0):
            raise ValueError(f"max_distance_m must be >= 0 (inf for no limit), "
                             f"got {max_distance_m!r}")
    tr_raw = np.asarray(tie_rank)
    if tr_raw.dtype.kind not in "iu":
        raise ValueError(f"tie_rank must be integers, one per leader ({m}), "
                         f"got dtype {tr_raw.dtype}")
    tr = _leader_column(tr_raw, "tie_rank", m, np.int64)
    if m > 1:
        order = np.argsort(tr, kind="stable")
        rep = tr[order][1:] == tr[order][:-1]
        if rep.any():
            b = int(order[1:][rep].min())
            a = int(np.flatnonzero(tr == tr[b])[0])
            raise ValueError(f"tie_rank[{b}] = {int(tr[b])} duplicates tie_rank[{a}]: "
                             f"ranks must be unique so ties never depend on input order")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return lat_a, lon_a, rem, act, rad, gmax, tr


# ----------------------------------------------------------------------------
# the candidate graph (original leader positions, CSR over orders)
# ----------------------------------------------------------------------------
class _Candidates:
    """Each order's in-range eligible leaders, nearest first, and what was left out.

    ``lb[i]`` is a lower bound on the integer-metre cost of every eligible
    in-range leader *not* in order i's list (``_W_INF`` when the list is
    complete): the list is always a nearest-first prefix, so this is the
    rounded distance at which the query stopped.
    """

    def __init__(self, ctx, k):
        self.ctx = ctx
        n, m = ctx.n, ctx.m
        kk = min(k, m) if m else 1
        if m == 0 or n == 0:
            self.indptr = np.zeros(n + 1, dtype=np.intp)
            self.leader = np.zeros(0, dtype=np.intp)
            self.dist = np.zeros(0)
            self.lb = np.full(n, _W_INF, dtype=np.int64)
            return
        d, idx = ctx.index.query(ctx.lat, ctx.lon, k=kk,
                                 max_distance_m=None if ctx.gmax == math.inf else ctx.gmax,
                                 workers=ctx.workers)
        d = d.reshape(n, kk)
        idx = idx.reshape(n, kk)
        found = idx < m
        # a full row may have been cut: whatever is left out is at least as far
        # (only when there are more leaders than were asked for)
        cut = found[:, -1] & (kk < m)
        self.lb = np.where(cut, _metres(np.where(cut, d[:, -1], 0.0)), _W_INF)
        leader = idx[found]
        dist = d[found]
        ok = ctx.eligible[leader] & (dist <= ctx.radius[leader])
        rows = np.nonzero(found)[0]
        counts = np.bincount(rows[ok], minlength=n).astype(np.intp)
        self.indptr = np.zeros(n + 1, dtype=np.intp)
        np.cumsum(counts, out=self.indptr[1:])
        self.leader = np.ascontiguousarray(leader[ok], dtype=np.intp)
        self.dist = np.ascontiguousarray(dist[ok])

    @property
    def n_edges(self):
        return int(self.indptr[-1])

    def extend(self, rows, r_m):
        """Replace the lists of ``rows`` by every eligible leader within ``r_m`` metres."""
        ctx = self.ctx
        n = ctx.n
        rows = np.asarray(rows, dtype=np.intp)
        r_m = np.minimum(np.asarray(r_m, dtype=np.float64), ctx.gmax)
        la = np.ascontiguousarray(ctx.lat[rows])
        lo = np.ascontiguousarray(ctx.lon[rows])
        parts = _run_chunks(ctx.index._ball_chunk, len(rows), ctx.workers,
                            (la, lo, np.ascontiguousarray(r_m)))
        cnt = np.concatenate([p[0] for p in parts])
        bd = np.concatenate([p[1] for p in parts])
        bi = np.concatenate([p[2] for p in parts])
        brow = np.repeat(np.arange(len(rows), dtype=np.intp), cnt)
        ok = ctx.eligible[bi] & (bd <= ctx.radius[bi])
        new_cnt = np.bincount(brow[ok], minlength=len(rows)).astype(np.intp)
        bi, bd, brow = bi[ok], bd[ok], brow[ok]
        # everything farther than r_m is left out: its rounded metres are at
        # least round(r_m); a radius at the global range leaves nothing out
        self.lb[rows] = np.where(r_m >= ctx.gmax, _W_INF, _metres(np.minimum(r_m, 1e15)))
        old_cnt = np.diff(self.indptr)
        replaced = np.zeros(n, dtype=bool)
        replaced[rows] = True
        counts = old_cnt.copy()
        counts[rows] = new_cnt
        indptr = np.zeros(n + 1, dtype=np.intp)
        np.cumsum(counts, out=indptr[1:])
        leader = np.empty(indptr[-1], dtype=np.intp)
        dist = np.empty(indptr[-1])
        erow = np.repeat(np.arange(n, dtype=np.intp), old_cnt)
        keep = ~replaced[erow]
        e = np.flatnonzero(keep)
        pos = indptr[erow[e]] + (e - self.indptr[erow[e]])
        leader[pos] = self.leader[e]
        dist[pos] = self.dist[e]
        start = np.zeros(len(rows) + 1, dtype=np.intp)
        np.cumsum(new_cnt, out=start[1:])
        tgt = rows[brow]
        pos = indptr[tgt] + (np.arange(len(bi), dtype=np.intp) - start[brow])
        leader[pos] = bi
        dist[pos] = bd
        self.indptr, self.leader, self.dist = indptr, leader, dist


class _Context:
    """The fixed inputs of one solve, checked and in the forms the steps need."""

    def __init__(self, lat, lon, index, rem, act, rad, gmax, tie_rank, workers):
        self.lat, self.lon, self.index = lat, lon, index
        self.n, self.m = lat.shape[0], index.n_leaders
        self.gmax = gmax
        self.radius = rad
        self.workers = workers
        self.eligible = act & (rem > 0)
        # Leaders enter the solver renumbered by tie rank: the solver then sees
        # the same arrays whatever order the leaders were given in.
        by_rank = np.argsort(tie_rank, kind="stable")
        by_rank = by_rank[self.eligible[by_rank]]
        self.compact_to_leader = by_rank
        self.leader_to_compact = np.full(self.m, -1, dtype=np.intp)
        self.leader_to_compact[by_rank] = np.arange(len(by_rank), dtype=np.intp)
        self.cap = np.ascontiguousarray(rem[by_rank], dtype=np.int64)


class _Graph:
    """The solver's view of the candidates: compact leaders, rows sorted, costs perturbed.

    Rows are handed to the solver grouped by each order's nearest candidate
    (then by input position): neighbours are solved one after another, which
    keeps the searches' working set in cache and measured 1.5-2x faster on
    the city event than input order.  Solver outputs are mapped back to
    orders by :meth:`min_cost` and :meth:`max_count`.
    """

    def __init__(self, ctx, cand, wmax=None):
        n = ctx.n
        indptr = cand.indptr
        col = ctx.leader_to_compact[cand.leader]
        w = _metres(cand.dist)
        src = np.arange(len(w), dtype=np.intp)
        if wmax is not None:
            keep = w <= wmax
            if not keep.all():
                src = np.flatnonzero(keep)
                counts = np.bincount(np.repeat(np.arange(n, dtype=np.intp),
                                               np.diff(indptr))[src], minlength=n)
                indptr = np.zeros(n + 1, dtype=np.intp)
                np.cumsum(counts, out=indptr[1:])
                col, w = col[src], w[src]
        # Within a row: by integer metres, then by tie rank (the compact
        # number); the position in that order is the row's tie key.
        mc = max(len(ctx.cap), 1)
        perm = sort_rows(indptr, w * mc + col)
        col, w, src = col[perm], w[perm], src[perm]
        deg = np.diff(indptr)
        # processing order: by nearest candidate, then position (empty rows last)
        head = np.where(deg > 0, col[np.minimum(indptr[:-1], max(len(col) - 1, 0))]
                        if len(col) else 0, mc)
        proc = np.argsort(head, kind="stable")
        pdeg = deg[proc]
        pptr = np.zeros(n + 1, dtype=np.intp)
        np.cumsum(pdeg, out=pptr[1:])
        take = np.repeat(indptr[:-1][proc] - pptr[:-1], pdeg) + np.arange(pptr[-1], dtype=np.intp)
        col, w, src = col[take], w[take], src[take]
        self.proc = proc
        self.indptr = pptr
        self.edge = src                   # solver edge -> candidate edge
        self.col = np.ascontiguousarray(col, dtype=np.int32)
        self.w = np.ascontiguousarray(w)
        # Lexicographic perturbation: cost = metres * K + position in the
        # row.  K exceeds the largest possible sum of positions, so a plan of
        # fewer metres always wins and among equal metres the plan whose
        # orders sit earlier in their own (distance, tie rank) lists wins.
        big_k = 1 + int(np.maximum(deg - 1, 0).sum())
        maxw = int(w.max()) if len(w) else 0
        if (maxw + 1) * (n + len(ctx.cap) + 2) >= _COST_ROOM:
            raise ValueError("distances too large for exact 64-bit path sums")
        self.perturbed = (maxw + 1) * big_k * (n + len(ctx.cap) + 2) < _COST_ROOM
        if self.perturbed:
            rowpos = np.arange(len(w), dtype=np.int64) - np.repeat(pptr[:-1], pdeg)
            self.cost = w * big_k + rowpos
            self.k = big_k
        else:
            self.cost = self.w
            self.k = 1

    def lb_cost(self, lb):
        """Least perturbed cost of a left-out edge, from integer metres (saturating)."""
        return np.where(lb >= _W_INF // self.k, _W_INF, lb * self.k)

    def min_cost(self, cap):
        """Solve; per order: candidate edge (-1: none), dual value, dead flag."""
        match, dual, dead = min_cost_bmatching(self.indptr, self.col, self.cost, cap)
        n = len(match)
        edge = np.full(n, -1, dtype=np.intp)
        edge[self.proc] = np.where(match >= 0, self.edge[np.maximum(match, 0)], -1) \
            if len(self.edge) else -1
        u = np.empty(n, dtype=np.int64)
        u[self.proc] = dual
        d = np.empty(n, dtype=bool)
        d[self.proc] = dead
        return edge, u, d

    def max_count(self, wmax, cap):
        """Most orders placeable on edges of <= wmax metres, and the dead orders."""
        count, dead = max_bmatching(self.indptr, self.col, self.w, wmax, cap)
        d = np.empty(len(dead), dtype=bool)
        d[self.proc] = dead
        return count, d


def _solve_certified(ctx, cand, wmax, info):
    """Min-cost plan on the full in-range graph (edges of at most ``wmax`` metres)."""
    limit = ctx.gmax if wmax is None else min(ctx.gmax, wmax + 0.5)
    while True:
        g = _Graph(ctx, cand, wmax)
        match, dual, dead = g.min_cost(ctx.cap)
        info["rounds"] += 1
        lb = cand.lb if wmax is None else np.where(cand.lb > wmax, _W_INF, cand.lb)
        # dead orders: only a complete list proves nothing else can take them
        need_all = dead & (lb < _W_INF)
        # live orders: a left-out edge is harmless when it costs at least the dual
        need_more = ~dead & (dual > g.lb_cost(lb))
        if not (need_all.any() or need_more.any()):
            return g, match
        # Extend with room to spare (25% + 50 m past the dual): the plan moves
        # once the lists grow, and another round costs a whole solve.
        rows = np.flatnonzero(need_all | need_more)
        r = np.where(need_all[rows], limit,
                     np.minimum(limit, np.ceil(dual[rows] / g.k) * 1.25 + 50.0))
        info["extended"] += len(rows)
        cand.extend(rows, r)


def _bottleneck_threshold(ctx, cand, n_best, hi, info):
    """Least integer metres T such that edges of <= T metres still place ``n_best`` orders."""
    lo = 0
    while lo < hi:
        mid = (lo + hi) // 2
        while True:
            g = _Graph(ctx, cand, mid)
            count, dead = g.max_count(mid, ctx.cap)
            info["rounds"] += 1
            if count >= n_best:
                ok = True
                break
            # the failed searches' regions are closed in the graph; they are
            # closed in the full graph too once their lists hold every edge
            # of <= mid metres
            rows = np.flatnonzero(dead & (cand.lb <= mid))
            if rows.size == 0:
                ok = False
                break
            info["extended"] += len(rows)
            cand.extend(rows, np.full(len(rows), min(ctx.gmax, mid + 0.5)))
        if ok:
            hi = mid
        else:
            lo = mid + 1
    return lo


def solve(lat, lon, index, remaining, active, radius_m, max_distance_m, tie_rank,
          objective="total", *, k=10, workers=1):
    """Optimal plan for a batch: most orders placed, then least distance.

    Parameters
    ----------
    lat, lon : array_like of float64, shape (n,)
        Order coordinates, WGS-84 degrees (already validated by the caller;
        checked again, cheaply, naming the first bad row).
    index : LeaderIndex
        The leaders (the dispatcher's index); results name leaders by their
        position in it.
    remaining : array_like of int64, shape (n_leaders,)
        Orders each leader can still take (capacity minus load, >= 0).
    active : array_like of bool, shape (n_leaders,)
        Inactive leaders take nothing.
    radius_m : array_like of float64, shape (n_leaders,), or float
        Each leader's own service radius in metres (``inf``: none).
    max_distance_m : float or None
        Global range in metres (``inf`` or None: none).  Both limits are
        inclusive, as in greedy dispatch.
    tie_rank : array_like of int64, shape (n_leaders,)
        Unique per leader; the smaller wins ties (see Notes).
    objective : {"total", "bottleneck"}, default "total"
        ``"total"``: most orders, then least total integer metres.
        ``"bottleneck"``: most orders, then the least largest integer-metre
        distance, then the least total under that largest distance.
    k : int, default 10
        Candidates per order to start from; more are fetched only where the
        certificate asks for them, so ``k`` changes the time, never the plan's
        count or total.
    workers : int, default 1
        Threads for the index queries (-1: every core); the solver runs on one.

    Returns
    -------
    OptimalPlan
        ``leader`` (-1: none), ``distance_m``, ``nearest``,
        ``nearest_distance_m`` and ``info``, one entry per order.

    Raises
    ------
    ValueError
        For bad coordinates, negative or fractional capacities, negative or
        NaN radii, duplicate tie ranks, an unknown objective, or ``k < 1``,
        naming the argument and the row.

    Notes
    -----
    Costs are great-circle metres rounded half up to integers; reported
    distances are the exact float metres.  The count and the total equal the
    optimum over *every* in-range candidate (not just the first ``k``).
    Among plans with the same count and total, the one whose orders sit
    earliest in their own lists ordered by (integer metres, tie rank) wins;
    what is still tied (for instance two orders at the same address) is
    settled by order position.  The plan depends only on the inputs: the
    same call gives the same plan, and permuting the leaders (with their tie
    ranks and index ids) gives the same plan, permuted.
    """
    lat_a, lon_a, rem, act, rad, gmax, tr = _check_inputs(
        lat, lon, index, remaining, active, radius_m, max_distance_m, tie_rank, objective, k)
    ctx = _Context(lat_a, lon_a, index, rem, act, rad, gmax, tr, workers)
    n = ctx.n
    info = {"rounds": 0, "edges": 0, "extended": 0, "max_cost_m": 0, "perturbed": False}
    cand = _Candidates(ctx, int(k))

    def plan(wmax):
        # leaders and metres at once: a later extension renumbers the edges
        g, match = _solve_certified(ctx, cand, wmax, info)
        placed = match >= 0
        leader = np.full(n, -1, dtype=np.intp)
        dist = np.full(n, np.inf)
        leader[placed] = cand.leader[match[placed]]
        dist[placed] = cand.dist[match[placed]]
        info["perturbed"] = bool(g.perturbed)
        return leader, dist, placed

    leader, dist, placed = plan(None)
    if objective == "bottleneck":
        n_best = int(placed.sum())
        if n_best:
            hi = int(_metres(dist[placed]).max())
            t = _bottleneck_threshold(ctx, cand, n_best, hi, info)
            if t < hi:
                leader, dist, placed = plan(t)
    # the nearest eligible leader heads every non-empty list (lists are
    # nearest-first prefixes of the in-range eligible leaders)
    near = np.full(n, np.inf)
    deg = np.diff(cand.indptr)
    has = deg > 0
    if has.any():
        near[has] = np.minimum.reduceat(cand.dist, cand.indptr[:-1][has]) \
            if cand.n_edges else np.inf
    nearest = placed & (dist <= near)
    info["edges"] = cand.n_edges
    info["max_cost_m"] = int(_metres(dist[placed]).max()) if placed.any() else 0
    return OptimalPlan(leader, dist, nearest, near, info)
