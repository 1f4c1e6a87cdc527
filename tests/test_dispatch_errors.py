"""Bad input: leader tables and rules raise ValueError naming the problem (and the
row); bad orders come back as INVALID rows without stopping the batch; the live
API raises KeyError / ValueError and leaves the state untouched."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from lbsdispatch import Dispatcher, Outcome, Rules

LAT = [0.0, 0.001, 0.002, 0.003, 0.004]
LON = [0.0] * 5
IDS = [1, 7, 3, 4, 5]


def make(**kw):
    args = dict(leader_ids=IDS, lat=LAT, lon=LON)
    args.update(kw)
    return Dispatcher(args.pop("leader_ids"), args.pop("lat"), args.pop("lon"), **args)


def raises(match):
    return pytest.raises(ValueError, match=match)


# -- leader tables --------------------------------------------------------------------------
def test_duplicate_leader_ids():
    with raises(r"ids\[3\] = (np\.int64\()?7\)? duplicates (leader_)?ids\[1\]"):
        make(leader_ids=[1, 7, 3, 7, 5])


def test_duplicate_str_leader_ids():
    with raises(r"ids\[2\] = (np\.str_\()?'b'\)? duplicates (leader_)?ids\[1\]"):
        make(leader_ids=["a", "b", "b", "c", "d"])


def test_negative_capacity():
    with raises(r"^capacity\[2\] = .*-1.*: must be an integer in \[0, 2147483646\]"):
        make(capacity=[1, 2, -1, 4, 5])


def test_fractional_capacity():
    with raises(r"^capacity\[1\] = .*2\.5.*: must be an integer"):
        make(capacity=[1, 2.5, 1, 1, 1])


def test_capacity_too_large():
    with raises(r"^capacity\[0\] = 2147483647: must be an integer in \[0, 2147483646\]"):
        make(capacity=2**31 - 1)


def test_capacity_not_numbers():
    with raises(r"^capacity must be integers"):
        make(capacity="lots")


def test_nan_lat():
    with raises(r"^lat\[4\] = nan: coordinates must be finite$"):
        make(lat=[0, 0, 0, 0, math.nan])


def test_nan_lon():
    with raises(r"^lon\[2\] = nan: coordinates must be finite$"):
        make(lon=[0, 0, math.nan, 0, 0])


def test_infinite_lon():
    with raises(r"^lon\[0\] = inf: coordinates must be finite$"):
        make(lon=[math.inf, 0, 0, 0, 0])


def test_lat_out_of_range():
    with raises(r"^lat\[1\] = 90\.5 is outside \[-90, 90\]$"):
        make(lat=[0, 90.5, 0, 0, 0])


def test_lon_out_of_range():
    with raises(r"^lon\[3\] = -180\.5 is outside \[-180, 180\]$"):
        make(lon=[0, 0, 0, -180.5, 0])


def test_non_numeric_lat():
    with raises(r"^lat must be numbers"):
        make(lat=["north", 0, 0, 0, 0])


def test_negative_radius():
    with raises(r"^radius_m\[0\] = .*-1.*: must be >= 0 \(inf for no limit\)$"):
        make(radius_m=[-1.0, 5, 5, 5, 5])


def test_nan_radius():
    with raises(r"^radius_m\[3\] = .*nan.*: must be >= 0"):
        make(radius_m=[1.0, 5, 5, math.nan, 5])


def test_fractional_priority():
    with raises(r"^priority\[1\] = .*1\.5.*: must be an integer"):
        make(priority=[0, 1.5, 0, 0, 0])


def test_active_not_boolean():
    with raises(r"^active\[1\] = .*2.*: must be True or False$"):
        make(active=[1, 2, 1, 1, 1])


def test_lat_lon_different_lengths():
    with raises(r"^lat and lon have different lengths \(5 and 4\)$"):
        make(lon=[0, 0, 0, 0])


def test_ids_length_differs_from_coordinates():
    with raises(r"ids must be a 1-D sequence of 5 ids, got shape \(4,\)"):
        make(leader_ids=[1, 2, 3, 4])


@pytest.mark.parametrize("column", ["capacity", "radius_m", "priority", "active"])
def test_column_wrong_length(column):
    value = {"capacity": [1, 2], "radius_m": [1.0, 2.0], "priority": [1, 2],
             "active": [True, False]}[column]
    with raises(rf"^{column} must have one value per leader \(5\), got shape \(2,\)$"):
        make(**{column: value})


def test_float_leader_ids():
    with raises(r"^leader_ids must be integers or strings, got dtype float64$"):
        make(leader_ids=[1.0, 2.0, 3.0, 4.0, 5.0])


def test_bool_leader_ids():
    with raises(r"^leader_ids must be integers or strings, got dtype bool$"):
        make(leader_ids=[True, False, True, False, True])


def test_two_dimensional_leader_ids():
    with raises(r"^leader_ids must be a 1-D sequence of ids, got shape \(1, 5\)$"):
        make(leader_ids=[IDS])


def test_mixed_int_and_str_leader_ids_list():
    """[1, 'a', ...] must not silently become the strings '1', 'a', ..."""
    with raises(r"leader_ids\[\d\] = .*: ids must be all integers or all strings"):
        make(leader_ids=[1, "a", 3, 4, 5])


def test_mixed_int_and_str_leader_ids_object_array():
    with raises(r"leader_ids\[\d\] = .*: ids must be all integers or all strings"):
        make(leader_ids=np.array([1, "a", 3, 4, 5], dtype=object))


def test_rules_not_a_rules_object():
    with raises(r"^rules must be a Rules, got dict$"):
        make(rules={"max_distance_m": 10})


# -- rules ----------------------------------------------------------------------------------
def test_rules_negative_max_distance():
    with raises(r"^Rules\.max_distance_m must be >= 0, got -1$"):
        Rules(max_distance_m=-1)


def test_rules_nan_max_distance():
    with raises(r"^Rules\.max_distance_m must be >= 0, got nan$"):
        Rules(max_distance_m=math.nan)


def test_rules_max_distance_not_a_number():
    with raises(r"^Rules\.max_distance_m must be a number, got 'far'$"):
        Rules(max_distance_m="far")


def test_rules_max_distance_bool():
    with raises(r"^Rules\.max_distance_m must be a number, got True$"):
        Rules(max_distance_m=True)


def test_rules_negative_tie_tolerance():
    with raises(r"^Rules\.tie_tolerance_m must be finite and >= 0, got -0\.5$"):
        Rules(tie_tolerance_m=-0.5)


def test_rules_infinite_tie_tolerance():
    with raises(r"^Rules\.tie_tolerance_m must be finite and >= 0, got inf$"):
        Rules(tie_tolerance_m=math.inf)


def test_rules_unknown_tie_key():
    with raises(r"^Rules\.tie_break: unknown key 'distance'; use some of "
                r"\('load', 'priority', 'id'\)$"):
        Rules(tie_break=("load", "distance"))


def test_rules_repeated_tie_key():
    with raises(r"^Rules\.tie_break repeats a key: \('priority', 'priority'\)$"):
        Rules(tie_break=("priority", "priority"))


def test_rules_bogus_capacity_mode():
    with raises(r"^Rules\.capacity must be 'strict' or 'unlimited', got 'bogus'$"):
        Rules(capacity="bogus")


def test_rules_normalise_tie_break():
    assert Rules(tie_break="priority").tie_break == ("priority", "id")
    assert Rules(tie_break=("id", "load")).tie_break == ("id",)
    assert Rules().tie_break == ("load", "priority", "id")


# -- invalid orders -------------------------------------------------------------------------
BAD_COORDS = [
    (math.nan, 0.0, "invalid: lat/lon not finite"),
    (0.0, math.nan, "invalid: lat/lon not finite"),
    (math.inf, 0.0, "invalid: lat/lon not finite"),
    (0.0, -math.inf, "invalid: lat/lon not finite"),
    (90.0001, 0.0, "invalid: lat outside [-90, 90]"),
    (-91.0, 0.0, "invalid: lat outside [-90, 90]"),
    (0.0, 180.5, "invalid: lon outside [-180, 180]"),
    (0.0, -200.0, "invalid: lon outside [-180, 180]"),
]


@pytest.mark.parametrize("lat,lon,reason", BAD_COORDS)
def test_batch_bad_coordinates_row_is_invalid_rest_assigned(lat, lon, reason):
    d = make(capacity=1)
    res = d.assign_batch([0.0, lat, 0.0], [0.0, lon, 0.0], order_ids=[10, 11, 12])
    assert len(res) == 3
    assert res.order_id.tolist() == [10, 11, 12]
    assert res.outcome.tolist() == [Outcome.NEAREST, Outcome.INVALID, Outcome.SPILLOVER]
    assert res.reason[1] == reason and res.reason[1].startswith("invalid:")
    assert res.leader_id.tolist() == [1, -1, 7]
    assert res.leader_index[1] == -1 and res.distance_m[1] == math.inf
    assert res.n_full_nearer[1] == 0
    assert res.counts()[Outcome.INVALID] == 1
    assert d.loads().tolist() == [1, 1, 0, 0, 0]
    # the invalid order was not taken: its id can be dispatched later
    assert d.assign(0.0, 0.0, order_id=11).outcome == Outcome.SPILLOVER


@pytest.mark.parametrize("lat,lon,reason", BAD_COORDS)
def test_assign_bad_coordinates_is_invalid_not_raised(lat, lon, reason):
    d = make()
    a = d.assign(lat, lon, order_id=5)
    assert a.outcome == Outcome.INVALID and a.reason == reason
    assert a.leader_id == -1 and a.distance_m == math.inf and a.n_full_nearer == 0
    assert d.loads().sum() == 0


def test_assign_non_numeric_coordinates_is_invalid():
    d = make()
    for lat, lon in [("x", 0.0), (None, 0.0), (0.0, [1, 2])]:
        a = d.assign(lat, lon)
        assert a.outcome == Outcome.INVALID and a.reason.startswith("invalid:")
    res = d.assign_batch(["x", 0.0, None], [0.0, 0.0, 1.0])
    assert res.outcome.tolist() == [Outcome.INVALID, Outcome.NEAREST, Outcome.INVALID]
    assert d.loads().sum() == 1


def test_batch_duplicate_order_ids():
    d = make()
    res = d.assign_batch([0.0] * 4, [0.0] * 4, order_ids=[1, 2, 1, 1])
    assert res.outcome.tolist() == [Outcome.NEAREST] * 2 + [Outcome.INVALID] * 2
    assert res.reason.tolist()[2:] == ["invalid: duplicate order id in this batch"] * 2
    assert d.loads().sum() == 2


def test_batch_str_duplicate_order_ids():
    d = make()
    res = d.assign_batch([0.0] * 3, [0.0] * 3, order_ids=["a", "b", "a"])
    assert res.outcome.tolist() == [Outcome.NEAREST, Outcome.NEAREST, Outcome.INVALID]
    assert res.reason[2] == "invalid: duplicate order id in this batch"


def test_batch_order_id_already_assigned_is_a_repeat():
    """Issue 4: re-running orders is idempotent; an assigned id gives back its
    recorded answer (flagged repeat), takes no slot, even with other coordinates."""
    d = make(capacity=[1, 1, 1, 1, 1])
    first = d.assign_batch([0.0, 0.0], [0.0, 0.0], order_ids=[1, 2])
    d.assign(0.0, 0.0, order_id=3)
    res = d.assign_batch([0.0, 0.0, math.nan, 0.0], [0.0] * 4, order_ids=[4, 2, 3, 5])
    assert res.repeat.tolist() == [False, True, True, False]
    assert res.leader_id.tolist() == [4, 7, 3, 5]
    assert res[1][:5] == first[1][:4] + (first[1].reason + " [repeat: order already "
                                         "assigned, nothing changed]",)
    assert res.outcome.tolist() == [Outcome.SPILLOVER] * 4
    assert d.loads().sum() == 5
    assert res.counts()[Outcome.SPILLOVER] == 4


def test_assign_order_id_already_assigned_is_a_repeat():
    d = make()
    d.assign_batch([0.0], [0.0], order_ids=["x"], customer_ids=["c"])
    a = d.assign(1.0, 0.0, order_id="x")
    assert a.repeat and a.outcome == Outcome.NEAREST and a.leader_id == 1
    assert a.reason == "nearest leader with room [repeat: order already assigned, nothing changed]"
    assert a.order_id == "x" and a.customer_id == "c" and d.loads().sum() == 1


def test_unassigned_order_id_is_dispatched_again():
    d = make(capacity=0)
    assert d.assign(0.0, 0.0, order_id="x").outcome == Outcome.ALL_FULL
    assert d.assign_batch([0.0], [0.0], order_ids=["y"]).outcome.tolist() == [Outcome.ALL_FULL]
    d.set_capacity(1, 1)
    assert d.assign(0.0, 0.0, order_id="x").outcome == Outcome.NEAREST
    d.set_capacity(1, 2)
    assert d.assign_batch([0.0], [0.0], order_ids=["y"]).outcome.tolist() == [Outcome.NEAREST]
    assert d.loads().tolist() == [2, 0, 0, 0, 0]


def test_released_order_id_cannot_be_dispatched_again():
    d = make()
    d.assign(0.0, 0.0, order_id=9)
    d.release(9)
    a = d.assign(0.0, 0.0, order_id=9)
    assert a.outcome == Outcome.INVALID and not a.repeat
    assert a.reason == "invalid: order id was released (cancelled); a new order needs a new id"
    assert d.assign_batch([0.0], [0.0], order_ids=[9]).outcome.tolist() == [Outcome.INVALID]
    assert d.loads().sum() == 0


@pytest.mark.parametrize("bad", ["7", 7.0, True, b"7"])
def test_batch_chosen_leader_wrong_type_for_int_ids(bad):
    d = make()
    res = d.assign_batch([0.0] * 3, [0.0] * 3, chosen_leaders=[7, bad, None])
    assert res.outcome.tolist() == [Outcome.CHOSEN, Outcome.INVALID, Outcome.NEAREST]
    assert res.reason[1] == "invalid: chosen_leader has the wrong type for leader ids"
    assert d.loads().tolist() == [1, 1, 0, 0, 0]


@pytest.mark.parametrize("bad", ["7", 7.0, True])
def test_assign_chosen_leader_wrong_type_for_int_ids(bad):
    d = make()
    a = d.assign(0.0, 0.0, chosen_leader=bad)
    assert a.outcome == Outcome.INVALID
    assert a.reason == "invalid: chosen_leader has the wrong type for leader ids"
    assert d.loads().sum() == 0


def test_chosen_leader_wrong_type_for_str_ids():
    d = make(leader_ids=["a", "b", "c", "d", "e"])
    res = d.assign_batch([0.0] * 3, [0.0] * 3, chosen_leaders=["b", 1, None])
    assert res.outcome.tolist() == [Outcome.CHOSEN, Outcome.INVALID, Outcome.NEAREST]
    assert res.leader_id.tolist() == ["b", None, "a"]
    a = d.assign(0.0, 0.0, chosen_leader=2)
    assert a.outcome == Outcome.INVALID and a.leader_id is None


@pytest.mark.parametrize("lat, lon, chosen, reason", [
    (math.nan, 0.0, None, "invalid: lat/lon not finite"),
    (95.0, 0.0, None, "invalid: lat outside [-90, 90]"),
    (0.0, 190.0, None, "invalid: lon outside [-180, 180]"),
    (0.0, 0.0, "7", "invalid: chosen_leader has the wrong type for leader ids"),
    (math.nan, 0.0, "7", "invalid: lat/lon not finite"),
])
def test_batch_order_id_is_checked_before_the_row(lat, lon, chosen, reason):
    """The id decides first: a live id is a repeat, a released id INVALID
    "released", a second row of an id "duplicate", a missing id "missing",
    whatever the row holds; only an id that may be dispatched has its row
    checked (coordinates, then the chosen leader)."""
    d = make()
    d.assign_batch([0.0, 0.0], [0.0, 0.0], order_ids=[1, 2])
    d.release(2)
    loads = d.loads().tolist()
    res = d.assign_batch([0.0] + [lat] * 5, [0.0] + [lon] * 5,
                         order_ids=[3, 1, 2, 3, None, 4], chosen_leaders=[None] + [chosen] * 5)
    assert res.repeat.tolist() == [False, True, False, False, False, False]
    assert res.reason.tolist() == [
        "nearest leader with room",
        "nearest leader with room [repeat: order already assigned, nothing changed]",
        "invalid: order id was released (cancelled); a new order needs a new id",
        "invalid: duplicate order id in this batch", "invalid: order id missing", reason]
    assert d.loads().tolist() == [loads[0] + 1] + loads[1:]
    assert d.orders_of(1) == [1, 3]
    # one order at a time: the same answers
    a = [d.assign(lat, lon, order_id=o, chosen_leader=chosen) for o in (1, 2, 5)]
    assert [x.reason for x in a] == [res.reason[1], res.reason[2], reason]
    assert [x.repeat for x in a] == [True, False, False]
    assert d.loads().tolist() == [loads[0] + 1] + loads[1:]


def test_every_kind_of_invalid_row_in_one_batch():
    d = make(capacity=2)
    d.assign(0.0, 0.0, order_id=100)
    d.release(100)          # a cancelled id stays unusable (an assigned one is a repeat)
    lat = [0.0, math.nan, 95.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    lon = [0.0, 0.0, 0.0, 190.0, 0.0, 0.0, 0.0, 0.0]
    oids = [1, 2, 3, 4, 1, 100, 7, 8]
    chosen = [None, None, None, None, None, None, "1", None]
    res = d.assign_batch(lat, lon, order_ids=oids, chosen_leaders=chosen)
    assert len(res) == 8 and res.order_id.tolist() == oids
    valid = [0, 7]
    for i in range(8):
        if i in valid:
            assert res.outcome[i] != Outcome.INVALID
        else:
            assert res.outcome[i] == Outcome.INVALID, i
            assert res.reason[i].startswith("invalid:"), i
            assert res.leader_id[i] == -1 and res.distance_m[i] == math.inf
    assert res.counts()[Outcome.INVALID] == 6
    assert res.reason[5] == "invalid: order id was released (cancelled); a new order needs a new id"
    assert d.loads().sum() == 2
    frame = res.to_frame()
    assert frame["outcome"].astype(str).tolist().count("INVALID") == 6


# -- batch shape errors (these do raise: the call itself is malformed) -----------------------
def test_batch_lat_lon_different_lengths():
    with raises(r"^lat and lon have different lengths \(2 and 1\)$"):
        make().assign_batch([0.0, 0.0], [0.0])


def test_batch_order_ids_wrong_length():
    with raises(r"^order_ids must have one id per order \(2\), got shape \(1,\)$"):
        make().assign_batch([0.0, 0.0], [0.0, 0.0], order_ids=[1])


def test_batch_chosen_leaders_wrong_length():
    with raises(r"^chosen_leaders must have one entry per order \(2\), got shape \(3,\)$"):
        make().assign_batch([0.0, 0.0], [0.0, 0.0], chosen_leaders=[1, 2, 3])


def test_batch_customer_ids_wrong_length():
    with raises(r"^customer_ids must have one id per order \(2\), got shape \(1,\)$"):
        make().assign_batch([0.0, 0.0], [0.0, 0.0], customer_ids=[1])


def test_batch_two_dimensional_coordinates():
    with raises(r"^lat and lon must be 1-D arrays"):
        make().assign_batch([[0.0, 0.0]], [[0.0, 0.0]])


# -- live API --------------------------------------------------------------------------------
def state(d):
    return d.to_dict()


def test_release_unknown_order():
    d = make()
    with pytest.raises(KeyError, match="order 42 is not assigned"):
        d.release(42)


def test_release_twice():
    d = make()
    d.assign(0.0, 0.0, order_id="o")
    assert d.release("o") == 1
    with pytest.raises(KeyError, match="order 'o' is not assigned"):
        d.release("o")
    assert d.loads().sum() == 0


def test_release_of_unassigned_order():
    d = make(capacity=0)
    assert d.assign(0.0, 0.0, order_id=1).outcome == Outcome.ALL_FULL
    with pytest.raises(KeyError, match="order 1 is not assigned"):
        d.release(1)
    assert d.assign(math.nan, 0.0, order_id=2).outcome == Outcome.INVALID
    with pytest.raises(KeyError, match="order 2 is not assigned"):
        d.release(2)


@pytest.mark.parametrize("method,args", [
    ("set_active", (99, True)), ("set_capacity", (99, 3)), ("move_leader", (99, 0.0, 0.0)),
    ("orders_of", (99,)), ("reassign_orders_of", (99,)), ("set_active", ("1", False)),
])
def test_unknown_leader_id(method, args):
    d = make()
    d.assign(0.0, 0.0)
    before = state(d)
    with pytest.raises(KeyError, match=rf"unknown leader id {re.escape(repr(args[0]))}"):
        getattr(d, method)(*args)
    assert state(d) == before


def test_set_capacity_negative():
    d = make()
    before = state(d)
    with raises(r"^capacity = -3: must be an integer in \[0, 2147483646\]$"):
        d.set_capacity(1, -3)
    assert state(d) == before


def test_set_capacity_fractional():
    d = make()
    with raises(r"^capacity = 1\.5: must be an integer in \[0, 2147483646\]$"):
        d.set_capacity(1, 1.5)


def test_move_leader_to_nan():
    d = make()
    d.assign(0.0, 0.0)
    before = state(d)
    with raises(r"^lat = nan, lon = 0\.0: lat/lon not finite$"):
        d.move_leader(1, math.nan, 0.0)
    assert state(d) == before
    assert d.assign(0.0, 0.0).leader_id == 1


def test_move_leader_out_of_range():
    d = make()
    with raises(r"^lat = 0\.0, lon = 181\.0: lon outside \[-180, 180\]$"):
        d.move_leader(3, 0.0, 181.0)


def test_add_leaders_existing_id():
    d = make()
    before = state(d)
    with raises(r"^leader_ids\[1\] = (np\.int64\()?7\)? is already a leader$"):
        d.add_leaders([20, 7], [0.0, 0.0], [0.0, 0.0])
    assert state(d) == before


def test_add_leaders_wrong_id_type():
    d = make()
    with raises(r"^new leader_ids must have the same type as the existing ones$"):
        d.add_leaders(["x"], [0.0], [0.0])


def test_add_leaders_duplicate_new_ids_names_the_argument_rows():
    d = make()
    before = state(d)
    with raises(r"^(leader_)?ids\[1\] = (np\.int64\()?20\)? duplicates (leader_)?ids\[0\]$"):
        d.add_leaders([20, 20], [0.0, 0.0], [0.0, 0.0])
    assert state(d) == before


def test_add_leaders_nan_lat_names_the_argument_row():
    d = make()
    before = state(d)
    with raises(r"^lat\[0\] = nan: coordinates must be finite$"):
        d.add_leaders([20], [math.nan], [0.0])
    assert state(d) == before


def test_add_leaders_negative_capacity():
    d = make()
    with raises(r"^capacity\[1\] = .*-2.*: must be an integer"):
        d.add_leaders([20, 21], [0.0, 0.0], [0.0, 0.0], capacity=[1, -2])


def test_add_leaders_length_mismatch():
    d = make()
    with raises(r"different lengths|must be a 1-D sequence"):
        d.add_leaders([20], [0.0, 1.0], [0.0])


def test_suggest_bad_coordinates():
    d = make()
    with raises(r"^lat/lon not finite$"):
        d.suggest(math.nan, 0.0)
    with raises(r"^lat outside \[-90, 90\]$"):
        d.suggest(91.0, 0.0)
    with raises(r"^lon outside \[-180, 180\]$"):
        d.suggest(0.0, -181.0)


@pytest.mark.parametrize("k", [0, -1, 2.0, True, None])
def test_suggest_bad_k(k):
    with raises(r"^k must be an integer >= 1, got "):
        make().suggest(0.0, 0.0, k=k)
