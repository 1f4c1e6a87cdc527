"""Child process of tests/test_sop_crash.py: a whole event in simulated time.

Usage::

    python tests/sop_driver.py DB EFFECTS [--kill-at-call N] [--kill-in-enqueue B]

Everything the driver does is a pure function of a fixed plan (seeded) and of
what the SQLite file and the effect log hold, so that a process killed at any
point and started again carries on to the same end:

* the simulated clock and the tick reached are kept in the SQLite file
  (``drv_state``), committed after each tick;
* the "store" of the event is the table ``drv_orders``: each batch of
  assignments is written there in the same transaction as its SOP outbox rows
  (`lbsdispatch.sop.enqueue`) -- the transactional outbox;
* the host's hooks append every call to EFFECTS (flushed per call): a line
  ``key, status, now, leader, step, attempt``; a host that deduplicates by key
  applies the first OK line of a key and drops the rest.  A hook fails when
  a hash of (key, attempt) says so (20%), and always for leader L00.

``--kill-at-call N`` SIGKILLs the process itself inside the N-th hook call of
this run, right after the effect is written (so between a side effect and its
success record); ``--kill-in-enqueue B`` inside the transaction of batch B,
after the outbox rows are written and before the commit.  The driver prints
``TICK n`` after each committed tick (the parent may kill it on one) and
``DONE`` at the end.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import os
import signal
import sqlite3
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from lbsdispatch import sop

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2024, 6, 1, 18, 0, tzinfo=SH).timestamp()     # first batch
PICKUP = datetime(2024, 6, 2, 16, 0, tzinfo=SH).timestamp()  # the event's pickup
LATE_PICKUP = datetime(2024, 6, 2, 17, 0, tzinfo=SH).timestamp()
N_ORDERS, N_BATCHES, N_LEADERS = 2000, 20, 40
BATCH_EVERY = 15 * 60
FAIL_LEADER = "L00"
FAIL_PERCENT = 20
HOURLY_CAP = 10
MAX_ATTEMPTS = 6
STICKY, NEAREST = 2, 0


def h(*parts) -> int:
    """A stable hash (Python's own is salted per process)."""
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(),
                                          digest_size=8).digest(), "big")


def fails(key, attempt, leader) -> bool:
    return leader == FAIL_LEADER or h(key, attempt) % 100 < FAIL_PERCENT


def plan():
    """The event: orders (id, customer, leader, outcome, batch, pickup) and host events."""
    orders = []
    for i in range(N_ORDERS):
        leader = f"L{h('leader', i) % N_LEADERS:02d}"
        # 25% of the orders come from returning customers kept with their leader
        sticky = h("sticky", i) % 100 < 25
        customer = f"c{i}" if not sticky else f"r{h('ret', i) % 300}"
        pickup = LATE_PICKUP if h("late", i) % 10 == 0 else None   # None: the event's
        orders.append((f"o{i:04d}", customer, leader, STICKY if sticky else NEAREST,
                       i * N_BATCHES // N_ORDERS, pickup))
    cancels, pickups, joins = [], [], []
    for o, c, leader, outcome, b, pickup in orders:
        at = T0 + b * BATCH_EVERY
        if h("cancel", o) % 100 < 5:
            cancels.append((at + h("ct", o) % (20 * 3600), o, "refunded" if h("r", o) % 2
                            else "cancelled"))
            continue
        p = (pickup or PICKUP) + h("pt", o) % 7200
        pickups.append((p, o))
        if outcome != STICKY and h("join", o) % 100 < 60:
            joins.append((p + h("jt", o) % (6 * 3600), c))
    return orders, sorted(cancels), sorted(pickups), sorted(joins)


def response(key):
    """Minutes the leader takes to press send on a welcome (None: never)."""
    r = h("resp", key) % 100
    if r < 70:
        return h("d", key) % 50
    if r < 90:
        return 70 + h("d", key) % 110
    return None


def ticks():
    """Tick times: every 5 minutes for two days, then every 6 hours to day 9."""
    out, t = [], T0
    while t < T0 + 2 * 86400:
        out.append(t)
        t += 300
    while t < T0 + 9 * 86400:
        out.append(t)
        t += 6 * 3600
    return out


class Host:
    """The host's hooks: effects appended to a file, flushed per call."""

    def __init__(self, path, kill_at_call):
        self.f = open(path, "a", encoding="utf-8")
        self.calls = 0
        self.kill_at_call = kill_at_call

    def _effect(self, key, step, leader, now, attempt):
        self.calls += 1
        if fails(key, attempt, leader):
            self.f.write(f"{key}\tFAIL\t{now}\t{leader}\t{step}\t{attempt}\n")
            self.f.flush()
            raise RuntimeError(f"messaging down for {leader}")
        self.f.write(f"{key}\tOK\t{now}\t{leader}\t{step}\t{attempt}\n")
        self.f.flush()
        if self.calls == self.kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)   # after the effect, before its record

    @sop.hookimpl
    def on_new_neighbor(self, key, step, leader, now, attempt):
        self._effect(key, step, leader, now, attempt)

    @sop.hookimpl
    def on_welcome_due(self, key, step, leader, now, attempt):
        self._effect(key, step, leader, now, attempt)

    @sop.hookimpl
    def on_pickup_reminder(self, key, step, leader, now, attempt):
        self._effect(key, step, leader, now, attempt)

    @sop.hookimpl
    def on_group_invite(self, key, step, leader, now, attempt):
        self._effect(key, step, leader, now, attempt)

    @sop.hookimpl
    def on_coupon(self, key, step, leader, now, attempt):
        self._effect(key, step, leader, now, attempt)

    @sop.hookimpl
    def on_sla_breached(self, key, step, leader, now, attempt):
        self._effect(key, step + ".sla", leader, now, attempt)


class WelcomeReader:
    """Reads the effect log as it grows: the first OK call of each welcome key."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.seen = set()

    def new(self):
        out = []
        if not os.path.exists(self.path):
            return out
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.pos)
            while True:
                line = f.readline()
                if not line.endswith("\n"):
                    break      # nothing more (a line cut by a kill has no newline)
                self.pos += len(line.encode("utf-8"))
                p = line.rstrip("\n").split("\t")
                if p[1] == "OK" and p[4] == "welcome" and p[0] not in self.seen:
                    self.seen.add(p[0])
                    out.append((p[0], float(p[2])))
        return out


def between(events, lo, hi):
    """The events (sorted by time) with lo < time <= hi."""
    return events[bisect.bisect_right(events, (lo, chr(0x10FFFF))):
                  bisect.bisect_right(events, (hi, chr(0x10FFFF)))]


def main(argv):
    db, effects = argv[0], argv[1]
    kill_at_call = int(argv[argv.index("--kill-at-call") + 1]) \
        if "--kill-at-call" in argv else -1
    kill_in_enqueue = int(argv[argv.index("--kill-in-enqueue") + 1]) \
        if "--kill-in-enqueue" in argv else -1
    # wait (for the parent's SIGKILL) right after reporting this tick: the kill
    # then lands at a known point, so the runs after it have known work left
    wait_at_tick = int(argv[argv.index("--wait-at-tick") + 1]) \
        if "--wait-at-tick" in argv else -1
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE IF NOT EXISTS drv_state (k TEXT PRIMARY KEY, v)")
    con.execute("CREATE TABLE IF NOT EXISTS drv_orders (order_id TEXT PRIMARY KEY, customer, "
                "leader, outcome, at REAL, state INTEGER)")
    sop.ensure_schema(con)
    state = dict(con.execute("SELECT k, v FROM drv_state"))
    tick = int(state.get("tick", 0))
    times = ticks()
    clock = sop.SimClock(state.get("clock", times[0]))
    host = Host(effects, kill_at_call)
    engine = sop.SopEngine(con, plugins=[host], clock=clock, hourly_cap=HOURLY_CAP,
                           max_attempts=MAX_ATTEMPTS, pickup_at=PICKUP, chunk_size=64)
    orders, cancels, pickups, joins = plan()
    batches = {}
    for row in orders:
        batches.setdefault(row[4], []).append(row)
    prev = times[tick - 1] if tick else T0 - 1
    welcomes, reports = WelcomeReader(effects), []
    while tick < len(times):
        t = clock.set(times[tick])
        # 1. assignments: the batch's "store" rows and its outbox rows, one transaction
        for b, rows in batches.items():
            tb = T0 + b * BATCH_EVERY
            if prev < tb <= t:
                con.execute("BEGIN IMMEDIATE")
                con.executemany("INSERT OR IGNORE INTO drv_orders VALUES (?, ?, ?, ?, ?, 1)",
                                [(o, c, lead, oc, tb) for o, c, lead, oc, _, _ in rows])
                sop.enqueue(con, [r[0] for r in rows], [r[1] for r in rows],
                            [r[2] for r in rows], [r[3] for r in rows], tb,
                            pickup_at=[r[5] for r in rows])
                if b == kill_in_enqueue:
                    os.kill(os.getpid(), signal.SIGKILL)
                con.execute("COMMIT")
        # 2. the host's events of (prev, t]: each is idempotent, so a tick that is
        #    replayed after a crash applies them again harmlessly
        for at, o, reason in between(cancels, prev, t):
            if h("via", o) % 2:
                engine.cancelled(o, at, reason=reason)
            else:   # through the outbox, in the host's own cancel transaction
                con.execute("BEGIN IMMEDIATE")
                con.execute("UPDATE drv_orders SET state=0 WHERE order_id=?", (o,))
                sop.enqueue_exits(con, [o], at, reason=reason)
                con.execute("COMMIT")
        for at, o in between(pickups, prev, t):
            engine.picked_up(o, at)
        for at, c in between(joins, prev, t):
            engine.joined_group(c, at)
        # 3. leaders press send on the welcomes they were shown (a report already
        #    applied before a crash is applied again: a no-op)
        for key, shown in welcomes.new():
            d = response(key)
            if d is not None:
                heapq.heappush(reports, (shown + d * 60, key))
        while reports and reports[0][0] <= t:
            at, key = heapq.heappop(reports)
            engine.report_done(key, at=at)
        # 4. run what is due
        engine.run_due(t)
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT OR REPLACE INTO drv_state VALUES (?, ?)",
                        [("tick", tick + 1), ("clock", t)])
        con.execute("COMMIT")
        print(f"TICK {tick}", flush=True)
        if tick == wait_at_tick:
            sys.stdin.readline()
        prev = t
        tick += 1
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
