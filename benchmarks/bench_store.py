"""pytest-benchmark suite: a persisted city event with identities (issue 4).

Run from the project root::

    python -m pytest benchmarks/bench_store.py --benchmark-only
    python benchmarks/report_store.py          # the table of docs/performance.md

The event: ``synth.city_event()`` (800 leaders, 20,000 orders); every order
carries 2-3 identifiers of its buyer (``unionid``, ``phone``, and for every
second buyer ``openid:wx1``); 30% of the orders come from returning customers,
known to the identity graph (by their unionid) and bound to a leader before the
batch.  The batch is one ``assign_batch`` call against a SQLite file in a
temporary directory: identity resolution, dispatch and the store commit, in
one transaction.

Group ``persisted batch``:

* ``assign_batch`` -- the whole call (a fresh event file per round, prepared
  outside the timing);
* ``bare insert`` -- the floor: the rows that call writes, one bare
  ``executemany`` per table, in one transaction, into a fresh file with the
  same schema and settings.
"""
from __future__ import annotations

import functools
import os
import re
import sqlite3
import tempfile
import time

import numpy as np

from lbsdispatch import Dispatcher, sop, synth
from lbsdispatch.store import _SCHEMA

RETURNING = 0.30


@functools.lru_cache(maxsize=None)
def event_with_identities(seed=0):
    """(event, identifier columns, customers known before the batch, their leader ids,
    orders of those customers)."""
    ev = synth.city_event(seed=seed)
    idents, returning, leader_of = synth.identities(ev, returning=RETURNING, seed=seed)
    return ev, idents, returning, leader_of, int(np.isin(ev.customer_ids, returning).sum())


def fresh_event(path):
    """A persisted event with the returning customers known and bound (not timed)."""
    ev, _, returning, leader_of, _ = event_with_identities()
    d = Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                   priority=ev.priority, store=path, clock=lambda: 0.0)
    g = d.identity
    bindings = {g.resolve({"unionid": f"u{x:07d}"}): int(lid)
                for x, lid in zip(returning.tolist(), leader_of.tolist())}
    d.set_bindings(bindings, now=0.0)        # persists the graph and the bindings too
    return d


class Timed:
    """Wraps the phases of one assign_batch call to time them apart, and records
    the rows the store writes (for the bare-insert floor)."""

    def __init__(self, d):
        self.d = d
        self.t = {"resolve": 0.0, "commit": 0.0}
        self.rows = []
        resolve, commit = d._resolve_batch, d._store.commit

        def timed_resolve(*a, **k):
            t0 = time.perf_counter()
            try:
                return resolve(*a, **k)
            finally:
                self.t["resolve"] += time.perf_counter() - t0

        def timed_commit(*a, **k):
            t0 = time.perf_counter()
            try:
                return commit(*a, **k)
            finally:
                self.t["commit"] += time.perf_counter() - t0

        d._resolve_batch = timed_resolve
        d._store.commit = timed_commit

    def record_rows(self):
        """Make the store's connection report every executemany (rows copied)."""
        store = self.d._store
        real = store.con
        rows = self.rows

        class Spy:
            def __getattr__(self, name):
                return getattr(real, name)

            def executemany(self, sql, seq):
                seq = list(seq)
                rows.append((sql, seq))
                return real.executemany(sql, seq)

        store.con = Spy()


def run_batch(d, timed=None):
    ev, idents, *_ = event_with_identities()
    t0 = time.perf_counter()
    res = d.assign_batch(ev.order_lat, ev.order_lon, order_ids=ev.order_ids,
                         identifiers=idents, now=3600.0)
    total = time.perf_counter() - t0
    return res, total


def bare_insert(path, rows):
    """The floor: the same rows, one plain executemany per table, one transaction."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            con.execute(stmt)
    sop.ensure_schema(con)         # the store also writes the SOP outbox rows
    by_table = {}
    for sql, seq in rows:
        if not sql.startswith(("INSERT", "REPLACE")) or not seq:
            continue
        m = re.match(r"(?:INSERT|REPLACE)(?: OR \w+)? INTO (\w+)\s*(\([^)]*\))?", sql)
        key = (m.group(1), m.group(2) or "")
        by_table.setdefault(key, (len(seq[0]), []))[1].extend(seq)
    t0 = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    for (table, cols), (width, seq) in by_table.items():
        con.executemany(f"INSERT OR REPLACE INTO {table} {cols} VALUES "
                        f"({','.join('?' * width)})", seq)
    con.execute("COMMIT")
    t = time.perf_counter() - t0
    con.close()
    return t, {k[0]: len(v[1]) for k, v in by_table.items()}


def measure(tmp):
    """One persisted batch in a fresh file: phases, rows written and the floor."""
    d = fresh_event(os.path.join(tmp, f"e{time.perf_counter_ns()}.sqlite"))
    timed = Timed(d)
    timed.record_rows()
    res, total = run_batch(d, timed)
    floor, counts = bare_insert(os.path.join(tmp, f"f{time.perf_counter_ns()}.sqlite"),
                                timed.rows)
    d.close()
    return dict(total=total, resolve=timed.t["resolve"], commit=timed.t["commit"],
                dispatch=total - timed.t["resolve"] - timed.t["commit"], floor=floor,
                rows=counts, counts=res.counts())


# -- pytest-benchmark ---------------------------------------------------------------------
def test_persisted_batch(benchmark):
    benchmark.group = "persisted batch"
    with tempfile.TemporaryDirectory() as tmp:
        k = iter(range(10**6))
        benchmark.pedantic(lambda d: run_batch(d),
                           setup=lambda: ((fresh_event(os.path.join(tmp, f"{next(k)}.db")),),
                                          {}),
                           rounds=5, warmup_rounds=1)


def test_bare_insert_floor(benchmark):
    benchmark.group = "persisted batch"
    with tempfile.TemporaryDirectory() as tmp:
        d = fresh_event(os.path.join(tmp, "rows.db"))
        timed = Timed(d)
        timed.record_rows()
        run_batch(d, timed)
        k = iter(range(10**6))
        benchmark.pedantic(lambda: bare_insert(os.path.join(tmp, f"{next(k)}.db"),
                                               timed.rows)[0],
                           rounds=5, warmup_rounds=1)
