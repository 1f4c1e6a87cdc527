"""The log of assigned orders behind a Dispatcher (release, reassignment, saving).

Batches are stored as chunks of arrays, never as one Python object per order;
a batch whose every order was assigned keeps the arrays of its (read-only)
result, and no array for what it does not have (customers, chosen leaders,
seqs that simply count on).  Orders assigned one at a time collect in a small
tail of lists that becomes a chunk as soon as anything reads the log.  The
id -> row dictionary is built only when a single order must be found (release,
duplicate check of ``assign``).
"""
from __future__ import annotations

import numpy as np

# What a dispatcher must know of an assigned order: where it is (release,
# reassignment), and the answer it got (a repeated order id returns it unchanged).
_FIELDS = ("order_id", "leader", "lat", "lon", "customer", "chosen", "seq",
           "dist", "outcome", "refusal", "n_full")
_DTYPES = {"leader": np.intp, "lat": np.float64, "lon": np.float64, "chosen": np.intp,
           "seq": np.int64, "dist": np.float64, "outcome": np.int8, "refusal": np.int8,
           "n_full": np.int32}
# A chunk may keep None for these columns when no row has one: the value of
# every row is then this one.
_ABSENT = {"customer": None, "chosen": -1}

#: Status of an order id (`OrderLog.status_many`).
UNKNOWN, LIVE, RELEASED = 0, 1, 2

# The dtype kinds numpy gives a list whose values all have this type.
_NATURAL_KIND = {int: "iu", bool: "b", float: "f", str: "U"}


def order_id_array(ids):
    """Order ids as a new array that holds each id as it was given.

    The rule for order ids (docs/identity.md, "Order ids"): an id is the
    Python value it was given as, a numpy scalar counting as its Python value.
    So 1 and "1" are two ids, as they are as dict keys (the log's lookup) and
    in the store's key column.  ``np.array`` alone breaks this for a list of
    mixed types: ``np.array([0, "x"])`` makes 0 the string "0".

    Parameters
    ----------
    ids : array_like
        An ndarray (or pandas column) keeps its dtype; an object array has its
        numpy scalars unwrapped.  A sequence of values of one type gives the
        array numpy makes of it (int64, str, ...); values of several types
        give an object array of the values.

    Returns
    -------
    ndarray
        A copy (the log may keep it).  Not checked for shape: the caller
        names a wrong one.
    """
    a = np.array(ids)
    if a.ndim != 1 or len(a) == 0:
        return a
    if a.dtype == object:
        vals = a.tolist()
        if not any(isinstance(v, np.generic) for v in vals):
            return a
    else:
        if isinstance(ids, np.ndarray) or hasattr(ids, "dtype"):
            return a              # typed already: each id is a value of the dtype
        vals = ids if isinstance(ids, list) else list(ids)
        if _one_natural_type(vals, a):
            return a
    vals = [v.item() if isinstance(v, np.generic) else v for v in vals]
    if len(set(map(type, vals))) == 1 and type(vals[0]) in _NATURAL_KIND:
        b = np.array(vals)
        if b.dtype == object or _one_natural_type(vals, b):
            return b
    out = np.empty(len(vals), dtype=object)
    for i, v in enumerate(vals):      # not out[:] = vals: that would unpack tuples
        out[i] = v
    return out


def _one_natural_type(vals, a):
    """Do the values all have one type, of which ``a``'s dtype is the natural kind?"""
    types = set(map(type, vals))
    return len(types) == 1 and a.dtype.kind in _NATURAL_KIND.get(types.pop(), "")


class _SeqRange:
    """The ``seq`` column of a chunk whose rows were first assigned one after
    another: ``start + row``, computed where it is read, so that a batch keeps
    no array of it.

    Parameters
    ----------
    start : int
        Seq of the chunk's first row.
    """

    __slots__ = ("start",)

    def __init__(self, start):
        self.start = start

    def __getitem__(self, rows):
        # a row (int) or an array of rows, as indexing the array would take
        return self.start + rows


class OrderLog:
    """Assigned orders, in the order they were assigned."""

    def __init__(self):
        self.chunks = []          # dicts of arrays: _FIELDS + "live" + "released"
        self.tail = []           # tuples of _FIELDS, orders assigned one at a time
        self.lookup = None        # order id -> (chunk, row)
        self.next_seq = 0         # sequence number of the next first assignment

    # -- writing --------------------------------------------------------------
    def add_one(self, order_id, leader, lat, lon, customer, chosen, seq=None, dist=0.0,
                outcome=0, refusal=0, n_full=0):
        """Record one assigned order (cheap: appends to lists).

        ``seq`` is the order's place in the sequence of first assignments; a
        reassigned order keeps the one it had.
        """
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        if self.lookup is not None:
            self.lookup[order_id] = (len(self.chunks), len(self.tail))
        self.tail.append((order_id, leader, lat, lon, customer, chosen, seq, dist, outcome,
                          refusal, n_full))

    def add_many(self, order_id, leader, lat, lon, customer, chosen, seq=None, dist=None,
                 outcome=None, refusal=None, n_full=None, live=None, released=None):
        """Record a batch of assigned orders.

        Parameters
        ----------
        order_id, leader, lat, lon : array_like, shape (n,)
        customer, chosen : array_like, shape (n,), or None
            None: no row has one (the chunk keeps None, not an array).
        seq : array_like of int, shape (n,), optional
            Default: the next ``n`` seqs, kept as a `_SeqRange`.
        dist, outcome, refusal, n_full : array_like, shape (n,), optional
            Default zeros.
        live, released : array_like of bool, shape (n,), optional
            Restore orders released before a save (default all live).

        Notes
        -----
        Arrays of the log's dtype are kept, not copied: the caller must not
        write into them afterwards (``assign_batch`` hands over the arrays of
        its result, which it makes read-only).
        """
        self.flush()
        n = len(order_id)
        if n == 0:
            return
        if seq is None:
            seq = _SeqRange(self.next_seq)
            self.next_seq += n
        chunk = {"order_id": order_id, "lat": lat, "lon": lon, "customer": customer,
                 "leader": leader, "chosen": chosen, "seq": seq,
                 "dist": np.zeros(n) if dist is None else dist,
                 "outcome": np.zeros(n) if outcome is None else outcome,
                 "refusal": np.zeros(n) if refusal is None else refusal,
                 "n_full": np.zeros(n) if n_full is None else n_full}
        for f, dt in _DTYPES.items():
            if chunk[f] is not None and not isinstance(chunk[f], _SeqRange):
                chunk[f] = np.asarray(chunk[f], dtype=dt)
        chunk["live"] = np.ones(n, dtype=bool) if live is None else np.asarray(live, dtype=bool)
        chunk["released"] = (np.zeros(n, dtype=bool) if released is None
                             else np.asarray(released, dtype=bool))
        self.chunks.append(chunk)
        if self.lookup is not None:
            c = len(self.chunks) - 1
            self.lookup.update((k, (c, r)) for r, k in enumerate(order_id.tolist()))

    def flush(self):
        """Turn the tail of single orders into a chunk."""
        if not self.tail:
            return
        cols = list(zip(*self.tail))
        n = len(self.tail)
        oid = np.empty(n, dtype=object)
        oid[:] = cols[0]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in cols[0]):
            oid = oid.astype(np.int64)
        cust = np.empty(n, dtype=object)
        cust[:] = cols[4]
        chunk = {"order_id": oid, "customer": cust}
        for f, col in zip(_FIELDS, cols):
            if f in _DTYPES:
                chunk[f] = np.array(col, dtype=_DTYPES[f])
        chunk["live"] = np.ones(n, dtype=bool)
        chunk["released"] = np.zeros(n, dtype=bool)
        self.chunks.append(chunk)
        self.tail = []

    # -- reading --------------------------------------------------------------
    def where(self):
        """Dictionary order id -> (chunk, row), built on first use; the tail is
        flushed first so that every (chunk, row) it holds exists."""
        self.flush()
        if self.lookup is None:
            self.lookup = {}
            for c, chunk in enumerate(self.chunks):
                self.lookup.update((k, (c, r)) for r, k in enumerate(chunk["order_id"].tolist()))
        return self.lookup

    def seen(self, order_id):
        """Was this order id ever assigned?"""
        if self.lookup is None:
            self.where()
        return order_id in self.lookup

    def _lookup(self):
        # Not where(): that flushes the tail, and the online path asks for every
        # order; the lookup already covers the tail (add_one keeps it current).
        return self.where() if self.lookup is None else self.lookup

    def _status(self, c, r):
        if c >= len(self.chunks):        # still in the tail: tail orders are live
            return LIVE
        ch = self.chunks[c]
        return LIVE if ch["live"][r] else (RELEASED if ch["released"][r] else UNKNOWN)

    def status_one(self, order_id):
        """`LIVE`, `RELEASED` or `UNKNOWN` (never assigned, or left unassigned by
        a reassignment: such an id may be dispatched again)."""
        where = self._lookup().get(order_id)
        return UNKNOWN if where is None else self._status(*where)

    def status_many(self, order_ids):
        """`status_one` of each id of a list, as an int8 array (one dict lookup each)."""
        n = len(order_ids)
        out = np.zeros(n, dtype=np.int8)
        if not self.chunks and not self.tail:
            return out
        get = self._lookup().get
        for i, w in [(i, w) for i, w in enumerate(map(get, order_ids)) if w is not None]:
            out[i] = self._status(*w)
        return out

    def record_of(self, order_id):
        """Every field of a logged order, as a dict."""
        self.flush()
        c, r = self._lookup()[order_id]
        return {f: self.get(c, r, f) for f in _FIELDS}

    def live_rows(self, leader=None):
        """(chunk, row) of live orders, optionally of one leader, in the order of
        their first assignment."""
        self.flush()
        out = []
        for c, chunk in enumerate(self.chunks):
            mask = chunk["live"] if leader is None else chunk["live"] & (chunk["leader"] == leader)
            rows = np.flatnonzero(mask)
            out.extend(zip(chunk["seq"][rows].tolist(), [c] * len(rows), rows.tolist()))
        out.sort()
        return [(c, r) for _, c, r in out]

    def get(self, c, r, field):
        """One field of one logged order."""
        col = self.chunks[c][field]
        return _ABSENT[field] if col is None else col[r]

    def kill(self, c, r, released=False):
        """Mark a logged order as no longer assigned (``released``: cancelled, so
        its id is never dispatched again)."""
        self.chunks[c]["live"][r] = False
        if released:
            self.chunks[c]["released"][r] = True

    def forget(self, order_ids):
        """Drop ids from the lookup (they are about to be logged again)."""
        if self.lookup is not None:
            for o in order_ids:
                self.lookup.pop(o, None)

    def kept_rows(self):
        """(chunk, row) of the orders a save must keep (live or released), in
        the order of their first assignment."""
        self.flush()
        out = []
        for c, chunk in enumerate(self.chunks):
            rows = np.flatnonzero(chunk["live"] | chunk["released"])
            out.extend(zip(chunk["seq"][rows].tolist(), [c] * len(rows), rows.tolist()))
        out.sort()
        return [(c, r) for _, c, r in out]

    def live_table(self):
        """Live and released orders as a dict of plain lists (for saving); the
        field ``live`` tells them apart."""
        rows = self.kept_rows()
        out = {f: [] for f in _FIELDS + ("live",)}
        for c, r in rows:
            for f in _FIELDS + ("live",):
                v = self.get(c, r, f)
                out[f].append(v.item() if isinstance(v, np.generic) else v)
        return out
