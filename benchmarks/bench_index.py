"""pytest-benchmark suite: ``lbsdispatch.LeaderIndex`` against its peers.

Run from the project root::

    python -m pytest benchmarks --benchmark-only                 # city event
    python -m pytest benchmarks --benchmark-only --nation        # + nation (minutes)
    LBSDISPATCH_BENCH_NATION=1 python -m pytest benchmarks --benchmark-only

Each benchmark group compares the peers on one operation and one event:

* ``build`` -- ours from lat/lon degrees (conversion timed); cKDTree and
  pykdtree from ready-made unit vectors; BallTree from radians (haversine).
* ``batch k=1`` / ``batch k=5``, one thread -- ours ``workers=1`` from lat/lon
  (conversion timed); cKDTree ``workers=1`` and pykdtree on ready-made unit
  vectors; BallTree on radians.  pykdtree (``pykdtree_omp1``) runs in a child process started with
  ``OMP_NUM_THREADS=1`` (see ``_bench_common.PykdtreeWorker``): its time is a
  pipe round trip around the query, the child's own min-of-repeats timing and
  the no-op round trip are in ``extra_info``.  On the nation event BallTree is
  too slow for a million orders: it has its own groups on a 20,000-order
  subset, next to ours and cKDTree on the same subset (compare ns/order).
* ``batch k=1, all cores`` -- ours and cKDTree ``workers=-1``; pykdtree in this
  process with its default OpenMP threads.
* ``scalar`` -- one point per call (ours: the ``index.query(lat, lon)`` fast
  path).  The benchmark repeats one point; ``extra_info`` has the median and
  p99 of 20,000 distinct points timed one call at a time (2,000 for cKDTree).
* ``build + k=1 batch`` -- the two together, timed here; ``extra_info`` has
  the peak RSS growth of the same work measured in a fresh process
  (``memory.py``).

The terminal summary at the end repeats what only lives in ``extra_info``.
"""
from __future__ import annotations

import os

import pytest

from _bench_common import (
    BALLTREE_SUBSET, LABELS, SCALAR_CALLS, SUMMARY, PykdtreeWorker, batch_query, build,
    build_fn, load, scalar_latency_ns,
)
import memory

CITY = pytest.param("city", id="city")
NATION = pytest.param("nation", id="nation", marks=pytest.mark.nation)
EVENTS = [CITY, NATION]


def _cases(events, *axes):
    """pytest params for the cartesian product of events and other axes, the
    nation mark carried over."""
    out = [()]
    for axis in axes:
        out = [c + (a,) for c in out for a in axis]
    params = []
    for ev in events:
        for c in out:
            parts = [ev.id] + [f"k{x}" if isinstance(x, int) else x for x in c]
            params.append(pytest.param(ev.values[0], *c, marks=ev.marks, id="-".join(parts)))
    return params


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def trees():
    """Built indexes, one per (peer, event), shared by the query benchmarks."""
    cache = {}

    def get(peer, event):
        if (peer, event) not in cache:
            cache[peer, event] = build(peer, load(event))
        return cache[peer, event]
    return get


@pytest.fixture(scope="session")
def pykdtree_child():
    """pykdtree in a child process, one per (event, OMP_NUM_THREADS)."""
    workers = {}

    def get(event, threads):
        if (event, threads) not in workers:
            workers[event, threads] = PykdtreeWorker(event, threads)
        return workers[event, threads]
    yield get
    for w in workers.values():
        w.close()


@pytest.fixture(scope="session")
def memory_data(tmp_path_factory):
    return tmp_path_factory.mktemp("lbsdispatch-memory")


def _per_order(benchmark, n_orders):
    """Put ns/order into extra_info once the benchmark has run."""
    if benchmark.stats is None:  # --benchmark-disable: ran once, untimed
        return
    st = benchmark.stats.stats
    benchmark.extra_info["n_orders"] = n_orders
    benchmark.extra_info["min_ns_per_order"] = round(st.min / n_orders * 1e9, 1)
    benchmark.extra_info["median_ns_per_order"] = round(st.median / n_orders * 1e9, 1)


# ---------------------------------------------------------------- benchmarks
@pytest.mark.parametrize("event,peer", _cases(EVENTS, ["ours", "ckdtree", "pykdtree", "balltree"]))
def test_build(benchmark, event, peer):
    d = load(event)
    benchmark.group = f"{event}: build ({d.n_leaders:,} leaders)"
    benchmark.extra_info.update(peer=LABELS[peer], n_leaders=d.n_leaders,
                                input="lat/lon degrees (conversion timed)" if peer == "ours"
                                else "ready-made radians" if peer == "balltree"
                                else "ready-made unit vectors")
    benchmark(build_fn(peer, d))


def _batch_cases():
    cases = []
    for ev in EVENTS:
        # pykdtree_omp1: pykdtree in a child process with OMP_NUM_THREADS=1
        peers = ["ours", "ckdtree", "pykdtree_omp1"] + (["balltree"] if ev.id == "city" else [])
        cases += _cases([ev], [1, 5], peers)
    return cases


@pytest.mark.parametrize("event,k,peer", _batch_cases())
def test_batch_one_thread(benchmark, event, k, peer, trees, pykdtree_child):
    d = load(event)
    benchmark.group = f"{event}: batch k={k}, 1 thread ({d.n_orders:,} orders)"
    benchmark.extra_info.update(peer=LABELS[peer.split("_")[0]], k=k, threads=1)
    if peer == "pykdtree_omp1":
        child = pykdtree_child(event, 1)
        op = f"q{k}"
        child.run(op)  # warm
        benchmark(child.run, op)
        self_s = child.time(op, repeat=5)
        rt = child.roundtrip_s()
        benchmark.extra_info.update(
            how="child process with OMP_NUM_THREADS=1; timed call = pipe round trip + query",
            child_openmp_threads=child.ready.get("openmp_threads"),
            child_self_timed_min_s=self_s, child_ns_per_order=round(self_s / d.n_orders * 1e9, 1),
            ipc_roundtrip_s=rt)
        SUMMARY.append(f"{event} k={k} pykdtree OMP_NUM_THREADS=1 (child, self-timed min): "
                      f"{self_s * 1e3:.2f} ms = {self_s / d.n_orders * 1e9:.0f} ns/order "
                      f"(IPC round trip {rt * 1e6:.0f} us)")
    else:
        tree = trees(peer, event)
        benchmark.extra_info["input"] = ("lat/lon degrees (conversion timed)" if peer == "ours"
                                         else "ready-made radians" if peer == "balltree"
                                         else "ready-made unit vectors")
        benchmark(batch_query(peer, tree, d, k=k, workers=1))
    _per_order(benchmark, d.n_orders)


@pytest.mark.parametrize("event,k,peer", [
    pytest.param("nation", k, peer, marks=pytest.mark.nation, id=f"nation-k{k}-{peer}")
    for k in (1, 5) for peer in ("ours", "ckdtree", "balltree")])
def test_batch_one_thread_subset(benchmark, event, k, peer, trees):
    """Nation event, BallTree's groups: everyone on the same 20,000 orders."""
    full = load(event)
    d = full.orders(BALLTREE_SUBSET)
    benchmark.group = (f"{event}: batch k={k}, 1 thread, {d.n_orders:,}-order subset "
                       f"(BallTree is too slow for all {full.n_orders:,})")
    benchmark.extra_info.update(peer=LABELS[peer], k=k, threads=1,
                                subset=f"first {d.n_orders} of {full.n_orders} orders")
    benchmark(batch_query(peer, trees(peer, event), d, k=k, workers=1))
    _per_order(benchmark, d.n_orders)


@pytest.mark.parametrize("event,peer", _cases(EVENTS, ["ours", "ckdtree", "pykdtree"]))
def test_batch_all_cores(benchmark, event, peer, trees, pykdtree_child):
    d = load(event)
    ncpu = os.cpu_count()
    benchmark.group = f"{event}: batch k=1, all cores ({ncpu} CPUs, {d.n_orders:,} orders)"
    benchmark.extra_info.update(peer=LABELS[peer], k=1)
    tree = trees(peer, event)
    if peer == "pykdtree":
        benchmark.extra_info.update(
            threads="OpenMP default of this process",
            omp_num_threads_env=os.environ.get("OMP_NUM_THREADS"))
        benchmark(batch_query(peer, tree, d, k=1))
        child = pykdtree_child(event, None)
        self_s = child.time("q1", repeat=5)
        benchmark.extra_info.update(child_default_threads_self_timed_min_s=self_s,
                                    child_openmp_threads=child.ready.get("openmp_threads"))
        SUMMARY.append(f"{event} k=1 pykdtree default threads (child, self-timed min): "
                      f"{self_s * 1e3:.2f} ms = {self_s / d.n_orders * 1e9:.0f} ns/order")
    else:
        benchmark.extra_info["workers"] = -1
        benchmark(batch_query(peer, tree, d, k=1, workers=-1))
    _per_order(benchmark, d.n_orders)


@pytest.mark.parametrize("event,peer", _cases(EVENTS, ["ours", "ckdtree", "pykdtree"]))
def test_scalar(benchmark, event, peer, trees, pykdtree_child):
    d = load(event)
    tree = trees(peer, event)
    benchmark.group = f"{event}: scalar single-point query (one point repeated)"
    lat, lon = float(d.order_lat[0]), float(d.order_lon[0])
    if peer == "ours":
        args = (lat, lon)
    elif peer == "ckdtree":
        args = (d.order_xyz[0],)
    else:
        args = (d.order_xyz[:1],)
    benchmark.extra_info.update(peer=LABELS[peer], call="index.query(lat, lon)" if peer == "ours"
                                else "tree.query(xyz[i])" if peer == "ckdtree"
                                else "tree.query(xyz[i:i+1])")
    benchmark(tree.query, *args)
    lat_ns = scalar_latency_ns(peer, tree, d, SCALAR_CALLS[peer])
    benchmark.extra_info["per_call_distinct_points"] = lat_ns
    SUMMARY.append(f"{event} scalar {peer}: median {lat_ns['median_ns']:,.0f} ns, "
                  f"p99 {lat_ns['p99_ns']:,.0f} ns over {lat_ns['calls']:,} distinct points "
                  f"(timer overhead {lat_ns['timer_overhead_ns']:.0f} ns included)")
    if peer == "pykdtree":
        one = pykdtree_child(event, 1).scalar(SCALAR_CALLS[peer])
        benchmark.extra_info["per_call_distinct_points_omp1_child"] = one
        SUMMARY.append(f"{event} scalar pykdtree OMP_NUM_THREADS=1 (child): median "
                      f"{one['median_ns']:,.0f} ns, p99 {one['p99_ns']:,.0f} ns")


@pytest.mark.parametrize("event,peer", _cases(EVENTS, list(memory.MEMORY_PEERS)))
def test_build_and_batch_memory(benchmark, event, peer, memory_data):
    d = load(event)
    benchmark.group = f"{event}: build + k=1 batch (peak memory of a fresh process in extra_info)"
    benchmark.extra_info["peer"] = LABELS[peer]
    build_it = build_fn(peer, d)

    def build_and_query():
        return batch_query(peer, build_it(), d, k=1, workers=1)()
    benchmark(build_and_query)
    mem = memory.peak_memory(peer, event, memory_data)
    benchmark.extra_info["memory"] = mem
    SUMMARY.append(f"{event} memory {peer}: peak {mem['peak_kib'] / 1024:.2f} MiB "
                  f"(build alone {mem['peak_build_kib'] / 1024:.2f} MiB, "
                  f"held after {mem['retained_kib'] / 1024:.2f} MiB)")
