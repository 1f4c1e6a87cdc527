"""Tests for lbsdispatch.identity: identity resolution (IdentityGraph) and leader bindings.

Generated data
--------------
Orders draw their identifiers from small pools (a handful of unionids, three
phone numbers written in many spellings, openids in two apps, live-viewer
ids, and now and then a placeholder value), so merges, refusals and blocked
values are all frequent.  Partitions are compared as sets of sets of
normalised ``(kind, value)`` identifiers, never by customer id, because ids
depend on the order in which customers were first seen.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import assume, example, given, note, settings, strategies as st

from lbsdispatch.identity import (AuditRecord, Bindings, BindingAuditRecord, DEFAULT_BLOCKED,
                                  IdentityGraph, normalise_phone)

DAY = 86400.0
LIMITED = ("unionid", "phone", "openid:wx1", "openid:wx2")   # limit 1 each by default

# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

PHONES = ("13800138000", "13912345678", "15011112222")
FULLWIDTH = str.maketrans("0123456789+-", "０１２３４５６７８９＋－")
SPELLINGS = (
    lambda n: n,
    lambda n: f"+86 {n[:3]}-{n[3:7]}-{n[7:]}",
    lambda n: f"0086{n}",
    lambda n: f"86 {n[:3]} {n[3:7]} {n[7:]}",
    lambda n: f"({n[:3]}) {n[3:7]}.{n[7:]}",
    lambda n: f"+86{n}".translate(FULLWIDTH),
    lambda n: f" {n} ",
)

phones = st.tuples(st.sampled_from(PHONES), st.sampled_from(SPELLINGS)).map(lambda t: t[1](t[0]))
placeholders = st.sampled_from(["", "null", "N/A", "0", "undefined", "  "])


def pool(prefix, n):
    return st.one_of(st.sampled_from([f"{prefix}{i}" for i in range(n)]), placeholders) \
        if prefix else placeholders


def value_of(prefix, n):
    # Mostly real values, sometimes a placeholder (which must never link anyone).
    return st.one_of(st.sampled_from([f"{prefix}{i}" for i in range(n)]),
                     st.sampled_from([f"{prefix}{i}" for i in range(n)]),
                     st.sampled_from([f"{prefix}{i}" for i in range(n)]),
                     placeholders)


orders_st = st.fixed_dictionaries({}, optional={
    "unionid": value_of("u", 4),
    "phone": st.one_of(phones, phones, phones, st.just("12345"), placeholders),
    "openid:wx1": value_of("a", 4),
    "openid:wx2": value_of("b", 4),
    "live_viewer": value_of("v", 5),
})
order_lists = st.lists(orders_st, min_size=1, max_size=12)


def unlimited_graph():
    """Return a graph whose built-in kinds have no limits: every order links everything in it."""
    g = IdentityGraph()
    g.register_kind("unionid", limit=None, priority=40)
    g.register_kind("phone", normalise=normalise_phone, limit=None, priority=30)
    g.register_kind("openid:*", limit=None, priority=20)
    return g


# ---------------------------------------------------------------------------
# Independent helpers: oracle partition, audit replay
# ---------------------------------------------------------------------------

def usable(g, order):
    """Return the order's identifiers after normalisation, blocked ones dropped."""
    out = set()
    for kind, raw in order.items():
        v = g.normalise(kind, raw)
        if v is not None:
            out.add((kind, v))
    return out


def oracle_components(g, orders):
    """Return the connected components of 'appeared in the same order' (no limits at all)."""
    parent = {}

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for order in orders:
        ids = sorted(usable(g, order))
        for x in ids:
            parent.setdefault(x, x)
        for x in ids[1:]:
            parent[root(x)] = root(ids[0])
    groups = {}
    for x in parent:
        groups.setdefault(root(x), set()).add(x)
    return {frozenset(s) for s in groups.values()}


def partition(g):
    """Return the graph's customers as a set of frozensets of (kind, value); empty ones left out."""
    out = set()
    for c in g.customers():
        ids = frozenset((k, v) for k, vals in g.identifiers_of(c).items() for v in vals)
        if ids:
            out.add(ids)
    return out


def within_limits(groups, limits=LIMITED):
    return all(sum(1 for k, _ in grp if k == kind) <= 1 for grp in groups for kind in limits)


def replay_audit(records):
    """Rebuild identifier -> customer from the audit alone."""
    owner = {}
    for r in records:
        if r.action in ("new", "attach") and r.kind is not None:
            owner[(r.kind, r.value)] = r.customers[0]
        elif r.action == "merge":
            survivor, absorbed = r.customers
            assert survivor < absorbed, r            # union by age
            for k, o in owner.items():
                if o == absorbed:
                    owner[k] = survivor
        elif r.action == "unmerge":
            owner[(r.kind, r.value)] = r.customers[1]
    return owner


def check_invariants(g):
    """Limits hold, every identifier has exactly one owner, lookup agrees."""
    seen = set()
    for c in g.customers():
        held = g.identifiers_of(c)
        for kind in LIMITED:
            assert len(held.get(kind, ())) <= 1, (c, held)
        for kind, vals in held.items():
            for v in vals:
                assert (kind, v) not in seen
                seen.add((kind, v))
                assert g.lookup(kind, v) == c
    assert len(g) == len(g.customers())


def resolve_all(g, orders):
    return [g.resolve(o) for o in orders]


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

@settings(deadline=None)
@given(orders=order_lists, data=st.data())
def test_partition_is_order_independent_without_limits(orders, data):
    perm = data.draw(st.permutations(orders), label="permuted")
    g1, g2 = unlimited_graph(), unlimited_graph()
    resolve_all(g1, orders)
    resolve_all(g2, perm)
    expected = oracle_components(g1, orders)
    assert partition(g1) == expected
    assert partition(g2) == expected
    assert not any(r.action == "conflict" for r in g1.audit + g2.audit)


@settings(deadline=None)
@given(orders=order_lists, data=st.data())
def test_partition_is_order_independent_when_no_limit_is_hit(orders, data):
    g1 = IdentityGraph()
    expected = oracle_components(g1, orders)
    # If the limit-free components respect the limits, no resolve order can hit one.
    assume(within_limits(expected))
    perm = data.draw(st.permutations(orders), label="permuted")
    g2 = IdentityGraph()
    resolve_all(g1, orders)
    resolve_all(g2, perm)
    assert partition(g1) == partition(g2) == expected
    assert not any(r.action == "conflict" for r in g1.audit + g2.audit)


ops_st = st.lists(st.one_of(orders_st.map(lambda o: ("order", o)),
                            st.tuples(st.just("unmerge"), st.integers(0, 50),
                                      st.integers(1, 2**10))),
                  min_size=1, max_size=16)


def apply_unmerge(g, pick, mask):
    """Unmerge a proper, non-empty subset (chosen by mask) of some customer's identifiers."""
    multi = [c for c in g.customers()
             if sum(len(v) for v in g.identifiers_of(c).values()) >= 2]
    if not multi:
        return None
    c = multi[pick % len(multi)]
    ids = sorted((k, v) for k, vals in g.identifiers_of(c).items() for v in vals)
    chosen = [x for i, x in enumerate(ids) if mask >> i & 1] or ids[:1]
    if len(chosen) == len(ids):
        chosen = chosen[:-1]
    return c, chosen, g.unmerge(c, chosen)


@settings(deadline=None)
@given(ops=ops_st)
def test_limits_are_never_exceeded(ops):
    g = IdentityGraph()
    for op in ops:
        if op[0] == "order":
            cid = g.resolve(op[1])
            assert cid == g.find(cid)
        else:
            apply_unmerge(g, op[1], op[2])
        check_invariants(g)


@settings(deadline=None)
@given(ops=ops_st)
def test_audit_explains_every_grouping(ops):
    g = IdentityGraph()
    for op in ops:
        if op[0] == "order":
            g.resolve(op[1])
        else:
            apply_unmerge(g, op[1], op[2])
    audit = g.audit
    assert [r.seq for r in audit] == list(range(len(audit)))
    owner = replay_audit(audit)
    # Each identifier's owner, rebuilt from attach/merge/unmerge records only, is the
    # customer that holds it now: every pair in one customer is linked by the audit.
    assert len(owner) == sum(len(p) for p in partition(g))
    for (kind, value), c in owner.items():
        assert g.lookup(kind, value) == c
    for c in g.customers():
        explained = g.explain(c)
        for kind, vals in g.identifiers_of(c).items():
            for v in vals:
                assert any(r.kind == kind and r.value == v
                           and r.action in ("new", "attach", "merge", "unmerge")
                           for r in explained), (c, kind, v)


@settings(deadline=None)
@given(orders=order_lists, pick=st.integers(0, 50), mask=st.integers(1, 2**10))
def test_unmerge_then_same_resolves_gives_the_same_conflict(orders, pick, mask):
    """Replaying the orders after an unmerge never undoes the split.

    Each order holding identifiers of both sides gets a conflict (not a merge),
    and once the replay settles (replays can still attach identifiers that
    were refused before), a further replay gives exactly the same customers
    and the same conflict records.
    """
    g = IdentityGraph()
    resolve_all(g, orders)
    done = apply_unmerge(g, pick, mask)
    assume(done is not None)
    original, moved, new = done
    side_new = set(moved)
    side_old = {(k, v) for k, vals in g.identifiers_of(original).items() for v in vals}
    note(f"unmerged {moved} from {original} into {new}")

    # An order without usable identifiers gets a fresh customer every time by
    # design; it links nothing, so it has no place in a replay.
    replayed = [o for o in orders if usable(g, o)]

    def one_pass():
        results, records = [], []
        for order in replayed:
            start = len(g.audit)
            results.append(g.resolve(order))
            fresh = g.audit[start:]
            records.append([r[1:] for r in fresh])           # without seq
            ids = usable(g, order)
            if ids & side_new and ids & side_old:
                # Refused because of the split, or of a limit on the way: either way
                # a conflict is recorded instead of re-joining the two sides.
                assert any(r.action == "conflict" for r in fresh)
            for c in g.customers():
                held = {(k, v) for k, vals in g.identifiers_of(c).items() for v in vals}
                assert not (held & side_new and held & side_old), "split undone"
        check_invariants(g)
        return results, records

    previous = one_pass()
    for _ in range(len(replayed) + 2):
        current = one_pass()
        if current == previous:
            break
        previous = current
    else:
        pytest.fail("replaying the orders did not settle")
    # The settled state is a fixpoint: the same orders, the same answers and conflicts.
    assert one_pass() == current


@settings(deadline=None)
@given(ops=ops_st, more=order_lists)
# Found by the dev profile: unmerges leave kept-apart sets naming non-root ids,
# so the two graphs compressed different paths (to_dict must be canonical).
@example(ops=[("order", {"phone": "12345", "unionid": "u0", "openid:wx2": "b0",
                         "openid:wx1": "a0", "live_viewer": "v0"}),
              ("unmerge", 0, 1),
              ("order", {"unionid": "u0", "phone": "12345", "live_viewer": "v2"}),
              ("order", {"unionid": "u1", "live_viewer": "v1", "openid:wx2": "b1",
                         "phone": "13912345678"}),
              ("unmerge", 0, 9),
              ("unmerge", 1, 4),
              ("order", {"phone": "13912345678", "live_viewer": "v2"})],
         more=[{}])
def test_to_dict_round_trip_continues_identically(ops, more):
    g = IdentityGraph()
    for op in ops:
        if op[0] == "order":
            g.resolve(op[1])
        else:
            apply_unmerge(g, op[1], op[2])
    data = g.to_dict()
    h = IdentityGraph.from_dict(json.loads(json.dumps(data)))
    assert h.to_dict() == data
    # Replaying the same orders exercises what unmerge left behind (kept-apart pairs).
    more = [op[1] for op in ops if op[0] == "order"] + more
    assert resolve_all(g, more) == resolve_all(h, more)
    assert g.to_dict() == h.to_dict()
    assert g.audit == h.audit


@settings(deadline=None)
@given(orders=order_lists)
def test_resolve_many_equals_sequential_resolve(orders):
    g1, g2 = IdentityGraph(), IdentityGraph()
    ids = g1.resolve_many(orders)
    assert ids.dtype == np.int64
    assert ids.tolist() == resolve_all(g2, orders)
    assert g1.to_dict() == g2.to_dict()


# ---------------------------------------------------------------------------
# Normalisation and blocked values
# ---------------------------------------------------------------------------

PHONE_SPELLINGS = [
    "13800138000",
    " 13800138000 ",
    "138 0013 8000",
    "138-0013-8000",
    "138.0013.8000",
    "(138) 0013-8000",
    "+8613800138000",
    "+86 138 0013 8000",
    "+86-138-0013-8000",
    "(+86) 138-0013-8000",
    "008613800138000",
    "0086 138 0013 8000",
    "8613800138000",
    "86 138 0013 8000",
    "１３８００１３８０００",                    # full-width digits
    "＋８６ １３８－００１３－８０００",            # full-width plus, dashes
    "（１３８）００１３．８０００",                 # full-width parentheses and dot
    "138\u30000013\u30008000",                  # ideographic spaces
    "138\u00a00013\u00a08000",                  # no-break spaces
    "138—0013—8000",                            # em dashes
    "+86\t138\t0013\t8000",
    13800138000,                                # an int from a spreadsheet
    "+86 (138) 0013 8000",
    "86-138-0013-8000",
    "0086-138-0013-8000",
    "138/0013/8000",
    "+86·138·0013·8000",                        # middle dots
    "１３８-００１３-８０００",                     # full-width digits, ASCII dashes
    "  +86 138 0013 8000\n",
    "8613800138000 ",
    "+86 138\u200b0013\u200b8000",             # zero-width spaces (copied from a chat)
    "\ufeff13800138000",                        # a byte-order mark from a CSV export
]


@pytest.mark.parametrize("spelling", PHONE_SPELLINGS, ids=repr)
def test_phone_spellings_are_one_number(spelling):
    g = IdentityGraph()
    first = g.resolve({"phone": "13800138000"})
    assert g.normalise("phone", spelling) == "13800138000"
    assert g.resolve({"phone": spelling}) == first
    # the batch path (one column per kind) reads it the same way
    assert g.resolve_columns(["phone"], [[spelling]], [0]) == {0: first}
    assert len(g) == 1


INVALID_PHONES = [
    "12800138000",          # no mobile range starts with 12
    "10800138000",
    "23800138000",          # does not start with 1
    "1380013800",           # 10 digits
    "138001380001",         # 12 digits
    "+1 650 253 0000",      # another country
    "+852 138 0013 8000",   # Hong Kong prefix
    "861380013800",         # 86 + 10 digits
    "010-12345678",         # a landline
    "138-0013-800O",        # letter O
    "phone: 13800138000",
    "١٣٨٠٠١٣٨٠٠٠",          # Arabic-Indic digits: isdigit(), but not a number anyone typed
    "13800138000x1",
    "abc",
    "+852 9123 4567",       # a Hong Kong mobile
    "+86 0138 0013 8000",   # a trunk 0 after the country code is no mobile spelling
]


@pytest.mark.parametrize("bad", INVALID_PHONES, ids=repr)
def test_unparsable_phone_is_blocked_and_reported(bad):
    assert normalise_phone(bad) is None
    g = IdentityGraph()
    a = g.resolve({"phone": bad})
    b = g.resolve({"phone": bad})
    assert a != b                                # it never links
    blocked = [r for r in g.audit if r.action == "blocked"]
    assert len(blocked) == 2
    assert blocked[0].value == bad.strip() and "mobile" in blocked[0].reason
    assert blocked[0].customers == (a,)
    assert g.lookup("phone", bad) is None


BLOCKED_VALUES = ["null", "NULL", "None", "undefined", "Nil", "-1", "0", "000", "0000000000",
                  "test", "TEST", "unknown", "Unknown", "n/a", "N/A", "nan", " null ",
                  "UNDEFINED", "NaN", "none\t", " -1 ", "00000000000", 0, -1]


@pytest.mark.parametrize("value", BLOCKED_VALUES, ids=repr)
@pytest.mark.parametrize("kind", ["unionid", "openid:wx1", "live_viewer", "phone"])
def test_placeholder_values_never_link(kind, value):
    g = IdentityGraph()
    a = g.resolve({kind: value, "live_viewer" if kind != "live_viewer" else "unionid": "x1"})
    b = g.resolve({kind: value})
    assert a != b
    assert len(g) == 2
    records = [r for r in g.audit if r.action == "blocked"]
    assert [r.customers for r in records] == [(a,), (b,)]
    assert records[0].reason == "placeholder or test value"


@pytest.mark.parametrize("value", ["", "   ", "\t\n", None, float("nan"), np.float64("nan")],
                         ids=repr)
def test_absent_values_are_ignored_silently(value):
    g = IdentityGraph()
    a = g.resolve({"unionid": value, "phone": value})
    b = g.resolve({"unionid": value})
    assert a != b
    assert [r.action for r in g.audit] == ["new", "new"]
    assert g.audit[0].kind is None


def test_default_blocked_list_contains_the_documented_values():
    for v in ("null", "none", "undefined", "nil", "-1", "0", "test", "unknown", "n/a"):
        assert v in DEFAULT_BLOCKED


def test_blocked_list_is_configurable():
    g = IdentityGraph(blocked=["guest"], block_all_zeros=False)
    assert g.resolve({"unionid": "null"}) == g.resolve({"unionid": "NULL ".lower()})
    assert g.resolve({"unionid": "GUEST"}) != g.resolve({"unionid": "guest"})
    assert g.resolve({"live_viewer": "000"}) == g.resolve({"live_viewer": "000"})
    assert g.resolve({"live_viewer": ""}) != g.resolve({"live_viewer": ""})   # always blocked


def test_per_kind_blocked_values():
    # The classic test number, blocked for phone only, in any spelling.
    g = IdentityGraph(blocked_by_kind={"phone": ["138-0013-8000"], "openid:*": ["guest"]})
    assert g.resolve({"phone": "+86 13800138000"}) != g.resolve({"phone": "13800138000"})
    assert g.resolve({"unionid": "guest"}) == g.resolve({"unionid": "guest"})
    assert g.resolve({"openid:wx9": "guest"}) != g.resolve({"openid:wx9": "guest"})
    g.register_kind("member_no", limit=1, priority=5, blocked=["M-0"])
    assert g.resolve({"member_no": "m-0"}) != g.resolve({"member_no": "m-0"})
    with pytest.raises(ValueError):
        IdentityGraph(blocked_by_kind={"openid:wx1": ["x"]})   # would hit every app


def test_values_keep_case_and_lose_whitespace():
    g = IdentityGraph()
    assert g.resolve({"unionid": " oAbC "}) == g.resolve({"unionid": "oAbC"})
    assert g.resolve({"unionid": "oabc"}) != g.resolve({"unionid": "oAbC"})
    assert g.identifiers_of(0) == {"unionid": ("oAbC",)}


def test_custom_normaliser_and_rejections():
    def member_no(s):
        if not s.upper().startswith("M"):
            raise ValueError("not a member number")
        return s.upper().replace(" ", "")

    g = IdentityGraph()
    g.register_kind("member_no", normalise=member_no, limit=1, priority=50)
    assert g.resolve({"member_no": "m 12"}) == g.resolve({"member_no": "M12"})
    bad = g.resolve({"member_no": "x12"})
    assert g.audit[-1].action == "blocked" and g.audit[-1].customers == (bad,)
    with pytest.raises(ValueError, match="normaliser"):
        IdentityGraph.from_dict(g.to_dict())
    h = IdentityGraph.from_dict(g.to_dict(), normalisers={"member_no": member_no})
    assert h.resolve({"member_no": "M 12"}) == 0


# ---------------------------------------------------------------------------
# Kinds, priorities, limits
# ---------------------------------------------------------------------------

def test_openid_is_unique_only_inside_its_app():
    g = IdentityGraph()
    a = g.resolve({"openid:wx1": "o1"})
    assert g.resolve({"openid:wx2": "o1"}) != a
    # One openid per app, but one customer may hold openids of several apps.
    assert g.resolve({"openid:wx1": "o1", "openid:wx3": "o7"}) == a
    assert g.identifiers_of(a) == {"openid:wx1": ("o1",), "openid:wx3": ("o7",)}
    assert g.resolve({"openid:wx1": "o1", "openid:wx3": "o8"}) == a
    assert g.audit[-1].action == "conflict" and g.audit[-1].value == "o8"


@pytest.mark.parametrize("kind", ["unoinid", "openid", "openid:", "openid: ", "openid:*",
                                  "Phone"])
def test_unknown_kinds_raise_and_change_nothing(kind):
    g = IdentityGraph()
    g.resolve({"unionid": "u1"})
    before = g.to_dict()
    with pytest.raises(ValueError):
        g.resolve({"unionid": "u1", kind: "x"})
    assert g.to_dict() == before


def test_new_identifier_over_the_limit_is_left_unattached():
    g = IdentityGraph()
    a = g.resolve({"unionid": "u1", "phone": "13800138000"})
    # u2 is processed first (higher priority) but is new; the phone picks the anchor.
    assert g.resolve({"unionid": "u2", "phone": "138 0013 8000"}) == a
    conflict = g.audit[-1]
    assert (conflict.action, conflict.customers, conflict.kind, conflict.value) == \
        ("conflict", (a,), "unionid", "u2")
    assert "u1" in conflict.reason
    assert g.lookup("unionid", "u2") is None
    assert g.resolve({"unionid": "u2"}) != a


def test_merge_over_the_limit_is_refused():
    g = IdentityGraph()
    a = g.resolve({"unionid": "u1", "live_viewer": "v1"})
    b = g.resolve({"unionid": "u2", "live_viewer": "v2"})
    assert g.resolve({"live_viewer": "v1", "phone": "13800138000"}) == a
    assert g.resolve({"phone": "13800138000", "openid:wx1": "o1"}) == a
    # v2 belongs to b; merging a and b would give two unionids.
    assert g.resolve({"phone": "13800138000", "live_viewer": "v2"}) == a
    last = g.audit[-1]
    assert (last.action, last.customers, last.kind, last.value) == \
        ("conflict", (a, b), "live_viewer", "v2")
    assert len(g) == 2 and g.lookup("live_viewer", "v2") == b


def test_merge_keeps_the_older_id_and_the_other_stays_resolvable():
    calls = []
    g = IdentityGraph(on_merge=lambda s, a: calls.append((s, a)))
    c0 = g.resolve({"live_viewer": "v0"})
    c1 = g.resolve({"phone": "13912345678"})
    c2 = g.resolve({"unionid": "u1"})
    assert (c0, c1, c2) == (0, 1, 2)
    # Anchor is the unionid (highest priority) customer 2; the merges keep 1, then 0.
    assert g.resolve({"unionid": "u1", "phone": "13912345678", "live_viewer": "v0"}) == 0
    assert calls == [(1, 2), (0, 1)]
    assert [g.find(c) for c in (0, 1, 2)] == [0, 0, 0]
    assert g.customers() == [0] and len(g) == 1
    merges = [r for r in g.audit if r.action == "merge"]
    assert [(r.customers, r.kind) for r in merges] == [((1, 2), "phone"), ((0, 1), "live_viewer")]
    assert g.explain(2) == g.explain(0)
    assert {r.action for r in g.explain(0)} == {"new", "merge"}


def test_priority_is_configurable():
    def run(g):
        g.resolve({"unionid": "u1"})
        g.resolve({"unionid": "u2", "live_viewer": "v"})
        return g.resolve({"unionid": "u1", "live_viewer": "v"})

    assert run(IdentityGraph()) == 0                 # unionid anchors: customer 0
    g = IdentityGraph()
    g.register_kind("live_viewer", priority=100)     # the livestream id now anchors
    assert run(g) == 1
    assert g.audit[-1].action == "conflict" and g.audit[-1].customers == (1, 0)


def test_kinds_in_use_cannot_be_redefined():
    g = IdentityGraph()
    g.resolve({"openid:wx1": "o1", "phone": "13800138000"})
    for name in ("openid:*", "openid:wx1", "phone"):
        with pytest.raises(ValueError):
            g.register_kind(name, limit=None)
    g.register_kind("openid:wx2", limit=None)        # not used yet: fine
    assert g.resolve([("openid:wx2", "p1"), ("openid:wx2", "p2")]) == 1
    for bad in ("", " x", "a:", "a*", "a:b:*", ":*"):
        with pytest.raises(ValueError):
            g.register_kind(bad)
    with pytest.raises(ValueError):
        g.register_kind("k", limit=0)


def test_pairs_input_can_carry_several_values_of_one_kind():
    g = IdentityGraph()
    a = g.resolve([("live_viewer", "v1"), ("live_viewer", "v2"), ("live_viewer", "v1")])
    assert g.identifiers_of(a) == {"live_viewer": ("v1", "v2")}
    b = g.resolve([("unionid", "x"), ("unionid", "y")])
    assert g.identifiers_of(b) == {"unionid": ("x",)}
    assert g.audit[-1].action == "conflict" and g.audit[-1].value == "y"


# ---------------------------------------------------------------------------
# unmerge
# ---------------------------------------------------------------------------

def test_unmerge_moves_identifiers_and_keeps_the_split():
    g = IdentityGraph()
    # A shared family phone wrongly joined two viewers.
    a = g.resolve({"unionid": "mum", "phone": "13800138000", "live_viewer": "v-mum"})
    b = g.resolve({"live_viewer": "v-kid", "openid:wx1": "kid"})
    assert g.resolve({"phone": "13800138000", "live_viewer": "v-kid"}) == a
    assert g.find(b) == a
    # Named by the absorbed id: it is followed to the customer it was merged into.
    new = g.unmerge(b, {"live_viewer": "v-kid", "openid:wx1": " kid "})
    assert new == 2 and len(g) == 2
    assert g.identifiers_of(new) == {"live_viewer": ("v-kid",), "openid:wx1": ("kid",)}
    assert g.identifiers_of(a) == {"live_viewer": ("v-mum",), "phone": ("13800138000",),
                                   "unionid": ("mum",)}
    # Ids merged into the original stay with it.
    assert g.find(b) == a
    assert g.resolve({"openid:wx1": "kid"}) == new
    # The wrong link again: a conflict, not a merge, and the same one each time.
    before = len(g.audit)
    assert g.resolve({"phone": "13800138000", "live_viewer": "v-kid"}) == a
    assert g.resolve({"phone": "13800138000", "live_viewer": "v-kid"}) == a
    r1, r2 = g.audit[before:]
    assert r1.action == "conflict" and r1[1:] == r2[1:]
    assert r1.customers == (a, new) and "unmerge" in r1.reason
    # Still apart after either side merges with someone else.
    c = g.resolve({"unionid": "kid-u", "openid:wx1": "kid"})
    assert c == new
    d = g.resolve({"phone": "13912345678", "live_viewer": "v-mum"})
    assert d == a
    g.resolve({"phone": "13912345678", "unionid": "kid-u"})
    assert g.find(new) != g.find(a)
    unmerges = [r for r in g.explain(new) if r.action == "unmerge"]
    assert [(r.customers, r.kind) for r in unmerges] == \
        [((a, new), "live_viewer"), ((a, new), "openid:wx1")]


def test_from_dict_rejects_inconsistent_data():
    g = IdentityGraph()
    g.resolve({"unionid": "u1", "live_viewer": "v1"})
    g.resolve({"unionid": "u2"})
    good = g.to_dict()

    def broken(change):
        d = json.loads(json.dumps(good))
        change(d)
        return d

    cases = [
        broken(lambda d: d.update(format="other")),
        broken(lambda d: d.update(parent=[1, 1])),                       # child older than parent
        broken(lambda d: d["identifiers"].append([1, "live_viewer", "v1"])),   # held twice
        broken(lambda d: d["identifiers"][-1].__setitem__(0, 0)),        # two unionids
        broken(lambda d: d["audit"][0].__setitem__(1, "guess")),
        broken(lambda d: d.update(apart=[[0, 0]])),
    ]
    for d in cases:
        with pytest.raises(ValueError):
            IdentityGraph.from_dict(d)
    assert IdentityGraph.from_dict(good).to_dict() == good


def test_split_survives_a_round_trip():
    g = IdentityGraph()
    a = g.resolve({"phone": "13800138000", "live_viewer": "v1"})
    new = g.unmerge(a, {"live_viewer": "v1"})
    h = IdentityGraph.from_dict(json.loads(json.dumps(g.to_dict())))
    assert h.to_dict()["apart"] == [[a, new]]
    assert h.resolve({"phone": "13800138000", "live_viewer": "v1"}) == a
    assert h.audit[-1].action == "conflict" and len(h) == 2


def test_unmerge_rejects_bad_requests():
    g = IdentityGraph()
    a = g.resolve({"unionid": "u1", "phone": "13800138000"})
    with pytest.raises(ValueError, match="does not hold"):
        g.unmerge(a, {"unionid": "u2"})
    with pytest.raises(ValueError, match="every identifier"):
        g.unmerge(a, {"unionid": "u1", "phone": "+86 138 0013 8000"})
    with pytest.raises(ValueError, match="usable"):
        g.unmerge(a, {"unionid": "null"})
    with pytest.raises(ValueError, match="at least one"):
        g.unmerge(a, {})
    with pytest.raises(KeyError):
        g.unmerge(7, {"unionid": "u1"})
    assert len(g) == 1 and g.identifiers_of(a)["unionid"] == ("u1",)


def test_find_rejects_unknown_ids():
    g = IdentityGraph()
    g.resolve({"unionid": "u"})
    for bad in (-1, 1):
        with pytest.raises(KeyError):
            g.find(bad)
    with pytest.raises(TypeError):
        g.find("0")


def test_audit_records_are_named_tuples():
    g = IdentityGraph()
    g.resolve({"unionid": "u1", "phone": "null"})
    assert g.audit == [
        AuditRecord(0, "new", (0,), "unionid", "u1", "first order with this identifier"),
        AuditRecord(1, "blocked", (0,), "phone", "null", "placeholder or test value"),
    ]
    assert g.audit[0].action == "new"


# ---------------------------------------------------------------------------
# Bindings
# ---------------------------------------------------------------------------

T0 = 1_700_000_000.0


def test_first_mode_keeps_the_first_leader():
    b = Bindings()
    assert b.bound(1, T0) is None
    assert b.record(1, "A", T0) == "A"
    assert b.record(1, "B", T0 + 10) == "A"
    assert b.bound(1, T0 + 1000 * DAY) == "A"
    assert b.bound(1) == "A"
    assert b.bound(2, T0) is None


def test_override_mode_takes_the_latest_leader():
    b = Bindings(mode="override")
    b.record(1, "A", T0)
    assert b.record(1, "B", T0 + 10) == "B"
    assert b.bound(1, T0 + 20) == "B"
    b.record(1, "B", T0 + 30)                        # same leader: the binding keeps its age
    assert b.to_dict()["bindings"] == [[1, "B", T0 + 10, T0 + 30]]


def test_expiring_mode_edge_is_exactly_n_days():
    b = Bindings(mode="expiring", expire_days=30)
    b.record(1, "A", T0)
    assert b.bound(1, T0 + 30 * DAY) == "A"          # exactly N days: still bound
    assert b.bound(1, T0 + 30 * DAY + 1) is None     # one second later: lapsed
    # An order at exactly N days keeps and refreshes the binding.
    assert b.record(1, "B", T0 + 30 * DAY) == "A"
    assert b.bound(1, T0 + 60 * DAY) == "A"
    assert b.bound(1, T0 + 60 * DAY + 0.5) is None
    # After a lapse, the next assignment binds afresh.
    assert b.record(1, "B", T0 + 61 * DAY) == "B"
    assert b.bound(1, T0 + 61 * DAY) == "B"


def test_expiring_mode_accepts_datetimes():
    b = Bindings(mode="expiring", expire_days=1.5)
    start = datetime(2024, 3, 1, 8, 0, tzinfo=timezone.utc)
    b.record(7, 42, start)
    assert b.bound(7, start + timedelta(days=1.5)) == 42
    assert b.bound(7, start + timedelta(days=1.5, microseconds=1)) is None
    naive = datetime(2024, 3, 1, 8, 0)                # naive means UTC
    assert b.bound(7, naive + timedelta(days=1)) == 42
    assert b.bound(7, start.timestamp() + 1.5 * DAY) == 42
    with pytest.raises(TypeError):
        b.bound(7)                                   # no hidden clock


def test_out_of_order_records_never_move_last_order_back():
    b = Bindings(mode="expiring", expire_days=10)
    b.record(1, "A", T0 + 5 * DAY)
    b.record(1, "A", T0)
    assert b.bound(1, T0 + 15 * DAY) == "A"


@pytest.mark.parametrize("kwargs", [dict(mode="expiring"), dict(mode="expiring", expire_days=0),
                                    dict(mode="first", expire_days=3), dict(mode="sticky"),
                                    dict(mode="expiring", expire_days=float("inf"))])
def test_bindings_reject_bad_configuration(kwargs):
    with pytest.raises(ValueError):
        Bindings(**kwargs)


def test_merge_of_two_bound_customers_keeps_the_earlier_binding():
    b = Bindings()
    b.record(1, "A", T0 + 100)
    b.record(2, "B", T0 + 50)                        # bound earlier
    b.on_merge(1, 2, T0 + 200)
    assert b.bound(1) == "B"
    assert b.bound(2) == "B"                         # the absorbed id follows
    assert b.audit == [BindingAuditRecord(0, "merge", 1, 2, "B", "A", T0 + 200,
                                          b.audit[0].reason)]
    assert "older" in b.audit[0].reason


def test_merge_tie_goes_to_the_survivor():
    b = Bindings(mode="override")
    b.record(3, "A", T0)
    b.record(5, "B", T0)
    b.on_merge(3, 5)                                 # time defaults to the latest seen
    assert b.bound(3) == "A" and b.bound(5) == "A"
    assert (b.audit[0].kept_leader, b.audit[0].dropped_leader, b.audit[0].time) == ("A", "B", T0)


def test_merge_with_one_or_equal_bindings_is_not_audited():
    b = Bindings()
    b.record(2, "B", T0)
    b.on_merge(1, 2, T0 + 1)
    assert b.bound(1) == "B"
    b.record(3, "B", T0 - 5)
    b.on_merge(1, 3, T0 + 2)
    assert b.bound(1) == "B" and b.audit == []
    assert b.to_dict()["bindings"] == [[1, "B", T0 - 5, T0]]


def test_merge_ignores_a_lapsed_binding():
    b = Bindings(mode="expiring", expire_days=7)
    b.record(1, "A", T0)                             # older, but lapses
    b.record(2, "B", T0 + 5 * DAY)
    b.on_merge(1, 2, T0 + 8 * DAY)
    assert b.bound(1, T0 + 8 * DAY) == "B"
    assert b.audit == []


def test_graph_merge_drives_bindings():
    b = Bindings()
    g = IdentityGraph(on_merge=b.on_merge)
    mum = g.resolve({"unionid": "u1", "openid:wx1": "o1"})
    b.record(mum, "leader-7", T0 + DAY)
    kid = g.resolve({"live_viewer": "v9"})
    b.record(kid, "leader-3", T0)                    # bound first
    # The livestream viewer turns out to be the same buyer.
    assert g.resolve({"openid:wx1": "o1", "live_viewer": "v9"}) == mum
    assert b.bound(mum) == "leader-3"
    assert b.audit[0].dropped_leader == "leader-7"
    assert (b.audit[0].survivor, b.audit[0].absorbed) == (mum, kid)


def test_bindings_round_trip():
    b = Bindings(mode="expiring", expire_days=30)
    b.record(1, "A", T0)
    b.record(2, "B", T0 - 1)
    b.on_merge(1, 2, T0 + 1)
    data = json.loads(json.dumps(b.to_dict()))
    c = Bindings.from_dict(data)
    assert c.to_dict() == b.to_dict()
    assert c.audit == b.audit
    assert c.bound(2, T0 + 30 * DAY) == "B"
    with pytest.raises(ValueError):
        Bindings.from_dict({"format": "other"})
    with pytest.raises(ValueError):
        Bindings().record(1, None, T0)


# ---------------------------------------------------------------------------
# resolve_columns: the batch path (one column per kind) equals resolve per order
# ---------------------------------------------------------------------------

column_value = st.one_of(st.none(), st.just(float("nan")), st.just(13800138000), placeholders,
                         st.sampled_from(["000", " 0000 ", "NULL", "+1 202 555 0100"]),
                         st.just("12345"), phones, st.sampled_from(["u0", "u1", " u2 ", "a1"]))


@settings(deadline=None)
@given(rows=st.lists(st.tuples(column_value, column_value, column_value, column_value),
                     max_size=25),
       kinds=st.permutations(["unionid", "phone", "openid:wx1", "live_viewer"]),
       warm=order_lists)
def test_resolve_columns_equals_resolve_per_order(rows, kinds, warm):
    a, b = IdentityGraph(), IdentityGraph()
    for g in (a, b):
        for o in warm:                      # a graph that already holds customers
            g.resolve(o)
    cols = [[r[j] for r in rows] for j in range(4)]
    seen = []
    got = a.resolve_columns(list(kinds), cols, range(len(rows)), seen.append)
    want = {}
    for i, r in enumerate(rows):
        order = dict(zip(kinds, r))
        items, blocked = b._prepare(order)
        if items or blocked:                # an order with only absent values: no customer
            want[i] = b.resolve(order)
    assert got == want
    assert seen == sorted(want)
    assert a.to_dict() == b.to_dict()


def test_resolve_columns_rejects_unknown_kinds_before_anything():
    g = IdentityGraph()
    with pytest.raises(ValueError, match="unknown identifier kind 'wechat'"):
        g.resolve_columns(["unionid", "wechat"], [["u1"], ["w"]], [0])
    assert len(g) == 0 and g.audit == []
