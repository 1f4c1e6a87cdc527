"""What the optimal-mode benchmarks compare (issue 7), shared by bench_optimal.py
and report_optimal.py.

* :func:`ours` -- ``lbsdispatch.optimal.solve`` on an event, candidates and
  certificate included (the index is built outside the timing, as a
  Dispatcher holds one).
* :func:`ortools_k` -- the peer: the same candidate query (k nearest within the
  range, eligible leaders only), the same integer-metre costs, a
  ``SimpleMinCostFlow`` built from those arrays and solved with
  ``solve_max_flow_with_min_cost``.  Query, build and solve are all timed.
* :func:`ortools_edges` -- OR-Tools on a given edge list (the check that our
  plan is optimal on the graph our certificate ended with).
* :func:`greedy` -- ``Dispatcher.assign_batch`` (first come, first served).
"""
from __future__ import annotations

import functools

import numpy as np
from ortools.graph.python import min_cost_flow

from lbsdispatch import Dispatcher, LeaderIndex, Rules, optimal, synth

MAX_DISTANCE_M = 5_000.0


@functools.lru_cache(maxsize=None)
def event(name):
    """(event, index) for "city" (20,000 orders, 800 leaders) or "nation" (1M, 100k)."""
    ev = synth.city_event(seed=0) if name == "city" else synth.nation_event(seed=0)
    return ev, LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids)


def ours(ev, index, objective="total", k=10):
    m = index.n_leaders
    return optimal.solve(ev.order_lat, ev.order_lon, index, ev.capacity, np.ones(m, bool),
                         np.inf, MAX_DISTANCE_M, np.arange(m), objective=objective, k=k)


def ortools_edges(n, m, cap, rows, cols, w):
    """(count, total) of OR-Tools max-flow-min-cost on an edge list."""
    f = min_cost_flow.SimpleMinCostFlow()
    src, snk = n + m, n + m + 1
    f.add_arcs_with_capacity_and_unit_cost(np.full(n, src), np.arange(n), np.ones(n, np.int64),
                                           np.zeros(n, np.int64))
    f.add_arcs_with_capacity_and_unit_cost(rows, n + cols, np.ones(len(rows), np.int64), w)
    f.add_arcs_with_capacity_and_unit_cost(n + np.arange(m), np.full(m, snk),
                                           np.asarray(cap, np.int64), np.zeros(m, np.int64))
    f.set_node_supply(src, n)
    f.set_node_supply(snk, -n)
    status = f.solve_max_flow_with_min_cost()
    if status != f.OPTIMAL:
        raise RuntimeError(f"OR-Tools: {status}")
    return int(f.maximum_flow()), int(f.optimal_cost())


def ortools_k(ev, index, k=10):
    """The peer, timed whole: k nearest in range, eligible edges, build, solve."""
    n, m = ev.n_orders, index.n_leaders
    d, i = index.query(ev.order_lat, ev.order_lon, k=k, max_distance_m=MAX_DISTANCE_M)
    found = i < m
    rows = np.nonzero(found)[0]
    cols = i[found]
    ok = ev.capacity[cols] > 0
    w = np.floor(d[found][ok] + 0.5).astype(np.int64)
    return ortools_edges(n, m, ev.capacity, rows[ok], cols[ok], w)


def plan_edges(ev, index, plan_info_k=10):
    """The candidate graph our certificate ends with, as an edge list (for the check)."""
    # rebuilt through the module's own steps so the check sees the same edges
    m = index.n_leaders
    ctx = optimal._Context(ev.order_lat, ev.order_lon, index, ev.capacity, np.ones(m, bool),
                           np.full(m, np.inf), MAX_DISTANCE_M, np.arange(m), 1)
    cand = optimal._Candidates(ctx, plan_info_k)
    optimal._solve_certified(ctx, cand, None, {"rounds": 0, "extended": 0})
    rows = np.repeat(np.arange(ev.n_orders), np.diff(cand.indptr))
    return rows, cand.leader, np.floor(cand.dist + 0.5).astype(np.int64)


def summary(leader, dist):
    """(assigned, total integer metres, p95 metres) of a plan."""
    a = leader >= 0
    d = dist[a]
    return (int(a.sum()), int(np.floor(d + 0.5).sum()),
            float(np.percentile(d, 95)) if len(d) else 0.0)


def greedy(ev):
    disp = Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                      rules=Rules(max_distance_m=MAX_DISTANCE_M))
    res = disp.assign_batch(ev.order_lat, ev.order_lon)
    return np.asarray(res.leader_index), np.asarray(res.distance_m)
