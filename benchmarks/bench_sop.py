"""pytest-benchmark suite: the SOP outbox (issue 5).

Run from the project root::

    python -m pytest benchmarks/bench_sop.py --benchmark-only
    python benchmarks/report_sop.py           # the table of docs/performance.md

The batch: ``synth.city_event()`` (800 leaders, 20,000 orders), 30% of the
orders from returning customers (outcome STICKY, as in bench_store), in a
SQLite file (WAL, synchronous=NORMAL, the store's settings).

* ``store commit`` -- the floor the issue compares with: the batch's
  assignment rows (the store's ``orders`` table schema), one ``executemany``
  in one transaction.  When the real store is usable, report_sop.py also
  times ``Dispatcher(store=...).assign_batch``'s own commit.
* ``enqueue`` -- `lbsdispatch.sop.enqueue` of the same batch, in one
  transaction of its own (the increment it adds to the store's transaction).
* ``run_due`` -- 20,000 due no-op hook calls (one plugin), the success records
  committed per chunk of 500; the fold of the outbox into tasks is done before
  the timing (``fold``, timed apart).
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
import time

import numpy as np

from lbsdispatch import sop, synth

RETURNING = 0.30
ORDERS_SQL = ("CREATE TABLE orders (order_id PRIMARY KEY, customer, leader INTEGER, "
              "distance REAL, outcome INTEGER, refusal INTEGER, n_full INTEGER, lat REAL, "
              "lon REAL, chosen INTEGER, seq INTEGER, state INTEGER) WITHOUT ROWID")
T0 = 1717239600.0          # 2024-06-01 19:00 Asia/Shanghai
PICKUP = T0 + 21 * 3600


def batch(seed=0):
    """(order ids, customer ids, leader ids, outcomes) of a city event's batch."""
    ev = synth.city_event(seed=seed)
    rng = np.random.default_rng(seed + 1)
    outcome = np.where(rng.random(ev.n_orders) < RETURNING, 2, 0).astype(np.int8)
    leader = ev.leader_ids[rng.integers(0, ev.n_leaders, ev.n_orders)]
    return ev.order_ids, ev.customer_ids, leader, outcome


def _connect(path):
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def fresh(tmp):
    con = _connect(os.path.join(tmp, f"e{time.perf_counter_ns()}.sqlite"))
    con.execute(ORDERS_SQL)
    sop.ensure_schema(con)
    return con


def time_store_commit(con, b):
    o, c, lead, oc = b
    rows = list(zip(o.tolist(), c.tolist(), lead.tolist(), [1.0] * len(o), oc.tolist(),
                    [0] * len(o), [0] * len(o), [30.2] * len(o), [120.1] * len(o),
                    [None] * len(o), range(len(o)), [1] * len(o)))
    t0 = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    con.executemany("INSERT OR REPLACE INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.execute("COMMIT")
    return time.perf_counter() - t0


def time_enqueue(con, b):
    t0 = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    n = sop.enqueue(con, *b, T0, pickup_at=PICKUP)
    con.execute("COMMIT")
    return time.perf_counter() - t0, n


class NoOp:
    @sop.hookimpl
    def on_new_neighbor(self, key):
        pass


def due_engine(tmp, n=20_000):
    """An engine with n due new_neighbor tasks, folded (the timing starts after)."""
    pb = sop.Playbook("bench", (sop.Step("new_neighbor", "on_new_neighbor",
                                         quiet_hours=False),))
    con = fresh(tmp)
    e = sop.SopEngine(con, playbook=pb, plugins=[NoOp()], clock=sop.SimClock(T0))
    o, c, lead, oc = batch()
    con.execute("BEGIN IMMEDIATE")
    sop.enqueue(con, o[:n], c[:n], lead[:n], np.zeros(n, dtype=np.int8), T0, sop="bench")
    con.execute("COMMIT")
    t0 = time.perf_counter()
    e.fold()
    return e, time.perf_counter() - t0


def time_run_due(tmp, n=20_000):
    e, t_fold = due_engine(tmp, n)
    t0 = time.perf_counter()
    s = e.run_due(T0)
    t = time.perf_counter() - t0
    assert s.succeeded == n, s
    return t, t_fold


def measure(tmp):
    b = batch()
    con = fresh(tmp)
    t_store = time_store_commit(con, b)
    t_enq, n = time_enqueue(con, b)
    t_run, t_fold = time_run_due(tmp)
    return dict(store_commit=t_store, enqueue=t_enq, enqueue_rows=n, run_due=t_run,
                fold=t_fold, calls_per_s=20_000 / t_run)


# -- pytest-benchmark ---------------------------------------------------------------------
def test_store_commit_floor(benchmark):
    benchmark.group = "sop enqueue"
    b = batch()
    with tempfile.TemporaryDirectory() as tmp:
        benchmark.pedantic(lambda con: time_store_commit(con, b),
                           setup=lambda: ((fresh(tmp),), {}), rounds=5, warmup_rounds=1)


def test_enqueue(benchmark):
    benchmark.group = "sop enqueue"
    b = batch()
    with tempfile.TemporaryDirectory() as tmp:
        benchmark.pedantic(lambda con: time_enqueue(con, b),
                           setup=lambda: ((fresh(tmp),), {}), rounds=5, warmup_rounds=1)


def test_run_due_20k_noop_calls(benchmark):
    benchmark.group = "sop run_due"
    with tempfile.TemporaryDirectory() as tmp:
        benchmark.pedantic(lambda e: e.run_due(T0),
                           setup=lambda: ((due_engine(tmp)[0],), {}), rounds=3,
                           warmup_rounds=0)
