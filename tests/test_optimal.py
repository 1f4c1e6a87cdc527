"""Optimal mode (issue 7): ``lbsdispatch.optimal.solve`` against exact oracles.

Oracles
-------
* small events: scipy's ``linear_sum_assignment`` on leader slots expanded by
  capacity, plus one dummy column per order that costs more than any plan of
  real edges (so the optimum first places the most orders, then the least
  metres); the bottleneck by trying every threshold with the same oracle;
* medium events (hundreds of orders): OR-Tools' ``SimpleMinCostFlow``
  (``solve_max_flow_with_min_cost``) on the *full* in-range graph.

Distances for the oracles come from the same index (``query`` with k = all
leaders), so integer-metre costs match bit for bit.  Small events start the
solver from k = 1-4 candidates so that the certificate and the extension of
candidate lists are exercised on almost every example.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, strategies as st
from ortools.graph.python import min_cost_flow
from scipy.optimize import linear_sum_assignment

from lbsdispatch import LeaderIndex, optimal, synth
from lbsdispatch._flow import max_bmatching, min_cost_bmatching

M_PER_DEG = 111_195.08


# ----------------------------------------------------------------------------
# events and oracles
# ----------------------------------------------------------------------------
def _event(seed, n_leaders, n_orders, spread_m=3000.0, dup=True):
    """Leaders and orders in a few km; some leaders share a site, some orders repeat."""
    rng = np.random.default_rng(seed)
    lat0, lon0 = 30.27, 120.15
    llat = lat0 + rng.uniform(-1, 1, n_leaders) * spread_m / M_PER_DEG
    llon = lon0 + rng.uniform(-1, 1, n_leaders) * spread_m / M_PER_DEG
    olat = lat0 + rng.uniform(-1.3, 1.3, n_orders) * spread_m / M_PER_DEG
    olon = lon0 + rng.uniform(-1.3, 1.3, n_orders) * spread_m / M_PER_DEG
    if dup and n_leaders > 1:
        same = rng.random(n_leaders) < 0.25          # exact ties between leaders
        src = rng.integers(0, n_leaders, n_leaders)
        llat[same], llon[same] = llat[src[same]], llon[src[same]]
    if dup and n_orders > 1:
        same = rng.random(n_orders) < 0.2            # the same address twice
        src = rng.integers(0, n_orders, n_orders)
        olat[same], olon[same] = olat[src[same]], olon[src[same]]
    return llat, llon, olat, olon


def _full_edges(index, olat, olon, rem, active, radius, gmax):
    """Every eligible in-range edge: (order, leader, metres float, metres int)."""
    m = index.n_leaders
    n = len(olat)
    if m == 0 or n == 0:
        return (np.zeros(0, np.intp),) * 2 + (np.zeros(0),) + (np.zeros(0, np.int64),)
    d, i = index.query(olat, olon, k=m)
    d, i = d.reshape(n, m), i.reshape(n, m)
    rows = np.repeat(np.arange(n), m)
    d, i = d.ravel(), i.ravel()
    ok = (i < m)
    ok[ok] &= active[i[ok]] & (rem[i[ok]] > 0) & (d[ok] <= radius[i[ok]]) & (d[ok] <= gmax)
    d = d[ok]
    return rows[ok], i[ok], d, np.floor(d + 0.5).astype(np.int64)


def _lsa_optimum(n, rem, rows, cols, w, wmax=None):
    """(count, total) of the best plan by linear_sum_assignment on expanded slots."""
    keep = np.ones(len(w), bool) if wmax is None else (w <= wmax)
    rows, cols, w = rows[keep], cols[keep], w[keep]
    slot_leader = np.repeat(np.arange(len(rem)), np.minimum(rem, n))
    ns = len(slot_leader)
    if n == 0:
        return 0, 0
    big = float(w.sum() + 1) if len(w) else 1.0      # a dummy costs more than any plan
    forbid = big * (n + 1) * 4
    c = np.full((n, ns + n), forbid)
    c[:, ns:] = big
    for r, j, x in zip(rows.tolist(), cols.tolist(), w.tolist()):
        c[r, :ns][slot_leader == j] = x
    r_i, c_i = linear_sum_assignment(c)
    real = c_i < ns
    return int(real.sum()), int(round(c[r_i[real], c_i[real]].sum()))


def _bottleneck_oracle(n, rem, rows, cols, w):
    """(count, largest metres, total under it), trying thresholds from the smallest."""
    count, _ = _lsa_optimum(n, rem, rows, cols, w)
    if count == 0:
        return 0, 0, 0
    for t in np.unique(w):
        c, tot = _lsa_optimum(n, rem, rows, cols, w, wmax=t)
        if c == count:
            return count, int(t), tot
    raise AssertionError("unreachable: the largest threshold places them all")


def _ortools_optimum(n, m, rem, rows, cols, w):
    """(count, total) by OR-Tools max-flow-min-cost on the given edges."""
    f = min_cost_flow.SimpleMinCostFlow()
    src, snk = n + m, n + m + 1
    f.add_arcs_with_capacity_and_unit_cost(np.full(n, src), np.arange(n), np.ones(n, np.int64),
                                           np.zeros(n, np.int64))
    f.add_arcs_with_capacity_and_unit_cost(rows, n + cols, np.ones(len(rows), np.int64), w)
    f.add_arcs_with_capacity_and_unit_cost(n + np.arange(m), np.full(m, snk),
                                           np.asarray(rem, np.int64), np.zeros(m, np.int64))
    f.set_node_supply(src, n)
    f.set_node_supply(snk, -n)
    assert f.solve_max_flow_with_min_cost() == f.OPTIMAL
    return int(f.maximum_flow()), int(f.optimal_cost())


def _check_feasible(plan, index, olat, olon, rem, active, radius, gmax):
    """Capacity, radius, active flags, reported metres and the nearest flag."""
    m = index.n_leaders
    a = plan.leader >= 0
    assert np.all(plan.leader[~a] == -1) and np.all(np.isinf(plan.distance_m[~a]))
    if not a.any():
        assert not plan.nearest.any()
        return
    load = np.bincount(plan.leader[a], minlength=m)
    assert np.all(load <= rem), "capacity exceeded"
    lead = plan.leader[a]
    assert active[lead].all(), "inactive leader used"
    assert np.all(plan.distance_m[a] <= radius[lead]), "leader's own radius exceeded"
    assert np.all(plan.distance_m[a] <= gmax), "global range exceeded"
    rows, cols, d_all, _ = _full_edges(index, olat, olon, rem, active, radius, gmax)
    near = np.full(len(olat), np.inf)
    np.minimum.at(near, rows, d_all)
    np.testing.assert_array_equal(plan.nearest_distance_m, near)
    np.testing.assert_array_equal(plan.nearest, a & (plan.distance_m == near))
    # the reported metres are the index's metres to that leader
    d2, i2 = index.query(olat[a], olon[a], k=m)
    d2, i2 = d2.reshape(a.sum(), m), i2.reshape(a.sum(), m)
    got = d2[i2 == lead[:, None]]
    np.testing.assert_array_equal(got, plan.distance_m[a])


def _cost(plan):
    a = plan.leader >= 0
    return int(a.sum()), int(np.floor(plan.distance_m[a] + 0.5).sum())


# ----------------------------------------------------------------------------
# small events: exact against linear_sum_assignment
# ----------------------------------------------------------------------------
small_events = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32 - 1),
    "n_leaders": st.integers(1, 8),
    "n_orders": st.integers(0, 15),
    "k": st.integers(1, 4),
    "gmax": st.sampled_from([1500.0, 2500.0, 4000.0, np.inf]),
    "spread": st.sampled_from([300.0, 1500.0, 3000.0]),
})


def _small(p):
    llat, llon, olat, olon = _event(p["seed"], p["n_leaders"], p["n_orders"], p["spread"])
    rng = np.random.default_rng(p["seed"] + 1)
    m = p["n_leaders"]
    rem = rng.integers(0, 4, m)
    active = rng.random(m) < 0.85
    radius = np.where(rng.random(m) < 0.3, rng.uniform(300, 3000, m), np.inf)
    tie_rank = rng.permutation(m) * 3 + 7
    ids = rng.permutation(m) + 100
    index = LeaderIndex(llat, llon, ids=ids)
    return index, olat, olon, rem, active, radius, tie_rank


@given(small_events)
def test_small_events_total_equals_brute_force(p):
    index, olat, olon, rem, active, radius, tie_rank = _small(p)
    gmax = p["gmax"]
    plan = optimal.solve(olat, olon, index, rem, active, radius, gmax, tie_rank, k=p["k"])
    note(f"plan {plan.leader.tolist()} info {plan.info}")
    _check_feasible(plan, index, olat, olon, rem, active, radius, gmax)
    rows, cols, _, w = _full_edges(index, olat, olon, rem, active, radius, gmax)
    assert _cost(plan) == _lsa_optimum(len(olat), rem, rows, cols, w)


@given(small_events)
def test_small_events_bottleneck_equals_brute_force(p):
    index, olat, olon, rem, active, radius, tie_rank = _small(p)
    gmax = p["gmax"]
    plan = optimal.solve(olat, olon, index, rem, active, radius, gmax, tie_rank,
                         objective="bottleneck", k=p["k"])
    _check_feasible(plan, index, olat, olon, rem, active, radius, gmax)
    rows, cols, _, w = _full_edges(index, olat, olon, rem, active, radius, gmax)
    count, worst, total = _bottleneck_oracle(len(olat), rem, rows, cols, w)
    a = plan.leader >= 0
    got_worst = int(np.floor(plan.distance_m[a] + 0.5).max()) if a.any() else 0
    assert (int(a.sum()), got_worst, _cost(plan)[1]) == (count, worst, total)


@given(small_events)
def test_deterministic_across_runs_and_leader_order(p):
    index, olat, olon, rem, active, radius, tie_rank = _small(p)
    gmax = p["gmax"]
    for objective in optimal.OBJECTIVES:
        a = optimal.solve(olat, olon, index, rem, active, radius, gmax, tie_rank,
                          objective=objective, k=p["k"])
        b = optimal.solve(olat, olon, index, rem, active, radius, gmax, tie_rank,
                          objective=objective, k=p["k"])
        # the same leaders given in another order (ids, ranks and state with them)
        perm = np.random.default_rng(p["seed"] + 2).permutation(index.n_leaders)
        index2 = LeaderIndex(index.lat[perm], index.lon[perm], ids=index.ids[perm])
        c = optimal.solve(olat, olon, index2, rem[perm], active[perm], radius[perm], gmax,
                          tie_rank[perm], objective=objective, k=p["k"])
        for x, y in [(a, b)]:
            np.testing.assert_array_equal(x.leader, y.leader)
            np.testing.assert_array_equal(x.distance_m, y.distance_m)
        mapped = np.where(c.leader >= 0, perm[np.maximum(c.leader, 0)], -1)
        np.testing.assert_array_equal(mapped, a.leader)
        np.testing.assert_array_equal(c.distance_m, a.distance_m)
        np.testing.assert_array_equal(c.nearest, a.nearest)


# ----------------------------------------------------------------------------
# medium events: exact against OR-Tools on the full candidate graph
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed,ratio,gmax", [(0, 1.15, 3000.0), (1, 0.7, 3000.0),
                                              (2, 1.0, 2000.0), (3, 1.5, np.inf)])
def test_medium_events_equal_ortools_full_graph(seed, ratio, gmax):
    ev = synth.city_event(n_leaders=40, n_orders=400, capacity_ratio=ratio, seed=seed,
                          city_radius_m=6000.0)
    m = ev.n_leaders
    rng = np.random.default_rng(seed)
    active = rng.random(m) < 0.9
    radius = np.where(rng.random(m) < 0.3, rng.uniform(500, 4000, m), np.inf)
    rem = ev.capacity.copy()
    rem[rng.random(m) < 0.1] = 0
    index = LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids)
    rows, cols, _, w = _full_edges(index, ev.order_lat, ev.order_lon, rem, active, radius, gmax)
    want = _ortools_optimum(ev.n_orders, m, rem, rows, cols, w)
    plan = optimal.solve(ev.order_lat, ev.order_lon, index, rem, active, radius, gmax,
                         np.arange(m), k=3)
    _check_feasible(plan, index, ev.order_lat, ev.order_lon, rem, active, radius, gmax)
    assert _cost(plan) == want
    assert plan.info["extended"] > 0        # k=3 is not enough here: the certificate worked
    for k in (1, 10, 50):                   # k changes the work, never the optimum
        assert _cost(optimal.solve(ev.order_lat, ev.order_lon, index, rem, active, radius,
                                   gmax, np.arange(m), k=k)) == want


# ----------------------------------------------------------------------------
# degenerate cases and the tie rule
# ----------------------------------------------------------------------------
def _solve(olat, olon, llat, llon, rem, **kw):
    m = len(llat)
    index = LeaderIndex(llat, llon)
    args = dict(active=np.ones(m, bool), radius_m=np.inf, max_distance_m=None,
                tie_rank=np.arange(m))
    args.update(kw)
    return optimal.solve(np.asarray(olat, float), np.asarray(olon, float), index,
                         np.asarray(rem), **args)


def test_no_leaders_no_orders_no_capacity():
    p = _solve([30.0, 30.1], [120.0, 120.1], [], [], np.zeros(0, np.int64))
    assert p.leader.tolist() == [-1, -1] and np.isinf(p.nearest_distance_m).all()
    p = _solve([], [], [30.0], [120.0], [3])
    assert p.leader.shape == (0,) and p.distance_m.shape == (0,)
    p = _solve([30.0, 30.0], [120.0, 120.0], [30.0, 30.01], [120.0, 120.0], [0, 0])
    assert p.leader.tolist() == [-1, -1] and not p.nearest.any()
    p = _solve([30.0], [120.0], [30.0], [120.0], [5], active=np.zeros(1, bool))
    assert p.leader.tolist() == [-1]


def test_exact_ties_go_to_the_smaller_tie_rank():
    # two leaders on one spot, one order: the smaller rank wins, whatever the input order
    p = _solve([30.001], [120.0], [30.0, 30.0], [120.0, 120.0], [1, 1], tie_rank=[5, 2])
    assert p.leader.tolist() == [1] and p.nearest.tolist() == [True]
    p = _solve([30.001], [120.0], [30.0, 30.0], [120.0, 120.0], [1, 1], tie_rank=[2, 5])
    assert p.leader.tolist() == [0]


def test_duplicate_orders_fill_and_spill():
    # three orders at one address, a near leader with room for two, a far one
    p = _solve([30.0] * 3, [120.0] * 3, [30.0, 30.02], [120.0, 120.0], [2, 5])
    assert sorted(p.leader.tolist()) == [0, 0, 1]
    far = p.leader == 1
    assert not p.nearest[far].any() and p.nearest[~far].all()
    assert np.all(p.distance_m[far] > p.nearest_distance_m[far])


def test_placing_more_beats_walking_less():
    # on a meridian (km north): A at 0, B at 3; L0 at 1, L1 at -4; range 4.5 km.
    # B reaches only L0, so A walks 4 km to L1 (greedy nearest would leave B out).
    km = 1 / M_PER_DEG * 1000
    p = _solve([0.0, 3 * km], [0.0, 0.0], [1 * km, -4 * km], [0.0, 0.0], [1, 1],
               max_distance_m=4500.0)
    assert p.leader.tolist() == [1, 0]
    assert p.nearest.tolist() == [False, True]
    np.testing.assert_allclose(p.distance_m - p.nearest_distance_m, [3000.0, 0.0], atol=0.5)


def test_bottleneck_trades_total_for_worst():
    # at the equator (km): A and L0 at the origin, B 4 km north, L1 7 km from A
    # and 10 km from B.  Total: A-L0 + B-L1 = 10 km (worst 10); bottleneck:
    # A-L1 + B-L0 = 11 km (worst 7).
    km = 1 / M_PER_DEG * 1000
    olat, olon = [0.0, 4 * km], [0.0, 0.0]
    llat, llon = [0.0, -4.375 * km], [0.0, 5.4645 * km]
    tot = _solve(olat, olon, llat, llon, [1, 1])
    bot = _solve(olat, olon, llat, llon, [1, 1], objective="bottleneck")
    assert tot.leader.tolist() == [0, 1] and bot.leader.tolist() == [1, 0]
    assert bot.distance_m.max() < tot.distance_m.max()
    assert bot.distance_m.sum() > tot.distance_m.sum()


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_input_names_the_field_and_row():
    index = LeaderIndex([30.0, 30.1], [120.0, 120.1])
    ok = dict(lat=np.array([30.0, 30.05]), lon=np.array([120.0, 120.0]), index=index,
              remaining=np.array([1, 1]), active=np.array([True, True]),
              radius_m=np.array([np.inf, 500.0]), max_distance_m=None,
              tie_rank=np.array([0, 1]))
    cases = [
        (dict(lat=np.array([30.0, np.nan])), r"lat\[1\]"),
        (dict(lon=np.array([120.0, 200.0])), r"lon\[1\]"),
        (dict(remaining=np.array([1, -2])), r"remaining\[1\] = -2"),
        (dict(remaining=np.array([1.5, 1.0])), r"remaining\[0\]"),
        (dict(remaining=np.array([1, 1, 1])), "remaining must have one value per leader"),
        (dict(radius_m=np.array([np.nan, 1.0])), r"radius_m\[0\] = nan"),
        (dict(radius_m=np.array([1.0, -1.0])), r"radius_m\[1\] = -1.0"),
        (dict(tie_rank=np.array([4, 4])), r"tie_rank\[1\] = 4 duplicates tie_rank\[0\]"),
        (dict(tie_rank=np.array([0.5, 1.0])), "tie_rank must be integers"),
        (dict(max_distance_m=-1.0), "max_distance_m must be >= 0"),
        (dict(index=object()), "index must be a LeaderIndex"),
    ]
    for change, msg in cases:
        with pytest.raises(ValueError, match=msg):
            optimal.solve(**{**ok, **change})
    with pytest.raises(ValueError, match="objective must be one of"):
        optimal.solve(**ok, objective="fastest")
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        optimal.solve(**ok, k=0)


def test_solver_rejects_bad_graphs():
    indptr = np.array([0, 2], np.intp)
    col = np.array([0, 1], np.int32)
    cap = np.array([1, 1], np.int64)
    with pytest.raises(ValueError, match="sorted by cost"):
        min_cost_bmatching(indptr, col, np.array([5, 3], np.int64), cap)
    with pytest.raises(ValueError, match=r"cost\[0\] = -1"):
        min_cost_bmatching(indptr, col, np.array([-1, 3], np.int64), cap)
    with pytest.raises(ValueError, match=r"col\[1\] = 2"):
        min_cost_bmatching(indptr, np.array([0, 2], np.int32), np.array([1, 3], np.int64), cap)
    with pytest.raises(ValueError, match=r"cap\[1\] = -1"):
        min_cost_bmatching(indptr, col, np.array([1, 3], np.int64), np.array([1, -1], np.int64))


# ----------------------------------------------------------------------------
# the solver alone on random sparse graphs (costs not from geometry)
# ----------------------------------------------------------------------------
@given(st.integers(0, 2**32 - 1), st.integers(0, 14), st.integers(1, 6))
def test_solver_on_random_graphs(seed, n, m):
    rng = np.random.default_rng(seed)
    cap = rng.integers(0, 3, m).astype(np.int64)
    rows, cols, w = [], [], []
    for i in range(n):
        js = rng.choice(m, rng.integers(0, m + 1), replace=False)
        cs = np.sort(rng.integers(0, 6, len(js)))          # ties on purpose
        rows += [i] * len(js)
        cols += js.tolist()
        w += cs.tolist()
    rows, cols, w = np.array(rows, np.intp), np.array(cols, np.intp), np.array(w, np.int64)
    indptr = np.zeros(n + 1, np.intp)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    match, dual, dead = min_cost_bmatching(indptr, cols.astype(np.int32), w, cap)
    a = match >= 0
    assert np.all(rows[match[a]] == np.flatnonzero(a))
    assert np.all(np.bincount(cols[match[a]], minlength=m) <= cap)
    assert (int(a.sum()), int(w[match[a]].sum())) == _lsa_optimum(n, cap, rows, cols, w)
    assert np.all(dead[~a])                        # every unassigned order is dead
    # live orders' duals are tight on their own edge and never below it
    live = a & ~dead
    assert np.all(dual[live] >= w[match[live]])
    count, _ = max_bmatching(indptr, cols.astype(np.int32), w, 10**9, cap)
    assert count == int(a.sum())
