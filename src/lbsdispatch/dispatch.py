"""`Dispatcher`: the live state of one event and the rules that assign its orders."""
from __future__ import annotations

import enum
import math
from typing import NamedTuple

import numpy as np

from ._kdtree import _as_coords, _coerce_ids, _DispatchCore, _ranks, check_coordinates
from ._orderlog import OrderLog
from .index import LeaderIndex
from .rules import Rules

__all__ = ["Dispatcher", "Outcome", "Refusal", "Assignment", "BatchResult"]

# Capacities and loads stay below 2**31 so that load/capacity ratios compare
# exactly in 64-bit integers inside the core.
CAPACITY_MAX = 2**31 - 2
_UNLIMITED = 2**31 - 1

_NO_LEADER = -1
_UNKNOWN_LEADER = -2


class Outcome(enum.IntEnum):
    """What happened to an order; every order gets exactly one."""

    NEAREST = 0        #: the nearest leader with room (no nearer leader was full)
    SPILLOVER = 1      #: nearer leaders were full; the next nearest with room took it
    STICKY = 2         #: kept the customer's bound leader
    CHOSEN = 3         #: the buyer's chosen pickup point
    OUT_OF_RANGE = 4   #: no active leader within range
    ALL_FULL = 5       #: active leaders within range, all full
    INVALID = 6        #: the order could not be read (see the reason)


class Refusal(enum.IntEnum):
    """Why an order's chosen or bound leader was not used."""

    NONE = 0
    CHOSEN_UNKNOWN = 1
    CHOSEN_INACTIVE = 2
    CHOSEN_OUT_OF_RANGE = 3
    CHOSEN_FULL = 4
    BOUND_UNKNOWN = 5
    BOUND_INACTIVE = 6
    BOUND_OUT_OF_RANGE = 7
    BOUND_FULL = 8


_OUTCOME_TEXT = {
    Outcome.NEAREST: "nearest leader with room",
    Outcome.SPILLOVER: "nearer leaders full; next nearest with room",
    Outcome.STICKY: "kept the customer's bound leader",
    Outcome.CHOSEN: "the buyer's chosen pickup point",
    Outcome.OUT_OF_RANGE: "no active leader within range",
    Outcome.ALL_FULL: "all leaders within range are full",
}
_REFUSAL_TEXT = {
    Refusal.NONE: "",
    Refusal.CHOSEN_UNKNOWN: "chosen leader unknown",
    Refusal.CHOSEN_INACTIVE: "chosen leader inactive",
    Refusal.CHOSEN_OUT_OF_RANGE: "chosen leader out of range",
    Refusal.CHOSEN_FULL: "chosen leader full",
    Refusal.BOUND_UNKNOWN: "bound leader unknown",
    Refusal.BOUND_INACTIVE: "bound leader inactive",
    Refusal.BOUND_OUT_OF_RANGE: "bound leader out of range",
    Refusal.BOUND_FULL: "bound leader full",
}
# Reasons of INVALID rows (codes stored in the refusal column of such rows).
_INVALID_TEXT = {
    1: "invalid: lat/lon not finite",
    2: "invalid: lat outside [-90, 90]",
    3: "invalid: lon outside [-180, 180]",
    4: "invalid: duplicate order id in this batch",
    5: "invalid: order id already dispatched",
    6: "invalid: chosen_leader has the wrong type for leader ids",
    7: "invalid: order id missing",
}


def _reason_table():
    """Reason text by (outcome, refusal) code pair, as an object array."""
    table = np.empty((len(Outcome), len(Refusal) + len(_INVALID_TEXT)), dtype=object)
    table[:] = ""
    for o, text in _OUTCOME_TEXT.items():
        for r, why in _REFUSAL_TEXT.items():
            table[o, r] = f"{text} ({why})" if why else text
    for code, text in _INVALID_TEXT.items():
        table[Outcome.INVALID, code] = text
    return table


_REASONS = _reason_table()
_REASON_ROWS = tuple(tuple(row) for row in _REASONS.tolist())
_OUTCOMES = tuple(Outcome)
_tuple_new = tuple.__new__


class Assignment(NamedTuple):
    """The answer for one order."""

    order_id: object
    leader_id: object       #: None (str ids) or -1 (int ids) when unassigned
    distance_m: float       #: inf when unassigned
    outcome: Outcome
    reason: str
    n_full_nearer: int      #: nearer leaders that were full (NEAREST/SPILLOVER only)


class BatchResult:
    """Results of :meth:`Dispatcher.assign_batch`, one row per input order, in input order.

    Attributes
    ----------
    order_id : ndarray
    leader_id : ndarray
        int64 with -1 for unassigned orders when leader ids are integers,
        object with None otherwise.
    leader_index : ndarray of intp
        Position of the leader in the dispatcher's table, -1 if unassigned.
    distance_m : ndarray of float64
        ``inf`` when unassigned.
    outcome : ndarray of int8
        :class:`Outcome` codes.
    refusal : ndarray of int8
        :class:`Refusal` codes (for INVALID rows, the invalid-reason code).
    n_full_nearer : ndarray of int32
    """

    __slots__ = ("order_id", "leader_id", "leader_index", "distance_m", "outcome", "refusal",
                 "n_full_nearer")

    def __init__(self, order_id, leader_id, leader_index, distance_m, outcome, refusal,
                 n_full_nearer):
        self.order_id = order_id
        self.leader_id = leader_id
        self.leader_index = leader_index
        self.distance_m = distance_m
        self.outcome = outcome
        self.refusal = refusal
        self.n_full_nearer = n_full_nearer

    def __len__(self):
        return len(self.outcome)

    @property
    def reason(self):
        """Reason text of each row (object array of str)."""
        return _REASONS[self.outcome.astype(np.intp), self.refusal.astype(np.intp)]

    def counts(self):
        """Orders per outcome, as a dict {Outcome: count} (every outcome listed)."""
        c = np.bincount(self.outcome.astype(np.intp), minlength=len(Outcome))
        return {o: int(c[o]) for o in Outcome}

    def to_frame(self):
        """A pandas DataFrame with one row per order (needs pandas)."""
        import pandas as pd

        return pd.DataFrame({
            "order_id": self.order_id,
            "leader_id": self.leader_id,
            "distance_m": self.distance_m,
            "outcome": pd.Categorical.from_codes(self.outcome.astype(np.int64),
                                                 [o.name for o in Outcome]),
            "reason": self.reason,
            "n_full_nearer": self.n_full_nearer,
        })

    def __getitem__(self, i):
        o = Outcome(int(self.outcome[i]))
        lid = self.leader_id[i]
        return Assignment(_py(self.order_id[i]), _py(lid), float(self.distance_m[i]), o,
                          str(self.reason[i]), int(self.n_full_nearer[i]))

    def __repr__(self):
        c = {o.name: n for o, n in self.counts().items() if n}
        return f"BatchResult(n={len(self)}, {c})"


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _ids_array(ids, name, n=None):
    """Leader or customer ids as an int64 or str array; ValueError otherwise."""
    return _coerce_ids(ids, name, n)


def _int_column(x, name, n, default, lo, hi):
    """Per-leader integer column (scalar broadcast) checked to lie in [lo, hi]."""
    if x is None:
        return np.full(n, default, dtype=np.int64)
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be integers") from None
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"{name} must have one value per leader ({n}), got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)) | (a < lo) | (a > hi))
    if bad.size:
        j = int(bad[0])
        v = np.asarray(x).reshape(-1)[j] if np.ndim(x) else x
        v = v.item() if isinstance(v, np.generic) else v
        raise ValueError(f"{name}[{j}] = {v!r}: must be an integer in [{lo}, {hi}]")
    return a.astype(np.int64)


def _radius_column(x, n):
    if x is None:
        return np.full(n, math.inf)
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("radius_m must be numbers of metres (None or inf for no limit)") from None
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ValueError(f"radius_m must have one value per leader ({n}), got shape {a.shape}")
    bad = np.flatnonzero(np.isnan(a) | (a < 0))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"radius_m[{j}] = {a[j]!r}: must be >= 0 (inf for no limit)")
    return a


def _bool_column(x, name, n):
    if x is None:
        return np.ones(n, dtype=bool)
    a = np.asarray(x)
    if a.ndim == 0:
        a = np.full(n, bool(a))
    if a.shape != (n,):
        raise ValueError(f"{name} must have one value per leader ({n}), got shape {a.shape}")
    if a.dtype.kind != "b":
        if a.dtype.kind not in "iuf" or not np.isin(a, (0, 1)).all():
            j = int(np.flatnonzero(~np.isin(a, (0, 1)))[0]) if a.dtype.kind in "iuf" else 0
            raise ValueError(f"{name}[{j}] = {a[j]!r}: must be True or False")
        a = a.astype(bool)
    return a


class _IdMap:
    """Vectorised id -> position lookups (sorted ids + searchsorted), plus a dict
    for single lookups."""

    def __init__(self, ids):
        self.ids = ids
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]
        self.kind = "str" if ids.dtype.kind == "U" else "int"
        self._dict = None

    def one(self, v):
        """Position of id v, or _UNKNOWN_LEADER; None when v has the wrong type."""
        if self._dict is None:
            self._dict = {k: i for i, k in enumerate(self.ids.tolist())}
        if self.kind == "int":
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                return None
            v = int(v)
        elif not isinstance(v, (str, np.str_)):
            return None
        return self._dict.get(v, _UNKNOWN_LEADER)

    def many(self, vals):
        """Positions of vals (array); _UNKNOWN_LEADER for unknown ids."""
        if len(self.sorted) == 0:
            return np.full(len(vals), _UNKNOWN_LEADER, dtype=np.intp)
        j = np.searchsorted(self.sorted, vals)
        j = np.minimum(j, len(self.sorted) - 1)
        hit = self.sorted[j] == vals
        return np.where(hit, self.order[j], _UNKNOWN_LEADER).astype(np.intp)


class Dispatcher:
    """The live state of one event: leaders, their loads, and the rules.

    Parameters
    ----------
    leader_ids : array_like of int or str, shape (n_leaders,)
        Unique leader ids.
    lat, lon : array_like of float, shape (n_leaders,)
        Pickup points, WGS-84 degrees.
    capacity : int or array_like of int, optional
        Orders each leader can take this event (0 .. 2**31 - 2).  ``None``:
        unlimited.
    radius_m : float or array_like of float, optional
        Each leader's own service radius in metres (``inf`` for none).
    priority : int or array_like of int, optional
        Higher priority wins ties (when ``"priority"`` is in the tie rule).
    active : bool or array_like of bool, optional
        Leaders that take orders now (default all).
    bindings : mapping, optional
        customer id -> leader id: the leader a customer belongs to.
    rules : Rules, optional
        Defaults to ``Rules()``.
    leafsize : int, default 16
        Leaf size of the spatial tree.

    Notes
    -----
    Every order gets exactly one :class:`Outcome`.  ``assign_batch`` gives
    exactly what calling ``assign`` on each order in input order gives.
    """

    def __init__(self, leader_ids, lat, lon, capacity=None, radius_m=None, priority=None,
                 active=None, bindings=None, rules=None, leafsize=16):
        self.rules = Rules() if rules is None else rules
        if not isinstance(self.rules, Rules):
            raise ValueError(f"rules must be a Rules, got {type(rules).__name__}")
        ids = _coerce_ids(leader_ids, "leader_ids")
        ids, _ = _ranks(ids, len(ids), "leader_ids")     # duplicates, named as leader_ids
        n = len(ids)
        index = LeaderIndex(lat, lon, ids=ids, leafsize=leafsize)  # checks lat/lon
        cap = _int_column(capacity, "capacity", n, _UNLIMITED, 0, CAPACITY_MAX) \
            if capacity is not None else np.full(n, _UNLIMITED, dtype=np.int64)
        self._setup(index, cap, np.zeros(n, dtype=np.int64), _bool_column(active, "active", n),
                    _radius_column(radius_m, n),
                    _int_column(priority, "priority", n, 0, -2**62, 2**62))
        self._bindings = {}
        self._bind_keys = None
        if bindings is not None:
            self.set_bindings(bindings)
        self._log = OrderLog()
        self._next_order = 0

    # -- construction helpers ------------------------------------------------------
    def _setup(self, index, cap, load, active, radius, priority):
        self.index = index
        self._ids = index.ids
        self._id_list = self._ids.tolist()      # for the one-order path: no numpy scalars
        self._idmap = _IdMap(self._ids)
        self._missing_id = -1 if self._idmap.kind == "int" else None
        self._bind_keys = None        # binding positions refer to this leader table
        self._radius = radius
        self._priority = priority
        r = self.rules
        self._core = _DispatchCore(
            index, cap, load, active, radius, priority,
            math.inf if r.max_distance_m is None else r.max_distance_m,
            r.tie_tolerance_m, r.tie_break, r.capacity == "strict")

    @classmethod
    def from_frame(cls, df, id_col="leader_id", lat_col="lat", lon_col="lon",
                   capacity_col="capacity", radius_col="radius_m", priority_col="priority",
                   active_col="active", **kwargs):
        """Build from a pandas DataFrame of leaders; optional columns may be absent."""
        for c in (id_col, lat_col, lon_col):
            if c not in df.columns:
                raise ValueError(f"leader frame has no column {c!r}")

        def col(c):
            return df[c].to_numpy() if c is not None and c in df.columns else None

        return cls(col(id_col), col(lat_col), col(lon_col), capacity=col(capacity_col),
                   radius_m=col(radius_col), priority=col(priority_col),
                   active=col(active_col), **kwargs)

    # -- leaders ---------------------------------------------------------------------
    @property
    def leader_ids(self):
        """Leader ids (read-only array)."""
        return self._ids

    @property
    def n_leaders(self):
        """Number of leaders."""
        return len(self._ids)

    def loads(self):
        """Live load of each leader (array in leader order)."""
        return self._core.loads()

    def capacities(self):
        """Capacity of each leader (``2**31 - 1`` means unlimited)."""
        return self._core.capacities()

    def actives(self):
        """Active flag of each leader."""
        return self._core.actives()

    def _leader(self, leader_id):
        i = self._idmap.one(leader_id)
        if i is None or i < 0:
            raise KeyError(f"unknown leader id {leader_id!r}")
        return i

    def set_active(self, leader_id, active=True):
        """Switch a leader on or off; its current orders stay (see :meth:`reassign_orders_of`)."""
        self._core.set_leader(self._leader(leader_id), bool(active), None, None)

    def set_capacity(self, leader_id, capacity):
        """Change a leader's capacity; a capacity below the load takes no new orders."""
        i = self._leader(leader_id)
        try:
            cap = _int_column([capacity], "capacity", 1, 0, 0, CAPACITY_MAX)[0]
        except ValueError:
            raise ValueError(f"capacity = {capacity!r}: must be an integer in "
                             f"[0, {CAPACITY_MAX}]") from None
        self._core.set_leader(i, None, None, int(cap))

    def add_leaders(self, leader_ids, lat, lon, capacity=None, radius_m=None, priority=None,
                    active=None):
        """Add leaders during the event (the loads of existing leaders are kept)."""
        ids = _coerce_ids(leader_ids, "leader_ids")
        ids, _ = _ranks(ids, len(ids), "leader_ids")
        m = len(ids)
        if m == 0:
            return
        if self.n_leaders and ids.dtype.kind != self._ids.dtype.kind:
            raise ValueError("new leader_ids must have the same type as the existing ones")
        known = self._idmap.many(ids)
        if (known >= 0).any():
            j = int(np.flatnonzero(known >= 0)[0])
            raise ValueError(f"leader_ids[{j}] = {ids[j]!r} is already a leader")
        lat_a = _as_coords(lat, "lat")
        lon_a = _as_coords(lon, "lon")
        if len(lat_a) != m or len(lon_a) != m:
            raise ValueError(f"lat, lon and leader_ids have different lengths "
                             f"({len(lat_a)}, {len(lon_a)} and {m})")
        check_coordinates(lat_a, lon_a)
        cap = _int_column(capacity, "capacity", m, _UNLIMITED, 0, CAPACITY_MAX) \
            if capacity is not None else np.full(m, _UNLIMITED, dtype=np.int64)
        act = _bool_column(active, "active", m)
        rad = _radius_column(radius_m, m)
        pri = _int_column(priority, "priority", m, 0, -2**62, 2**62)
        all_ids = np.concatenate([self._ids, ids]) if self.n_leaders else ids
        index = LeaderIndex(np.concatenate([self.index.lat, lat_a]),
                            np.concatenate([self.index.lon, lon_a]), ids=all_ids,
                            leafsize=self.index.leafsize)
        self._setup(index, np.concatenate([self.capacities(), cap]),
                    np.concatenate([self.loads(), np.zeros(m, dtype=np.int64)]),
                    np.concatenate([self.actives(), act]),
                    np.concatenate([self._radius, rad]),
                    np.concatenate([self._priority, pri]))

    def move_leader(self, leader_id, lat, lon):
        """Move a leader's pickup point (its orders stay with it)."""
        i = self._leader(leader_id)
        bad = _coord_problem(lat, lon)
        if bad:
            raise ValueError(f"lat = {lat!r}, lon = {lon!r}: "
                             + _REASON_ROWS[Outcome.INVALID][bad].replace("invalid: ", ""))
        la = self.index.lat.copy()
        lo = self.index.lon.copy()
        la[i], lo[i] = lat, lon
        index = LeaderIndex(la, lo, ids=self._ids, leafsize=self.index.leafsize)
        self._setup(index, self.capacities(), self.loads(), self.actives(), self._radius,
                    self._priority)

    # -- bindings ---------------------------------------------------------------------
    def set_bindings(self, bindings):
        """Replace the customer -> leader bindings (a mapping)."""
        self._bindings = dict(bindings)
        self._bind_keys = None

    def bind(self, customer_id, leader_id):
        """Bind one customer to a leader."""
        self._bindings[customer_id] = leader_id
        self._bind_keys = None

    def _bound_many(self, customers):
        """Bound leader position of each customer (NO_LEADER / UNKNOWN_LEADER markers)."""
        n = len(customers)
        if not self._bindings:
            return np.full(n, _NO_LEADER, dtype=np.intp)
        if self._bind_keys is None:
            keys = list(self._bindings)
            vals = [self._bindings[k] for k in keys]
            try:
                ka = _ids_array(keys, "bindings customer ids")
            except ValueError:
                ka = None
            if ka is not None:
                pos = np.array([self._bound_position(v) for v in vals], dtype=np.intp)
                o = np.argsort(ka, kind="stable")
                self._bind_keys = (ka[o], pos[o])
            else:
                self._bind_keys = False
        if self._bind_keys is False:
            return np.array([self._bound_one(c) for c in customers.tolist()], dtype=np.intp)
        keys, pos = self._bind_keys
        try:
            c = _ids_array(customers, "customer_ids")
        except ValueError:
            return np.array([self._bound_one(c) for c in customers.tolist()], dtype=np.intp)
        if c.dtype.kind != keys.dtype.kind:
            return np.full(n, _NO_LEADER, dtype=np.intp)
        j = np.minimum(np.searchsorted(keys, c), len(keys) - 1)
        return np.where(keys[j] == c, pos[j], _NO_LEADER).astype(np.intp)

    def _bound_one(self, customer_id):
        if customer_id is None or customer_id not in self._bindings:
            return _NO_LEADER
        return self._bound_position(self._bindings[customer_id])

    def _bound_position(self, leader_id):
        """Position of a bound leader id; an id of the wrong type is unknown."""
        i = self._idmap.one(leader_id)
        return _UNKNOWN_LEADER if i is None else i

    # -- dispatch -------------------------------------------------------------------------
    def assign(self, lat, lon, order_id=None, customer_id=None, chosen_leader=None):
        """Assign one order as it is placed (the online path).

        Parameters
        ----------
        lat, lon : float
            Delivery address, WGS-84 degrees.
        order_id : int or str, optional
            Defaults to the next integer of this dispatcher.
        customer_id : optional
            Looked up in the bindings.
        chosen_leader : optional
            The pickup point the buyer chose.

        Returns
        -------
        Assignment
            An invalid order is returned with outcome INVALID and its reason,
            not raised.
        """
        if order_id is None:
            order_id = self._next_order
            self._next_order += 1
        elif self._log.seen(order_id):
            return self._invalid_one(order_id, 5)
        elif type(order_id) is int and order_id >= self._next_order:
            self._next_order = order_id + 1
        chosen = _NO_LEADER
        if chosen_leader is not None:
            chosen = self._idmap.one(chosen_leader)
            if chosen is None:
                return self._invalid_one(order_id, 6)
        try:
            la = float(lat)
            lo = float(lon)
        except (TypeError, ValueError):
            return self._invalid_one(order_id, 1)
        # NaN fails both range tests, so one test covers the common case
        if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
            return self._invalid_one(order_id, _coord_problem(la, lo))
        bound = self._bound_one(customer_id) if self._bindings else _NO_LEADER
        pos, dist, outcome, refusal, n_full = self._core.assign_one(la, lo, chosen, bound)
        if pos >= 0:
            log = self._log
            if log.lookup is None:      # the common case, kept to one list append
                log.tail.append((order_id, pos, la, lo, customer_id, chosen, log.next_seq))
                log.next_seq += 1
            else:
                log.add_one(order_id, pos, la, lo, customer_id, chosen)
            lid = self._id_list[pos]
        else:
            lid = self._missing_id
        # tuple.__new__ directly: the NamedTuple's own __new__ is a Python function
        # and would double the cost of the whole call
        return _tuple_new(Assignment, (order_id, lid, dist, _OUTCOMES[outcome],
                                       _REASON_ROWS[outcome][refusal], n_full))

    def _invalid_one(self, order_id, code):
        return Assignment(order_id, self._missing_id, math.inf, Outcome.INVALID,
                          _REASON_ROWS[Outcome.INVALID][code], 0)

    def assign_batch(self, lat, lon, order_ids=None, customer_ids=None, chosen_leaders=None):
        """Assign a batch of orders, exactly as ``assign`` on each in input order.

        Parameters
        ----------
        lat, lon : array_like of float, shape (n,), or a DataFrame as ``lat``
            Delivery addresses.  A pandas DataFrame passed as ``lat`` supplies
            the columns ``lat``, ``lon`` and, if present, ``order_id``,
            ``customer_id`` and ``chosen_leader``.
        order_ids, customer_ids, chosen_leaders : array_like, shape (n,), optional
            ``None`` entries in ``chosen_leaders`` mean no choice.

        Returns
        -------
        BatchResult
        """
        if lon is None and hasattr(lat, "columns"):
            df = lat
            lat, lon = df["lat"].to_numpy(), df["lon"].to_numpy()
            order_ids = df["order_id"].to_numpy() if "order_id" in df.columns else order_ids
            customer_ids = (df["customer_id"].to_numpy() if "customer_id" in df.columns
                            else customer_ids)
            chosen_leaders = (df["chosen_leader"].to_numpy() if "chosen_leader" in df.columns
                              else chosen_leaders)
        lat_a, lon_a, bad_code = _batch_coords(lat, lon)
        n = len(lat_a)
        invalid = bad_code
        if order_ids is None:
            oids = np.arange(self._next_order, self._next_order + n, dtype=np.int64)
            self._next_order += n
        else:
            oids = np.asarray(order_ids)
            if oids.shape != (n,):
                raise ValueError(f"order_ids must have one id per order ({n}), "
                                 f"got shape {oids.shape}")
            invalid = np.where(invalid == 0, _duplicate_codes(oids, self._log.known_ids()), invalid)
            self._skip_auto_ids(oids[invalid == 0])
        chosen = np.full(n, _NO_LEADER, dtype=np.intp)
        if chosen_leaders is not None:
            ch = np.asarray(chosen_leaders, dtype=object if _has_none(chosen_leaders) else None)
            if ch.shape != (n,):
                raise ValueError(f"chosen_leaders must have one entry per order ({n}), "
                                 f"got shape {ch.shape}")
            chosen, wrong = self._chosen_many(ch)
            invalid = np.where((invalid == 0) & wrong, 6, invalid)
        if customer_ids is not None:
            cust = np.asarray(customer_ids)
            if cust.shape != (n,):
                raise ValueError(f"customer_ids must have one id per order ({n}), "
                                 f"got shape {cust.shape}")
            bound = self._bound_many(cust)
        else:
            cust = None
            bound = np.full(n, _NO_LEADER, dtype=np.intp)
        leader, dist, outcome, refusal, n_full = self._dispatch_rows(
            lat_a, lon_a, chosen, bound, (invalid != 0).view(np.uint8))
        refusal = np.where(invalid != 0, invalid, refusal).astype(np.int8)
        ok = leader >= 0
        self._log.add_many(oids[ok], leader[ok], lat_a[ok], lon_a[ok],
                           None if cust is None else cust[ok], chosen[ok])
        return BatchResult(oids, self._leader_ids_of(leader), leader, dist, outcome, refusal,
                           n_full)

    def _skip_auto_ids(self, oids):
        """Keep automatic order ids above every explicit integer id dispatched."""
        if len(oids) and oids.dtype.kind in "iu":
            self._next_order = max(self._next_order, int(oids.max()) + 1)
        elif len(oids) and oids.dtype == object:
            ints = [v for v in oids.tolist() if isinstance(v, int) and not isinstance(v, bool)]
            if ints:
                self._next_order = max(self._next_order, max(ints) + 1)

    def _dispatch_rows(self, lat, lon, chosen, bound, skip):
        """Run the core over rows in order: (leader, dist, outcome, refusal, n_full)."""
        n = len(lat)
        out = (np.empty(n, dtype=np.intp), np.empty(n, dtype=np.float64),
               np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int8),
               np.empty(n, dtype=np.int32))
        self._core.assign_many(lat, lon, chosen, bound, np.full(n, -1, dtype=np.intp), False,
                               skip, *out)
        return out

    def _chosen_many(self, ch):
        """Positions of chosen leaders; (positions, wrong-type mask)."""
        n = len(ch)
        if ch.dtype.kind == "f":
            # a pandas column of int ids with gaps arrives as float64 with NaN:
            # NaN is no choice, a whole number an id, anything else the wrong type
            obj = np.empty(n, dtype=object)
            obj[:] = [_float_choice(v) for v in ch.tolist()]
            ch = obj
        none = (np.array([v is None for v in ch.tolist()], dtype=bool).reshape(n)
                if ch.dtype == object else np.zeros(n, dtype=bool))
        vals = ch[~none]
        pos = np.full(n, _NO_LEADER, dtype=np.intp)
        wrong = np.zeros(n, dtype=bool)
        if len(vals) == 0:
            return pos, wrong
        want_int = self._idmap.kind == "int"
        if vals.dtype == object:
            ok_type = np.array([(isinstance(v, (int, np.integer)) and not isinstance(v, bool))
                                if want_int else isinstance(v, str) for v in vals.tolist()])
        else:
            ok_type = np.full(len(vals), (vals.dtype.kind in "iu") if want_int
                              else vals.dtype.kind == "U")
        sub = np.full(len(vals), _NO_LEADER, dtype=np.intp)
        if ok_type.any():
            good = vals[ok_type].astype(np.int64 if want_int else str)
            sub[ok_type] = self._idmap.many(good)
        w = np.zeros(len(vals), dtype=bool)
        w[~ok_type] = True
        pos[~none] = sub
        wrong[~none] = w
        return pos, wrong

    def _leader_ids_of(self, leader):
        ok = leader >= 0
        if self._idmap.kind == "int":
            out = np.full(len(leader), -1, dtype=np.int64)
            out[ok] = self._ids[leader[ok]]
            return out
        out = np.empty(len(leader), dtype=object)
        out[ok] = self._ids[leader[ok]]
        return out

    def suggest(self, lat, lon, k=5):
        """The k nearest active leaders with room that would serve this address.

        For the checkout page, where the buyer picks a pickup point.  Nothing is
        assigned.

        Returns
        -------
        list of (leader_id, distance_m)
            Nearest first; shorter than k when fewer leaders qualify.
        """
        bad = _coord_problem(lat, lon)
        if bad:
            raise ValueError(_REASONS[Outcome.INVALID, bad].replace("invalid: ", ""))
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        idx, dist = self._core.suggest(float(lat), float(lon), int(min(k, max(self.n_leaders, 1))))
        return [(self._ids[i].item(), float(d)) for i, d in zip(idx, dist) if i >= 0]

    # -- order log: release and reassignment --------------------------------------------
    def release(self, order_id):
        """Cancel an assigned order: its leader gets the slot back.

        Returns
        -------
        leader_id
            The leader the order was with.

        Raises
        ------
        KeyError
            If the order is not assigned (unknown, never assigned, or already released).
        """
        where = self._log.where().get(order_id)
        if where is None or not self._log.get(*where, "live"):
            raise KeyError(f"order {order_id!r} is not assigned")
        self._log.kill(*where)
        pos = int(self._log.get(*where, "leader"))
        self._core.release(pos)
        return self._ids[pos].item()

    def orders_of(self, leader_id):
        """Order ids currently assigned to a leader, in the order they were assigned."""
        i = self._leader(leader_id)
        return [_py(self._log.get(c, r, "order_id")) for c, r in self._log.live_rows(i)]

    def reassign_orders_of(self, leader_id):
        """Move every order of a leader to the next best leaders under the same rules.

        The leader takes none of them back (it is treated as inactive while they
        are dispatched); bindings and chosen points of the orders are not
        applied to it.  Orders are re-dispatched in the order they were first
        assigned.

        Returns
        -------
        BatchResult
            The new assignment of each moved order (possibly OUT_OF_RANGE or
            ALL_FULL: such orders are released and no longer assigned).
        """
        i = self._leader(leader_id)
        log = self._log
        rows = log.live_rows(i)
        was_active, _, _ = self._core.leader_state(i)
        self._core.set_leader(i, False, None, None)
        try:
            oids, lats, lons, custs, chosen, seqs = [], [], [], [], [], []
            for c, r in rows:
                seqs.append(int(log.get(c, r, "seq")))
                log.kill(c, r)
                self._core.release(i)
                oids.append(_py(log.get(c, r, "order_id")))
                lats.append(log.get(c, r, "lat"))
                lons.append(log.get(c, r, "lon"))
                custs.append(_py(log.get(c, r, "customer")))
                chosen.append(int(log.get(c, r, "chosen")))
            n = len(rows)
            lat_a = np.array(lats, dtype=np.float64)
            lon_a = np.array(lons, dtype=np.float64)
            oid_a = np.array(oids) if n else np.zeros(0, dtype=np.int64)
            cust_a = np.empty(n, dtype=object)
            cust_a[:] = custs
            bound = self._bound_many(cust_a) if any(c is not None for c in custs) \
                else np.full(n, _NO_LEADER, dtype=np.intp)
            bound = np.where(bound == i, _NO_LEADER, bound).astype(np.intp)
            # the buyer's choice stays on record; only the leader being emptied
            # is not offered it again
            chosen_a = np.array(chosen, dtype=np.intp).reshape(n)
            chosen_now = np.where(chosen_a == i, _NO_LEADER, chosen_a).astype(np.intp)
            leader, dist, outcome, refusal, n_full = self._dispatch_rows(
                lat_a, lon_a, chosen_now, bound, np.zeros(n, dtype=np.uint8))
            log.forget(oids)
            ok = leader >= 0
            log.add_many(oid_a[ok], leader[ok], lat_a[ok], lon_a[ok], cust_a[ok], chosen_a[ok],
                         np.array(seqs, dtype=np.int64)[ok])
        finally:
            self._core.set_leader(i, was_active, None, None)
        return BatchResult(oid_a, self._leader_ids_of(leader), leader, dist, outcome, refusal,
                           n_full)

    # -- saving and restoring --------------------------------------------------------------
    def to_dict(self):
        """The whole state as plain Python data (lists, numbers, strings)."""
        orders = self._log.live_table()
        return {
            "version": 1,
            "leaders": {
                "leader_id": self._ids.tolist(),
                "lat": self.index.lat.tolist(), "lon": self.index.lon.tolist(),
                "capacity": self.capacities().tolist(), "load": self.loads().tolist(),
                "active": self.actives().tolist(),
                "radius_m": self._radius.tolist(), "priority": self._priority.tolist(),
                "leafsize": self.index.leafsize,
            },
            "rules": self.rules.to_dict(),
            "bindings": list(self._bindings.items()),
            "orders": orders,
            "next_order": self._next_order,
        }

    @classmethod
    def from_dict(cls, d):
        """Rebuild a dispatcher saved with :meth:`to_dict`; loads are restored exactly."""
        L = d["leaders"]
        self = cls(L["leader_id"], L["lat"], L["lon"], capacity=None,
                   radius_m=L["radius_m"], priority=L["priority"], active=L["active"],
                   bindings=dict((k, v) for k, v in d.get("bindings", [])),
                   rules=Rules.from_dict(d["rules"]), leafsize=L.get("leafsize", 16))
        self._setup(self.index, np.asarray(L["capacity"], dtype=np.int64),
                    np.asarray(L["load"], dtype=np.int64), np.asarray(L["active"], dtype=bool),
                    self._radius, self._priority)
        O = d["orders"]
        fields = ("order_id", "leader", "lat", "lon", "customer", "chosen", "seq")
        for row in zip(*(O.get(f, range(len(O["order_id"]))) for f in fields)):
            self._log.add_one(*row)
        self._log.flush()
        self._log.next_seq = max(O.get("seq", [-1]) or [-1]) + 1
        self._next_order = d.get("next_order", 0)
        return self

    def __getstate__(self):
        return self.to_dict()

    def __setstate__(self, state):
        other = Dispatcher.from_dict(state)
        self.__dict__.update(other.__dict__)

    def __repr__(self):
        return (f"Dispatcher(n_leaders={self.n_leaders}, load={int(self.loads().sum())}, "
                f"rules={self.rules!r})")


def _coord_problem(lat, lon):
    """Invalid-reason code of one coordinate pair, 0 if fine."""
    try:
        la = float(lat)
        lo = float(lon)
    except (TypeError, ValueError):
        return 1
    if not (math.isfinite(la) and math.isfinite(lo)):
        return 1
    if not -90.0 <= la <= 90.0:
        return 2
    if not -180.0 <= lo <= 180.0:
        return 3
    return 0


def _batch_coords(lat, lon):
    """(lat, lon, invalid code per row): bad rows are flagged, never raised."""
    try:
        la = np.asarray(lat, dtype=np.float64)
        lo = np.asarray(lon, dtype=np.float64)
    except (TypeError, ValueError):
        la = _float_or_nan(lat)
        lo = _float_or_nan(lon)
    if la.ndim != 1 or lo.ndim != 1:
        raise ValueError(f"lat and lon must be 1-D arrays, got shapes {la.shape} and {lo.shape}")
    if la.shape != lo.shape:
        raise ValueError(f"lat and lon have different lengths ({len(la)} and {len(lo)})")
    la = np.ascontiguousarray(la)
    lo = np.ascontiguousarray(lo)
    code = np.zeros(len(la), dtype=np.int8)
    try:
        check_coordinates(la, lo)
    except ValueError:
        fin = np.isfinite(la) & np.isfinite(lo)
        code[~fin] = 1
        code[fin & ~((la >= -90) & (la <= 90))] = 2
        code[fin & (code == 0) & ~((lo >= -180) & (lo <= 180))] = 3
        # the core never sees these rows; give them a harmless position
        la = np.where(code == 0, la, 0.0)
        lo = np.where(code == 0, lo, 0.0)
    return la, lo, code


def _float_or_nan(x):
    out = []
    for v in np.asarray(x, dtype=object).reshape(-1).tolist():
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.array(out, dtype=np.float64)


def _float_choice(v):
    """A chosen leader read as a float: NaN -> None, whole number -> int, else as is."""
    if v != v:
        return None
    if math.isfinite(v) and v == int(v):
        return int(v)
    return v


def _has_none(x):
    return isinstance(x, (list, tuple)) and any(v is None for v in x)


def _duplicate_codes(oids, known):
    """Invalid code 4 for repeats within the batch, 5 for ids dispatched before."""
    n = len(oids)
    code = np.zeros(n, dtype=np.int8)
    if n == 0:
        return code
    if oids.dtype == object:
        seen = {}
        vals = oids.tolist()
        for i, v in enumerate(vals):
            if v is None:
                code[i] = 7
            elif v in seen:
                code[i] = 4
            else:
                seen[v] = i
    else:
        order = np.argsort(oids, kind="stable")
        s = oids[order]
        rep = np.zeros(n, dtype=bool)
        rep[1:] = s[1:] == s[:-1]
        code[order[rep]] = 4
    if known is not None and len(known):
        try:
            before = np.isin(oids, known)
        except TypeError:
            ks = set(known.tolist())
            before = np.array([v in ks for v in oids.tolist()])
        code[(code == 0) & before] = 5
    return code
