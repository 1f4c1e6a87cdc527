"""SQLite store behind a `Dispatcher`: one event in one file.

Every call that changes the event (``assign``, ``assign_batch``, ``release``,
``reassign_orders_of``, ``set_active``, ``set_capacity``, ``add_leaders``,
``move_leader``, ``bind``, ``set_bindings``, ``unmerge``) writes what it
changed in ONE transaction: the orders it took in, the load of every leader
whose load changed, the bindings, the identity graph and both audit logs.  A
process killed at any moment therefore leaves the file at the end of the last
committed call: every load equals the count of its leader's committed
assignments, and no binding exists without the order that made it.

Writes are incremental and batched: one ``executemany`` per table per call,
never a statement per order.  What changed is known without scanning:

* orders: the rows of the call;
* leaders: the positions the call touched (a batch: the leaders it assigned);
* identity graph: the audit records since the last commit (every change of the
  graph is logged there: new customers and identifiers, merges, unmerges) and
  the customers created since;
* bindings: `Bindings` tracks the customers it touched.

Settings: WAL journal (readers never block the writer, a commit appends to the
log instead of rewriting pages twice) and ``synchronous=NORMAL``: in WAL mode
a commit is then durable against a crash of the process (the case this store
is built for: a killed worker); after a power cut the last commits may be
lost, but the file is never corrupt and still consistent.  See
docs/identity.md.
"""
from __future__ import annotations

import json
import os
import sqlite3

import numpy as np

__all__ = ["SQLiteStore"]

FORMAT = "lbsdispatch.store/1"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE leaders (pos INTEGER PRIMARY KEY, leader_id, lat REAL, lon REAL,
                      capacity INTEGER, load INTEGER, active INTEGER, radius REAL,
                      priority INTEGER);
-- every order that went in with a usable id: state 1 assigned (live),
-- 0 released (cancelled), 2 unassigned (its outcome says why)
CREATE TABLE orders (order_id PRIMARY KEY, customer, leader INTEGER, distance REAL,
                     outcome INTEGER, refusal INTEGER, n_full INTEGER, lat REAL, lon REAL,
                     chosen INTEGER, seq INTEGER, state INTEGER) WITHOUT ROWID;
CREATE TABLE bindings (customer PRIMARY KEY, leader, created REAL, last REAL) WITHOUT ROWID;
CREATE TABLE binding_aliases (absorbed PRIMARY KEY, survivor) WITHOUT ROWID;
CREATE TABLE binding_audit (seq INTEGER PRIMARY KEY, action TEXT, survivor, absorbed,
                            kept_leader, dropped_leader, time REAL, reason TEXT);
CREATE TABLE id_customers (cid INTEGER PRIMARY KEY, parent INTEGER);
CREATE TABLE id_identifiers (kind TEXT, value TEXT, cid INTEGER,
                             PRIMARY KEY (kind, value)) WITHOUT ROWID;
CREATE TABLE id_apart (a INTEGER, b INTEGER, PRIMARY KEY (a, b)) WITHOUT ROWID;
-- customers: c1, and c2 for the records that name two (merge, unmerge, ...)
CREATE TABLE id_audit (seq INTEGER PRIMARY KEY, action TEXT, c1 INTEGER, c2 INTEGER,
                       kind TEXT, value TEXT, reason TEXT);
"""

_ORDER_SQL = "INSERT OR REPLACE INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_LEADER_SQL = "INSERT OR REPLACE INTO leaders VALUES (?,?,?,?,?,?,?,?,?)"


def _connect(path, create):
    path = os.fspath(path)
    if path == ":memory:":
        con = sqlite3.connect(":memory:", isolation_level=None)
    elif create:
        con = sqlite3.connect(path, isolation_level=None)
    else:
        if not os.path.exists(path):
            raise ValueError(f"{path}: no such file (no event to open)")
        con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _holds_event(con):
    try:
        row = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()
    except sqlite3.DatabaseError:
        return False
    return row is not None


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


class SQLiteStore:
    """The SQLite file of one event (see the module docstring).

    Made by ``Dispatcher(..., store=path)`` (`create`) or `Dispatcher.open`
    (`open`); not meant to be used on its own.
    """

    def __init__(self, con, path):
        self.con = con
        self.path = path
        self._n_audit = 0          # identity audit records already written
        self._n_customers = 0      # identity customers already written
        self._n_baudit = 0         # binding audit records already written
        self._bindings = None      # the Bindings object whose changes are tracked
        self._id_config = None     # JSON of the graph's configuration as written
        self.sop = None            # playbook new assignments start (None: no SOP)

    # -- opening -----------------------------------------------------------------
    @classmethod
    def create(cls, path, disp, sop="default"):
        """A new store holding ``disp``'s whole state; refuses a file with an event.

        ``sop`` names the playbook whose outbox rows each new assignment writes
        (None: none).
        """
        if sop is not None and (not isinstance(sop, str) or not sop):
            raise ValueError(f"sop must be a playbook name or None, got {sop!r}")
        try:
            con = _connect(path, create=True)
            if _holds_event(con):
                con.close()
                raise ValueError(f"{os.fspath(path)} already holds an event; use "
                                 f"Dispatcher.open({os.fspath(path)!r}) to resume it")
            if con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                con.close()
                raise ValueError(f"{os.fspath(path)} is a SQLite file with other tables, "
                                 f"not an lbsdispatch event")
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{os.fspath(path)}: not a usable SQLite file ({e})") from None
        self = cls(con, path)
        d = disp.to_dict()
        with self._transaction():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    con.execute(stmt)
            self._put_meta({"format": FORMAT, "rules": json.dumps(d["rules"]),
                            "leafsize": d["leaders"]["leafsize"], "sop": sop or "",
                            "crs": d.get("crs", "wgs84")})
            if sop is not None:
                from . import sop as _sop
                _sop.ensure_schema(con)
            self.sop = sop
            self._write_leaders(disp, range(disp.n_leaders))
            O = d["orders"]
            rows = [(O["order_id"][k], O["customer"][k], O["leader"][k], O["dist"][k],
                     O["outcome"][k], O["refusal"][k], O["n_full"][k], O["lat"][k],
                     O["lon"][k], O["chosen"][k], O["seq"][k], 1 if O["live"][k] else 0)
                    for k in range(len(O["order_id"]))]
            con.executemany(_ORDER_SQL, rows)
            self._write_state(disp, bindings_reset=True)
        return self

    @classmethod
    def open(cls, path):
        """(store, state): the state as a `Dispatcher.to_dict`-shaped dict."""
        try:
            con = _connect(path, create=False)
            ok = _holds_event(con)
        except sqlite3.DatabaseError as e:
            raise ValueError(f"{os.fspath(path)}: not a usable SQLite file ({e})") from None
        if not ok:
            con.close()
            raise ValueError(f"{os.fspath(path)} holds no lbsdispatch event")
        self = cls(con, path)
        try:
            state = self._read_state()
        except BaseException:
            con.close()
            raise
        return self, state

    def attach(self, disp):
        """Start tracking ``disp``'s changes (after `open`)."""
        self._bindings = disp.bindings
        disp.bindings._track()
        disp.bindings._take_changes()
        self._n_audit = len(disp.identity._log)
        self._n_customers = len(disp.identity._parent)
        self._n_baudit = len(disp.bindings.audit)
        self._id_config = json.dumps(_id_config(disp.identity))

    def close(self):
        """Close the connection."""
        self.con.close()

    # -- transactions ------------------------------------------------------------------
    class _Tx:
        def __init__(self, con):
            self.con = con

        def __enter__(self):
            self.con.execute("BEGIN IMMEDIATE")

        def __exit__(self, et, ev, tb):
            if et is None:
                self.con.execute("COMMIT")
            else:
                self.con.execute("ROLLBACK")
            return False

    def _transaction(self):
        return self._Tx(self.con)

    def commit(self, disp, orders, leaders, all_leaders=False, bindings_reset=False,
               now=None):
        """Write one call's changes in one transaction (with the SOP outbox rows of
        new assignments and cancellations, dated ``now``)."""
        with self._transaction():
            if orders is not None:
                if type(orders).__name__ == "_Released":
                    self.con.execute("UPDATE orders SET state=0 WHERE order_id=?",
                                     (orders.order_id,))
                    if self.sop is not None:
                        from . import sop as _sop
                        _sop.enqueue_exits(self.con, [orders.order_id], now, sop=self.sop)
                else:
                    self.con.executemany(_ORDER_SQL, orders.rows())
                    self._start_sop(disp, orders, now)
            if all_leaders:
                leaders = range(disp.n_leaders)
            if len(leaders):
                self._write_leaders(disp, leaders)
            self._write_state(disp, bindings_reset)

    def _start_sop(self, disp, orders, now):
        """Outbox rows of the orders a call assigned (not of a reassignment: the
        customer met their leader already; not of repeats)."""
        kind = type(orders).__name__
        if self.sop is None:
            return
        from . import sop as _sop
        if kind == "_BatchOrders" and orders.seq is not None:
            # a reassignment: the customer met their leader already; what is
            # still to come of the playbook goes to the new leader, and an order
            # no leader could take leaves the playbook
            res = orders.res
            moved = res.leader_index >= 0
            if moved.any():
                _sop.enqueue_moves(self.con, res.order_id[moved], res.leader_id[moved], now,
                                   sop=self.sop)
            if (~moved).any():
                _sop.enqueue_exits(self.con, res.order_id[~moved], now, sop=self.sop,
                                   reason="reassigned: no leader could take it")
            return
        if kind == "_OneOrder":
            if orders.pos < 0:
                return
            _sop.enqueue(self.con, [orders.order_id], [orders.customer],
                         [disp._id_list[orders.pos]], [int(orders.outcome)], now, sop=self.sop)
        else:
            res = orders.res
            _sop.enqueue(self.con, res.order_id, res.customer_id, res.leader_id, res.outcome,
                         now, sop=self.sop, repeat=res.repeat)

    # -- writing -----------------------------------------------------------------------
    def _put_meta(self, kv):
        self.con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(kv.items()))

    def _write_leaders(self, disp, positions):
        pos = np.fromiter(positions, dtype=np.intp)
        if not len(pos):
            return
        ids = disp.leader_ids[pos].tolist()
        rows = zip(pos.tolist(), ids, disp.index.lat[pos].tolist(), disp.index.lon[pos].tolist(),
                   disp.capacities()[pos].tolist(), disp.loads()[pos].tolist(),
                   disp.actives()[pos].astype(np.int64).tolist(), disp._radius[pos].tolist(),
                   disp._priority[pos].tolist())
        self.con.executemany(_LEADER_SQL, rows)

    def _write_state(self, disp, bindings_reset=False):
        """Identity graph, bindings and counters changed since the last commit."""
        con = self.con
        g = disp.identity
        log = g._log
        if len(log) > self._n_audit or len(g._parent) > self._n_customers:
            new = log[self._n_audit:]
            parent = g._parent
            con.executemany("INSERT INTO id_customers VALUES (?, ?)",
                            [(c, parent[c]) for c in range(self._n_customers, len(parent))])
            idents, merges, apart = [], [], []
            for _, action, cs, kind, value, _ in new:
                if action == "new" or action == "attach":
                    if kind is not None:
                        idents.append((kind, value, cs[0]))
                elif action == "merge":
                    merges.append((cs[0], cs[1]))
                elif action == "unmerge":
                    idents.append((kind, value, cs[1]))
                    apart.append(cs)
            if idents:
                con.executemany("INSERT OR REPLACE INTO id_identifiers VALUES (?, ?, ?)", idents)
            if merges:
                con.executemany("UPDATE id_customers SET parent=? WHERE cid=?", merges)
            if apart:
                con.executemany("INSERT OR IGNORE INTO id_apart VALUES (?, ?)", apart)
            con.executemany("INSERT INTO id_audit VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(s, a, cs[0], cs[1] if len(cs) > 1 else None, k, v, r)
                             for s, a, cs, k, v, r in new])
            self._n_audit = len(log)
            self._n_customers = len(parent)
        cfg = json.dumps(_id_config(g))
        if cfg != self._id_config:
            self._put_meta({"identity_config": cfg})
            self._id_config = cfg
        b = disp.bindings
        if bindings_reset or b is not self._bindings:
            con.execute("DELETE FROM bindings")
            con.execute("DELETE FROM binding_aliases")
            con.execute("DELETE FROM binding_audit")
            b._track()
            b._take_changes()
            self._bindings = b
            self._n_baudit = 0
            con.executemany("INSERT INTO bindings VALUES (?, ?, ?, ?)",
                            [(c, r[0], r[1], r[2]) for c, r in b._b.items()])
            con.executemany("INSERT INTO binding_aliases VALUES (?, ?)", list(b._alias.items()))
            self._put_meta({"bindings_config": json.dumps(
                {"mode": b.mode, "expire_days": b.expire_days})})
        else:
            upsert, delete, aliases = b._take_changes()
            if delete:
                con.executemany("DELETE FROM bindings WHERE customer=?", [(c,) for c in delete])
            if upsert:
                con.executemany("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?)", upsert)
            if aliases:
                con.executemany("INSERT OR REPLACE INTO binding_aliases VALUES (?, ?)", aliases)
        if len(b.audit) > self._n_baudit:
            con.executemany("INSERT INTO binding_audit VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [tuple(r) for r in b.audit[self._n_baudit:]])
            self._n_baudit = len(b.audit)
        self._put_meta({"next_order": disp._next_order, "next_seq": disp._log.next_seq,
                        "bindings_clock": b._clock})

    # -- reading -----------------------------------------------------------------------
    def _read_state(self):
        con = self.con
        meta = dict(con.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: unknown store format {meta.get('format')!r}")
        self.sop = meta.get("sop") or None      # stores written before SOP have none
        L = con.execute("SELECT leader_id, lat, lon, capacity, load, active, radius, priority "
                        "FROM leaders ORDER BY pos").fetchall()
        cols = list(zip(*L)) if L else [[]] * 8
        leaders = {"leader_id": list(cols[0]), "lat": list(cols[1]), "lon": list(cols[2]),
                   "capacity": list(cols[3]), "load": list(cols[4]),
                   "active": [bool(a) for a in cols[5]],
                   "radius_m": [float(r) for r in cols[6]], "priority": list(cols[7]),
                   "leafsize": int(meta["leafsize"])}
        O = con.execute("SELECT order_id, leader, lat, lon, customer, chosen, seq, distance, "
                        "outcome, refusal, n_full, state FROM orders WHERE state IN (0, 1) "
                        "ORDER BY seq").fetchall()
        fields = ("order_id", "leader", "lat", "lon", "customer", "chosen", "seq", "dist",
                  "outcome", "refusal", "n_full", "live")
        ocols = list(zip(*O)) if O else [[]] * len(fields)
        orders = {f: list(c) for f, c in zip(fields, ocols)}
        orders["live"] = [s == 1 for s in orders["live"]]
        # the loads must be the committed assignments (one transaction writes both)
        count = np.bincount(np.asarray([lp for lp, s in zip(orders["leader"], orders["live"])
                                        if s], dtype=np.intp), minlength=len(L))
        if count.tolist() != leaders["load"]:
            bad = int(np.flatnonzero(count != np.asarray(leaders["load"]))[0])
            raise ValueError(f"{self.path}: leader {leaders['leader_id'][bad]!r} has load "
                             f"{leaders['load'][bad]} but {int(count[bad])} assigned orders")
        # identity graph, in IdentityGraph.to_dict form
        cfg = json.loads(meta["identity_config"])
        parent = [p for (p,) in con.execute("SELECT parent FROM id_customers ORDER BY cid")]
        roots = []
        for c, p in enumerate(parent):
            roots.append(c if p == c else roots[p])
        identifiers = [[roots[c], k, v] for k, v, c in
                       con.execute("SELECT kind, value, cid FROM id_identifiers")]
        apart = [[a, b] for a, b in con.execute("SELECT a, b FROM id_apart")]
        audit = [[s, a, [c1] if c2 is None else [c1, c2], k, v, r] for s, a, c1, c2, k, v, r in
                 con.execute("SELECT * FROM id_audit ORDER BY seq")]
        identity = dict(cfg, parent=parent, identifiers=identifiers, apart=apart, audit=audit)
        bcfg = json.loads(meta["bindings_config"])
        bindings = {
            "format": "lbsdispatch.identity.Bindings/1", "mode": bcfg["mode"],
            "expire_days": bcfg["expire_days"], "clock": meta.get("bindings_clock"),
            "bindings": [list(r) for r in con.execute("SELECT * FROM bindings")],
            "aliases": [list(r) for r in con.execute("SELECT * FROM binding_aliases")],
            "audit": [list(r) for r in con.execute("SELECT * FROM binding_audit ORDER BY seq")],
        }
        return {"version": 2, "leaders": leaders, "rules": json.loads(meta["rules"]),
                "crs": meta.get("crs", "wgs84"),
                "bindings": bindings, "identity": identity, "orders": orders,
                "next_order": meta["next_order"], "next_seq": meta["next_seq"]}


def _id_config(g):
    """The configuration part of an identity graph's `to_dict` (kinds, blocked values)."""
    kinds = [{"name": name, "normaliser": spec.normaliser_tag, "limit": spec.limit,
              "priority": spec.priority, "blocked": sorted(spec.blocked)}
             for name, spec in g._registered.items()]
    return {"format": "lbsdispatch.identity.IdentityGraph/1", "blocked": sorted(g._blocked),
            "block_all_zeros": g._block_zeros, "kinds": kinds}
