"""The log of assigned orders behind a Dispatcher (release, reassignment, saving).

Batches are stored as chunks of arrays, never as one Python object per order;
orders assigned one at a time collect in a small tail of lists that becomes a
chunk as soon as anything reads the log.  The id -> row dictionary is built
only when a single order must be found (release, duplicate check of ``assign``).
"""
from __future__ import annotations

import numpy as np

_FIELDS = ("order_id", "leader", "lat", "lon", "customer", "chosen", "seq")


class OrderLog:
    """Assigned orders, in the order they were assigned."""

    def __init__(self):
        self.chunks = []          # dicts of arrays: _FIELDS + "live"
        self.tail = []           # tuples of _FIELDS, orders assigned one at a time
        self.lookup = None        # order id -> (chunk, row)
        self.next_seq = 0         # sequence number of the next first assignment

    # -- writing --------------------------------------------------------------
    def add_one(self, order_id, leader, lat, lon, customer, chosen, seq=None):
        """Record one assigned order (cheap: appends to lists).

        ``seq`` is the order's place in the sequence of first assignments; a
        reassigned order keeps the one it had.
        """
        if seq is None:
            seq = self.next_seq
            self.next_seq += 1
        if self.lookup is not None:
            self.lookup[order_id] = (len(self.chunks), len(self.tail))
        self.tail.append((order_id, leader, lat, lon, customer, chosen, seq))

    def add_many(self, order_id, leader, lat, lon, customer, chosen, seq=None):
        """Record a batch of assigned orders (arrays; ``customer`` may be None)."""
        self.flush()
        n = len(order_id)
        if n == 0:
            return
        if seq is None:
            seq = np.arange(self.next_seq, self.next_seq + n, dtype=np.int64)
            self.next_seq += n
        self.chunks.append({"order_id": order_id, "leader": np.asarray(leader, dtype=np.intp),
                            "lat": lat, "lon": lon, "customer": customer,
                            "chosen": np.asarray(chosen, dtype=np.intp),
                            "seq": np.asarray(seq, dtype=np.int64),
                            "live": np.ones(n, dtype=bool)})
        if self.lookup is not None:
            c = len(self.chunks) - 1
            self.lookup.update((k, (c, r)) for r, k in enumerate(order_id.tolist()))

    def flush(self):
        """Turn the tail of single orders into a chunk."""
        if not self.tail:
            return
        order_id, leader, lat, lon, customer, chosen, seq = zip(*self.tail)
        n = len(self.tail)
        oid = np.empty(n, dtype=object)
        oid[:] = order_id
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in order_id):
            oid = oid.astype(np.int64)
        cust = np.empty(n, dtype=object)
        cust[:] = customer
        self.chunks.append({"order_id": oid, "leader": np.array(leader, dtype=np.intp),
                            "lat": np.array(lat, dtype=np.float64),
                            "lon": np.array(lon, dtype=np.float64),
                            "customer": cust, "chosen": np.array(chosen, dtype=np.intp),
                            "seq": np.array(seq, dtype=np.int64),
                            "live": np.ones(n, dtype=bool)})
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

    def known_ids(self):
        """Every order id ever assigned, as one array (None when there is none)."""
        self.flush()
        if not self.chunks:
            return None
        ids = [c["order_id"] for c in self.chunks]
        if any(a.dtype == object for a in ids):
            ids = [a.astype(object) for a in ids]
        return np.concatenate(ids)

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
        return None if col is None else col[r]

    def kill(self, c, r):
        """Mark a logged order as no longer assigned."""
        self.chunks[c]["live"][r] = False

    def forget(self, order_ids):
        """Drop ids from the lookup (they are about to be logged again)."""
        if self.lookup is not None:
            for o in order_ids:
                self.lookup.pop(o, None)

    def live_table(self):
        """Live orders as a dict of plain lists (for saving)."""
        rows = self.live_rows()
        out = {f: [] for f in _FIELDS}
        for c, r in rows:
            for f in _FIELDS:
                v = self.get(c, r, f)
                out[f].append(v.item() if isinstance(v, np.generic) else v)
        return out
