"""pytest-benchmark suite: optimal mode (issue 7) against OR-Tools' SimpleMinCostFlow.

Run from the project root::

    python -m pytest benchmarks/bench_optimal.py --benchmark-only           # city
    python -m pytest benchmarks/bench_optimal.py --benchmark-only --nation  # + nation

Groups:

* ``optimal city`` -- ``optimal.solve`` (total and bottleneck objectives) on the
  city event with a 5 km range, and the peer: OR-Tools max-flow-min-cost on the
  10 nearest in-range candidates (query, build and solve timed).  Before
  timing, our plan is checked against OR-Tools on the certified candidate
  graph: equal count and equal total integer metres.
* ``optimal nation`` -- ``optimal.solve`` on the nation event (time; peak
  memory is in ``report_optimal.py``).
"""
from __future__ import annotations

import numpy as np
import pytest

from _optimal_peers import event, ortools_edges, ortools_k, ours, plan_edges, summary

NATION = pytest.mark.nation


def test_city_ours_total(benchmark):
    benchmark.group = "optimal city"
    ev, index = event("city")
    plan = ours(ev, index)
    rows, cols, w = plan_edges(ev, index)
    want = ortools_edges(ev.n_orders, index.n_leaders, ev.capacity, rows, cols, w)
    got = summary(plan.leader, plan.distance_m)[:2]
    assert got == want, (got, want)
    # the 10-candidate graph cannot do better than the full graph
    peer = ortools_k(ev, index)
    assert got[0] > peer[0] or (got[0] == peer[0] and got[1] <= peer[1]), (got, peer)
    benchmark.extra_info.update(assigned=got[0], total_m=got[1], **plan.info)
    benchmark.pedantic(ours, args=(ev, index), rounds=7, warmup_rounds=1)


def test_city_ours_bottleneck(benchmark):
    benchmark.group = "optimal city"
    ev, index = event("city")
    benchmark.pedantic(ours, args=(ev, index, "bottleneck"), rounds=5, warmup_rounds=1)


def test_city_ortools_k10(benchmark):
    benchmark.group = "optimal city"
    ev, index = event("city")
    count, total = ortools_k(ev, index)
    benchmark.extra_info.update(assigned=count, total_m=total)
    benchmark.pedantic(ortools_k, args=(ev, index), rounds=7, warmup_rounds=1)


@NATION
def test_nation_ours_total(benchmark):
    benchmark.group = "optimal nation"
    ev, index = event("nation")
    plan = benchmark.pedantic(ours, args=(ev, index), rounds=1, warmup_rounds=0)
    a = plan.leader >= 0
    assert np.all(np.bincount(plan.leader[a], minlength=index.n_leaders) <= ev.capacity)
    benchmark.extra_info.update(assigned=int(a.sum()), **plan.info)
