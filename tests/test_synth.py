"""Synthetic events: reproducible, well-formed, valid coordinates."""
import dataclasses

import numpy as np
import pytest

from lbsdispatch import LeaderIndex, synth

import oracle

HANGZHOU = (30.2741, 120.1551)
FIELDS = [f.name for f in dataclasses.fields(synth.Event)]
LEADER_FIELDS = ("leader_ids", "leader_lat", "leader_lon", "capacity", "priority")
ORDER_FIELDS = ("order_ids", "order_lat", "order_lon", "customer_ids")

# nation_event kept small so the suite stays fast
MAKERS = {
    "city": lambda **kw: synth.city_event(**{"n_leaders": 800, "n_orders": 20_000, **kw}),
    "nation": lambda **kw: synth.nation_event(**{"n_leaders": 2000, "n_orders": 20_000, **kw}),
}


@pytest.fixture(scope="module", params=sorted(MAKERS))
def kind(request):
    return request.param


def assert_events_equal(a, b):
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_fields_are_the_documented_ones():
    assert FIELDS == ["leader_ids", "leader_lat", "leader_lon", "capacity", "priority",
                      "order_ids", "order_lat", "order_lon", "customer_ids"]


def test_defaults_are_the_city_event_of_the_mission():
    ev = synth.city_event()
    assert (ev.n_leaders, ev.n_orders) == (800, 20_000)
    assert_events_equal(ev, synth.city_event(n_leaders=800, n_orders=20_000,
                                             capacity_ratio=1.15, seed=0))


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_same_seed_same_event(kind, seed):
    a = MAKERS[kind](seed=seed)
    b = MAKERS[kind](seed=seed)
    assert_events_equal(a, b)


def test_global_random_state_is_not_used(kind):
    np.random.seed(1)
    a = MAKERS[kind](seed=3)
    np.random.seed(2)
    np.random.random(100)
    b = MAKERS[kind](seed=3)
    assert_events_equal(a, b)


def test_different_seed_different_event(kind):
    a = MAKERS[kind](seed=0)
    b = MAKERS[kind](seed=1)
    for name in ("leader_lat", "leader_lon", "order_lat", "order_lon", "capacity"):
        assert not np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("n_leaders, n_orders", [(800, 20_000), (37, 1001), (1, 10), (5, 0)])
def test_shapes_and_dtypes(kind, n_leaders, n_orders):
    ev = MAKERS[kind](n_leaders=n_leaders, n_orders=n_orders)
    assert ev.n_leaders == n_leaders and ev.n_orders == n_orders
    for name in LEADER_FIELDS:
        assert getattr(ev, name).shape == (n_leaders,), name
    for name in ORDER_FIELDS:
        assert getattr(ev, name).shape == (n_orders,), name
    for name in ("leader_ids", "capacity", "priority", "order_ids", "customer_ids"):
        assert getattr(ev, name).dtype == np.int64, name
    for name in ("leader_lat", "leader_lon", "order_lat", "order_lon"):
        assert getattr(ev, name).dtype == np.float64, name


def test_event_is_frozen():
    ev = synth.city_event(n_leaders=3, n_orders=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.capacity = np.zeros(3, dtype=np.int64)


def assert_valid_coordinates(lat, lon):
    assert np.isfinite(lat).all() and np.isfinite(lon).all()
    assert lat.min() >= -90.0 and lat.max() <= 90.0
    assert lon.min() >= -180.0 and lon.max() <= 180.0


def test_coordinates_are_valid_and_index(kind):
    ev = MAKERS[kind]()
    assert_valid_coordinates(ev.leader_lat, ev.leader_lon)
    assert_valid_coordinates(ev.order_lat, ev.order_lon)
    # and they are accepted as they are by the index
    ix = LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids)
    d, i = ix.query(ev.order_lat, ev.order_lon)
    assert np.isfinite(d).all() and (i < ix.n_leaders).all()


@pytest.mark.parametrize("center", [(89.9, 10.0), (90.0, 0.0), (0.0, 179.99), (-89.99, -179.99),
                                    (-33.87, -180.0)])
def test_city_coordinates_valid_near_poles_and_antimeridian(center):
    ev = synth.city_event(n_leaders=200, n_orders=2000, center=center, seed=4)
    assert_valid_coordinates(ev.leader_lat, ev.leader_lon)
    assert_valid_coordinates(ev.order_lat, ev.order_lon)
    # still one city: every leader within a few city radii of the centre
    d = oracle.great_circle_m(center[0], center[1], ev.leader_lat, ev.leader_lon)
    assert d.max() < 200_000.0


def test_city_is_around_its_centre():
    ev = synth.city_event(seed=2)
    d_leaders = oracle.great_circle_m(*HANGZHOU, ev.leader_lat, ev.leader_lon)
    d_orders = oracle.great_circle_m(*HANGZHOU, ev.order_lat, ev.order_lon)
    assert np.median(d_leaders) < 25_000.0
    assert d_leaders.max() < 150_000.0
    assert np.quantile(d_orders, 0.97) < 60_000.0
    assert d_orders.max() < 400_000.0


def test_nation_is_in_china():
    ev = MAKERS["nation"](seed=5)
    for lat, lon in ((ev.leader_lat, ev.leader_lon), (ev.order_lat, ev.order_lon)):
        assert 15.0 < lat.min() and lat.max() < 48.0
        assert 95.0 < lon.min() and lon.max() < 130.0


def test_orders_are_near_leaders(kind):
    """Most orders come from around a leader's compound (a few hundred metres)."""
    ev = MAKERS[kind](seed=6)
    ix = LeaderIndex(ev.leader_lat, ev.leader_lon)
    d, _ = ix.query(ev.order_lat, ev.order_lon)
    assert np.median(d) < 1_000.0


@pytest.mark.parametrize("ratio", [0.5, 1.0, 1.15, 2.0])
def test_capacity_follows_the_ratio(kind, ratio):
    ev = MAKERS[kind](capacity_ratio=ratio, seed=7)
    assert (ev.capacity >= 1).all()
    target = ratio * ev.n_orders
    assert abs(int(ev.capacity.sum()) - target) <= max(1.0, 0.01 * target)


def test_ids_priority_customers(kind):
    ev = MAKERS[kind](seed=9)
    np.testing.assert_array_equal(np.sort(ev.leader_ids), np.arange(ev.n_leaders))
    np.testing.assert_array_equal(np.sort(ev.order_ids), np.arange(ev.n_orders))
    assert set(np.unique(ev.priority).tolist()) <= {0, 1, 2}
    assert (ev.priority == 0).mean() > 0.8
    assert ev.customer_ids.min() >= 0 and ev.customer_ids.max() < ev.n_orders
    repeat = 1.0 - len(np.unique(ev.customer_ids)) / ev.n_orders
    assert 0.05 < repeat < 0.3   # about 15% of orders from buyers who already ordered


@pytest.mark.parametrize("maker, kwargs", [
    (synth.city_event, {"n_leaders": 0}),
    (synth.city_event, {"n_orders": -1}),
    (synth.nation_event, {"n_leaders": 0, "n_orders": 10}),
    (synth.nation_event, {"n_leaders": 10, "n_orders": -5}),
    (synth.nation_event, {"n_leaders": 10, "n_orders": 10, "n_cities": 0}),
], ids=repr)
def test_bad_sizes(maker, kwargs):
    with pytest.raises(ValueError):
        maker(**kwargs)
