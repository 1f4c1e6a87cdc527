"""``Dispatcher(crs=...)``: a dispatcher fed GCJ-02, BD-09 or projected points answers
what a WGS-84 dispatcher answers for the same points converted first."""
import pickle

import numpy as np
import pytest

from lbsdispatch import Dispatcher, Outcome, Rules, synth
from lbsdispatch.geo import transform


@pytest.fixture(scope="module")
def ev():
    return synth.city_event(n_leaders=60, n_orders=800, capacity_ratio=1.0, seed=9)


def _pair(ev, crs, **kw):
    plain = Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                       rules=Rules(max_distance_m=4000), **kw)
    a, b = transform(ev.leader_lat, ev.leader_lon, "wgs84", crs)
    other = Dispatcher(ev.leader_ids, a, b, capacity=ev.capacity,
                       rules=Rules(max_distance_m=4000), crs=crs, **kw)
    return plain, other


def _rows(res):
    return list(zip(res.leader_id.tolist(), res.outcome.tolist()))


@pytest.mark.parametrize("crs", ["gcj02", "bd09", "EPSG:4547"])
def test_batch_single_and_checkout_equal_converting_first(ev, crs):
    plain, other = _pair(ev, crs)
    qa, qb = transform(ev.order_lat, ev.order_lon, "wgs84", crs)
    r0 = plain.assign_batch(ev.order_lat[:600], ev.order_lon[:600])
    r1 = other.assign_batch(qa[:600], qb[:600])
    assert _rows(r0) == _rows(r1)
    assert np.allclose(r0.distance_m, r1.distance_m, atol=1e-3, rtol=0)
    for i in range(600, 650):
        x = plain.assign(ev.order_lat[i], ev.order_lon[i])
        y = other.assign(float(qa[i]), float(qb[i]))
        assert (x.leader_id, x.outcome) == (y.leader_id, y.outcome)
    s0 = plain.suggest(ev.order_lat[700], ev.order_lon[700], k=3)
    s1 = other.suggest(float(qa[700]), float(qb[700]), k=3)
    assert [i for i, _ in s0] == [i for i, _ in s1]
    assert plain.loads().tolist() == other.loads().tolist()


def test_leaders_added_and_moved_in_the_same_system(ev):
    plain, other = _pair(ev, "gcj02")
    new_lat, new_lon = [30.30, 30.31], [120.20, 120.21]
    ga, gb = transform(new_lat, new_lon, "wgs84", "gcj02")
    plain.add_leaders([9001, 9002], new_lat, new_lon, capacity=[5, 5])
    other.add_leaders([9001, 9002], ga, gb, capacity=[5, 5])
    plain.move_leader(9001, 30.32, 120.22)
    other.move_leader(9001, *transform(30.32, 120.22, "wgs84", "gcj02"))
    assert np.allclose(plain.index.lat, other.index.lat, atol=1e-9)
    assert np.allclose(plain.index.lon, other.index.lon, atol=1e-9)


def test_bad_rows_stay_rows(ev):
    _, other = _pair(ev, "gcj02")
    qa, qb = transform(ev.order_lat[:4], ev.order_lon[:4], "wgs84", "gcj02")
    lat = np.array([qa[0], np.nan, 95.0, qa[3]])
    lon = np.array([qb[0], qb[1], qb[2], 200.0])
    res = other.assign_batch(lat, lon)
    assert res.outcome[0] != Outcome.INVALID
    assert res.outcome[1:].tolist() == [Outcome.INVALID] * 3
    assert res.reason[1] == "invalid: lat/lon not finite"
    assert res.reason[2] == "invalid: lat outside [-90, 90]"
    assert res.reason[3] == "invalid: lon outside [-180, 180]"
    assert other.assign(float("nan"), 120.0).outcome == Outcome.INVALID
    with pytest.raises(ValueError, match="lat"):
        other.suggest(95.0, 120.0)


def test_projected_points_are_not_taken_for_degrees(ev):
    """Northings of millions of metres are valid in a Gauss-Kruger zone."""
    _, other = _pair(ev, "EPSG:4547")
    n, e = transform(ev.order_lat[:5], ev.order_lon[:5], "wgs84", "EPSG:4547")
    assert n.min() > 1e6
    res = other.assign_batch(n, e)
    assert (res.outcome != Outcome.INVALID).all()


def test_crs_is_saved_pickled_and_stored(ev, tmp_path):
    _, other = _pair(ev, "gcj02")
    back = pickle.loads(pickle.dumps(other))
    assert back.crs == "gcj02"
    assert np.array_equal(back.index.lat, other.index.lat)
    a, b = transform(ev.leader_lat, ev.leader_lon, "wgs84", "gcj02")
    d = Dispatcher(ev.leader_ids, a, b, capacity=ev.capacity, crs="GCJ-02",
                   store=str(tmp_path / "e.sqlite"))
    d.close()
    again = Dispatcher.open(tmp_path / "e.sqlite")
    assert again.crs == "gcj02"
    assert np.allclose(again.index.lat, ev.leader_lat, atol=1e-8)
    with pytest.raises(ValueError, match="crs"):
        Dispatcher([1], [30.0], [120.0], crs="mars")


def test_keep_orders_must_be_a_bool():
    with pytest.raises(ValueError, match="keep_orders"):
        Dispatcher([1], [30.0], [120.0], keep_orders="no")
