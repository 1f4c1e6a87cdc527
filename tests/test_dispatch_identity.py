"""Identities and bindings through the Dispatcher (issue 4).

* every binding mode, by hand, with known answers, in ``assign`` and in
  ``assign_batch``;
* the merge of two bound customers: the earlier binding wins, the audit names
  the other leader;
* Hypothesis: ``assign_batch`` with identifiers (merges, refusals, blocked
  values, customers repeating inside the batch, bound customers) equals
  ``assign`` one by one, row by row and in the whole final state;
* bad identifier input.

Identifiers come from the same small pools as test_identity.py, so merges and
limit conflicts are frequent.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import event, given, settings, strategies as st

from lbsdispatch import Dispatcher, Outcome
from lbsdispatch.identity import Bindings

from test_identity import PHONES, SPELLINGS

DAY = 86400.0
# leaders 1, 2, 3 at ~111 m, ~222 m, ~333 m north of the origin
LAT = [0.001, 0.002, 0.003]


def make(**kw):
    kw.setdefault("clock", lambda: 0.0)
    return Dispatcher([1, 2, 3], LAT, [0.0] * 3, **kw)


# -- binding modes ------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [False, True], ids=["assign", "batch"])
def test_first_mode_keeps_the_first_leader(batch):
    d = make(capacity=[5, 5, 5])
    run = _runner(d, batch)
    assert run(lat=0.0, cust="c", chosen=2) == (2, Outcome.CHOSEN)
    # later orders of the customer stay with leader 2, although 1 is nearer
    assert run(lat=0.0, cust="c") == (2, Outcome.STICKY)
    assert run(lat=0.0, cust="c", chosen=3) == (3, Outcome.CHOSEN)   # a choice still wins
    assert run(lat=0.0, cust="c") == (2, Outcome.STICKY)             # ... but binds nothing
    assert d.bindings.bound("c") == 2
    assert run(lat=0.0, cust="other") == (1, Outcome.NEAREST)


@pytest.mark.parametrize("batch", [False, True], ids=["assign", "batch"])
def test_override_mode_takes_the_latest_leader(batch):
    d = make(capacity=[5, 5, 5], binding_mode="override")
    run = _runner(d, batch)
    assert run(lat=0.0, cust="c", chosen=2) == (2, Outcome.CHOSEN)
    assert run(lat=0.0, cust="c") == (2, Outcome.STICKY)
    assert run(lat=0.0, cust="c", chosen=3) == (3, Outcome.CHOSEN)
    assert run(lat=0.0, cust="c") == (3, Outcome.STICKY)
    assert d.bindings.bound("c") == 3


@pytest.mark.parametrize("batch", [False, True], ids=["assign", "batch"])
def test_expiring_mode_lapses_after_n_days_without_an_order(batch):
    d = make(capacity=[5, 5, 5], binding_mode="expiring", expire_days=1)
    run = _runner(d, batch)
    assert run(lat=0.0, cust="c", chosen=2, now=0.0) == (2, Outcome.CHOSEN)
    assert run(lat=0.0, cust="c", now=0.5 * DAY) == (2, Outcome.STICKY)
    # exactly one day after the last order it still holds
    assert run(lat=0.0, cust="c", now=1.5 * DAY) == (2, Outcome.STICKY)
    # more than one day later: lapsed, the nearest leader binds afresh
    assert run(lat=0.0, cust="c", now=2.6 * DAY) == (1, Outcome.NEAREST)
    assert run(lat=0.0, cust="c", now=2.7 * DAY) == (1, Outcome.STICKY)
    with pytest.raises(ValueError, match="expire_days"):
        make(binding_mode="expiring")


def test_expiring_mode_uses_the_clock_by_default():
    t = {"now": 0.0}
    d = make(binding_mode="expiring", expire_days=1, clock=lambda: t["now"])
    assert d.assign(0.0, 0.0, customer_id="c", chosen_leader=3).leader_id == 3
    t["now"] = 0.9 * DAY
    assert d.assign(0.0, 0.0, customer_id="c").outcome == Outcome.STICKY
    t["now"] = 2.0 * DAY
    assert d.assign(0.0, 0.0, customer_id="c").outcome == Outcome.NEAREST


def test_bound_leader_full_keeps_the_binding_in_first_mode_only():
    for mode, then in (("first", (1, Outcome.STICKY)), ("override", (2, Outcome.STICKY))):
        d = make(capacity=[1, 5, 5], binding_mode=mode)
        assert d.assign(0.0, 0.0, customer_id="c").leader_id == 1
        d.set_capacity(1, 1)
        a = d.assign(0.0, 0.0, customer_id="c")       # bound leader full: next nearest
        assert (a.leader_id, a.outcome) == (2, Outcome.SPILLOVER)
        assert a.reason.endswith("(bound leader full)")
        d.set_capacity(1, 5)
        b = d.assign(0.0, 0.0, customer_id="c")
        assert (b.leader_id, b.outcome) == then, mode


def test_a_batch_sees_bindings_written_by_its_own_earlier_rows():
    d = make(capacity=[5, 5, 5])
    res = d.assign_batch([0.0] * 4, [0.0] * 4, customer_ids=["c", "d", "c", "c"],
                         chosen_leaders=[3, None, None, 2])
    assert res.leader_id.tolist() == [3, 1, 3, 2]
    assert res.outcome.tolist() == [Outcome.CHOSEN, Outcome.NEAREST, Outcome.STICKY,
                                    Outcome.CHOSEN]
    assert res.customer_id.tolist() == ["c", "d", "c", "c"]


def test_bindings_object_and_mapping_arguments():
    b = Bindings(mode="override")
    d = make(bindings=b)
    assert d.bindings is b and d.bindings.mode == "override"
    with pytest.raises(ValueError, match="disagrees"):
        make(bindings=Bindings(), binding_mode="override")
    d = make(bindings={"c": 3})
    assert d.assign(0.0, 0.0, customer_id="c").outcome == Outcome.STICKY
    with pytest.raises(ValueError, match="binding_mode|mode must be one of"):
        make(binding_mode="sometimes")


# -- identities ---------------------------------------------------------------------------
def test_identifiers_resolve_to_one_customer_across_channels():
    d = make(capacity=[5, 5, 5])
    a = d.assign(0.0, 0.0, identifiers={"openid:wx1": "o1", "phone": "138-0013-8000"},
                 chosen_leader=3)
    b = d.assign(0.0, 0.0, identifiers={"phone": "+86 13800138000", "unionid": "u9"})
    c = d.assign_batch([0.0], [0.0], identifiers=[{"unionid": "u9"}])[0]
    assert a.customer_id == b.customer_id == c.customer_id == 0
    assert (b.leader_id, b.outcome) == (3, Outcome.STICKY)
    assert (c.leader_id, c.outcome) == (3, Outcome.STICKY)
    assert d.identity.identifiers_of(0) == {"openid:wx1": ("o1",), "phone": ("13800138000",),
                                            "unionid": ("u9",)}


@pytest.mark.parametrize("batch", [False, True], ids=["assign", "batch"])
def test_merge_of_two_bound_customers_keeps_the_earlier_binding(batch):
    d = make(capacity=[5, 5, 5])
    run = _runner(d, batch)
    # customer 0 (unionid) bound to leader 2 at t=10, customer 1 (phone) to 3 at t=20
    assert run(lat=0.0, ident={"unionid": "u1"}, chosen=2, now=10.0) == (2, Outcome.CHOSEN)
    assert run(lat=0.0, ident={"phone": "13800138000"}, chosen=3, now=20.0) == (3, Outcome.CHOSEN)
    # an order carrying both merges them: the older binding (leader 2) wins
    assert run(lat=0.0, ident={"phone": "13800138000", "unionid": "u1"}, now=30.0) \
        == (2, Outcome.STICKY)
    assert d.identity.find(1) == 0
    assert d.bindings.bound(1) == d.bindings.bound(0) == 2
    [rec] = d.bindings.audit
    assert (rec.survivor, rec.absorbed, rec.kept_leader, rec.dropped_leader) == (0, 1, 2, 3)
    assert "3" in rec.reason and rec.time == 30.0
    merges = [r for r in d.identity.audit if r.action == "merge"]
    assert [(r.customers, r.kind) for r in merges] == [((0, 1), "phone")]


def test_merge_inside_one_batch_applies_to_the_rows_after_it():
    """Rows before the merging row see the customers apart, rows after it see the
    merged binding: exactly as one order after another."""
    d = make(capacity=[5, 5, 5])
    idents = [{"unionid": "u1"}, {"phone": "13800138000"}, {"unionid": "u1"},
              {"unionid": "u1", "phone": "13800138000"}, {"phone": "13800138000"}]
    res = d.assign_batch([0.0] * 5, [0.0] * 5, identifiers=idents,
                         chosen_leaders=[2, 3, None, None, None], now=5.0)
    assert res.customer_id.tolist() == [0, 1, 0, 0, 0]
    assert res.leader_id.tolist() == [2, 3, 2, 2, 2]
    # both bindings date from the same instant: the survivor's leader is kept
    [rec] = d.bindings.audit
    assert (rec.kept_leader, rec.dropped_leader) == (2, 3)


@pytest.mark.parametrize("batch", [False, True], ids=["assign", "batch"])
def test_merge_in_a_batch_where_the_absorbed_binding_is_older(batch):
    """Customer 1 was bound at t=1; customer 0 (older id, the survivor) gets its first
    binding in this batch at t=5, then a row merges them: from that row on the older
    binding (customer 1's leader 3) holds, although the survivor's was written by an
    earlier row of the same batch."""
    d = make(capacity=[0, 5, 5])
    assert d.assign(0.0, 0.0, identifiers={"unionid": "u0"}, now=0.0).outcome == \
        Outcome.SPILLOVER                                   # customer 0, leader 2, t=0
    d.set_bindings({}, now=0.0)                              # forget it: no binding for 0
    assert d.assign(0.0, 0.0, identifiers={"phone": "13800138000"}, chosen_leader=3,
                    now=1.0).customer_id == 1               # customer 1 bound to 3 at t=1
    idents = [{"unionid": "u0"}, {"unionid": "u0", "phone": "13800138000"}, {"unionid": "u0"}]
    if batch:
        res = d.assign_batch([0.0] * 3, [0.0] * 3, identifiers=idents, now=5.0)
        got = list(zip(res.leader_id.tolist(), res.outcome.tolist()))
    else:
        got = [tuple(d.assign(0.0, 0.0, identifiers=i, now=5.0)[1:4:2]) for i in idents]
    assert got == [(2, Outcome.SPILLOVER), (3, Outcome.STICKY), (3, Outcome.STICKY)]
    [rec] = d.bindings.audit
    assert (rec.survivor, rec.absorbed, rec.kept_leader, rec.dropped_leader) == (0, 1, 3, 2)


def test_identifier_input_forms_are_equivalent():
    pd = pytest.importorskip("pandas")
    rows = [{"unionid": "u1", "phone": "13800138000"}, None, {"phone": "138 0013 8000"},
            {"openid:wx1": "o1"}]
    cols = {"unionid": ["u1", None, None, None],
            "phone": ["13800138000", None, "138 0013 8000", None],
            "openid:wx1": [None, None, None, "o1"]}
    frame = pd.DataFrame({"lat": [0.0] * 4, "lon": [0.0] * 4, **cols})
    got = []
    for kw in (dict(identifiers=rows), dict(identifiers=cols),
               dict(identifiers=pd.DataFrame(cols))):
        got.append(make().assign_batch([0.0] * 4, [0.0] * 4, **kw).customer_id.tolist())
    got.append(make().assign_batch(frame, None).customer_id.tolist())
    assert got == [[0, None, 0, 1]] * 4


def test_identifier_errors_name_the_row_and_change_nothing():
    d = make()
    with pytest.raises(ValueError, match=r"identifiers\[1\]: unknown identifier kind 'unoinid'"):
        d.assign_batch([0.0] * 2, [0.0] * 2, identifiers=[{"unionid": "a"}, {"unoinid": "b"}])
    assert len(d.identity) == 0 and d.loads().sum() == 0
    with pytest.raises(ValueError, match=r"column 'wechat'"):
        d.assign_batch([0.0], [0.0], identifiers={"wechat": ["x"]})
    with pytest.raises(ValueError, match=r"customer_ids\[1\] and identifiers\[1\] both given"):
        d.assign_batch([0.0] * 2, [0.0] * 2, customer_ids=[None, "c"],
                       identifiers=[{"unionid": "a"}, {"unionid": "b"}])
    with pytest.raises(ValueError, match="not both"):
        d.assign(0.0, 0.0, customer_id="c", identifiers={"unionid": "a"})
    with pytest.raises(ValueError, match=r"identifiers must have one entry per order \(2\)"):
        d.assign_batch([0.0] * 2, [0.0] * 2, identifiers=[{"unionid": "a"}])
    with pytest.raises(ValueError, match=r"identifiers\['phone'\] must have one value per order"):
        d.assign_batch([0.0] * 2, [0.0] * 2, identifiers={"phone": ["13800138000"]})
    with pytest.raises(ValueError, match=r"identifiers\[0\] must be a mapping"):
        d.assign_batch([0.0], [0.0], identifiers=["u1"])
    assert len(d.identity) == 0 and d.loads().sum() == 0
    # a customer id and identifiers on different rows of one batch are fine
    res = d.assign_batch([0.0] * 2, [0.0] * 2, customer_ids=["c", None],
                         identifiers=[None, {"unionid": "b"}])
    assert res.customer_id.tolist() == ["c", 0]


def test_invalid_and_repeated_orders_resolve_nothing():
    d = make()
    d.assign(0.0, 0.0, order_id="x", identifiers={"unionid": "u1"})
    res = d.assign_batch([0.0, math.nan], [0.0, 0.0], order_ids=["x", "y"],
                         identifiers=[{"unionid": "u2"}, {"unionid": "u3"}])
    assert res.repeat.tolist() == [True, False]
    assert res.customer_id.tolist() == [0, None]
    assert d.identity.lookup("unionid", "u2") is None
    assert d.identity.lookup("unionid", "u3") is None


# -- Hypothesis: batch == one by one, with identifiers -----------------------------------------
leader_sites = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 4)),
                        min_size=1, max_size=8)

PLACEHOLDERS = ["", "null", "0", "undefined"]


@st.composite
def order_rows(draw):
    """Rows (i, j, identifiers or None, customer id or None, chosen index or None) from
    a seeded generator (Hypothesis draws the size, the mix and the seed): identifiers
    from small pools in many spellings, so merges and limit conflicts are common."""
    n = draw(st.integers(0, 40), label="n_orders")
    p_ident = draw(st.sampled_from([0.6, 0.9]), label="p_identifiers")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        ident = None
        if rnd.random() < p_ident:
            ident = {}
            if rnd.random() < 0.5:
                ident["unionid"] = f"u{rnd.randrange(4)}"
            if rnd.random() < 0.5:
                ident["phone"] = rnd.choice(SPELLINGS)(rnd.choice(PHONES))
            if rnd.random() < 0.4:
                ident["openid:wx1"] = f"a{rnd.randrange(4)}"
            if rnd.random() < 0.3:
                ident["live_viewer"] = f"v{rnd.randrange(5)}"
            if rnd.random() < 0.1:
                ident[rnd.choice(["unionid", "phone"])] = rnd.choice(PLACEHOLDERS)
        cust = rnd.choice(["c1", "c2"]) if ident is None and rnd.random() < 0.5 else None
        chosen = rnd.randrange(8) if rnd.random() < 0.2 else None
        rows.append((rnd.randint(-5, 35), rnd.randint(-5, 35), ident, cust, chosen))
    return rows


@settings(deadline=None, max_examples=40)
@given(sites=leader_sites, parts=st.lists(order_rows(), min_size=1, max_size=4),
       mode=st.sampled_from(["first", "override", "expiring"]),
       bound=st.dictionaries(st.integers(0, 5), st.integers(0, 7), max_size=3))
def test_batch_with_identifiers_equals_one_by_one(sites, parts, mode, bound):
    ids = list(range(10, 10 + len(sites)))
    lat = [31.0 + i * 1e-3 for i, _, _ in sites]
    lon = [121.0 + j * 1e-3 for _, j, _ in sites]
    cap = [c for _, _, c in sites]
    kw = dict(capacity=cap, binding_mode=mode, expire_days=1.0 if mode == "expiring" else None,
              bindings={c: ids[k % len(ids)] for c, k in bound.items()}, clock=lambda: 0.0)
    a = Dispatcher(ids, lat, lon, **kw)
    b = Dispatcher(ids, lat, lon, **kw)
    oid = 0
    for p, rows in enumerate(parts):
        now = p * 0.7 * DAY
        la = [31.0 + (i + 0.37) * 1e-3 for i, _, _, _, _ in rows]
        lo = [121.0 + (j + 0.61) * 1e-3 for _, j, _, _, _ in rows]
        idents = [r[2] if r[3] is None else None for r in rows]
        custs = [r[3] for r in rows]
        chosen = [None if r[4] is None else ids[r[4] % len(ids)] for r in rows]
        oids = list(range(oid, oid + len(rows)))
        oid += len(rows)
        res = a.assign_batch(la, lo, order_ids=oids, customer_ids=custs, chosen_leaders=chosen,
                             identifiers=idents, now=now)
        for k in range(len(rows)):
            one = b.assign(la[k], lo[k], order_id=oids[k], customer_id=custs[k],
                           chosen_leader=chosen[k], identifiers=idents[k] or None, now=now)
            assert tuple(res[k]) == tuple(one), (p, k)
    assert a.to_dict() == b.to_dict()
    assert a.loads().tolist() == b.loads().tolist()
    event(f"binding merges audited: {min(len(a.bindings.audit), 2)}")
    event(f"identity merges: {min(sum(r.action == 'merge' for r in a.identity.audit), 2)}")
    event(f"sticky rows: {min(sum(1 for r in a._log.live_table()['outcome'] if r == 2), 2)}")
    assert (a.loads() <= np.asarray(cap)).all()


def _runner(d, batch):
    """A function placing one order (by assign or by a one-row batch) -> (leader, outcome)."""
    def run(lat, cust=None, chosen=None, ident=None, now=None):
        if batch:
            r = d.assign_batch([lat], [0.0], customer_ids=None if cust is None else [cust],
                               chosen_leaders=[chosen], identifiers=None if ident is None
                               else [ident], now=now)[0]
        else:
            r = d.assign(lat, 0.0, customer_id=cust, chosen_leader=chosen, identifiers=ident,
                         now=now)
        return r.leader_id, r.outcome
    return run
