"""The dispatcher's store starts the SOP in the assignment's own transaction."""
import sqlite3

import numpy as np
import pytest

from lbsdispatch import Dispatcher, Outcome, synth
from lbsdispatch.sop import SopEngine, hookimpl

T0 = 1_700_013_600.0          # 2023-11-15 02:00 UTC = 10:00 in Shanghai: outside quiet hours


class Host:
    """Records every notification and welcome the engine delivers."""

    def __init__(self):
        self.new = []
        self.welcome = []

    @hookimpl
    def on_new_neighbor(self, leader, customer, order, key):
        self.new.append((leader, customer, order))

    @hookimpl
    def on_welcome_due(self, leader, order):
        self.welcome.append((leader, order))


class NotifyOnly:
    """A host that handles only the leader's notification."""

    def __init__(self):
        self.new = []

    @hookimpl
    def on_new_neighbor(self, leader, customer, order):
        self.new.append((leader, customer, order))


@pytest.fixture
def event():
    return synth.city_event(n_leaders=40, n_orders=300, seed=3)


def _dispatcher(ev, path, **kw):
    return Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                      store=str(path), **kw)


def test_every_new_assignment_notifies_its_leader_once(event, tmp_path):
    path = tmp_path / "e.sqlite"
    d = _dispatcher(event, path, bindings={7: int(event.leader_ids[0])})
    cust = np.arange(300) % 250                          # 50 customers order twice
    res = d.assign_batch(event.order_lat[:250], event.order_lon[:250],
                         order_ids=np.arange(250), customer_ids=cust[:250], now=T0)
    one = [d.assign(event.order_lat[i], event.order_lon[i], order_id=int(i),
                    customer_id=int(cust[i]), now=T0 + 60) for i in range(250, 300)]
    d.assign_batch(event.order_lat[:250], event.order_lon[:250], order_ids=np.arange(250),
                   customer_ids=cust[:250], now=T0 + 90)        # a re-run: all repeats
    host = Host()
    SopEngine(str(path), plugins=[host], clock=lambda: T0 + 120).run_due()
    rows = [(r.leader_id, r.customer_id, r.order_id, r.outcome) for r in res] + \
        [(a.leader_id, a.customer_id, a.order_id, a.outcome) for a in one]
    expect = sorted((lid, c, o) for lid, c, o, out in rows
                    if out in (Outcome.NEAREST, Outcome.SPILLOVER, Outcome.CHOSEN))
    assert sorted(host.new) == expect                  # new customers only, each once
    assert any(out == Outcome.STICKY for *_, out in rows)   # returning ones were there
    assert len(expect) > 200


def test_a_released_order_drops_its_remaining_steps(event, tmp_path):
    path = tmp_path / "e.sqlite"
    d = _dispatcher(event, path)
    a = d.assign(event.order_lat[0], event.order_lon[0], order_id="keep", now=T0)
    b = d.assign(event.order_lat[1], event.order_lon[1], order_id="gone", now=T0)
    d.release("gone")
    host = Host()
    SopEngine(str(path), plugins=[host], clock=lambda: T0 + 7200).run_due()
    assert [o for _, o in host.welcome] == ["keep"]
    assert a.leader_id in [lid for lid, _ in host.welcome]
    assert b.outcome in (Outcome.NEAREST, Outcome.SPILLOVER)


def test_sop_survives_reopening_and_can_be_off(event, tmp_path):
    d = _dispatcher(event, tmp_path / "on.sqlite")
    d.close()
    assert Dispatcher.open(tmp_path / "on.sqlite").store.sop == "default"
    off = _dispatcher(event, tmp_path / "off.sqlite", sop=None)
    off.assign(event.order_lat[0], event.order_lon[0], now=T0)
    off.close()
    con = sqlite3.connect(tmp_path / "off.sqlite")
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not any(n.startswith("sop_") for n in names)
    with pytest.raises(ValueError, match="sop"):
        _dispatcher(event, tmp_path / "bad.sqlite", sop=3)


def test_reassigned_orders_take_their_remaining_steps_to_the_new_leader(event, tmp_path):
    """The notification already went to the first leader; what is still to come (the
    welcome, the reminders) goes to the leader the order moved to."""
    path = tmp_path / "e.sqlite"
    clock = {"t": T0}
    d = _dispatcher(event, path, clock=lambda: clock["t"])
    res = d.assign_batch(event.order_lat[:60], event.order_lon[:60], order_ids=np.arange(60),
                         now=T0)
    busy = int(np.bincount(res.leader_index[res.leader_index >= 0]).argmax())
    first = d.leader_ids[busy].item()
    host = NotifyOnly()              # the welcomes stay due (no plugin for them yet)
    SopEngine(str(path), plugins=[host], clock=lambda: T0 + 60).run_due()
    mine = sorted(o for lid, _, o in host.new if lid == first)
    assert mine and sorted(d.orders_of(first)) == mine
    d.set_active(first, False)
    clock["t"] = T0 + 120
    moved = d.reassign_orders_of(first)
    to = dict(zip(moved.order_id.tolist(), moved.leader_id.tolist()))
    placed = {o: lid for o, lid in to.items() if moved.outcome[list(to).index(o)]
              in (Outcome.NEAREST, Outcome.SPILLOVER)}
    host2 = Host()
    SopEngine(str(path), plugins=[host2], clock=lambda: T0 + 3600).run_due()
    welcomed = {o: lid for lid, o in host2.welcome}
    for o in mine:
        if o in placed:
            assert welcomed[o] == placed[o] != first
        else:
            assert o not in welcomed          # no leader could take it: it left the playbook
    assert all(lid != first for lid in welcomed.values())
