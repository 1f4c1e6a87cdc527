"""SOP engine (issue 5): playbook rules, the outbox, retries, SLA, the due list."""
from __future__ import annotations

import io
import sqlite3
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, strategies as st

from lbsdispatch import sop
from lbsdispatch._sop_playbook import local_hour, next_local_hour

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
KOL = ZoneInfo("Asia/Kolkata")
ZONES = [SH, NY, KOL, ZoneInfo("Europe/London"), ZoneInfo("Australia/Lord_Howe"),
         ZoneInfo("Pacific/Chatham")]
NEAREST, STICKY, OUT_OF_RANGE = 0, 2, 4


def at(tz, *dt):
    return datetime(*dt, tzinfo=tz).timestamp()


def local(t, tz=SH):
    return datetime.fromtimestamp(t, tz)


class Recorder:
    """Records every hook call; ``fail`` maps a step to a set of attempts that raise
    (or True: always)."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or {}

    def _do(self, kw):
        self.calls.append(kw)
        f = self.fail.get(kw["step"])
        if f is True or (f and kw["attempt"] in f):
            raise RuntimeError(f"boom {kw['step']} {kw['attempt']}")

    @sop.hookimpl
    def on_new_neighbor(self, key, step, leader, customer, order, due, attempt, now):
        self._do(dict(key=key, step=step, leader=leader, order=order, attempt=attempt, now=now))

    @sop.hookimpl
    def on_welcome_due(self, key, step, leader, order, deadline, attempt, now):
        self._do(dict(key=key, step=step, leader=leader, order=order, attempt=attempt, now=now,
                      deadline=deadline))

    @sop.hookimpl
    def on_pickup_reminder(self, key, step, leader, order, pickup_at, attempt, now):
        self._do(dict(key=key, step=step, leader=leader, order=order, attempt=attempt, now=now,
                      pickup_at=pickup_at))

    @sop.hookimpl
    def on_group_invite(self, key, step, leader, order, attempt, now):
        self._do(dict(key=key, step=step, leader=leader, order=order, attempt=attempt, now=now))

    @sop.hookimpl
    def on_coupon(self, key, step, leader, order, attempt, now):
        self._do(dict(key=key, step=step, leader=leader, order=order, attempt=attempt, now=now))

    @sop.hookimpl
    def on_sla_breached(self, key, step, leader, order, late_s, breach, deadline, attempt, now):
        self._do(dict(key=key, step=step + "!sla", leader=leader, order=order, attempt=attempt,
                      now=now, late_s=late_s, breach=breach, deadline=deadline))

    def steps(self):
        return [c["step"] for c in self.calls]

    def of(self, step):
        return [c for c in self.calls if c["step"] == step]


def engine(t0, **kw):
    rec = kw.pop("rec", None) or Recorder()
    clock = sop.SimClock(t0)
    kw.setdefault("pickup_at", at(SH, 2024, 6, 2, 16, 0))
    e = sop.SopEngine(clock=clock, plugins=[rec], **kw)
    return e, clock, rec


def only(e, step):
    return {"new_neighbor", "welcome", "pickup_reminder", "group_invite", "coupon"} - {step}


# -- quiet hours -----------------------------------------------------------------------------
@pytest.mark.parametrize("tz, given, held", [
    (SH, (2024, 6, 1, 23, 30), (2024, 6, 2, 8, 0)),      # across midnight
    (SH, (2024, 6, 2, 3, 0), (2024, 6, 2, 8, 0)),        # after midnight: same morning
    (SH, (2024, 6, 1, 22, 0), (2024, 6, 2, 8, 0)),       # start is quiet
    (SH, (2024, 6, 2, 8, 0), (2024, 6, 2, 8, 0)),        # end is not
    (SH, (2024, 6, 1, 21, 59), (2024, 6, 1, 21, 59)),
    (KOL, (2024, 6, 1, 23, 30), (2024, 6, 2, 8, 0)),     # +05:30
    (NY, (2024, 3, 9, 23, 30), (2024, 3, 10, 8, 0)),     # the night clocks go forward
    (NY, (2024, 11, 2, 23, 30), (2024, 11, 3, 8, 0)),    # the night clocks go back
])
def test_quiet_hours_hold_to_the_morning(tz, given, held):
    q = sop.QuietHours()
    assert q.hold(at(tz, *given), tz) == at(tz, *held)


def test_quiet_hours_within_one_day_and_none():
    q = sop.QuietHours(time(12, 0), time(14, 0))           # a siesta, not across midnight
    assert q.hold(at(SH, 2024, 6, 1, 13, 0), SH) == at(SH, 2024, 6, 1, 14, 0)
    assert q.hold(at(SH, 2024, 6, 1, 23, 0), SH) == at(SH, 2024, 6, 1, 23, 0)
    off = sop.QuietHours(time(8, 0), time(8, 0))
    assert off.hold(at(SH, 2024, 6, 1, 3, 0), SH) == at(SH, 2024, 6, 1, 3, 0)


@given(t=st.floats(1.6e9, 1.8e9), z=st.sampled_from(ZONES),
       start=st.integers(0, 23), end=st.integers(0, 23))
def test_property_a_held_time_is_never_quiet(t, z, start, end):
    q = sop.QuietHours(time(start), time(end))
    h = q.hold(t, z)
    assert h >= t
    assert not q.contains(h, z)
    assert (h == t) == (not q.contains(t, z))
    if h > t:                       # and it is the first moment the quiet hours end
        assert q.contains(h - 1, z) and h - t <= 24 * 3600 + 3600


@given(t=st.floats(1.6e9, 1.8e9), z=st.sampled_from(ZONES))
def test_property_local_hours(t, z):
    h = local_hour(t, z)
    assert h <= t < next_local_hour(t, z)
    assert local(h, z).minute == 0 and local(next_local_hour(t, z), z).minute == 0


def test_local_hour_of_a_time_just_below_the_hour():
    # datetime.fromtimestamp rounds 1799999999.9999998 up to the next hour
    t = 1799999999.9999998
    z = ZoneInfo("Asia/Shanghai")
    assert local_hour(t, z) == 1800000000.0 - 3600.0
    assert next_local_hour(t, z) == 1800000000.0


def test_welcome_held_by_quiet_hours_in_the_leaders_zone():
    t0 = at(SH, 2024, 6, 1, 23, 30)       # = 21:00 in Kolkata
    e, clock, rec = engine(t0, leader_tz={"K": "Asia/Kolkata"})
    e.enqueue(["o1", "o2"], ["c1", "c2"], ["S", "K"], [NEAREST, NEAREST])
    e.run_due()
    # the Shanghai leader's customer waits for 08:00; the Kolkata leader's does not
    # (and their reminder, 20:00 Kolkata the evening before, is due already)
    assert [(c["leader"], c["step"]) for c in rec.calls] == [
        ("S", "new_neighbor"), ("K", "new_neighbor"), ("K", "pickup_reminder"),
        ("K", "welcome")]
    w = e.task("o1", "welcome")
    assert w.due == at(SH, 2024, 6, 2, 8, 0) and w.deadline == at(SH, 2024, 6, 2, 9, 0)


# -- conditions, triggers, exits ----------------------------------------------------------------
def test_returning_customers_get_only_the_reminder():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0))
    e.enqueue(["new", "back", "none"], ["c1", "c2", "c3"], ["L", "L", None],
              [NEAREST, STICKY, OUT_OF_RANGE])
    steps = {(t.order, t.step) for t in e.tasks()}
    assert steps == {("new", s) for s in ("new_neighbor", "welcome", "pickup_reminder",
                                          "group_invite", "coupon")} | {("back",
                                                                         "pickup_reminder")}


def test_full_playbook_of_a_new_customer():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0))
    e.enqueue(["o1"], ["c1"], ["L"], [NEAREST])
    e.run_due()
    assert rec.steps() == ["new_neighbor", "welcome"]
    clock.set(at(SH, 2024, 6, 1, 19, 40))
    assert e.report_done("default/welcome/c1/o1") == "done"
    clock.set(at(SH, 2024, 6, 1, 20, 0))
    e.run_due()
    assert rec.steps()[-1] == "pickup_reminder"
    assert rec.calls[-1]["pickup_at"] == at(SH, 2024, 6, 2, 16, 0)
    assert e.joined_group("c1") == 1              # joined before pickup: coupon due now
    clock.set(at(SH, 2024, 6, 2, 16, 10))
    assert e.picked_up("o1") == 1
    e.run_due()
    assert rec.steps()[-2:] == ["coupon", "group_invite"]
    assert all(t.state == "done" for t in e.tasks())
    assert e.counts()["done"] == 5 and e.outbox_size() == 0


def test_joined_before_trigger_is_ignored_only_for_missing_rows():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0))
    e.enqueue(["o1"], ["c1"], ["L"], [STICKY])
    assert e.joined_group("c1") == 0 and e.picked_up("o1") == 0   # no such steps for STICKY


def test_cancellation_drops_the_remaining_steps():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0))
    e.enqueue(["o1", "o2"], ["c1", "c2"], ["L", "L"], [NEAREST, NEAREST])
    e.run_due()
    n_before = len(rec.calls)
    assert e.cancelled("o1", reason="refunded") == 4   # welcome (open), reminder, invite, coupon
    clock.set(at(SH, 2024, 6, 2, 17, 0))
    assert e.picked_up(["o1", "o2"]) == 1
    e.run_due()
    assert {c["order"] for c in rec.calls[n_before:]} == {"o2"}
    t = {s.step: s for s in e.tasks(order="o1")}
    assert t["new_neighbor"].state == "done"
    assert {t[s].state for s in ("welcome", "pickup_reminder", "group_invite", "coupon")} \
        == {"dropped"} and t["coupon"].note == "refunded"
    # a repeat of the cancel and a late enqueue of the same order change nothing
    assert e.cancelled("o1") == 0
    e.enqueue(["o1"], ["c1"], ["L"], [NEAREST])
    assert {s.state for s in e.tasks(order="o1")} == {"done", "dropped"}


def test_exit_through_the_outbox_in_the_hosts_transaction():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0))
    con = e.con
    con.execute("BEGIN")
    sop.enqueue(con, ["o1"], ["c1"], ["L"], [NEAREST], clock())
    sop.enqueue_exits(con, ["o1"], clock(), reason="cancelled")
    con.execute("COMMIT")
    e.run_due()
    assert rec.calls == [] and {t.state for t in e.tasks()} == {"dropped"}


def test_enqueue_is_transactional_and_idempotent():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0))
    con = e.con
    con.execute("BEGIN")
    assert sop.enqueue(con, ["o1"], ["c1"], ["L"], [NEAREST], clock()) == 1
    con.execute("ROLLBACK")                        # the assignment was not committed
    assert e.tasks() == [] and e.outbox_size() == 0
    for _ in range(3):                             # a batch re-run
        e.enqueue(["o1", "o2"], ["c1", "c2"], ["L", "L"], [NEAREST, STICKY])
        e.run_due()
    assert len(e.tasks()) == 6
    assert sorted(rec.steps()) == ["new_neighbor", "welcome"]


def test_enqueue_skips_repeats_of_a_batch_result():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0))
    assert e.enqueue(["o1", "o2"], ["c1", "c2"], ["L", "L"], [NEAREST, NEAREST],
                     repeat=[True, False]) == 1
    assert {t.order for t in e.tasks()} == {"o2"}


# -- the pickup reminder -----------------------------------------------------------------------
def test_pickup_reminder_the_evening_before_in_local_time():
    e, clock, rec = engine(at(KOL, 2024, 6, 1, 10, 0), tz="Asia/Kolkata", pickup_at=None)
    e.enqueue(["a", "b", "c", "d"], ["c1", "c2", "c3", "c4"], ["L"] * 4, [STICKY] * 4,
              pickup_at=[at(KOL, 2024, 6, 3, 9, 0), at(KOL, 2024, 6, 1, 12, 0), None,
                         float("nan")])
    t = {x.order: x for x in e.tasks()}
    assert t["a"].due == at(KOL, 2024, 6, 2, 20, 0) and t["a"].state == "pending"
    # 20:00 the day before has passed: due at once (before the noon pickup)
    assert t["b"].state == "pending" and t["b"].due == clock()
    assert t["c"].state == t["d"].state == "waiting"
    assert e.set_pickup(["c"], at(KOL, 2024, 6, 1, 23, 0)) == 1
    c = e.task("c", "pickup_reminder")
    assert c.state == "pending" and c.due == at(KOL, 2024, 6, 1, 10, 0)   # at once


def test_pickup_reminder_after_a_late_order_is_held_and_expires_at_pickup():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 23, 0))
    e.enqueue(["a", "b"], ["c1", "c2"], ["L", "L"], [STICKY, STICKY],
              pickup_at=[at(SH, 2024, 6, 2, 12, 0), at(SH, 2024, 6, 2, 7, 0)])
    t = {x.order: x for x in e.tasks()}
    assert t["a"].due == at(SH, 2024, 6, 2, 8, 0)     # held out of the night
    assert t["b"].state == "expired"                  # 08:00 is after the 07:00 pickup
    clock.set(at(SH, 2024, 6, 2, 13, 0))              # nobody ran the engine in time
    assert e.run_due().expired == 1 and rec.calls == []


# -- the hourly cap ------------------------------------------------------------------------------
def test_hourly_cap_moves_the_excess_to_the_next_hour():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 19, 0), hourly_cap=3)
    oids = [f"o{i}" for i in range(8)]
    e.enqueue(oids, [f"c{i}" for i in range(8)], ["A"] * 7 + ["B"], [STICKY] * 8)
    clock.set(at(SH, 2024, 6, 1, 20, 0))
    s = e.run_due()
    assert (s.succeeded, s.deferred) == (4, 4)
    assert [c["order"] for c in rec.calls] == ["o0", "o1", "o2", "o7"]   # B has its own cap
    assert {e.task(o, "pickup_reminder").due for o in oids[3:7]} == {at(SH, 2024, 6, 1, 21, 0)}
    clock.set(at(SH, 2024, 6, 1, 21, 0))
    e.run_due()
    assert [c["order"] for c in rec.calls[4:]] == ["o3", "o4", "o5"]
    # the next hour is quiet: the last one waits for the morning
    assert e.task("o6", "pickup_reminder").due == at(SH, 2024, 6, 2, 8, 0)
    e2, _, rec2 = engine(at(SH, 2024, 6, 1, 19, 0), hourly_cap=3)   # deterministic
    e2.enqueue(oids, [f"c{i}" for i in range(8)], ["A"] * 7 + ["B"], [STICKY] * 8)
    e2.run_due(at(SH, 2024, 6, 1, 20, 0))
    assert [c["order"] for c in rec2.calls] == ["o0", "o1", "o2", "o7"]


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=40),
       st.lists(st.integers(1, 90), min_size=1, max_size=30), st.integers(1, 4))
def test_property_cap_never_exceeded_in_any_leader_hour(orders, steps, cap):
    t0 = at(SH, 2024, 6, 1, 8, 0)
    e, clock, rec = engine(t0, hourly_cap=cap, rec=Recorder(fail={"pickup_reminder": {1}}),
                           pickup_at=at(SH, 2024, 6, 3, 12, 0))
    for i, (leader, minute) in enumerate(orders):
        e.enqueue([f"o{i}"], [f"c{i}"], [leader], [STICKY], now=t0 + minute * 60)
    # the reminders are due at 20:00 the day before pickup; run at random steps from then
    clock.set(at(SH, 2024, 6, 2, 19, 30))
    for m in steps:
        clock.advance(m * 60)
        e.run_due()
    sent = [c for c in rec.calls if c["attempt"] > 1]          # attempt 1 always fails
    per = {}
    for c in sent:
        k = (c["leader"], local_hour(c["now"], SH))
        per[k] = per.get(k, 0) + 1
        assert 8 <= local(c["now"]).hour < 22
    assert all(v <= cap for v in per.values()), per


# -- retries, dead letters, at-least-once --------------------------------------------------------
def test_backoff_schedule_then_dead_letter_then_requeue():
    t0 = at(SH, 2024, 6, 1, 12, 0)
    e, clock, rec = engine(t0, rec=Recorder(fail={"new_neighbor": True}), max_attempts=5,
                           backoff=sop.Backoff(30, 2, 100))
    e.enqueue(["o1"], ["c1"], ["L"], [STICKY])         # only the reminder: not due today
    e.enqueue(["o2"], ["c2"], ["L"], [NEAREST])
    dues = []
    for _ in range(5):
        t = e.task("o2", "new_neighbor")
        dues.append(t.due - t0)
        e.run_due(t.due)
    assert dues == [0, 30, 90, 190, 290]              # 30, 60, then capped at 100
    assert [c["attempt"] for c in rec.of("new_neighbor")] == [1, 2, 3, 4, 5]
    (d,) = e.dead_letters()
    assert d.key == "default/new_neighbor/c2/o2" and d.attempts == 5
    assert d.error == "RuntimeError: boom new_neighbor 5"
    e.run_due(t0 + 10_000)
    assert len(rec.of("new_neighbor")) == 5           # a dead letter is not run again
    rec.fail = {}
    assert e.requeue(d.key, at=t0 + 10_000) == "pending"
    e.run_due(t0 + 10_000)
    assert e.task(d.key).state == "done" and len(rec.of("new_neighbor")) == 6


def test_a_recorded_success_is_never_run_again():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 12, 0))
    e.enqueue(["o1"], ["c1"], ["L"], [NEAREST])
    for k in range(5):
        e.run_due(clock() + k * 3600)
    assert rec.steps() == ["new_neighbor", "welcome"]


def test_crash_inside_a_chunk_reruns_with_the_same_key(tmp_path):
    path = tmp_path / "e.sqlite"
    t0 = at(SH, 2024, 6, 1, 12, 0)

    class Dies(Recorder):
        def _do(self, kw):
            super()._do(kw)
            if len(self.calls) == 3:
                raise KeyboardInterrupt     # the process is stopped inside the 3rd call

    rec = Dies()
    e = sop.SopEngine(path, plugins=[rec], clock=sop.SimClock(t0), chunk_size=100)
    e.enqueue([f"o{i}" for i in range(4)], [f"c{i}" for i in range(4)], ["L"] * 4,
              [STICKY, NEAREST, NEAREST, STICKY])
    with pytest.raises(KeyboardInterrupt):
        e.run_due()
    e.close()
    rec2 = Recorder()
    e2 = sop.SopEngine(path, plugins=[rec2], clock=sop.SimClock(t0))
    e2.run_due()
    # the first two successes were recorded (the run records what ran when it is
    # interrupted); the third call's effect happened but its record did not: rerun
    first = [c["key"] for c in rec.calls]
    assert rec2.calls[0]["key"] == first[2] and first[2] not in [c["key"] for c in
                                                                  rec2.calls[1:]]
    assert not set(first[:2]) & {c["key"] for c in rec2.calls}
    e2.close()


def test_hooks_without_a_plugin_stay_due_until_one_is_registered():
    e = sop.SopEngine(clock=sop.SimClock(at(SH, 2024, 6, 1, 12, 0)))
    e.enqueue(["o1"], ["c1"], ["L"], [NEAREST])
    s = e.run_due()
    assert s.unhandled == 2 and s.called == 0
    rec = Recorder()
    e.register(rec)
    e.run_due()
    assert rec.steps() == ["new_neighbor", "welcome"]


# -- human tasks and SLA -------------------------------------------------------------------------
def test_sla_breach_when_done_late_or_never():
    t0 = at(SH, 2024, 6, 1, 12, 0)
    e, clock, rec = engine(t0)
    e.enqueue(["ok", "late", "never"], ["c1", "c2", "c3"], ["L"] * 3, [NEAREST] * 3)
    e.run_due()
    assert e.report_done("ok", "welcome", at=t0 + 3599) == "done"
    assert e.report_done("default/welcome/c2/late", at=t0 + 3600 + 125) == "done"
    assert e.report_done("default/welcome/c2/late", at=t0 + 9999) == "done"   # a repeat
    e.run_due(t0 + 7200)
    (b,) = rec.of("welcome!sla")
    assert (b["order"], b["late_s"], b["breach"], b["key"]) == (
        "late", 125.0, "late", "default/welcome.sla/c2/late")
    assert e.task("never", "welcome").state == "pending"
    e.run_due(t0 + 3600 + 86400)                       # a day after the deadline
    assert e.task("never", "welcome").state == "expired"
    b2 = rec.of("welcome!sla")[-1]
    assert (b2["order"], b2["late_s"], b2["breach"]) == ("never", 86400.0, "expired")
    assert e.report_done("never", "welcome", at=t0 + 90000) == "done"   # done after all
    e.run_due(t0 + 100000)
    assert len(rec.of("welcome!sla")) == 2                               # no second breach


def test_postpone_a_human_task():
    t0 = at(SH, 2024, 6, 1, 12, 0)
    e, clock, rec = engine(t0)
    e.enqueue(["a", "b"], ["c1", "c2"], ["L", "L"], [NEAREST, NEAREST])
    e.run_due()                                               # both welcomes opened
    assert e.postpone("a", "welcome", until=t0 + 7200) == "postponed"
    a = e.task("a", "welcome")
    assert (a.state, a.deadline) == ("postponed", t0 + 7200)
    e.report_done("a", "welcome", at=t0 + 5000)               # late for 1 h, not for 2 h
    e.run_due(t0 + 6000)
    assert rec.of("welcome!sla") == []
    with pytest.raises(ValueError, match="done: only pending or postponed"):
        e.postpone("a", "welcome", until=t0 + 9000)
    with pytest.raises(ValueError, match="not after"):
        e.postpone("b", "welcome", until=t0, at=t0 + 10)


def test_postpone_before_the_hook_ran_moves_the_due_time_out_of_quiet_hours():
    t0 = at(SH, 2024, 6, 1, 12, 0)
    e, clock, rec = engine(t0)
    e.enqueue(["a"], ["c1"], ["L"], [NEAREST])
    e.postpone("default/welcome/c1/a", until=at(SH, 2024, 6, 1, 23, 0))
    w = e.task("a", "welcome")
    assert w.due == at(SH, 2024, 6, 2, 8, 0) and w.deadline == at(SH, 2024, 6, 2, 9, 0)


def test_report_done_errors():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 12, 0))
    e.enqueue(["o/1"], ["c/1"], ["L"], [NEAREST])
    assert e.task("default/welcome/c/1/o/1").order == "o/1"     # ids holding the separator
    with pytest.raises(ValueError, match="not a human task"):
        e.report_done("o/1", "new_neighbor")
    with pytest.raises(ValueError, match="no such task"):
        e.report_done("default/welcome/c/1/o/2")
    with pytest.raises(ValueError, match="not a task key"):
        e.report_done("other/welcome/c1/o1")
    with pytest.raises(ValueError, match="not a step"):
        e.report_done("o/1", "wave")


# -- custom playbooks ----------------------------------------------------------------------------
class ExtraSpecs:
    @sop.hookspec
    def on_survey(self, key, leader, order, now):
        """A survey a day after the coupon."""


def test_chained_step_with_a_hook_of_the_host():
    pb = sop.Playbook("vip", (
        sop.Step("thanks", "on_new_neighbor", quiet_hours=False),
        sop.Step("survey", "on_survey", trigger="step:thanks", delay=timedelta(days=1)),
    ))
    seen = []

    class Host:
        @sop.hookimpl
        def on_new_neighbor(self, key):
            seen.append(key)

        @sop.hookimpl
        def on_survey(self, key, now):
            seen.append((key, now))

    t0 = at(SH, 2024, 6, 1, 12, 0)
    e = sop.SopEngine(playbook=pb, hookspecs=[ExtraSpecs], plugins=[Host()],
                      clock=sop.SimClock(t0))
    e.enqueue([1], [7], [3], [NEAREST])
    e.run_due()
    assert seen == ["vip/thanks/7/1"] and e.task(1, "survey").due == t0 + 86400
    e.run_due(t0 + 86400)
    assert seen[-1] == ("vip/survey/7/1", t0 + 86400)


def test_playbook_and_engine_validation():
    with pytest.raises(ValueError, match="human task needs a deadline"):
        sop.Step("w", "on_welcome_due", human=True)
    with pytest.raises(ValueError, match="trigger must be one of"):
        sop.Step("w", "on_coupon", trigger="paid")
    with pytest.raises(ValueError, match="delay must be finite and >= 0"):
        sop.Step("w", "on_coupon", delay=-1)
    with pytest.raises(ValueError, match="Step.name"):
        sop.Step("a/b", "on_coupon")
    with pytest.raises(ValueError, match="not an earlier step"):
        sop.Playbook("p", (sop.Step("a", "on_coupon", trigger="step:b"),
                           sop.Step("b", "on_coupon")))
    with pytest.raises(ValueError, match="repeats the name"):
        sop.Playbook("p", (sop.Step("a", "on_coupon"), sop.Step("a", "on_coupon")))
    with pytest.raises(ValueError, match="no hook specification named 'on_survey'"):
        sop.SopEngine(playbook=sop.Playbook("p", (sop.Step("a", "on_survey"),)))
    with pytest.raises(ValueError, match=r"leader_tz\['L'\] = 'Mars/Base': unknown time zone"):
        sop.SopEngine(leader_tz={"L": "Mars/Base"})
    with pytest.raises(ValueError, match="hourly_cap"):
        sop.SopEngine(hourly_cap=0)
    with pytest.raises(ValueError, match="a clock does not go back"):
        sop.SimClock(0).advance(-1)


def test_enqueue_bad_input_names_the_field_and_row():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 12, 0))
    with pytest.raises(ValueError, match="customer_ids has 1 rows, order_ids has 2"):
        e.enqueue(["a", "b"], ["c"], ["L", "L"], [0, 0])
    with pytest.raises(ValueError, match=r"order_ids\[1\] is None"):
        e.enqueue(["a", None], ["c", "d"], ["L", "L"], [0, 0])
    with pytest.raises(ValueError, match=r"leader_ids\[0\] is None but outcomes\[0\] = 1"):
        e.enqueue(["a"], ["c"], [None], [1])
    with pytest.raises(ValueError, match=r"outcomes\[1\] = 'x'"):
        e.enqueue(["a", "b"], ["c", "d"], ["L", "L"], [0, "x"])
    with pytest.raises(ValueError, match=r"pickup_at\[0\] must be finite epoch seconds"):
        e.enqueue(["a"], ["c"], ["L"], [0], pickup_at=["tomorrow"])
    with pytest.raises(ValueError, match=r"customer_ids\[0\] = 1.5: ids must be int or str"):
        e.enqueue(["a"], [1.5], ["L"], [0])
    assert e.tasks() == []
    con = sqlite3.connect(":memory:")
    with pytest.raises(ValueError, match="ensure_schema"):
        sop.enqueue(con, ["a"], ["c"], ["L"], [0], 0.0)


def test_numpy_columns_and_datetimes():
    e, clock, rec = engine(at(SH, 2024, 6, 1, 12, 0))
    n = e.enqueue(np.array([10, 11, 12]), np.array(["a", "b", None], dtype=object),
                  np.array([1, 1, -1]), np.array([0, 2, 4], dtype=np.int8),
                  now=datetime(2024, 6, 1, 4, 0))                 # naive: UTC
    assert n == 2
    assert {(t.order, t.leader) for t in e.tasks()} == {(10, 1), (11, 1)}
    assert e.task(10, "new_neighbor").due == at(timezone.utc, 2024, 6, 1, 4, 0)


# -- the due list and the command line -----------------------------------------------------------
def test_format_due_per_leader(tmp_path):
    path = tmp_path / "e.sqlite"
    t0 = at(SH, 2024, 6, 1, 19, 0)
    rec = Recorder(fail={"new_neighbor": True})
    pickup = at(SH, 2024, 6, 2, 16, 0)
    e = sop.SopEngine(path, plugins=[rec], clock=sop.SimClock(t0), max_attempts=1,
                      pickup_at=pickup)
    e.enqueue(["o1", "o2"], ["c1", "c2"], ["L1", "L2"], [NEAREST, STICKY])
    e.run_due()
    e.enqueue(["o3"], ["c3"], ["L2"], [NEAREST], now=t0 + 60)   # not folded yet
    e.close()
    text = sop.format_due(path, t0 + 2 * 3600, pickup_at=pickup)
    lines = text.splitlines()
    assert lines[0] == "SOP 'default' at 2024-06-01 21:00 (Asia/Shanghai)"
    i1 = lines.index("leader L1 (Asia/Shanghai): 1 overdue, 1 due, 1 dead")
    assert lines[i1 + 1].split()[:2] == ["OVERDUE", "welcome"]
    assert "deadline 06-01 20:00 (1 h 00 min late)" in lines[i1 + 1]
    assert "pickup_reminder" in lines[i1 + 2] and "due 06-01 20:00" in lines[i1 + 2]
    assert "DEAD" in lines[i1 + 3] and "RuntimeError: boom new_neighbor 1" in lines[i1 + 3]
    # o2's reminder, and o3 from the outbox (not yet expanded): its welcome was never
    # even opened, and its deadline passed
    i2 = lines.index("leader L2 (Asia/Shanghai): 1 overdue, 3 due")
    assert lines[i2 + 1].split()[:2] == ["OVERDUE", "welcome"] and "order o3" in lines[i2 + 1]
    assert sum("order o3" in x for x in lines[i2 + 2:i2 + 5]) == 2
    only = sop.format_due(path, t0 + 2 * 3600, leader="L2")
    assert "L1" not in only and "L2" in only
    assert "nothing due for leader L9" in sop.format_due(path, t0, leader="L9")
    # read only: the outbox row is still there
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM sop_log").fetchone()[0] == 1
    con.close()


def test_sop_main(tmp_path, capsys):
    path = tmp_path / "e.sqlite"
    e = sop.SopEngine(path, clock=sop.SimClock(at(SH, 2024, 6, 1, 19, 0)))
    e.enqueue(["o1"], ["c1"], ["L1"], [NEAREST])
    e.close()
    out = io.StringIO()
    assert sop.sop_main([str(path), "--now", "2024-06-01T19:30"], out=out) == 0
    assert "at 2024-06-01 19:30" in out.getvalue() and "new_neighbor" in out.getvalue()
    assert sop.sop_main([str(tmp_path / "none.sqlite")]) == 2
    assert sop.sop_main([str(path), "--now", "yesterday"]) == 2
    assert "not an ISO date-time" in capsys.readouterr().err
