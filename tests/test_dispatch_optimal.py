"""``Dispatcher.assign_batch(mode="optimal")``: the plan wired into the dispatcher.

The solver itself is checked against brute force in ``test_optimal.py``; here the
wiring is: pinned orders first, slots taken, outcomes and metres given up truthful,
reasons of what stays unassigned, bindings, determinism, the store.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from lbsdispatch import Dispatcher, Outcome, Rules
from lbsdispatch.geo import great_circle_m

BIG = 10**9


@st.composite
def events(draw):
    n_l = draw(st.integers(1, 6))
    n_o = draw(st.integers(0, 10))
    pt = st.tuples(st.floats(30.0, 30.03), st.floats(120.0, 120.03))
    leaders = draw(st.lists(pt, min_size=n_l, max_size=n_l))
    orders = draw(st.lists(pt, min_size=n_o, max_size=n_o))
    cap = draw(st.lists(st.integers(0, 3), min_size=n_l, max_size=n_l))
    active = draw(st.lists(st.booleans(), min_size=n_l, max_size=n_l))
    radius = draw(st.sampled_from([None, 1500.0, 2500.0]))
    return leaders, orders, cap, active, radius


def _build(leaders, cap, active, radius, **kw):
    lat = [p[0] for p in leaders]
    lon = [p[1] for p in leaders]
    return Dispatcher(list(range(len(leaders))), lat, lon, capacity=cap, active=active,
                      rules=Rules(max_distance_m=radius), **kw)


def _metres(orders, leaders):
    if not orders:
        return np.zeros((0, len(leaders)))
    return great_circle_m(np.array([o[0] for o in orders])[:, None],
                          np.array([o[1] for o in orders])[:, None],
                          np.array([p[0] for p in leaders])[None, :],
                          np.array([p[1] for p in leaders])[None, :])


def _brute(dm, cap, active, radius):
    """(most orders assignable, least total integer metres) by linear_sum_assignment on
    capacity slots plus one 'unassigned' column per order."""
    n_o = dm.shape[0]
    slots = [j for j in range(len(cap)) if active[j] for _ in range(cap[j])]
    w = np.floor(dm + 0.5).astype(np.int64)
    cost = np.full((n_o, len(slots) + n_o), BIG * 1000, dtype=np.int64)
    for c, j in enumerate(slots):
        ok = dm[:, j] <= (np.inf if radius is None else radius)
        cost[ok, c] = w[ok, j]
    cost[:, len(slots):] = BIG
    r, c = linear_sum_assignment(cost)
    placed = c < len(slots)
    return int(placed.sum()), int(cost[r[placed], c[placed]].sum())


@settings(deadline=None)
@given(ev=events())
def test_optimal_batch_is_optimal_and_truthful(ev):
    leaders, orders, cap, active, radius = ev
    d = _build(leaders, cap, active, radius)
    lat = np.array([o[0] for o in orders], dtype=float)
    lon = np.array([o[1] for o in orders], dtype=float)
    res = d.assign_batch(lat, lon, mode="optimal")
    dm = _metres(orders, leaders)
    got = res.leader_index >= 0
    best_n, best_w = _brute(dm, cap, active, radius)
    assert int(got.sum()) == best_n
    assert int(np.floor(res.distance_m[got] + 0.5).sum()) == best_w
    # slots taken exactly, capacity and ranges respected
    assert np.array_equal(d.loads(), np.bincount(res.leader_index[got], minlength=len(cap)))
    assert (d.loads() <= np.array(cap)).all()
    lim = np.inf if radius is None else radius
    for i in np.flatnonzero(got):
        j = res.leader_index[i]
        assert active[j] and dm[i, j] <= lim
        assert res.distance_m[i] == pytest.approx(dm[i, j], abs=1e-6)
        eligible = [dm[i, k] for k in range(len(cap)) if active[k] and cap[k] > 0
                    and dm[i, k] <= lim]
        nearest = min(eligible)
        if res.outcome[i] == Outcome.NEAREST:
            assert dm[i, j] == pytest.approx(nearest, abs=1e-6) and res.given_up_m[i] == 0
        else:
            assert res.outcome[i] == Outcome.REBALANCED
            assert res.given_up_m[i] == pytest.approx(dm[i, j] - nearest, abs=1e-6)
            assert res.given_up_m[i] > 0
    # what stays unassigned says why, truthfully
    for i in np.flatnonzero(~got):
        in_range = [k for k in range(len(cap)) if active[k] and dm[i, k] <= lim]
        assert res.outcome[i] == (Outcome.ALL_FULL if in_range else Outcome.OUT_OF_RANGE)
        assert res.distance_m[i] == np.inf


@settings(deadline=None)
@given(ev=events(), seed=st.integers(0, 2**16))
def test_optimal_batch_is_deterministic_under_leader_order(ev, seed):
    leaders, orders, cap, active, radius = ev
    perm = np.random.default_rng(seed).permutation(len(leaders))
    a = _build(leaders, cap, active, radius)
    b = Dispatcher(perm.tolist(), [leaders[k][0] for k in perm], [leaders[k][1] for k in perm],
                   capacity=[cap[k] for k in perm], active=[active[k] for k in perm],
                   rules=Rules(max_distance_m=radius))
    lat = [o[0] for o in orders]
    lon = [o[1] for o in orders]
    ra = a.assign_batch(lat, lon, mode="optimal")
    rb = b.assign_batch(lat, lon, mode="optimal")
    assert ra.leader_id.tolist() == rb.leader_id.tolist()
    assert ra.outcome.tolist() == rb.outcome.tolist()


def test_pinned_orders_first_then_the_plan():
    """A bound customer and a chosen pickup point keep their leader even where the plan
    would rather use that slot; a refused choice joins the plan with its refusal."""
    d = Dispatcher(["a", "b"], [30.0, 30.0], [120.0, 120.01], capacity=[1, 1],
                   bindings={"c1": "b"})
    res = d.assign_batch([30.0, 30.0, 30.0], [120.0, 120.0, 120.0],
                         order_ids=[1, 2, 3], customer_ids=[None, "c1", None],
                         chosen_leaders=[None, None, "a"], mode="optimal")
    assert res.outcome.tolist() == [Outcome.ALL_FULL, Outcome.STICKY, Outcome.CHOSEN]
    assert res.leader_id.tolist() == [None, "b", "a"]
    d2 = Dispatcher(["a", "b"], [30.0, 30.0], [120.0, 120.01], capacity=[0, 1])
    r2 = d2.assign_batch([30.0], [120.0], chosen_leaders=["a"], mode="optimal")
    assert r2.outcome[0] == Outcome.NEAREST and r2.leader_id[0] == "b"
    assert "chosen leader" in r2.reason[0] and "full" in r2.reason[0]


def test_optimal_places_what_greedy_leaves_behind():
    """Order 0 takes the only leader that order 1 could reach under greedy; the plan
    moves order 0 to its second choice and serves both."""
    lat, lon = [30.0, 30.0], [120.0, 120.02]
    kw = dict(capacity=[1, 1], rules=Rules(max_distance_m=1500))
    greedy = Dispatcher(["near", "far"], lat, lon, **kw)
    opt = Dispatcher(["near", "far"], lat, lon, **kw)
    olat, olon = [30.0, 30.0], [120.009, 120.0]
    g = greedy.assign_batch(olat, olon)
    o = opt.assign_batch(olat, olon, mode="optimal")
    assert (g.leader_index >= 0).sum() == 1
    assert o.leader_id.tolist() == ["far", "near"]
    assert o.outcome.tolist() == [Outcome.REBALANCED, Outcome.NEAREST]
    assert o.given_up_m[0] > 0
    assert opt.bindings is not None


def test_optimal_batch_writes_bindings_and_persists(tmp_path):
    path = tmp_path / "e.sqlite"
    d = Dispatcher(["a", "b"], [30.0, 30.0], [120.0, 120.02], capacity=[5, 5],
                   store=str(path))
    res = d.assign_batch([30.0, 30.0], [120.019, 120.001], order_ids=["o1", "o2"],
                         customer_ids=["x", "y"], mode="optimal", now=1.7e9)
    assert res.leader_id.tolist() == ["b", "a"]
    again = d.assign(30.0, 120.0, order_id="o3", customer_id="x", now=1.7e9)
    assert again.outcome == Outcome.STICKY and again.leader_id == "b"
    d.close()
    back = Dispatcher.open(path)
    assert back.loads().tolist() == [1, 2]
    rerun = back.assign_batch([30.0, 30.0], [120.019, 120.001], order_ids=["o1", "o2"],
                              mode="optimal")
    assert rerun.repeat.all() and back.loads().tolist() == [1, 2]


@pytest.mark.parametrize("kw, field", [({"mode": "best"}, "mode"),
                                       ({"objective": "median"}, "objective")])
def test_bad_mode_is_named(kw, field):
    d = Dispatcher([1], [30.0], [120.0])
    with pytest.raises(ValueError, match=field):
        d.assign_batch([30.0], [120.0], **kw)


def test_bottleneck_objective_through_the_dispatcher():
    # two orders, two leaders: total prefers (o0->L0, o1->L1); bottleneck the swap
    leaders = [(30.0, 120.0), (30.0, 120.03)]
    d1 = _build(leaders, [1, 1], [True, True], None)
    d2 = _build(leaders, [1, 1], [True, True], None)
    olat, olon = [30.0, 30.0], [120.012, 120.011]
    tot = d1.assign_batch(olat, olon, mode="optimal")
    bot = d2.assign_batch(olat, olon, mode="optimal", objective="bottleneck")
    assert bot.distance_m.max() <= tot.distance_m.max()
    assert tot.distance_m.sum() <= bot.distance_m.sum()


def test_keep_orders_false_dispatches_alike_and_says_what_it_cannot_do(tmp_path):
    kw = dict(capacity=[2, 2], rules=Rules(max_distance_m=5000))
    lat, lon = [30.0, 30.0], [120.0, 120.02]
    full = Dispatcher(["a", "b"], lat, lon, **kw)
    lean = Dispatcher(["a", "b"], lat, lon, keep_orders=False, **kw)
    olat, olon = [30.0, 30.0, 30.0, 30.0, 30.0], [120.0, 120.001, 120.002, 120.019, 120.0]
    a = full.assign_batch(olat[:4], olon[:4], customer_ids=["x", "y", "z", "w"])
    b = lean.assign_batch(olat[:4], olon[:4], customer_ids=["x", "y", "z", "w"])
    assert a.leader_id.tolist() == b.leader_id.tolist()
    assert a.outcome.tolist() == b.outcome.tolist()
    assert full.assign(olat[4], olon[4], customer_id="x") == \
        lean.assign(olat[4], olon[4], customer_id="x")
    assert full.loads().tolist() == lean.loads().tolist()
    for call in (lambda: lean.release(0), lambda: lean.orders_of("a"),
                 lambda: lean.reassign_orders_of("a"), lean.to_dict):
        with pytest.raises(ValueError, match="keep_orders=False"):
            call()
    with pytest.raises(ValueError, match="keep_orders"):
        Dispatcher(["a"], [30.0], [120.0], keep_orders=False, store=str(tmp_path / "s.db"))
