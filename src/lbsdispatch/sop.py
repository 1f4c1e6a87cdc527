"""SOP engine: every assignment starts the leader's playbook, and no step is ever lost.

An assignment is only the first half of the job: the leader must learn of the
new neighbour at once, welcome them within an hour, remind them of the pickup
and bring them into the community group.  The host system wires its own
messaging to the hooks (`hookimpl`, see `lbsdispatch._sop_hooks`); this module
decides what is due, when and for whom, and runs each step through a
transactional outbox.  See docs/sop.md for the contract.

Tables (all prefixed ``sop_``, created by `ensure_schema`, so they can live in
the event store's SQLite file):

``sop_log``
    The outbox proper: one row per assigned order (and per exit), appended by
    `enqueue` inside the caller's transaction.  The engine folds it into
    tasks and deletes what it folded, in one transaction.
``sop_tasks``
    One row per (playbook, order, step): state, due time, attempts, last
    error.  Rows are kept after they end: the record of a done task is what
    keeps it from running again.
``sop_exits``
    Orders cancelled or refunded (their remaining steps are dropped).
``sop_cap``
    Capped sends per leader per leader-local hour.
"""
from __future__ import annotations

import argparse
import math
import os
import sqlite3
import sys
import time as _time
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Callable, Iterable, NamedTuple, Optional

import numpy as np
import pluggy

from ._sop_hooks import PROJECT, SopHookSpecs, hookimpl, hookspec
from ._sop_playbook import (Backoff, Playbook, QuietHours, Step, default_playbook, epoch,
                            local_hour, next_local_hour, zone)

__all__ = [
    "Backoff", "Playbook", "QuietHours", "RunStats", "SimClock", "SopEngine", "SopHookSpecs",
    "Step", "Task", "STATES", "add_sop_parser", "default_playbook", "enqueue",
    "enqueue_exits", "enqueue_moves", "ensure_schema", "format_due", "hookimpl", "hookspec",
    "run_sop", "sop_main",
]

# Task states.  The active ones (< DONE) are indexed by due time.
PENDING, POSTPONED, WAITING, DONE, DEAD, EXPIRED, DROPPED = range(7)
#: State names by code.
STATES = ("pending", "postponed", "waiting", "done", "dead", "expired", "dropped")
_STATE_CODE = {n: i for i, n in enumerate(STATES)}

# Outcomes of lbsdispatch.dispatch.Outcome (kept as numbers so that this module
# does not import the dispatcher): 0-3 and 7 (REBALANCED, optimal mode)
# assigned, STICKY = a returning customer kept their leader.
_STICKY = 2
_ASSIGNED_MAX = 3
_REBALANCED = 7

_LOG_ASSIGNED, _LOG_EXIT, _LOG_MOVED = 0, 1, 2

DEFAULT_TZ = "Asia/Shanghai"

_SCHEMA = (
    # seq orders the outbox: a rowid is assigned inside the (single) writer's
    # transaction, so it grows in commit order.
    "CREATE TABLE IF NOT EXISTS sop_log (seq INTEGER PRIMARY KEY, sop TEXT NOT NULL, "
    "kind INTEGER NOT NULL, order_id, customer, leader, outcome INTEGER, at REAL, pickup REAL, "
    "note TEXT)",
    "CREATE TABLE IF NOT EXISTS sop_tasks (sop TEXT NOT NULL, order_id NOT NULL, "
    "step TEXT NOT NULL, leader, customer, state INTEGER NOT NULL, due REAL, deadline REAL, "
    "expires REAL, pickup REAL, attempts INTEGER NOT NULL DEFAULT 0, sent_at REAL, "
    "done_at REAL, late REAL, note TEXT, error TEXT, created REAL, "
    "PRIMARY KEY (sop, order_id, step)) WITHOUT ROWID",
    # run_due walks active tasks in (due, order, step) order: the primary key
    # columns follow due in every entry of this index, so the walk needs no sort
    "CREATE INDEX IF NOT EXISTS sop_tasks_due ON sop_tasks (sop, due) WHERE state < 3",
    "CREATE INDEX IF NOT EXISTS sop_tasks_waiting ON sop_tasks (sop, customer) "
    "WHERE state = 2",
    "CREATE TABLE IF NOT EXISTS sop_exits (sop TEXT NOT NULL, order_id NOT NULL, at REAL, "
    "reason TEXT, PRIMARY KEY (sop, order_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS sop_cap (sop TEXT NOT NULL, leader NOT NULL, hour REAL NOT NULL, "
    "n INTEGER NOT NULL, PRIMARY KEY (sop, leader, hour)) WITHOUT ROWID",
)

_TASK_COLS = ("order_id, step, leader, customer, state, due, deadline, expires, pickup, "
              "attempts, sent_at, done_at, late, note, error")


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the SOP tables in ``conn`` if they are missing (never commits by itself).

    Inside an open transaction the tables are created in it; otherwise each
    statement commits on its own (SQLite DDL).
    """
    for stmt in _SCHEMA:
        conn.execute(stmt)


# -- input columns ------------------------------------------------------------------------------
def _column(values, name, n=None):
    """A list of plain Python values (numpy scalars unwrapped) from a sequence."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {values.shape}")
        out = values.tolist()
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a sequence (list or array), got {values!r}")
    else:
        out = list(values)
    if n is not None and len(out) != n:
        raise ValueError(f"{name} has {len(out)} rows, order_ids has {n}")
    for i, v in enumerate(out):
        if isinstance(v, np.generic):
            out[i] = v = v.item()
        if v is not None and not isinstance(v, (int, str)) or isinstance(v, bool):
            raise ValueError(f"{name}[{i}] = {v!r}: ids must be int or str")
    return out


def _times_column(values, name, n):
    """Epoch seconds per row (None where unknown: None or NaN), or one value for all."""
    if values is None:
        return [None] * n
    if isinstance(values, datetime) or np.ndim(values) == 0:
        if isinstance(values, float) and math.isnan(values):
            return [None] * n
        t = epoch(values, name)
        return [t] * n
    vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if len(vals) != n:
        raise ValueError(f"{name} has {len(vals)} rows, order_ids has {n}")
    out = []
    for i, v in enumerate(vals):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        else:
            out.append(epoch(v, f"{name}[{i}]"))
    return out


def _no_table(e):
    if "no such table" in str(e):
        return ValueError(f"the SOP tables are missing ({e}): call "
                          f"lbsdispatch.sop.ensure_schema(conn) once when the store is created")
    return e


def enqueue(conn: sqlite3.Connection, order_ids, customer_ids, leader_ids, outcomes, now, *,
            sop: str = "default", pickup_at=None, repeat=None) -> int:
    """Write the SOP start of a batch of assignments into the outbox; never commits.

    Call it inside the transaction that records the assignments: the
    playbooks then start if and only if the assignments are committed (the
    transactional outbox).  One ``executemany`` into ``sop_log``; the engine
    turns the rows into tasks later (`SopEngine.run_due`).

    Parameters
    ----------
    conn : sqlite3.Connection
        Holding the SOP tables (`ensure_schema`).
    order_ids, customer_ids, leader_ids : sequence
        Per assignment (int or str ids; customer None allowed).
    outcomes : sequence of int
        `lbsdispatch.Outcome` codes; rows that were not assigned (OUT_OF_RANGE,
        ALL_FULL, INVALID) are skipped, STICKY ones get only the steps that
        are not ``new_customers_only``.
    now : float or datetime
        The assignment time.
    sop : str
        The playbook's name.
    pickup_at : float, datetime, or sequence of them, optional
        The pickup time of each order (None/NaN: unknown, the engine's
        default applies).
    repeat : sequence of bool, optional
        Rows to skip (``BatchResult.repeat``: the order was already assigned).

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    ValueError
        A column of the wrong length, an id that is not int/str, an assigned
        row without order or leader id (naming the column and row), or the
        SOP tables missing.
    """
    oids = _column(order_ids, "order_ids")
    n = len(oids)
    cids = _column(customer_ids, "customer_ids", n) if customer_ids is not None else [None] * n
    lids = _column(leader_ids, "leader_ids", n)
    t = epoch(now, "now")
    oc = np.asarray(outcomes)
    if oc.shape != (n,):
        raise ValueError(f"outcomes has shape {oc.shape}, order_ids has {n} rows")
    if oc.dtype.kind not in "iu":
        vals = outcomes.tolist() if isinstance(outcomes, np.ndarray) else list(outcomes)
        for i, v in enumerate(vals):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"outcomes[{i}] = {v!r}: must be an Outcome code (int)")
        oc = np.asarray(vals, dtype=np.int64)
    keep = ((oc >= 0) & (oc <= _ASSIGNED_MAX)) | (oc == _REBALANCED)
    if repeat is not None:
        rep = np.asarray(repeat, dtype=bool)
        if rep.shape != (n,):
            raise ValueError(f"repeat has shape {rep.shape}, order_ids has {n} rows")
        keep &= ~rep
    rows_i = np.flatnonzero(keep).tolist()
    picks = _times_column(pickup_at, "pickup_at", n)
    ocl = oc.tolist()
    for i in rows_i:
        if oids[i] is None:
            raise ValueError(f"order_ids[{i}] is None (an assigned order needs an id)")
        if lids[i] is None:
            raise ValueError(f"leader_ids[{i}] is None but outcomes[{i}] = {ocl[i]} "
                             f"(an assigned order)")
    rows = [(sop, _LOG_ASSIGNED, oids[i], cids[i], lids[i], ocl[i], t, picks[i])
            for i in rows_i]
    try:
        conn.executemany("INSERT INTO sop_log (sop, kind, order_id, customer, leader, outcome, "
                         "at, pickup) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    except sqlite3.OperationalError as e:
        raise _no_table(e) from None
    return len(rows)


def enqueue_exits(conn: sqlite3.Connection, order_ids, at, *, sop: str = "default",
                  reason: str = "cancelled") -> int:
    """Record in the outbox that orders were cancelled or refunded; never commits.

    For the host's own cancel transaction (e.g. ``Dispatcher.release``): the
    remaining steps of those orders are dropped when the engine folds the
    outbox.  `SopEngine.cancelled` does the same at once.
    """
    oids = _column(order_ids, "order_ids")
    t = epoch(at, "at")
    for i, o in enumerate(oids):
        if o is None:
            raise ValueError(f"order_ids[{i}] is None")
    if not isinstance(reason, str):
        raise ValueError(f"reason must be a str, got {reason!r}")
    try:
        conn.executemany("INSERT INTO sop_log (sop, kind, order_id, at, note) "
                         "VALUES (?, ?, ?, ?, ?)",
                         [(sop, _LOG_EXIT, o, t, reason) for o in oids])
    except sqlite3.OperationalError as e:
        raise _no_table(e) from None
    return len(oids)


def enqueue_moves(conn: sqlite3.Connection, order_ids, leader_ids, at, *,
                  sop: str = "default") -> int:
    """Record in the outbox that orders moved to other leaders; never commits.

    For the transaction that reassigns them (``Dispatcher.reassign_orders_of``):
    when the engine folds the outbox, the steps of those orders that are still
    to come (pending, postponed, waiting) go to the new leader.  Steps already
    run stay with the leader who ran them.
    """
    oids = _column(order_ids, "order_ids")
    lids = _column(leader_ids, "leader_ids", len(oids))
    t = epoch(at, "at")
    for i, (o, lid) in enumerate(zip(oids, lids)):
        if o is None:
            raise ValueError(f"order_ids[{i}] is None")
        if lid is None:
            raise ValueError(f"leader_ids[{i}] is None (a moved order has a new leader)")
    try:
        conn.executemany("INSERT INTO sop_log (sop, kind, order_id, leader, at) "
                         "VALUES (?, ?, ?, ?, ?)",
                         [(sop, _LOG_MOVED, o, lid, t) for o, lid in zip(oids, lids)])
    except sqlite3.OperationalError as e:
        raise _no_table(e) from None
    return len(oids)


# -- results ------------------------------------------------------------------------------------
class Task(NamedTuple):
    """One task of the outbox, as `SopEngine.tasks` returns it."""

    key: str
    sop: str
    step: str
    order: object
    customer: object
    leader: object
    state: str             #: pending, postponed, waiting, done, dead, expired, dropped
    due: Optional[float]   #: next time the engine looks at it (None: nothing scheduled)
    deadline: Optional[float]
    attempts: int
    error: Optional[str]   #: last hook error
    sent_at: Optional[float]   #: human tasks: when the hook opened it
    done_at: Optional[float]
    late_s: Optional[float]    #: SLA breaches: seconds past the deadline
    note: Optional[str]        #: why it was dropped or expired; breach kind


class RunStats(NamedTuple):
    """What one `SopEngine.run_due` call did."""

    called: int = 0       #: hook calls made
    succeeded: int = 0
    failed: int = 0       #: calls that raised (retried later or dead)
    dead: int = 0         #: tasks moved to the dead letters
    expired: int = 0
    deferred: int = 0     #: moved out of quiet hours or to the next hour (cap)
    unhandled: int = 0    #: due, but no plugin implements their hook (left due)


class SimClock:
    """A clock tests drive: ``engine = SopEngine(clock=SimClock(t0))``.

    Calling it returns the current simulated time in epoch seconds.
    """

    def __init__(self, start=0.0):
        self.now = epoch(start, "start")

    def __call__(self) -> float:
        return self.now

    def advance(self, dt) -> float:
        """Move forward by ``dt`` seconds (or a timedelta); returns the new time."""
        s = dt.total_seconds() if isinstance(dt, timedelta) else dt
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)) \
                or not math.isfinite(s) or s < 0:
            raise ValueError(f"dt must be finite seconds >= 0 (a clock does not go back), "
                             f"got {dt!r}")
        self.now += float(s)
        return self.now

    def set(self, t) -> float:
        """Jump to ``t`` (epoch seconds or a datetime)."""
        self.now = epoch(t, "t")
        return self.now

    def __repr__(self):
        return f"SimClock({self.now!r})"


def task_key(sop, step, customer, order) -> str:
    """The idempotency key of a task: ``"{sop}/{step}/{customer}/{order}"`` (None -> "")."""
    return f"{sop}/{step}/{'' if customer is None else customer}/{order}"


# -- the engine ---------------------------------------------------------------------------------
class SopEngine:
    """Runs one playbook over the outbox of one SQLite database.

    Parameters
    ----------
    db : str, path or sqlite3.Connection, default ":memory:"
        A SQLite file (created if missing; may be the event store's file), an
        in-memory database, or an open connection (used as it is, not closed
        by `close`; it must not be inside a transaction when the engine is
        called).
    playbook : Playbook, optional
        Default: `default_playbook()`.
    plugins : iterable
        Host plugins (objects or modules with `hookimpl` functions).
    hookspecs : iterable
        Extra hook specification classes/modules (for hooks of custom steps).
    clock : callable, optional
        Returns the time (epoch seconds or a datetime); default `time.time`.
        A `SimClock` in tests.
    tz : str, default "Asia/Shanghai"
        The leaders' time zone.
    leader_tz : mapping or callable, optional
        Time zone per leader (``{leader: "Asia/Urumqi"}`` or ``f(leader)``
        returning a name or None); others use ``tz``.
    quiet_hours : QuietHours or None
        Default 22:00-08:00 leader-local; None: none.
    hourly_cap : int or None, default 20
        Capped steps (reminders) per leader per leader-local hour; excess
        moves to the next hour.  None: no cap.
    max_attempts : int, default 6
        Hook calls before a task goes to the dead letters.
    backoff : Backoff
        Delays between attempts (default 30 s, doubling, at most 1 h).
    chunk_size : int, default 500
        Tasks run per recorded chunk: the results of a chunk are committed in
        one transaction.  A crash re-runs at most the chunk in flight (with
        the same keys).
    pickup_at : float or datetime, optional
        The event's pickup time, for orders enqueued without one.
    """

    def __init__(self, db=":memory:", *, playbook: Optional[Playbook] = None,
                 plugins: Iterable = (), hookspecs: Iterable = (),
                 clock: Optional[Callable] = None, tz=DEFAULT_TZ, leader_tz=None,
                 quiet_hours: Optional[QuietHours] = QuietHours(), hourly_cap: Optional[int] = 20,
                 max_attempts: int = 6, backoff: Backoff = Backoff(), chunk_size: int = 500,
                 pickup_at=None):
        pb = default_playbook() if playbook is None else playbook
        if not isinstance(pb, Playbook):
            raise ValueError(f"playbook must be a Playbook, got {type(pb).__name__}")
        if clock is not None and not callable(clock):
            raise ValueError(f"clock must be callable, got {clock!r}")
        if quiet_hours is not None and not isinstance(quiet_hours, QuietHours):
            raise ValueError(f"quiet_hours must be a QuietHours or None, got {quiet_hours!r}")
        if hourly_cap is not None and (isinstance(hourly_cap, bool) or not isinstance(
                hourly_cap, (int, np.integer)) or hourly_cap < 1):
            raise ValueError(f"hourly_cap must be an int >= 1 or None, got {hourly_cap!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, (int, np.integer)) \
                or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if not isinstance(backoff, Backoff):
            raise ValueError(f"backoff must be a Backoff, got {backoff!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
                or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        self.playbook = pb
        self.sop = pb.name
        self._steps = pb.by_name()
        self._clock = _time.time if clock is None else clock
        self._tz = zone(tz, "tz")
        if leader_tz is not None and not callable(leader_tz):
            leader_tz = dict(leader_tz)
            for k, v in leader_tz.items():
                zone(v, f"leader_tz[{k!r}]")
        self._leader_tz = leader_tz
        self._zones = {}
        self.quiet_hours = quiet_hours
        self.hourly_cap = None if hourly_cap is None else int(hourly_cap)
        self.max_attempts = int(max_attempts)
        self.backoff = backoff
        self.chunk_size = int(chunk_size)
        self.pickup_at = None if pickup_at is None else epoch(pickup_at, "pickup_at")

        self._spawned = False
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(SopHookSpecs)
        for spec in hookspecs:
            self.pm.add_hookspecs(spec)
        for name, s in self._steps.items():
            if getattr(self.pm.hook, s.hook, None) is None:
                raise ValueError(f"playbook {pb.name!r} step {name!r}: no hook specification "
                                 f"named {s.hook!r} (add it with hookspecs=)")
        for p in plugins:
            self.pm.register(p)
        # dependents of each step (trigger step:<name>), and the triggered steps
        self._after = {}
        for s in pb.steps:
            if s.after_step is not None:
                self._after.setdefault(s.after_step, []).append(s.name)
        self._on = {t: [s.name for s in pb.steps if s.trigger == t]
                    for t in ("picked_up", "joined_group")}
        self._pickup_steps = [s.name for s in pb.steps if s.before_pickup is not None]

        if isinstance(db, sqlite3.Connection):
            self.con = db
            self._owns = False
        else:
            path = os.fspath(db)
            self.con = sqlite3.connect(path, isolation_level=None)
            self._owns = True
            if path != ":memory:":
                self.con.execute("PRAGMA journal_mode=WAL")
                self.con.execute("PRAGMA synchronous=NORMAL")
            # another process (the dispatcher) writes the same file: wait for its
            # transaction instead of failing at once
            self.con.execute("PRAGMA busy_timeout=10000")
        ensure_schema(self.con)

    # -- plumbing --------------------------------------------------------------------------------
    def register(self, plugin, name=None):
        """Register a host plugin (see `hookimpl`)."""
        return self.pm.register(plugin, name)

    def close(self):
        """Close the database (unless the engine was given an open connection)."""
        if self._owns:
            self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _now(self, now):
        return epoch(self._clock() if now is None else now, "now")

    @contextmanager
    def _tx(self):
        con = self.con
        if con.in_transaction:
            raise ValueError("the SOP engine's connection is inside a transaction: commit or "
                             "roll it back first (the engine commits its own work)")
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _zone(self, leader):
        z = self._zones.get(leader)
        if z is None:
            lt = self._leader_tz
            name = None
            if lt is not None:
                name = lt(leader) if callable(lt) else lt.get(leader)
            z = self._tz if name is None else zone(name, f"leader_tz[{leader!r}]")
            self._zones[leader] = z
        return z

    def _hold(self, step, t, z):
        if step.quiet_hours and self.quiet_hours is not None:
            return self.quiet_hours.hold(t, z)
        return t

    def _schedule(self, step, at, z, pickup):
        """(state, due, deadline, expires, note) of a step triggered at ``at``."""
        if step.before_pickup is not None:
            if pickup is None:
                return WAITING, at + step.wait_max, None, None, "pickup time unknown"
            d = datetime.fromtimestamp(pickup, z).date() - timedelta(days=step.days_before_pickup)
            want = datetime.combine(d, step.before_pickup, tzinfo=z).timestamp()
            due = self._hold(step, max(want, at + step.delay), z)
            if due >= pickup:
                return EXPIRED, None, None, pickup, "pickup passed before the step was due"
            expires = pickup
            if step.expire_after is not None:
                expires = min(expires, due + step.expire_after)
            return PENDING, due, None, expires, None
        due = self._hold(step, at + step.delay, z)
        if step.human:
            deadline = due + step.deadline
            expires = None if step.expire_after is None else deadline + step.expire_after
            return PENDING, due, deadline, expires, None
        expires = None if step.expire_after is None else due + step.expire_after
        return PENDING, due, None, expires, None

    # -- folding the outbox log into tasks -------------------------------------------------------
    def _expand(self, log_rows, exited):
        """Task rows of 'assigned' log rows (pure: no database access)."""
        out = []
        steps = self.playbook.steps
        cache = {}
        default_pickup = self.pickup_at
        for order, customer, leader, outcome, at, pickup in log_rows:
            if order in exited:
                continue
            new = outcome != _STICKY
            z = self._zone(leader)
            if pickup is None:
                pickup = default_pickup
            for s in steps:
                if s.new_customers_only and not new:
                    continue
                if s.trigger == "assigned":
                    # one batch shares its time and the leaders share a few zones:
                    # the schedule is computed once per (step, time, zone, pickup)
                    ck = (s.name, at, z, pickup)
                    sch = cache.get(ck)
                    if sch is None:
                        sch = cache[ck] = self._schedule(s, at, z, pickup)
                    state, due, deadline, expires, note = sch
                else:
                    state, due, deadline, expires, note = (WAITING, at + s.wait_max, None,
                                                           None, None)
                out.append((self.sop, order, s.name, leader, customer, state, due, deadline,
                            expires, pickup, at, note))
        return out

    def _exited(self, con):
        return {o for (o,) in con.execute("SELECT order_id FROM sop_exits WHERE sop=?",
                                          (self.sop,))}

    def _fold(self, con, limit=20000):
        """Turn the outbox rows of this playbook into tasks (inside a transaction)."""
        rows = con.execute("SELECT seq, kind, order_id, customer, leader, outcome, at, pickup, "
                           "note FROM sop_log WHERE sop=? ORDER BY seq LIMIT ?",
                           (self.sop, limit)).fetchall()
        if not rows:
            return 0
        exited = self._exited(con)
        batch = []
        for seq, kind, order, customer, leader, outcome, at, pickup, note in rows:
            if kind == _LOG_ASSIGNED:
                batch.append((order, customer, leader, outcome, at, pickup))
            else:
                # an exit or a move applies to what was assigned before it: flush first
                self._insert_tasks(con, self._expand(batch, exited))
                batch = []
                if kind == _LOG_MOVED:
                    con.execute("UPDATE sop_tasks SET leader=? WHERE sop=? AND order_id=? "
                                "AND state IN (?, ?, ?)",
                                (leader, self.sop, order, PENDING, POSTPONED, WAITING))
                    continue
                self._exit(con, order, at, note)
                exited.add(order)
        self._insert_tasks(con, self._expand(batch, exited))
        con.execute("DELETE FROM sop_log WHERE sop=? AND seq<=?", (self.sop, rows[-1][0]))
        return len(rows)

    @staticmethod
    def _insert_tasks(con, rows):
        if rows:
            # INSERT OR IGNORE: the key (sop, order, step) exists once; an
            # assignment enqueued again changes nothing
            con.executemany("INSERT OR IGNORE INTO sop_tasks (sop, order_id, step, leader, "
                            "customer, state, due, deadline, expires, pickup, created, note) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _fold_all(self):
        while True:
            with self._tx() as con:
                if not self._fold(con):
                    return

    def fold(self):
        """Turn the outbox's new rows into tasks now (`run_due` and the events do it first)."""
        self._fold_all()

    # -- events from the host --------------------------------------------------------------------
    def enqueue(self, order_ids, customer_ids, leader_ids, outcomes, now=None, *, conn=None,
                pickup_at=None, repeat=None) -> int:
        """`enqueue` for this playbook: into ``conn`` (not committed) or, without
        ``conn``, into the engine's database in a transaction of its own."""
        now = self._now(now)
        if conn is not None:
            return enqueue(conn, order_ids, customer_ids, leader_ids, outcomes, now,
                           sop=self.sop, pickup_at=pickup_at, repeat=repeat)
        with self._tx() as con:
            return enqueue(con, order_ids, customer_ids, leader_ids, outcomes, now,
                           sop=self.sop, pickup_at=pickup_at, repeat=repeat)

    def enqueue_result(self, result, now=None, *, conn=None, pickup_at=None) -> int:
        """`enqueue` the rows of a `lbsdispatch.BatchResult` (repeats skipped)."""
        return self.enqueue(result.order_id, result.customer_id, result.leader_id,
                            result.outcome, now, conn=conn, pickup_at=pickup_at,
                            repeat=result.repeat)

    def _exit(self, con, order, at, reason):
        con.execute("INSERT OR IGNORE INTO sop_exits VALUES (?, ?, ?, ?)",
                    (self.sop, order, at, reason))
        return con.execute("UPDATE sop_tasks SET state=?, note=?, done_at=? WHERE sop=? AND "
                           "order_id=? AND state<3", (DROPPED, reason, at, self.sop,
                                                      order)).rowcount

    def _ids(self, ids, name):
        if isinstance(ids, (str, int, np.integer)) and not isinstance(ids, bool):
            ids = [ids]
        out = _column(ids, name)
        for i, v in enumerate(out):
            if v is None:
                raise ValueError(f"{name}[{i}] is None")
        return out

    def cancelled(self, order_ids, at=None, *, reason: str = "cancelled") -> int:
        """Orders cancelled or refunded (``reason="refunded"``): their remaining steps are
        dropped, and steps they would trigger later are never created.

        Returns the number of tasks dropped.
        """
        oids = self._ids(order_ids, "order_ids")
        t = self._now(at)
        if not isinstance(reason, str):
            raise ValueError(f"reason must be a str, got {reason!r}")
        self._fold_all()
        n = 0
        with self._tx() as con:
            for o in oids:
                n += self._exit(con, o, t, reason)
        return n

    def _trigger(self, con, rows, at):
        """Schedule WAITING rows (order, step, leader, pickup) whose trigger happened."""
        ups = []
        for order, step_name, leader, pickup in rows:
            s = self._steps[step_name]
            state, due, deadline, expires, note = self._schedule(s, at, self._zone(leader),
                                                                 pickup)
            ups.append((state, due, deadline, expires, note, self.sop, order, step_name))
        con.executemany("UPDATE sop_tasks SET state=?, due=?, deadline=?, expires=?, note=? "
                        "WHERE sop=? AND order_id=? AND step=? AND state=2", ups)
        return len(ups)

    def _marks(self, names):
        return ",".join("?" * len(names))

    def picked_up(self, order_ids, at=None) -> int:
        """Orders picked up: starts the steps waiting for it (the group invite); a
        reminder of the pickup still pending is moot and expires.  Returns steps started."""
        oids = self._ids(order_ids, "order_ids")
        t = self._now(at)
        self._fold_all()
        names = self._on["picked_up"]
        n = 0
        with self._tx() as con:
            for o in oids:
                if names:
                    rows = con.execute(
                        f"SELECT order_id, step, leader, pickup FROM sop_tasks WHERE sop=? AND "
                        f"order_id=? AND state=2 AND step IN ({self._marks(names)})",
                        (self.sop, o, *names)).fetchall()
                    n += self._trigger(con, rows, t)
                if self._pickup_steps:
                    con.execute(
                        f"UPDATE sop_tasks SET state=?, note='picked up', done_at=? WHERE sop=? "
                        f"AND order_id=? AND state<3 AND sent_at IS NULL AND step IN "
                        f"({self._marks(self._pickup_steps)})",
                        (EXPIRED, t, self.sop, o, *self._pickup_steps))
        return n

    def joined_group(self, customer_ids, at=None) -> int:
        """Customers who joined their leader's group: starts the steps waiting for it
        (the coupon), for each of their orders.  Returns steps started."""
        cids = self._ids(customer_ids, "customer_ids")
        t = self._now(at)
        self._fold_all()
        names = self._on["joined_group"]
        if not names:
            return 0
        n = 0
        with self._tx() as con:
            for c in cids:
                rows = con.execute(
                    f"SELECT order_id, step, leader, pickup FROM sop_tasks INDEXED BY "
                    f"sop_tasks_waiting WHERE sop=? AND customer=? AND state=2 AND step IN "
                    f"({self._marks(names)})",
                    (self.sop, c, *names)).fetchall()
                n += self._trigger(con, rows, t)
        return n

    def set_pickup(self, order_ids, pickup_at, at=None) -> int:
        """Set (or move) the pickup time of orders; their pickup-anchored steps not yet
        sent are scheduled again.  Returns the tasks rescheduled."""
        oids = self._ids(order_ids, "order_ids")
        picks = _times_column(pickup_at, "pickup_at", len(oids))
        t = self._now(at)
        self._fold_all()
        n = 0
        with self._tx() as con:
            for i, (o, p) in enumerate(zip(oids, picks)):
                if p is None:
                    raise ValueError(f"pickup_at[{i}] is missing")
                con.execute("UPDATE sop_tasks SET pickup=? WHERE sop=? AND order_id=?",
                            (p, self.sop, o))
                if not self._pickup_steps:
                    continue
                rows = con.execute(
                    f"SELECT step, leader, created FROM sop_tasks WHERE sop=? AND order_id=? "
                    f"AND state<3 AND sent_at IS NULL AND step IN "
                    f"({self._marks(self._pickup_steps)})",
                    (self.sop, o, *self._pickup_steps)).fetchall()
                for step_name, leader, created in rows:
                    s = self._steps[step_name]
                    sch = self._schedule(s, max(created, t), self._zone(leader), p)
                    con.execute("UPDATE sop_tasks SET state=?, due=?, deadline=?, expires=?, "
                                "note=? WHERE sop=? AND order_id=? AND step=?",
                                (*sch, self.sop, o, step_name))
                    n += 1
        return n

    def _find(self, con, task, step):
        """(order, step) of a task named by its key, or by order id and step."""
        if step is not None:
            if not isinstance(step, str) or step not in self._steps:
                raise ValueError(f"step = {step!r}: not a step of playbook {self.sop!r}")
            row = con.execute(f"SELECT {_TASK_COLS} FROM sop_tasks WHERE sop=? AND order_id=? "
                              f"AND step=?", (self.sop, task, step)).fetchone()
            if row is None:
                raise ValueError(f"no task {step!r} for order {task!r} in playbook {self.sop!r}")
            return row
        if not isinstance(task, str):
            raise ValueError(f"a task is named by its key (str) or by (order id, step), "
                             f"got {task!r}")
        prefix = f"{self.sop}/"
        parts = task[len(prefix):].split("/", 1) if task.startswith(prefix) else []
        if len(parts) != 2 or parts[0] not in self._steps:
            raise ValueError(f"key {task!r}: not a task key of playbook {self.sop!r}")
        step_name, rest = parts
        # "customer/order": ids may hold "/" themselves, so try every split and
        # keep the rows whose own key is exactly this one
        found = []
        for j in [k for k, ch in enumerate(rest) if ch == "/"]:
            o = rest[j + 1:]
            cands = [o]
            try:
                cands.append(int(o))
            except ValueError:
                pass
            for oc in cands:
                row = con.execute(f"SELECT {_TASK_COLS} FROM sop_tasks WHERE sop=? AND "
                                  f"order_id=? AND step=?", (self.sop, oc, step_name)).fetchone()
                if row is not None and task_key(self.sop, step_name, row[3], row[0]) == task:
                    found.append(row)
        if not found:
            raise ValueError(f"key {task!r}: no such task")
        if len(found) > 1:
            raise ValueError(f"key {task!r} names {len(found)} tasks (ids that print alike); "
                             f"name it by (order id, step)")
        return found[0]

    def report_done(self, task, step=None, at=None) -> str:
        """The leader did a human task (e.g. pressed send on the welcome).

        Parameters
        ----------
        task : str or order id
            The task's key, or its order id when ``step`` is given.
        step : str, optional
        at : float or datetime, optional
            When it was done (default: the clock).

        Returns
        -------
        str
            The task's state afterwards: ``"done"``, or ``"dropped"`` for a
            task of a cancelled order (the report is then ignored).  A second
            report of a done task changes nothing.

        Notes
        -----
        Done after the deadline queues ``on_sla_breached`` (``breach="late"``,
        ``late_s`` = how late); an expired task reported done becomes done,
        its breach (already queued at expiry) is not repeated.
        """
        t = self._now(at)
        self._fold_all()
        with self._tx() as con:
            (order, step_name, leader, customer, state, due, deadline, expires, pickup,
             attempts, sent_at, done_at, late, note, error) = self._find(con, task, step)
            s = self._steps[step_name]
            if not s.human:
                raise ValueError(f"{task_key(self.sop, step_name, customer, order)}: step "
                                 f"{step_name!r} is not a human task")
            if state in (DONE, DROPPED):
                return STATES[state]
            con.execute("UPDATE sop_tasks SET state=?, done_at=?, due=NULL WHERE sop=? AND "
                        "order_id=? AND step=?", (DONE, t, self.sop, order, step_name))
            if deadline is not None and t > deadline:
                self._breach(con, order, step_name, leader, customer, deadline, pickup, t,
                             t - deadline, "late")
            self._chain(con, order, step_name, t)
        return "done"

    def postpone(self, task, step=None, until=None, at=None) -> str:
        """Put a task off to ``until``.

        A task not yet run is due at ``until`` (held out of quiet hours; a
        human task's deadline moves with it).  A human task already opened
        gets ``until`` as its new deadline (no hook is called again: the
        host's task list shows the new time).  Its state becomes
        ``postponed``.  Returns the state.
        """
        t = self._now(at)
        if until is None:
            raise ValueError("until is required")
        u = epoch(until, "until")
        if u <= t:
            raise ValueError(f"until = {u} is not after at = {t}")
        self._fold_all()
        with self._tx() as con:
            (order, step_name, leader, customer, state, due, deadline, expires, pickup,
             attempts, sent_at, done_at, late, note, error) = self._find(con, task, step)
            s = self._steps[step_name]
            if state >= DONE or state == WAITING:
                raise ValueError(f"{task_key(self.sop, step_name, customer, order)} is "
                                 f"{STATES[state]}: only pending or postponed tasks can be "
                                 f"postponed")
            z = self._zone(leader)
            if s.human and sent_at is not None:
                deadline = u
                expires = None if s.expire_after is None else u + s.expire_after
                due = expires
            else:
                due = self._hold(s, u, z)
                if s.human:
                    deadline = due + s.deadline
                    expires = None if s.expire_after is None else deadline + s.expire_after
                elif s.before_pickup is None:
                    expires = None if s.expire_after is None else due + s.expire_after
            con.execute("UPDATE sop_tasks SET state=?, due=?, deadline=?, expires=? WHERE sop=? "
                        "AND order_id=? AND step=?",
                        (POSTPONED, due, deadline, expires, self.sop, order, step_name))
        return "postponed"

    def _breach(self, con, order, step_name, leader, customer, deadline, pickup, t, late, kind):
        # one breach per task: INSERT OR IGNORE on its own key
        con.execute("INSERT OR IGNORE INTO sop_tasks (sop, order_id, step, leader, customer, "
                    "state, due, deadline, pickup, late, note, created) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.sop, order, f"{step_name}.sla", leader, customer, PENDING, t,
                     deadline, pickup, late, kind, t))

    def _chain(self, con, order, step_name, t):
        """A step is done: start the steps waiting for it."""
        names = self._after.get(step_name)
        if names:
            rows = con.execute(
                f"SELECT order_id, step, leader, pickup FROM sop_tasks WHERE sop=? AND "
                f"order_id=? AND state=2 AND step IN ({self._marks(names)})",
                (self.sop, order, *names)).fetchall()
            self._trigger(con, rows, t)

    def _chain_fail(self, con, order, step_name, t, why):
        """A step ended without being done: the steps waiting for it never start."""
        names = self._after.get(step_name)
        if names:
            con.execute(f"UPDATE sop_tasks SET state=?, note=?, done_at=? WHERE sop=? AND "
                        f"order_id=? AND state=2 AND step IN ({self._marks(names)})",
                        (DROPPED, f"{step_name} {why}", t, self.sop, order, *names))

    # -- running due tasks -----------------------------------------------------------------------
    def _handled(self):
        return {name for name, s in self._steps.items()
                if getattr(self.pm.hook, s.hook).get_hookimpls()}

    def run_due(self, now=None, *, limit: Optional[int] = None) -> RunStats:
        """Run every task due at ``now`` (default: the clock) through its hook.

        In (due, order, step) order, chunk by chunk: the hooks of a chunk are
        called outside any transaction, then their results are recorded in
        one (see the class docstring and docs/sop.md for what a crash does).

        Parameters
        ----------
        now : float or datetime, optional
        limit : int, optional
            Look at no more than this many tasks.

        Returns
        -------
        RunStats
        """
        now = self._now(now)
        self._fold_all()
        handled = self._handled()
        st = dict.fromkeys(RunStats._fields, 0)
        cap_counts = {}
        quiet_now, hours = {}, {}
        seen = 0
        # A pass can make new tasks due at once (an SLA breach at an expiry, a
        # step chained with no delay) behind its cursor: walk again until a
        # pass makes none.
        while True:
            self._spawned = False
            st["unhandled"] = 0
            seen = self._walk(now, limit, seen, handled, st, cap_counts, quiet_now, hours)
            if not self._spawned or (limit is not None and seen >= limit):
                break
        return RunStats(**st)

    def _walk(self, now, limit, seen, handled, st, cap_counts, quiet_now, hours):
        cursor = None
        while limit is None or seen < limit:
            n = self.chunk_size if limit is None else min(self.chunk_size, limit - seen)
            if cursor is None:
                q = (f"SELECT {_TASK_COLS} FROM sop_tasks WHERE sop=? AND state<3 AND due<=? "
                     f"ORDER BY due, order_id, step LIMIT ?")
                args = (self.sop, now, n)
            else:
                # keyset walk: rows this run moved (retries, deferrals) are due
                # after now and are not met again
                q = (f"SELECT {_TASK_COLS} FROM sop_tasks WHERE sop=? AND state<3 AND due<=? "
                     f"AND (due, order_id, step) > (?, ?, ?) ORDER BY due, order_id, step "
                     f"LIMIT ?")
                args = (self.sop, now, *cursor, n)
            rows = self.con.execute(q, args).fetchall()
            if not rows:
                break
            seen += len(rows)
            last = rows[-1]
            cursor = (last[5], last[0], last[1])
            self._run_chunk(rows, now, handled, st, cap_counts, quiet_now, hours)
            if len(rows) < n:
                break
        return seen

    def _cap_count(self, leader, hour, counts):
        k = (leader, hour)
        c = counts.get(k)
        if c is None:
            r = self.con.execute("SELECT n FROM sop_cap WHERE sop=? AND leader=? AND hour=?",
                                 (self.sop, leader, hour)).fetchone()
            c = counts[k] = 0 if r is None else r[0]
        return c

    def _run_chunk(self, rows, now, handled, st, cap_counts, quiet_now, hours):
        sop = self.sop
        steps = self._steps
        hook = self.pm.hook
        quiet = self.quiet_hours
        cap = self.hourly_cap
        done, sent, fail, resched, expire, dead = [], [], [], [], [], []
        breaches, chains, chain_fails = [], [], []
        cap_used = {}
        try:
            for (order, step_name, leader, customer, state, due, deadline, expires, pickup,
                 attempts, sent_at, done_at, late, note, error) in rows:
                s = steps.get(step_name)
                if s is None:
                    raise ValueError(f"task {task_key(sop, step_name, customer, order)}: step "
                                     f"{step_name!r} is not in playbook {sop!r} (was the store "
                                     f"written with another playbook?)")
                if state == WAITING:
                    expire.append((EXPIRED, "trigger never came", now, sop, order, step_name))
                    chain_fails.append((order, step_name, "expired"))
                    continue
                if sent_at is not None or (expires is not None and expires <= now):
                    # an opened human task past its expiry, or any task not run
                    # before its expiry
                    expire.append((EXPIRED, "expired", now, sop, order, step_name))
                    chain_fails.append((order, step_name, "expired"))
                    if s.human:
                        t_exp = expires if expires is not None else now
                        breaches.append((order, step_name, leader, customer, deadline, pickup,
                                         t_exp, t_exp - deadline, "expired"))
                    continue
                if step_name not in handled:
                    st["unhandled"] += 1
                    continue
                z = None
                if s.quiet_hours and quiet is not None:
                    z = self._zone(leader)
                    q = quiet_now.get(z)
                    if q is None:
                        q = quiet_now[z] = quiet.contains(now, z)
                    if q:
                        resched.append((quiet.hold(now, z), sop, order, step_name))
                        st["deferred"] += 1
                        continue
                bucket = None
                if s.capped and cap is not None:
                    z = z or self._zone(leader)
                    h = hours.get(z)
                    if h is None:
                        h = hours[z] = local_hour(now, z)
                    bucket = (leader, h)
                    if self._cap_count(leader, h, cap_counts) >= cap:
                        nxt = self._hold(s, next_local_hour(now, z), z)
                        resched.append((nxt, sop, order, step_name))
                        st["deferred"] += 1
                        continue
                    cap_counts[bucket] += 1
                attempt = attempts + 1
                st["called"] += 1
                try:
                    getattr(hook, s.hook)(
                        sop=sop, step=step_name[:-4] if s.hook == "on_sla_breached" else step_name,
                        key=task_key(sop, step_name, customer, order), leader=leader,
                        customer=customer, order=order, due=due, attempt=attempt, now=now,
                        deadline=deadline, pickup_at=pickup, late_s=late,
                        breach=note if s.hook == "on_sla_breached" else None)
                except Exception as e:   # the host's failure: retry, then dead letter
                    st["failed"] += 1
                    if bucket is not None:
                        cap_counts[bucket] -= 1     # nothing went out
                    err = f"{type(e).__name__}: {e}"
                    if attempt >= self.max_attempts:
                        dead.append((attempt, err, now, sop, order, step_name))
                        chain_fails.append((order, step_name, "dead"))
                        st["dead"] += 1
                    else:
                        z = z or self._zone(leader)
                        nxt = self._hold(s, now + self.backoff.delay(attempt), z)
                        if expires is not None and s.human is False and nxt >= expires:
                            nxt = expires      # looked at once more, at its expiry
                        fail.append((attempt, err, nxt, sop, order, step_name))
                    continue
                st["succeeded"] += 1
                if bucket is not None:
                    cap_used[bucket] = cap_counts[bucket]
                if s.human:
                    sent.append((attempt, now, expires, sop, order, step_name))
                else:
                    done.append((attempt, now, sop, order, step_name))
                    chains.append((order, step_name))
        finally:
            # record what ran, also when a BaseException ends the run: fewer repeats
            self._record(now, done, sent, fail, resched, expire, dead, breaches, chains,
                         chain_fails, cap_used)
        st["expired"] += len(expire)

    def _record(self, now, done, sent, fail, resched, expire, dead, breaches, chains,
                chain_fails, cap_used):
        if not (done or sent or fail or resched or expire or dead or breaches):
            return
        sop = self.sop
        with self._tx() as con:
            # "state<3": a task ended meanwhile (e.g. cancelled by another
            # connection) keeps its end
            if done:
                con.executemany("UPDATE sop_tasks SET state=3, attempts=?, done_at=?, "
                                "error=NULL, due=NULL WHERE sop=? AND order_id=? AND step=? "
                                "AND state<3", done)
            if sent:
                con.executemany("UPDATE sop_tasks SET attempts=?, sent_at=?, due=?, error=NULL "
                                "WHERE sop=? AND order_id=? AND step=? AND state<3", sent)
            if fail:
                con.executemany("UPDATE sop_tasks SET attempts=?, error=?, due=? WHERE sop=? "
                                "AND order_id=? AND step=? AND state<3", fail)
            if dead:
                con.executemany("UPDATE sop_tasks SET state=4, attempts=?, error=?, done_at=?, "
                                "due=NULL WHERE sop=? AND order_id=? AND step=? AND state<3",
                                dead)
            if resched:
                con.executemany("UPDATE sop_tasks SET due=? WHERE sop=? AND order_id=? AND "
                                "step=? AND state<3", resched)
            if expire:
                con.executemany("UPDATE sop_tasks SET state=?, note=?, done_at=?, due=NULL "
                                "WHERE sop=? AND order_id=? AND step=? AND state<3", expire)
            if breaches or (chains and self._after):
                self._spawned = True
            for b in breaches:
                self._breach(con, *b)
            if self._after:
                for order, step_name in chains:
                    self._chain(con, order, step_name, now)
            for order, step_name, why in chain_fails:
                self._chain_fail(con, order, step_name, now, why)
            if cap_used:
                con.executemany("INSERT OR REPLACE INTO sop_cap VALUES (?, ?, ?, ?)",
                                [(sop, lead, h, c) for (lead, h), c in cap_used.items()])

    # -- reading ---------------------------------------------------------------------------------
    def _task(self, row):
        (order, step_name, leader, customer, state, due, deadline, expires, pickup, attempts,
         sent_at, done_at, late, note, error) = row
        return Task(task_key(self.sop, step_name, customer, order), self.sop, step_name, order,
                    customer, leader, STATES[state], due, deadline, attempts, error, sent_at,
                    done_at, late, note)

    def tasks(self, *, order=None, leader=None, state=None, step=None):
        """The tasks of this playbook (after folding the outbox), filtered by the
        arguments given, in (order, step) order.  ``state`` is a name of `STATES`."""
        self._fold_all()
        where, args = ["sop=?"], [self.sop]
        for col, v in (("order_id", order), ("leader", leader), ("step", step)):
            if v is not None:
                where.append(f"{col}=?")
                args.append(v)
        if state is not None:
            if state not in _STATE_CODE:
                raise ValueError(f"state = {state!r}: one of {STATES}")
            where.append("state=?")
            args.append(_STATE_CODE[state])
        rows = self.con.execute(f"SELECT {_TASK_COLS} FROM sop_tasks WHERE {' AND '.join(where)}"
                                f" ORDER BY order_id, step", args).fetchall()
        return [self._task(r) for r in rows]

    def task(self, task, step=None) -> Task:
        """One task, by key or by (order id, step)."""
        self._fold_all()
        return self._task(self._find(self.con, task, step))

    def dead_letters(self):
        """Tasks whose hook failed ``max_attempts`` times, each with its last error."""
        return self.tasks(state="dead")

    def requeue(self, task, step=None, at=None) -> str:
        """Give a dead letter a new round of attempts (after the host fixed the cause)."""
        t = self._now(at)
        self._fold_all()
        with self._tx() as con:
            row = self._find(con, task, step)
            if row[4] != DEAD:
                raise ValueError(f"{task_key(self.sop, row[1], row[3], row[0])} is "
                                 f"{STATES[row[4]]}, not dead")
            con.execute("UPDATE sop_tasks SET state=0, attempts=0, due=?, done_at=NULL WHERE "
                        "sop=? AND order_id=? AND step=?", (t, self.sop, row[0], row[1]))
        return "pending"

    def counts(self):
        """{state name: number of tasks} (every state listed), after folding."""
        self._fold_all()
        c = dict.fromkeys(STATES, 0)
        for state, k in self.con.execute("SELECT state, count(*) FROM sop_tasks WHERE sop=? "
                                         "GROUP BY state", (self.sop,)):
            c[STATES[state]] = k
        return c

    def outbox_size(self) -> int:
        """Rows of the outbox log not yet folded into tasks."""
        return self.con.execute("SELECT count(*) FROM sop_log WHERE sop=?",
                                (self.sop,)).fetchone()[0]

    # -- the due list ----------------------------------------------------------------------------
    def due_view(self, now=None, leader=None):
        """{leader: [(kind, Task)]} of what needs doing at ``now``, read only.

        kind is ``"overdue"`` (a human task past its deadline), ``"open"`` (a
        human task opened, deadline ahead), ``"due"`` (to be run by the next
        `run_due`) or ``"dead"``.  Outbox rows not yet folded are expanded in
        memory (nothing is written).
        """
        now = self._now(now)
        con = self.con
        where, args = "sop=? AND state IN (0, 1, 4)", [self.sop]
        if leader is not None:
            where += " AND leader=?"
            args.append(leader)
        rows = list(con.execute(f"SELECT {_TASK_COLS} FROM sop_tasks WHERE {where}", args))
        log = con.execute("SELECT kind, order_id, customer, leader, outcome, at, pickup FROM "
                          "sop_log WHERE sop=? ORDER BY seq", (self.sop,)).fetchall()
        if log:
            exited = self._exited(con) | {r[1] for r in log if r[0] == _LOG_EXIT}
            have = set()
            for r in log:
                if r[0] == _LOG_ASSIGNED:
                    have.update((r[1], s.name) for s in self.playbook.steps)
            known = set()
            if have:
                orders = {o for o, _ in have}
                for o in orders:
                    known.update((o, s) for (s,) in con.execute(
                        "SELECT step FROM sop_tasks WHERE sop=? AND order_id=?", (self.sop, o)))
            for t in self._expand([r[1:] for r in log if r[0] == _LOG_ASSIGNED], exited):
                (_, order, step_name, lead, customer, state, due, deadline, expires, pickup,
                 created, note) = t
                if (order, step_name) in known or state >= WAITING:
                    continue
                if leader is not None and lead != leader:
                    continue
                known.add((order, step_name))
                rows.append((order, step_name, lead, customer, state, due, deadline, expires,
                             pickup, 0, None, None, None, note, None))
        out = {}
        for r in rows:
            task = self._task(r)
            human = self._steps.get(task.step)
            human = human is not None and human.human
            if task.state == "dead":
                kind = "dead"
            elif human and task.deadline is not None and task.deadline < now:
                kind = "overdue"
            elif human and task.sent_at is not None:
                kind = "open"
            elif task.due is not None and task.due <= now:
                kind = "due"
            else:
                continue
            out.setdefault(task.leader, []).append((kind, task))
        order_kind = {"overdue": 0, "open": 1, "due": 2, "dead": 3}
        for v in out.values():
            v.sort(key=lambda kt: (order_kind[kt[0]], kt[1].deadline or kt[1].due or 0,
                                   kt[1].key))
        return out


# -- the command line ---------------------------------------------------------------------------
def _local(t, z):
    return "-" if t is None else datetime.fromtimestamp(t, z).strftime("%m-%d %H:%M")


def _span(s):
    s = int(round(s))
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def format_due(db, now=None, leader=None, *, playbook: Optional[Playbook] = None,
               tz=DEFAULT_TZ, leader_tz=None, quiet_hours=QuietHours(), pickup_at=None) -> str:
    """The due and overdue SOP tasks of a store, per leader, as text.

    Parameters
    ----------
    db : str, path or sqlite3.Connection
        The store (a SQLite file holding the SOP tables); opened read-only
        when a path is given.
    now : float or datetime, optional
        Default: the current time.
    leader : optional
        Only this leader (compared as text, as a command line gives it).
    playbook : Playbook, optional
        The playbook of the store (default `default_playbook()`): needed to
        show outbox rows not yet expanded into tasks.
    tz, leader_tz, quiet_hours, pickup_at
        As in `SopEngine` (for the outbox rows not yet expanded); times are
        shown in the leader's local time.
    """
    if isinstance(db, sqlite3.Connection):
        con, own = db, False
    else:
        path = os.fspath(db)
        if not os.path.exists(path):
            raise ValueError(f"{path}: no such file")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        own = True
    try:
        try:
            con.execute("SELECT 1 FROM sop_tasks LIMIT 1")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{db}: no SOP tables ({e})") from None
        eng = SopEngine.__new__(SopEngine)
        _view_init(eng, con, playbook, tz, leader_tz, quiet_hours, pickup_at)
        t = eng._now(now)
        view = eng.due_view(t)
        lines = [f"SOP {eng.sop!r} at {datetime.fromtimestamp(t, eng._tz):%Y-%m-%d %H:%M} "
                 f"({eng._tz.key})"]
        shown = 0
        for lead in sorted(view, key=lambda x: (type(x).__name__, x)):
            if leader is not None and str(lead) != str(leader):
                continue
            items = view[lead]
            z = eng._zone(lead)
            c = {k: sum(1 for kk, _ in items if kk == k) for k in ("overdue", "open", "due",
                                                                   "dead")}
            lines.append(f"leader {lead} ({z.key}): " + ", ".join(
                f"{v} {k}" for k, v in c.items() if v))
            for kind, task in items:
                who = f"customer {task.customer if task.customer is not None else '-'}  " \
                      f"order {task.order}"
                if kind == "overdue":
                    when = f"deadline {_local(task.deadline, z)} ({_span(t - task.deadline)} late)"
                elif kind == "open":
                    when = f"deadline {_local(task.deadline, z)}"
                elif kind == "dead":
                    when = f"after {task.attempts} attempts: {task.error}"
                else:
                    when = f"due {_local(task.due, z)}"
                    if task.attempts:
                        when += f" (attempt {task.attempts + 1}, last error: {task.error})"
                lines.append(f"  {kind.upper():8s} {task.step:16s} {who}  {when}")
            shown += 1
        if not shown:
            lines.append("nothing due" + (f" for leader {leader}" if leader is not None else ""))
        return "\n".join(lines) + "\n"
    finally:
        if own:
            con.close()


def _view_init(eng, con, playbook, tz, leader_tz, quiet_hours, pickup_at):
    """A read-only engine over ``con``: no plugins, no schema writes."""
    pb = default_playbook() if playbook is None else playbook
    eng.playbook, eng.sop, eng._steps = pb, pb.name, pb.by_name()
    eng._clock = _time.time
    eng._tz = zone(tz, "tz")
    eng._leader_tz = leader_tz
    eng._zones = {}
    eng.quiet_hours = quiet_hours
    eng.pickup_at = None if pickup_at is None else epoch(pickup_at, "pickup_at")
    eng.con = con
    eng._owns = False


def _cli_time(text, tz):
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from None
    if d.tzinfo is None:
        # on the command line a time without offset is the operator's local time
        d = d.replace(tzinfo=zone(tz, "--tz"))
    return d.timestamp()


def add_sop_parser(subparsers):
    """Add the ``sop`` subcommand to the ``lbsdispatch`` parser's subparsers.

    Sets ``func=run_sop`` as the handler.
    """
    p = subparsers.add_parser(
        "sop", help="show the due and overdue SOP tasks of a store, per leader",
        description="Show the SOP tasks of an event store that need doing now, per leader: "
                    "overdue human tasks (past their deadline), open ones, tasks due to run "
                    "and dead letters. Times are leader-local.")
    p.add_argument("store", help="the event's SQLite file")
    p.add_argument("--now", help="ISO date-time (default: now); without an offset it is in "
                                 "--tz")
    p.add_argument("--leader", help="only this leader id")
    p.add_argument("--tz", default=DEFAULT_TZ, help=f"leaders' time zone (default {DEFAULT_TZ})")
    p.set_defaults(func=run_sop)
    return p


def run_sop(args, out=None) -> int:
    """Run the ``sop`` subcommand from parsed arguments; returns the exit code."""
    out = sys.stdout if out is None else out
    try:
        zone(args.tz, "--tz")
        now = None if args.now is None else _cli_time(args.now, args.tz)
        text = format_due(args.store, now, args.leader, tz=args.tz)
    except (ValueError, argparse.ArgumentTypeError) as e:
        sys.stderr.write(f"lbsdispatch sop: error: {e}\n")
        return 2
    out.write(text)
    return 0


def sop_main(argv=None, out=None) -> int:
    """``lbsdispatch sop STORE [--now ISO] [--leader ID] [--tz ZONE]`` on its own."""
    p = argparse.ArgumentParser(prog="lbsdispatch")
    sub = p.add_subparsers(dest="command", required=True)
    add_sop_parser(sub)
    args = p.parse_args(["sop", *(sys.argv[1:] if argv is None else argv)])
    return run_sop(args, out)
