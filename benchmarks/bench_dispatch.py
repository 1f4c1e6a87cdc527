"""pytest-benchmark suite: ``Dispatcher.assign_batch`` / ``assign`` against the peers.

Run from the project root::

    python -m pytest benchmarks/bench_dispatch.py --benchmark-only           # city
    python -m pytest benchmarks/bench_dispatch.py --benchmark-only --nation  # + nation

Groups (one event each):

* ``dispatch city 1.15x`` -- ours ``assign_batch`` (a fresh Dispatcher per
  round, built outside the timing), the cKDTree k=8 + Python loop peer, and our
  own uncapacitated k=1 batch query of the same orders (the floor).
* ``dispatch city 0.7x`` -- the same with total capacity 0.7 x orders, where
  most leaders fill up and many orders end ALL_FULL.
* ``dispatch nation`` -- ours ``assign_batch`` (one thread, and ``workers=2``)
  against cKDTree's uncapacitated k=1 batch with ``workers=1``.
* ``online assign`` -- one ``Dispatcher.assign`` call against one cKDTree
  ``query`` of one point (which does far less).
"""
from __future__ import annotations

import pytest
from scipy.spatial import cKDTree

from _dispatch_peers import ckdtree_greedy, event, ours_assign_batch, unit_vectors
from lbsdispatch import LeaderIndex

NATION = pytest.mark.nation


def _ours(benchmark, ev, workers=1):
    make = ours_assign_batch(ev)
    benchmark.pedantic(lambda d: d.assign_batch(ev.order_lat, ev.order_lon, workers=workers),
                       setup=lambda: ((make(),), {}), rounds=7, warmup_rounds=1)


@pytest.mark.parametrize("ratio", [1.15, 0.7], ids=["cap1.15", "cap0.7"])
def test_city_ours(benchmark, ratio):
    benchmark.group = f"dispatch city {ratio}x"
    _ours(benchmark, event("city", ratio))


@pytest.mark.parametrize("ratio", [1.15, 0.7], ids=["cap1.15", "cap0.7"])
def test_city_ckdtree_python_loop(benchmark, ratio):
    benchmark.group = f"dispatch city {ratio}x"
    ev = event("city", ratio)
    lx, ox = unit_vectors("city")
    tree = cKDTree(lx)
    benchmark.pedantic(ckdtree_greedy, args=(tree, ox, ev.capacity), rounds=3, warmup_rounds=1)


def test_city_own_k1_floor(benchmark):
    benchmark.group = "dispatch city 1.15x"
    ev = event("city")
    index = LeaderIndex(ev.leader_lat, ev.leader_lon)
    benchmark(index.query, ev.order_lat, ev.order_lon)


@NATION
@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_nation_ours(benchmark, workers):
    benchmark.group = "dispatch nation"
    _ours(benchmark, event("nation"), workers)


@NATION
def test_nation_ckdtree_k1(benchmark):
    benchmark.group = "dispatch nation"
    lx, ox = unit_vectors("nation")
    tree = cKDTree(lx)
    benchmark.pedantic(tree.query, args=(ox,), kwargs={"workers": 1}, rounds=3,
                       warmup_rounds=1)


def test_online_assign(benchmark):
    benchmark.group = "online assign"
    ev = event("city", 1000.0)          # room everywhere: the load never changes the path
    d = ours_assign_batch(ev)()
    benchmark(d.assign, float(ev.order_lat[0]), float(ev.order_lon[0]))


def test_online_ckdtree_scalar(benchmark):
    benchmark.group = "online assign"
    lx, ox = unit_vectors("city")
    tree = cKDTree(lx)
    benchmark(tree.query, ox[0])
