"""The island path of ``assign_batch`` (``_islands.pxi``) against arrival order.

Large batches on large events are served island by island (and by several
threads); the answers must be exactly those of serving the orders one after
another.  Here the island path is forced onto small events with tiny islands
and tiny blocks, so conflicts (an order reading leaders of another group, a
customer's orders in two groups, nothing in range with room) happen often and
their repair is what is tested; the same batch served in arrival order (the
island path off) is the oracle, itself checked against the brute-force
reference in test_dispatch.py.
"""
from __future__ import annotations

import contextlib
import math
import random

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

from lbsdispatch import Dispatcher, Outcome, Rules, synth
from lbsdispatch import _kdtree

OFF = dict(min_leaders=10**9)          # island path off: arrival order


@contextlib.contextmanager
def island_params(**kw):
    old = _kdtree._set_island_params(**kw)
    try:
        yield
    finally:
        _kdtree._set_island_params(**old)


def forced(link_m, block, workers):
    return dict(min_leaders=0, min_rows=0, link_m=link_m, block=block,
                min_rows_per_worker=1, workers=workers)


# -- generated events: towns (clusters of leaders) close enough to interact ----
@st.composite
def towns_events(draw):
    """Leaders in a few towns 0.5-20 km apart (so islands form at a link of a
    few hundred metres to a few km), orders around them and between them,
    tight capacities so orders spill across towns; optional radii, tie
    tolerance, inactive leaders, customers, chosen leaders and bad rows."""
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rnd = random.Random(seed)
    n_towns = draw(st.integers(1, 6), label="towns")
    base_lat = draw(st.sampled_from([30.25, -33.9, 64.1, 0.0, 89.9, -12.5]), label="lat")
    base_lon = draw(st.sampled_from([120.15, 151.2, -21.9, 179.99, -179.99]), label="lon")
    n_leaders = draw(st.integers(1, 60), label="n_leaders")
    n_orders = draw(st.integers(0, 150), label="n_orders")
    cap_ratio = draw(st.sampled_from([0.5, 1.0, 1.5, 5.0]), label="capacity ratio")
    towns = [(base_lat + rnd.uniform(-0.1, 0.1) * (base_lat < 89),
              base_lon + rnd.uniform(-0.15, 0.15)) for _ in range(n_towns)]

    def near(c, spread):
        la = max(-90.0, min(90.0, c[0] + rnd.gauss(0, spread)))
        lo = c[1] + rnd.gauss(0, spread)
        lo = lo - 360.0 if lo > 180.0 else lo + 360.0 if lo < -180.0 else lo
        return round(la, 6), round(lo, 6)

    pts = [near(rnd.choice(towns), 0.004) for _ in range(n_leaders)]
    if n_leaders > 2 and rnd.random() < 0.5:
        pts[1] = pts[0]                          # an exact duplicate: ties
    total = max(1, int(cap_ratio * n_orders))
    cap = np.bincount([rnd.randrange(n_leaders) for _ in range(total)],
                      minlength=n_leaders).tolist()
    table = dict(leader_ids=[f"L{i:03d}" for i in range(n_leaders)],
                 lat=[p[0] for p in pts], lon=[p[1] for p in pts], capacity=cap)
    if rnd.random() < 0.3:
        table["active"] = [rnd.random() > 0.15 for _ in range(n_leaders)]
    if rnd.random() < 0.3:
        table["radius_m"] = [rnd.choice([math.inf, 300.0, 2000.0, 20000.0])
                             for _ in range(n_leaders)]
    rules = Rules(max_distance_m=draw(st.sampled_from([None, None, 1500.0, 8000.0]),
                                      label="max_distance_m"),
                  tie_tolerance_m=draw(st.sampled_from([0.0, 0.0, 50.0]), label="tie_tol"))
    orders = [near(rnd.choice(towns), rnd.choice([0.002, 0.01, 0.05]))
              for _ in range(n_orders)]
    lat = [o[0] for o in orders]
    lon = [o[1] for o in orders]
    for i in range(n_orders):
        if rnd.random() < 0.03:
            lat[i] = math.nan                    # an INVALID row in the middle
    kw = {}
    if rnd.random() < 0.5:                       # customers, some with several orders
        kw["customer_ids"] = [rnd.choice([None, "c1", "c2", "c3", f"x{i}"])
                              for i in range(n_orders)]
    if rnd.random() < 0.4:
        kw["chosen_leaders"] = [rnd.choice(table["leader_ids"]) if rnd.random() < 0.2
                                else None for _ in range(n_orders)]
    bindings = ({"c1": table["leader_ids"][0], "c2": table["leader_ids"][-1]}
                if rnd.random() < 0.5 else None)
    return dict(table=table, rules=rules, lat=lat, lon=lon, kw=kw, bindings=bindings)


def dispatch(ev, params, workers=1):
    with island_params(**params):
        d = Dispatcher(**ev["table"], rules=ev["rules"], bindings=ev["bindings"],
                       clock=lambda: 0.0)
        res = d.assign_batch(ev["lat"], ev["lon"], workers=workers, **ev["kw"])
    return d, res


def assert_same(a, b):
    (da, ra), (db, rb) = a, b
    assert ra.leader_id.tolist() == rb.leader_id.tolist()
    assert ra.distance_m.tolist() == rb.distance_m.tolist()
    assert ra.outcome.tolist() == rb.outcome.tolist()
    assert ra.refusal.tolist() == rb.refusal.tolist()
    assert ra.n_full_nearer.tolist() == rb.n_full_nearer.tolist()
    assert da.loads().tolist() == db.loads().tolist()
    assert da.to_dict() == db.to_dict()


@settings(deadline=None)
@given(ev=towns_events(), link_m=st.sampled_from([200.0, 800.0, 3000.0]),
       block=st.sampled_from([1, 3, 16, 1000]), workers=st.sampled_from([1, 2]))
def test_island_path_equals_arrival_order(ev, link_m, block, workers):
    _kdtree._island_stats(reset=True)
    got = dispatch(ev, forced(link_m, block, workers), workers)
    stats = _kdtree._island_stats()
    event(f"island conflicts: {min(stats['conflicts'], 3)}")
    assert_same(got, dispatch(ev, OFF))


def _two_towns(cap):
    """Two towns 3 km apart, four leaders each; every order in the first town,
    which fills up and spills into the second."""
    lat = [30.0, 30.0005, 30.001, 30.0015, 30.027, 30.0275, 30.028, 30.0285]
    lon = [120.0] * 8
    orders = [30.0 + 0.0001 * (i % 17) for i in range(60)]
    return (dict(leader_ids=list(range(8)), lat=lat, lon=lon, capacity=[cap] * 8),
            orders, [120.0001] * len(orders))


@pytest.mark.parametrize("workers", [1, 2])
def test_spills_across_islands_are_repaired(workers):
    table, la, lo = _two_towns(cap=5)
    with island_params(**forced(1000.0, 1000, workers)):
        d = Dispatcher(**table)
        assert len(set(d._core._leader_islands().tolist())) == 2
        _kdtree._island_stats(reset=True)
        res = d.assign_batch(la, lo, workers=workers)
        stats = _kdtree._island_stats()
    # the first town's 20 slots, then the second town's 20, then nothing
    assert stats["conflicts"] > 0 and stats["served_again"] > 0
    with island_params(**OFF):
        ref = Dispatcher(**table).assign_batch(la, lo)
    assert res.leader_id.tolist() == ref.leader_id.tolist()
    assert res.n_full_nearer.tolist() == ref.n_full_nearer.tolist()
    assert (res.leader_id[:20] < 4).all() and (res.leader_id[20:40] >= 4).all()
    assert (res.leader_id[40:] == -1).all()


def test_all_full_gives_up_on_islands_and_stays_exact():
    table, la, lo = _two_towns(cap=1)
    with island_params(**forced(1000.0, 7, 2)):
        _kdtree._island_stats(reset=True)
        d = Dispatcher(**table)
        res = d.assign_batch(la, lo, workers=2)
        assert _kdtree._island_stats()["gave_up"] >= 1      # "nothing anywhere" is global
    with island_params(**OFF):
        ref = Dispatcher(**table).assign_batch(la, lo)
    assert res.outcome.tolist() == ref.outcome.tolist()
    assert res.leader_id.tolist() == ref.leader_id.tolist()


def test_customer_across_islands_follows_its_earlier_order():
    """The same customer orders in both towns: the second order sees the
    binding the first one left, whichever island each is served on."""
    table, _, _ = _two_towns(cap=3)
    la = [30.0001, 30.0276, 30.0002, 30.0277, 30.0003]
    lo = [120.0001] * 5
    custs = ["a", "a", "b", "a", "b"]
    for workers in (1, 2):
        with island_params(**forced(1000.0, 1000, workers)):
            got = Dispatcher(**table).assign_batch(la, lo, customer_ids=custs, workers=workers)
        with island_params(**OFF):
            ref = Dispatcher(**table).assign_batch(la, lo, customer_ids=custs)
        assert got.leader_id.tolist() == ref.leader_id.tolist()
        assert got.outcome.tolist() == ref.outcome.tolist()


def test_one_island_and_no_leaders_fall_back_to_arrival_order():
    with island_params(**forced(50_000.0, 4, 2)):
        _kdtree._island_stats(reset=True)
        d = Dispatcher(["a", "b"], [30.0, 30.01], [120.0, 120.0], capacity=[1, 1])
        res = d.assign_batch([30.0, 30.0, 30.0], [120.0, 120.0, 120.0], workers=2)
        assert res.leader_id.tolist() == ["a", "b", None]
        assert _kdtree._island_stats()["blocks"] == 0     # one island: nothing to gain
        empty = Dispatcher([], [], [])
        res = empty.assign_batch([30.0, math.nan], [120.0, 120.0], workers=2)
        assert res.outcome.tolist() == [Outcome.OUT_OF_RANGE, Outcome.INVALID]


def test_default_thresholds_use_islands_on_a_large_event():
    """A nation-like event above the default thresholds takes the island path by
    default, with the answers of arrival order, on one thread and on two."""
    ev = synth.nation_event(n_leaders=20_000, n_orders=40_000, n_cities=40, seed=3)
    args = (ev.leader_ids, ev.leader_lat, ev.leader_lon)
    with island_params(**OFF):
        ref = Dispatcher(*args, capacity=ev.capacity).assign_batch(ev.order_lat, ev.order_lon)
    for workers in (1, 2, -1, 10**6):      # a huge count: the machine's cores
        _kdtree._island_stats(reset=True)
        d = Dispatcher(*args, capacity=ev.capacity)
        res = d.assign_batch(ev.order_lat, ev.order_lon, workers=workers)
        assert _kdtree._island_stats()["blocks"] > 0
        assert np.array_equal(res.leader_index, ref.leader_index)
        assert np.array_equal(res.distance_m, ref.distance_m)
        assert np.array_equal(res.n_full_nearer, ref.n_full_nearer)
        assert np.array_equal(res.outcome, ref.outcome)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None])
def test_bad_workers_is_a_clear_error(bad):
    d = Dispatcher(["a"], [30.0], [120.0])
    with pytest.raises(ValueError, match="workers"):
        d.assign_batch([30.0], [120.0], workers=bad)


@pytest.mark.parametrize("ratio, rules, customers", [
    (0.6, Rules(), False),                                  # ALL_FULL late: gives up
    (1.0, Rules(max_distance_m=3000.0), True),              # OUT_OF_RANGE, bindings
    (1.15, Rules(tie_tolerance_m=30.0), True),              # ties by load across a tolerance
    (3.0, Rules(tie_break=("priority", "id")), False),
])
def test_threads_on_a_large_event_equal_arrival_order(ratio, rules, customers):
    """Real thread counts and block sizes (the default thresholds) on a nation-like
    event, with the rules that widen what an order reads."""
    ev = synth.nation_event(n_leaders=20_000, n_orders=60_000, n_cities=30, seed=11,
                            capacity_ratio=ratio)
    rng = np.random.default_rng(5)
    kw = {}
    if customers:                       # a few thousand customers, several orders each
        kw["customer_ids"] = rng.integers(0, 5_000, ev.n_orders).astype(str).astype(object)
    args = dict(leader_ids=ev.leader_ids, lat=ev.leader_lat, lon=ev.leader_lon,
                capacity=ev.capacity, priority=ev.priority, rules=rules, clock=lambda: 0.0)
    with island_params(**OFF):
        a = Dispatcher(**args)
        ref = a.assign_batch(ev.order_lat, ev.order_lon, **kw)
    for workers in (1, 2):
        _kdtree._island_stats(reset=True)
        b = Dispatcher(**args)
        res = b.assign_batch(ev.order_lat, ev.order_lon, workers=workers, **kw)
        assert _kdtree._island_stats()["blocks"] > 0
        assert_same((b, res), (a, ref))
