"""`Dispatcher`: the live state of one event and the rules that assign its orders."""
from __future__ import annotations

import enum
import math
import os
import time
from typing import NamedTuple

import numpy as np

from ._kdtree import (_as_coords, _check_workers, _coerce_ids, _DispatchCore, _ranks,
                      check_coordinates)
from ._orderlog import LIVE, RELEASED, OrderLog, order_id_array
from .identity import Bindings, IdentityGraph, _seconds
from .crs import _resolve as _resolve_crs
from .crs import point_to_wgs84 as _point_to_wgs84
from .crs import transform as _transform
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
    REBALANCED = 7     #: optimal mode: a farther leader, so that the plan serves more orders or walks less (see ``given_up_m``)


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
    Outcome.REBALANCED: "optimal plan: a farther leader, for more orders placed or less walking",
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
    5: "invalid: order id was released (cancelled); a new order needs a new id",
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
#: Appended to the reason of an order id that was already assigned (see
#: ``Dispatcher.assign``): the recorded answer comes back, nothing changes.
REPEAT_NOTE = " [repeat: order already assigned, nothing changed]"
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
    customer_id: object = None  #: the customer (resolved from identifiers if given)
    repeat: bool = False    #: the order id was already assigned: its recorded answer


class BatchResult:
    """Results of :meth:`Dispatcher.assign_batch`, one row per input order, in input order.

    The arrays are read-only (the dispatcher's order log shares them); copy
    one to modify it, e.g. ``res.distance_m.copy()``.

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
    customer_id : ndarray of object
        The customer of each order (resolved from its identifiers when
        given), None where there is none.
    repeat : ndarray of bool
        The order id was already assigned: the row is its recorded answer
        and nothing changed (see :meth:`Dispatcher.assign_batch`).
    given_up_m : ndarray of float64
        Optimal mode: metres beyond the nearest eligible leader an order
        walks for the plan (REBALANCED rows); 0 elsewhere.
    """

    __slots__ = ("order_id", "leader_id", "leader_index", "distance_m", "outcome", "refusal",
                 "n_full_nearer", "customer_id", "repeat", "given_up_m")

    def __init__(self, order_id, leader_id, leader_index, distance_m, outcome, refusal,
                 n_full_nearer, customer_id=None, repeat=None, given_up_m=None):
        # the parameters are the slots, in the same order
        for name, a in zip(self.__slots__, (order_id, leader_id, leader_index, distance_m,
                                            outcome, refusal, n_full_nearer, customer_id,
                                            repeat, given_up_m)):
            if a is not None:       # None: the default, made on first use (__getattr__)
                _set_read_only(self, name, a)

    def __getattr__(self, name):
        # Only an unset slot lands here: customer_id, repeat or given_up_m left
        # to their default, which most batches never read (no customers, no
        # repeats, greedy mode); made now, once.
        make = _BATCH_DEFAULTS.get(name)
        if make is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return _set_read_only(self, name, make(len(self)))

    def __len__(self):
        return len(self.outcome)

    @property
    def reason(self):
        """Reason text of each row (object array of str)."""
        r = _REASONS[self.outcome.astype(np.intp), self.refusal.astype(np.intp)]
        if self.repeat.any():
            r[self.repeat] = r[self.repeat] + REPEAT_NOTE
        return r

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
            "customer_id": self.customer_id,
            "repeat": self.repeat,
            "given_up_m": self.given_up_m,
        })

    def __getitem__(self, i):
        o = Outcome(int(self.outcome[i]))
        lid = self.leader_id[i]
        rep = bool(self.repeat[i])
        reason = _REASONS[o, int(self.refusal[i])] + (REPEAT_NOTE if rep else "")
        return Assignment(_py(self.order_id[i]), _py(lid), float(self.distance_m[i]), o,
                          reason, int(self.n_full_nearer[i]), _py(self.customer_id[i]), rep)

    def __repr__(self):
        c = {o.name: n for o, n in self.counts().items() if n}
        return f"BatchResult(n={len(self)}, {c})"


# The defaults of BatchResult's optional columns, by length.
_BATCH_DEFAULTS = {"customer_id": lambda n: np.full(n, None, dtype=object),
                   "repeat": lambda n: np.zeros(n, dtype=bool),
                   "given_up_m": lambda n: np.zeros(n)}


def _set_read_only(obj, name, a):
    """Set ``obj.name = a`` with ``a`` made read-only; returns ``a``."""
    a.flags.writeable = False
    setattr(obj, name, a)
    return a


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
    """The live state of one event: leaders, their loads, bindings, identities and the rules.

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
    bindings : mapping or Bindings, optional
        The leader each customer belongs to: a mapping customer id -> leader
        id (initial bindings, dated now), or a :class:`~lbsdispatch.identity.Bindings`
        used as it is (its mode then wins; ``binding_mode`` must agree).
    rules : Rules, optional
        Defaults to ``Rules()``.
    leafsize : int, default 16
        Leaf size of the spatial tree.
    identity : IdentityGraph, optional
        Resolves the ``identifiers`` of orders to customer ids (default: a
        fresh graph).
    binding_mode : {"first", "override", "expiring"}, default "first"
        How an assignment writes the customer's binding (see
        :class:`~lbsdispatch.identity.Bindings`): ``"first"`` keeps the first
        leader, ``"override"`` takes the latest, ``"expiring"`` is ``"first"``
        with bindings that lapse after ``expire_days`` without an order.
    expire_days : float, optional
        Only with ``binding_mode="expiring"``.
    store : str or path, optional
        A SQLite file that persists the event (created here; a file that
        already holds an event is refused: use :meth:`open`), or
        ``":memory:"``.  ``None`` (default): in memory only.
    clock : callable, optional
        Returns the time in epoch seconds (default ``time.time``): dates
        bindings and merges.  ``now=`` on ``assign``/``assign_batch`` wins.
    sop : str or None, default "default"
        With a store: the SOP playbook every new assignment starts (its outbox
        rows are written in the assignment's own transaction, and a released
        order's remaining steps are dropped); run the steps with
        :class:`lbsdispatch.sop.SopEngine` on the same file.  ``None``: no SOP.
    crs : str, default "wgs84"
        Coordinate system of every point handed to this dispatcher (leaders,
        orders, checkout and leader moves): ``"wgs84"``, ``"gcj02"``,
        ``"bd09"`` or ``"EPSG:<code>"`` (see :func:`lbsdispatch.geo.transform`).
        Points are converted to WGS-84 on the way in; distances are metres
        either way, and saved state holds WGS-84.
    keep_orders : bool, default True
        Keep the log of assigned orders, which ``release``, ``orders_of``,
        ``reassign_orders_of``, saving and idempotent re-runs need.  ``False``
        (in memory only, no store) keeps a dump's memory to the loads and the
        bindings: order ids are then not remembered, and those methods raise.

    Notes
    -----
    Every order gets exactly one :class:`Outcome`.  ``assign_batch`` gives
    exactly what calling ``assign`` on each order in input order gives, at
    the same ``now`` (bindings written by earlier orders of the batch and
    identities merged by them included).
    """

    def __init__(self, leader_ids, lat, lon, capacity=None, radius_m=None, priority=None,
                 active=None, bindings=None, rules=None, leafsize=16, *, identity=None,
                 binding_mode="first", expire_days=None, store=None, clock=None,
                 sop="default", keep_orders=True, crs="wgs84"):
        self.rules = Rules() if rules is None else rules
        if not isinstance(self.rules, Rules):
            raise ValueError(f"rules must be a Rules, got {type(rules).__name__}")
        if clock is not None and not callable(clock):
            raise ValueError(f"clock must be callable (returning epoch seconds), got {clock!r}")
        self._clock = time.time if clock is None else clock
        ids = _coerce_ids(leader_ids, "leader_ids")
        ids, _ = _ranks(ids, len(ids), "leader_ids")     # duplicates, named as leader_ids
        n = len(ids)
        self.crs = _resolve_crs(crs, "crs").key
        if self.crs != "wgs84":
            lat, lon = _transform(lat, lon, self.crs, "wgs84")      # checks lat/lon
        index = LeaderIndex(lat, lon, ids=ids, leafsize=leafsize)  # checks lat/lon
        cap = _int_column(capacity, "capacity", n, _UNLIMITED, 0, CAPACITY_MAX) \
            if capacity is not None else np.full(n, _UNLIMITED, dtype=np.int64)
        self._setup(index, cap, np.zeros(n, dtype=np.int64), _bool_column(active, "active", n),
                    _radius_column(radius_m, n),
                    _int_column(priority, "priority", n, 0, -2**62, 2**62))
        if identity is None:
            identity = IdentityGraph()
        elif not isinstance(identity, IdentityGraph):
            raise ValueError(f"identity must be an IdentityGraph, got {type(identity).__name__}")
        self._attach_identity(identity)
        if isinstance(bindings, Bindings):
            if binding_mode != "first" and binding_mode != bindings.mode:
                raise ValueError(f"binding_mode={binding_mode!r} disagrees with the Bindings "
                                 f"given (mode={bindings.mode!r})")
            if expire_days is not None and expire_days != bindings.expire_days:
                raise ValueError("expire_days disagrees with the Bindings given")
            self.bindings = bindings
        else:
            self.bindings = Bindings(binding_mode, expire_days)   # checks mode / expire_days
            if bindings is not None:
                self._set_all(bindings, self._time(None))
        if not keep_orders and store is not None:
            raise ValueError("keep_orders=False is for in-memory dispatch; a store keeps "
                             "every order")
        if not isinstance(keep_orders, (bool, np.bool_)):
            raise ValueError(f"keep_orders must be True or False, got {keep_orders!r}")
        self._keep_orders = bool(keep_orders)
        self._log = OrderLog()
        self._next_order = 0
        self._store = None
        self._merge_sink = None
        if store is not None:
            from .store import SQLiteStore
            self._store = SQLiteStore.create(store, self, sop=sop)

    # -- construction helpers ------------------------------------------------------
    def _setup(self, index, cap, load, active, radius, priority):
        self.index = index
        self._ids = index.ids
        self._id_list = self._ids.tolist()      # for the one-order path: no numpy scalars
        self._idmap = _IdMap(self._ids)
        self._idmap.one(None if self._idmap.kind == "str" else 0)   # builds its dict
        self._missing_id = -1 if self._idmap.kind == "int" else None
        # ids by position with the "no leader" id appended: leader -1 maps to it
        # in one gather (the batch path)
        dt = np.int64 if self._idmap.kind == "int" else object
        self._ids_or_missing = np.concatenate([self._ids.astype(dt),
                                               np.array([self._missing_id], dtype=dt)])
        # ids 0 .. n-1 (and -1 for none) are the positions themselves: a batch's
        # leader ids can then be its position array, not an 8-byte gather a row
        self._ids_are_positions = (dt is np.int64 and np.dtype(np.intp) == np.int64 and
                                   bool(np.array_equal(self._ids, np.arange(len(self._ids)))))
        self._radius = radius
        self._priority = priority
        r = self.rules
        self._core = _DispatchCore(
            index, cap, load, active, radius, priority,
            math.inf if r.max_distance_m is None else r.max_distance_m,
            r.tie_tolerance_m, r.tie_break, r.capacity == "strict")

    def _attach_identity(self, graph):
        """Route the graph's merges through the dispatcher (bindings follow them)."""
        self.identity = graph
        prev = graph.on_merge
        self._user_on_merge = None if getattr(prev, "__self__", None) is self else prev
        graph.on_merge = self._graph_merged

    def _graph_merged(self, survivor, absorbed):
        # In a batch the merges are queued with their row: the bindings of the
        # rows before it must be written first (see assign_batch).
        if self._merge_sink is not None:
            self._merge_sink.append((self._row, survivor, absorbed))
        else:
            self.bindings.on_merge(survivor, absorbed, self._now)
        if self._user_on_merge is not None:
            self._user_on_merge(survivor, absorbed)

    def _time(self, now):
        return _seconds(self._clock() if now is None else now)

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

    @classmethod
    def open(cls, path, *, clock=None, normalisers=None):
        """Resume an event persisted with ``Dispatcher(..., store=path)``.

        Parameters
        ----------
        path : str or path
            The SQLite file.
        clock : callable, optional
            As in the constructor (the clock is not stored).
        normalisers : mapping, optional
            Normalisers of identifier kinds registered with a custom function
            (see :meth:`IdentityGraph.from_dict`).

        Returns
        -------
        Dispatcher
            The state of the last committed call: every load equals the
            committed assignments of its leader.

        Raises
        ------
        ValueError
            The file holds no event, or its contents are inconsistent.
        """
        from .store import SQLiteStore
        store, state = SQLiteStore.open(path)
        try:
            self = cls._from_state(state, clock=clock, normalisers=normalisers)
        except BaseException:
            store.close()
            raise
        self._store = store
        store.attach(self)
        return self

    def close(self):
        """Close the store (nothing to do in memory); the dispatcher stays usable in memory."""
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self):
        """The store behind the dispatcher, or None (in memory)."""
        return self._store

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

    def _commit(self, orders=None, leaders=(), all_leaders=False, bindings_reset=False,
                now=None):
        """Persist what a call changed, in one transaction (no-op in memory); ``now``
        (epoch seconds) dates the SOP start of new assignments."""
        if self._store is not None:
            self._store.commit(self, orders, leaders, all_leaders, bindings_reset, now)

    def set_active(self, leader_id, active=True):
        """Switch a leader on or off; its current orders stay (see :meth:`reassign_orders_of`)."""
        i = self._leader(leader_id)
        self._core.set_leader(i, bool(active), None, None)
        self._commit(leaders=(i,))

    def set_capacity(self, leader_id, capacity):
        """Change a leader's capacity; a capacity below the load takes no new orders."""
        i = self._leader(leader_id)
        try:
            cap = _int_column([capacity], "capacity", 1, 0, 0, CAPACITY_MAX)[0]
        except ValueError:
            raise ValueError(f"capacity = {capacity!r}: must be an integer in "
                             f"[0, {CAPACITY_MAX}]") from None
        self._core.set_leader(i, None, None, int(cap))
        self._commit(leaders=(i,))

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
        if self.crs != "wgs84":
            lat_a, lon_a = _transform(lat_a, lon_a, self.crs, "wgs84")   # checks them
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
        n0 = self.n_leaders
        self._setup(index, np.concatenate([self.capacities(), cap]),
                    np.concatenate([self.loads(), np.zeros(m, dtype=np.int64)]),
                    np.concatenate([self.actives(), act]),
                    np.concatenate([self._radius, rad]),
                    np.concatenate([self._priority, pri]))
        self._commit(leaders=range(n0, n0 + m))

    def _wgs84_point(self, lat, lon):
        """One point handed in, in WGS-84; what cannot be read is left as it is
        for the caller's check to name."""
        if self.crs == "wgs84":
            return lat, lon
        try:
            return _one_to_wgs84(float(lat), float(lon), self.crs)
        except (TypeError, ValueError):
            return lat, lon

    def move_leader(self, leader_id, lat, lon):
        """Move a leader's pickup point (its orders stay with it)."""
        i = self._leader(leader_id)
        lat, lon = self._wgs84_point(lat, lon)
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
        self._commit(leaders=(i,))

    # -- bindings ---------------------------------------------------------------------
    def _set_all(self, mapping, t):
        items = mapping.items() if hasattr(mapping, "items") else mapping
        for c, lid in items:
            if c is None or lid is None:
                raise ValueError(f"bindings: customer {c!r} -> leader {lid!r}: neither may be None")
            self.bindings.set(_py(c), _py(lid), t)

    def set_bindings(self, bindings, now=None):
        """Replace every binding: a mapping customer -> leader id (dated ``now``) or a
        :class:`~lbsdispatch.identity.Bindings`."""
        if isinstance(bindings, Bindings):
            self.bindings = bindings
        else:
            t = self._time(now)
            self.bindings = Bindings(self.bindings.mode, self.bindings.expire_days)
            self._set_all(bindings, t)
        self._commit(bindings_reset=True)

    def bind(self, customer_id, leader_id, now=None):
        """Bind one customer to a leader (whatever the mode; dated ``now``)."""
        self._set_all(((customer_id, leader_id),), self._time(now))
        self._commit()

    def unmerge(self, customer_id, identifiers):
        """Split identifiers off a customer (:meth:`IdentityGraph.unmerge`), persisted.

        Returns
        -------
        int
            The new customer id.  It starts without a binding.
        """
        new = self.identity.unmerge(customer_id, identifiers)
        self._commit()
        return new

    def _bound_positions(self, customers, t):
        """Bound leader position of each customer of a list (NO_LEADER / UNKNOWN_LEADER)."""
        leaders = self.bindings.bound_many(customers, t)
        get = self._idmap._dict.get
        slow = self._bound_position
        # exact int / str leader ids are dictionary keys as they are; anything
        # else (numpy scalars, bools, floats) takes the type-checking path
        return np.array([_NO_LEADER if v is None
                         else (get(v, _UNKNOWN_LEADER) if type(v) is int or type(v) is str
                               else slow(v))
                         for v in leaders], dtype=np.intp)

    def _bound_one(self, customer_id, t):
        v = self.bindings.bound(customer_id, t)
        return _NO_LEADER if v is None else self._bound_position(v)

    def _bound_position(self, leader_id):
        """Position of a bound leader id; an id of the wrong type is unknown."""
        i = self._idmap.one(leader_id)
        return _UNKNOWN_LEADER if i is None else i

    # -- identities -----------------------------------------------------------------------
    def _resolve_one(self, identifiers, t):
        """Customer id of one order's identifiers (None when it names none)."""
        if not identifiers:
            return None
        g = self.identity
        items, blocked = g._prepare(identifiers)
        if not items and not blocked:
            return None                 # nothing but absent values: no customer
        self._now = t
        return g._resolve_items(items, blocked)

    def _resolve_batch(self, identifiers, n, rows, t):
        """Resolve the identifiers of ``rows`` (in order); returns (int64 customer
        per row, -1 where none; the merges as (row, survivor, absorbed))."""
        out = np.full(n, -1, dtype=np.int64)
        merges = []
        kinds, cols, maps = _identifier_input(identifiers, n)
        g = self.identity
        # unknown kinds raise before anything is resolved: a batch changes the
        # graph entirely or not at all
        if cols is not None:
            for k in kinds:
                try:
                    g._spec(k)
                except (ValueError, TypeError) as e:
                    raise ValueError(f"identifiers: column {k!r}: {e}") from None
        else:
            seen = set()
            for i in rows.tolist():
                m = maps[i]
                if m:
                    for k in (m.keys() if hasattr(m, "keys") else (kv[0] for kv in m)):
                        if k not in seen:
                            try:
                                g._spec(k)
                            except (ValueError, TypeError) as e:
                                raise ValueError(f"identifiers[{i}]: {e}") from None
                            seen.add(k)
        self._now = t
        self._merge_sink = merges
        try:
            if cols is not None:
                def before_row(i):
                    self._row = i
                got = g.resolve_columns(kinds, cols, rows.tolist(), before_row)
                if got:
                    out[np.fromiter(got.keys(), np.intp, len(got))] = \
                        np.fromiter(got.values(), np.int64, len(got))
            else:
                prepare, resolve_items = g._prepare, g._resolve_items
                for i in rows.tolist():
                    m = maps[i]
                    if m:
                        items, blocked = prepare(m)
                        if items or blocked:
                            self._row = i
                            out[i] = resolve_items(items, blocked)
        finally:
            self._merge_sink = None
        return out, merges

    # -- dispatch -------------------------------------------------------------------------
    def assign(self, lat, lon, order_id=None, customer_id=None, chosen_leader=None,
               identifiers=None, now=None):
        """Assign one order as it is placed (the online path).

        Parameters
        ----------
        lat, lon : float
            Delivery address, WGS-84 degrees.
        order_id : int or str, optional
            Kept as given (a numpy scalar as its Python value): ``1`` and
            ``"1"`` are two orders.  Defaults to the next integer of this
            dispatcher, which stays above every explicit int id that went in.
        customer_id : int or str, optional
            The buyer: looked up in the bindings (STICKY), and bound after
            the assignment per the binding mode.
        chosen_leader : optional
            The pickup point the buyer chose.
        identifiers : mapping, optional
            The buyer's identifiers, kind -> value (``unionid``, ``phone``,
            ``openid:<appid>``, ``live_viewer``, ...), resolved through
            :attr:`identity` into the customer id.  Not together with
            ``customer_id``.
        now : float or datetime, optional
            Time of the order (default: the dispatcher's clock).

        Returns
        -------
        Assignment
            An invalid order is returned with outcome INVALID and its reason,
            not raised.  An order id that is already assigned returns its
            recorded assignment with ``repeat=True`` and changes nothing
            (idempotent re-runs); a released (cancelled) id is INVALID; an id
            that came out unassigned before is dispatched again.  The id
            decides before what the order holds (coordinates, then the chosen
            leader), as in :meth:`assign_batch`.

        Raises
        ------
        ValueError
            Both ``customer_id`` and ``identifiers``, or an unknown identifier
            kind (nothing changes then).
        """
        if identifiers is not None and customer_id is not None:
            raise ValueError("give customer_id or identifiers for an order, not both")
        if order_id is not None and type(order_id) is not int and type(order_id) is not str:
            order_id = _py(order_id)       # a numpy scalar is its Python value
        if self._store is not None:
            _check_stored_ids((order_id, _py(customer_id)), ("order_id", "customer_id"))
        log = self._log
        if order_id is None:
            order_id = self._next_order
            self._next_order += 1
        else:
            # the id decides first (a repeat, or released), whatever else the row holds
            st = log.status_one(order_id) if (log.chunks or log.tail) else 0
            if st == LIVE:
                return self._repeat_one(order_id)
            if st == RELEASED:
                return self._invalid_one(order_id, 5)
            if type(order_id) is int and order_id >= self._next_order:
                self._next_order = order_id + 1
        # what the row holds is checked only now that the id may be dispatched:
        # the coordinates, then the chosen leader (the order of assign_batch)
        try:
            la = float(lat)
            lo = float(lon)
        except (TypeError, ValueError):
            return self._invalid_one(order_id, 1)
        if self.crs != "wgs84":
            la, lo = _one_to_wgs84(la, lo, self.crs)
        # NaN fails both range tests, so one test covers the common case
        if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
            return self._invalid_one(order_id, _coord_problem(la, lo))
        chosen = _NO_LEADER
        if chosen_leader is not None:
            chosen = self._idmap.one(chosen_leader)
            if chosen is None:
                return self._invalid_one(order_id, 6)
        t = None
        if identifiers is not None:
            t = self._time(now)
            customer_id = self._resolve_one(identifiers, t)
        if customer_id is not None:
            if type(customer_id) is float and customer_id != customer_id:
                customer_id = None
            else:
                customer_id = _py(customer_id)
                if t is None:
                    t = self._time(now)
        bound = _NO_LEADER if customer_id is None else self._bound_one(customer_id, t)
        pos, dist, outcome, refusal, n_full = self._core.assign_one(la, lo, chosen, bound)
        if pos >= 0:
            if not self._keep_orders:
                pass
            elif log.lookup is None:    # the common case, kept to one list append
                log.tail.append((order_id, pos, la, lo, customer_id, chosen, log.next_seq,
                                 dist, outcome, refusal, n_full))
                log.next_seq += 1
            else:
                log.add_one(order_id, pos, la, lo, customer_id, chosen, None, dist, outcome,
                            refusal, n_full)
            lid = self._id_list[pos]
            if customer_id is not None:
                self.bindings.record(customer_id, lid, t)
        else:
            lid = self._missing_id
        if self._store is not None:
            self._commit(orders=_OneOrder(order_id, customer_id, pos, dist, outcome, refusal,
                                          la, lo, chosen, n_full, log.next_seq - 1),
                         leaders=(pos,) if pos >= 0 else (),
                         now=self._time(now) if t is None else t)
        # tuple.__new__ directly: the NamedTuple's own __new__ is a Python function
        # and would double the cost of the whole call
        return _tuple_new(Assignment, (order_id, lid, dist, _OUTCOMES[outcome],
                                       _REASON_ROWS[outcome][refusal], n_full, customer_id,
                                       False))

    def _invalid_one(self, order_id, code):
        if self._store is not None and code != 5:
            # every order that went in is on record, with its reason; not a
            # released id (5): its record stays "released"
            self._commit(orders=_OneOrder(order_id, None, -1, math.inf, Outcome.INVALID, code,
                                          None, None, _NO_LEADER, 0, None))
        return Assignment(order_id, self._missing_id, math.inf, Outcome.INVALID,
                          _REASON_ROWS[Outcome.INVALID][code], 0)

    def _repeat_one(self, order_id):
        rec = self._log.record_of(order_id)
        pos, dist, outcome, refusal, n_full = (int(rec["leader"]), float(rec["dist"]),
                                               int(rec["outcome"]), int(rec["refusal"]),
                                               int(rec["n_full"]))
        return Assignment(order_id, self._id_list[pos], dist, _OUTCOMES[outcome],
                          _REASON_ROWS[outcome][refusal] + REPEAT_NOTE, n_full,
                          _py(rec["customer"]), True)

    def assign_batch(self, lat, lon, order_ids=None, customer_ids=None, chosen_leaders=None,
                     identifiers=None, now=None, mode="greedy", objective="total", workers=1):
        """Assign a batch of orders: by default exactly as ``assign`` on each in input order.

        Parameters
        ----------
        lat, lon : array_like of float, shape (n,), or a DataFrame as ``lat``
            Delivery addresses.  A pandas DataFrame passed as ``lat`` supplies
            the columns ``lat``, ``lon`` and, if present, ``order_id``,
            ``customer_id``, ``chosen_leader`` and one column per identifier
            kind (``unionid``, ``phone``, ``openid:<appid>``, ...).
        order_ids, customer_ids, chosen_leaders : array_like, shape (n,), optional
            ``None`` entries in ``chosen_leaders`` mean no choice, in
            ``customer_ids`` no known customer.
        identifiers : optional
            Per order, a mapping kind -> value: a list of mappings (None for
            none), a mapping kind -> column, or a DataFrame with one column
            per kind.  None / NaN values are absent.  A row may not have both
            a customer id and identifiers.
        now : float or datetime, optional
            Time of the batch (default: the dispatcher's clock).
        mode : {"greedy", "optimal"}, default "greedy"
            ``"greedy"``: first come, first served, equal to ``assign`` one
            by one.  ``"optimal"``: the whole dump at once -- bound customers
            and chosen pickup points are served first as in greedy, then a
            min-cost-flow plan places the rest: as many orders as capacity
            and ranges allow, then the least total distance (see
            :func:`lbsdispatch.optimal.solve`).  An order the plan sends past
            its nearest eligible leader is REBALANCED, with the metres given
            up in ``BatchResult.given_up_m``.  Several orders of one customer
            in the batch are planned independently; the binding written is
            that of the customer's first assigned order (mode "first").
        objective : {"total", "bottleneck"}, default "total"
            Optimal mode only: least total distance, or least worst distance
            first and then least total.
        workers : int, default 1
            Threads for a large greedy batch on a large event (-1: every
            core; more than the machine's cores count as that many).  The
            answers are the same for every value: orders are served island
            by island (groups of leaders far apart from each other), and each
            thread serves islands of its own.

        Returns
        -------
        BatchResult

        Notes
        -----
        Order ids keep their type, as in :meth:`assign` (``1`` and ``"1"``
        are two orders; a batch that mixes types gives an object array).  A
        repeat of an id within the batch is INVALID; an id that
        is already assigned (a re-run) gives its recorded row with ``repeat``
        set and takes no slot; a released id is INVALID; an id that came out
        unassigned earlier is dispatched again.  The id decides before what
        the row holds: the coordinates and the chosen leader of a row are
        checked only when its id may be dispatched.  With a store the whole
        call is one transaction, and a row whose id may not be dispatched is
        not written (the record of its id stays as it was).
        """
        # more threads than cores would only take turns on them (and a huge
        # count would ask the system for as many threads)
        workers = _check_workers(workers)
        if workers > 1:         # (asking the system costs ~2 us a call)
            workers = min(workers, os.cpu_count() or 1)
        if mode not in ("greedy", "optimal"):
            raise ValueError(f"mode must be 'greedy' or 'optimal', got {mode!r}")
        if objective not in ("total", "bottleneck"):
            raise ValueError(f"objective must be 'total' or 'bottleneck', got {objective!r}")
        if lon is None and hasattr(lat, "columns"):
            df = lat
            lat, lon = df["lat"].to_numpy(), df["lon"].to_numpy()
            order_ids = df["order_id"].to_numpy() if "order_id" in df.columns else order_ids
            customer_ids = (df["customer_id"].to_numpy() if "customer_id" in df.columns
                            else customer_ids)
            chosen_leaders = (df["chosen_leader"].to_numpy() if "chosen_leader" in df.columns
                              else chosen_leaders)
            if identifiers is None:
                kinds = [c for c in df.columns if isinstance(c, str) and c not in _FRAME_COLS
                         and self._is_kind(c)]
                if kinds:
                    identifiers = {k: df[k].to_numpy() for k in kinds}
        lat_a, lon_a, bad_code = _batch_coords(lat, lon, self.crs)
        n = len(lat_a)
        # The order id decides first, as in `assign`: a missing id (7), the second
        # row of an id in this batch (4), a live id (a repeat: its recorded
        # answer) and a released id (5) are answered by the id alone.  Only the
        # other rows, `fresh`, are checked for what they hold (coordinates here,
        # the chosen leader below), and only they are written to a store: any
        # other row would overwrite the record of its id (a live or released
        # order, or the first row of the id in this batch) with an order that
        # was never dispatched.
        invalid = bad_code
        repeat = np.zeros(n, dtype=bool)
        fresh = None              # None: every row (automatic ids)
        if order_ids is None:
            oids = np.arange(self._next_order, self._next_order + n, dtype=np.int64)
            self._next_order += n
        else:
            # a copy: the result and the order log keep it, the caller may write
            # into theirs; each id keeps its type (an object array if they differ)
            oids = order_id_array(order_ids)
            if oids.shape != (n,):
                raise ValueError(f"order_ids must have one id per order ({n}), "
                                 f"got shape {oids.shape}")
            if self._store is not None and oids.dtype.kind not in "iuU":
                _check_stored_ids(oids.tolist(), "order_ids")
            id_code = _duplicate_codes(oids)
            log = self._log
            if log.chunks or log.tail:
                status = log.status_many(oids.tolist())
                repeat = (id_code == 0) & (status == LIVE)
                id_code[(id_code == 0) & (status == RELEASED)] = 5
            fresh = (id_code == 0) & ~repeat
            invalid = np.where(fresh, bad_code, id_code)
            # every id that goes in, whatever its row holds (as in `assign`): it is
            # on record, and an automatic order must not take it
            self._skip_auto_ids(oids[fresh])
        chosen = None             # no row has a chosen leader
        if chosen_leaders is not None:
            ch = np.asarray(chosen_leaders, dtype=object if _has_none(chosen_leaders) else None)
            if ch.shape != (n,):
                raise ValueError(f"chosen_leaders must have one entry per order ({n}), "
                                 f"got shape {ch.shape}")
            chosen, wrong = self._chosen_many(ch)
            # after the coordinates: only a fresh row with good ones (invalid == 0, no repeat)
            invalid = np.where((invalid == 0) & wrong & ~repeat, 6, invalid)
        skip = (invalid != 0) | repeat
        t = None
        cust_list = None          # customer per row (Python values, None for none)
        cust_int = None           # the same as int64 when they all come from the graph
        merges = ()
        if customer_ids is not None:
            cust_obj = np.asarray(customer_ids, dtype=object)
            if cust_obj.shape != (n,):
                raise ValueError(f"customer_ids must have one id per order ({n}), "
                                 f"got shape {np.shape(customer_ids)}")
            cust_list = [None if (v is None or (type(v) is float and v != v))
                         else (v.item() if isinstance(v, np.generic) else v)
                         for v in cust_obj.tolist()]
            if self._store is not None:
                _check_stored_ids(cust_list, "customer_ids")
        if identifiers is not None:
            t = self._time(now)
            if cust_list is not None:
                has_ident = _identifier_rows(identifiers, n)
                given = np.array([c is not None for c in cust_list], dtype=bool)
                both = np.flatnonzero(has_ident & given)
                if both.size:
                    j = int(both[0])
                    raise ValueError(f"customer_ids[{j}] and identifiers[{j}] both given: "
                                     f"an order has one or the other")
            ids_cust, merges = self._resolve_batch(identifiers, n, np.flatnonzero(~skip), t)
            if cust_list is None:
                cust_int = ids_cust
                cust_list = ids_cust.tolist()
                for i in np.flatnonzero(ids_cust < 0).tolist():
                    cust_list[i] = None
            else:
                for i in np.flatnonzero(ids_cust >= 0).tolist():
                    cust_list[i] = int(ids_cust[i])
        if cust_list is not None and t is None:
            t = self._time(now)
        # greedy: the segments below cover every row and the core writes each;
        # the optimal plan writes only the rows it places
        leader, dist, outcome, refusal, n_full = _batch_outputs(n, filled=mode == "optimal")
        skip_u8 = skip.view(np.uint8)
        # Cut the batch where a row's identifiers merged two customers: the
        # bindings of the rows before must be written, then merged, before
        # that row is dispatched (exactly as one assign after another).
        cuts = sorted({r for r, _, _ in merges})
        bounds = [0] + [c for c in cuts if c > 0] + [n]
        given_up = None
        if mode == "optimal":
            # one plan for the whole dump: the merges all apply before it
            bounds = [0, 0]
            for _, sv, ab in merges:
                self.bindings.on_merge(sv, ab, t)
            merges = ()
            given_up = self._dispatch_optimal(lat_a, lon_a, chosen, skip, cust_list, t,
                                              objective, leader, dist, outcome, refusal, n_full)
        k = 0
        for s, e in zip(bounds, bounds[1:]):
            while k < len(merges) and merges[k][0] <= s:
                _, sv, ab = merges[k]
                self.bindings.on_merge(sv, ab, t)
                k += 1
            self._dispatch_segment(s, e, lat_a, lon_a, chosen, skip_u8, cust_list, cust_int, t,
                                   workers,
                                   leader, dist, outcome, refusal, n_full)
        while k < len(merges):          # merges of the last rows (n == 0 edge included)
            _, sv, ab = merges[k]
            self.bindings.on_merge(sv, ab, t)
            k += 1
        if invalid.any():
            refusal = np.where(invalid != 0, invalid, refusal).astype(np.int8)
        any_repeat = fresh is not None and bool(repeat.any())   # automatic ids never repeat
        ok = (leader >= 0) & ~repeat if any_repeat else leader >= 0
        cust_col = None           # no customers: the result makes its all-None column
        if cust_list is not None or any_repeat:
            cust_col = np.empty(n, dtype=object)
            if cust_list is not None:
                cust_col[:] = cust_list
        if any_repeat:
            self._fill_repeats(np.flatnonzero(repeat), oids, leader, dist, outcome, refusal,
                               n_full, cust_col)
        res = BatchResult(oids, self._leader_ids_of(leader), leader, dist, outcome, refusal,
                          n_full, cust_col, repeat, given_up)
        if self._keep_orders:
            self._log_batch(res, ok, lat_a, lon_a, chosen, cust_list is not None)
        if self._store is not None:
            # every order that went in with an id that could be dispatched: assigned,
            # or with its reason (see `fresh` above)
            keep = np.ones(n, dtype=bool) if fresh is None else fresh
            self._commit(orders=_BatchOrders(res, keep, ok, lat_a, lon_a, chosen,
                                             self._log.next_seq),
                         leaders=np.unique(leader[ok]).tolist(),
                         now=self._time(now) if t is None else t)
        return res

    def _log_batch(self, res, ok, lat, lon, chosen, with_customers):
        """Log the assigned rows ``ok`` of a batch's result.

        When every row is assigned, the log shares the result's arrays (read-only)
        and ``chosen`` (the dispatcher's own); ``lat``/``lon`` may be the caller's
        arrays and are copied.  Otherwise each column is masked (a copy).
        """
        cols = [res.order_id, res.leader_index, lat, lon,
                res.customer_id if with_customers else None, chosen, res.distance_m,
                res.outcome, res.refusal, res.n_full_nearer]
        if ok.all():
            cols[2:4] = lat.copy(), lon.copy()
        else:
            cols = [None if a is None else a[ok] for a in cols]
        oid, leader, la, lo, cust, ch, dist, outcome, refusal, n_full = cols
        self._log.add_many(oid, leader, la, lo, cust, ch, None, dist, outcome, refusal, n_full)

    def _is_kind(self, name):
        try:
            self.identity._spec(name)
        except (ValueError, TypeError):
            return False
        return True

    def _dispatch_segment(self, s, e, lat, lon, chosen, skip, cust_list, cust_int, t, workers,
                          leader, dist, outcome, refusal, n_full):
        """Run the core over rows s:e with the bindings as they are now; write the
        bindings the assignments make."""
        if e == s:
            return
        bound = prev = sub = None         # None: no customers (the core needs no array)
        if cust_list is not None:
            sub = cust_list[s:e]
            bound = self._bound_positions(sub, t)
            prev = _prev_same(sub, None if cust_int is None else cust_int[s:e])
        override = self.bindings.mode == "override"
        if s == 0 and e == len(lat):        # the whole batch (the usual case): no slices
            self._core.assign_many(lat, lon, chosen, bound, prev, override, skip, leader, dist,
                                   outcome, refusal, n_full, workers)
            seg = leader
        else:
            self._core.assign_many(lat[s:e], lon[s:e], None if chosen is None else chosen[s:e],
                                   bound, prev, override, skip[s:e], leader[s:e], dist[s:e],
                                   outcome[s:e], refusal[s:e], n_full[s:e], workers)
            seg = leader[s:e]
        if sub is not None:
            rows = np.flatnonzero(seg >= 0).tolist()
            ids = self._id_list
            cs = [sub[i] for i in rows]
            keep = [j for j, c in enumerate(cs) if c is not None]
            if len(keep) != len(cs):
                rows = [rows[j] for j in keep]
                cs = [cs[j] for j in keep]
            if cs:
                self.bindings.record_many(cs, [ids[p] for p in seg[rows].tolist()], t)

    def _dispatch_optimal(self, lat, lon, chosen, skip, cust_list, t, objective, leader, dist,
                          outcome, refusal, n_full):
        """Optimal mode of ``assign_batch`` over the rows not skipped; fills the
        outputs, takes the slots, writes bindings; returns the metres given up."""
        from .optimal import solve

        n = len(lat)
        given_up = np.zeros(n)
        if chosen is None:
            chosen = np.full(n, _NO_LEADER, dtype=np.intp)
        core = self._core
        override = self.bindings.mode == "override"
        bound = (self._bound_positions(cust_list, t) if cust_list is not None
                 else np.full(n, _NO_LEADER, dtype=np.intp))
        # 1. chosen pickup points and bound customers first, as greedy serves them
        pinned = ~skip & ((chosen != _NO_LEADER) | (bound != _NO_LEADER))
        if pinned.any():
            core.assign_many(lat, lon, chosen, bound, None, override,
                             (~pinned).view(np.uint8), leader, dist, outcome, refusal, n_full)
            # a refused choice or binding fell through to the nearest leader:
            # give that slot back and let the plan place the order
            fell = pinned & (leader >= 0) & (outcome != Outcome.CHOSEN) \
                & (outcome != Outcome.STICKY)
            for p in leader[fell].tolist():
                core.release(p)
            leader[fell] = -1
            pool = ~skip & (~pinned | fell | (leader < 0))
        else:
            pool = ~skip
        # 2. the plan for the rest, on the capacity left
        rows = np.flatnonzero(pool)
        if rows.size:
            loads, caps = core.loads(), core.capacities()
            remaining = np.maximum(caps - loads, 0) if self.rules.capacity == "strict" \
                else np.full(self.n_leaders, n, dtype=np.int64)
            r = self.rules
            plan = solve(lat[rows], lon[rows], self.index, remaining, core.actives(),
                         self._radius, r.max_distance_m, self._tie_ranks(loads, caps),
                         objective)
            got = plan.leader >= 0
            take = rows[got]
            leader[take] = plan.leader[got]
            dist[take] = plan.distance_m[got]
            near = plan.nearest[got]
            outcome[take] = np.where(near, Outcome.NEAREST, Outcome.REBALANCED)
            given_up[take] = np.where(near, 0.0,
                                      plan.distance_m[got] - plan.nearest_distance_m[got])
            n_full[take] = 0
            counts = np.bincount(plan.leader[got], minlength=self.n_leaders)
            for i in np.flatnonzero(counts).tolist():
                core.set_leader(i, None, int(loads[i] + counts[i]), None)
            # 3. what the plan could not place: the greedy search names why
            # (with every reachable slot taken it finds no leader with room)
            left = rows[~got]
            if left.size:
                mask = np.ones(n, dtype=bool)
                mask[left] = False
                out = _batch_outputs(n, filled=False)
                core.assign_many(lat, lon, None, None, None, False, mask.view(np.uint8), *out)
                if (out[0][left] >= 0).any():       # the plan's count was not maximal
                    raise AssertionError("optimal plan left an order that a leader in "
                                         "range could still take")
                outcome[left] = out[2][left]
                dist[left] = np.inf
                n_full[left] = 0
                # a refusal of the choice or binding stays on the row
        # 4. bindings: each customer's first assigned order of the batch
        if cust_list is not None:
            ids = self._id_list
            cs, ls = [], []
            for i in np.flatnonzero(leader >= 0).tolist():
                if cust_list[i] is not None:
                    cs.append(cust_list[i])
                    ls.append(ids[leader[i]])
            if cs:
                self.bindings.record_many(cs, ls, t)
        return given_up

    def _tie_ranks(self, loads, caps):
        """Each leader's place in the tie rule (Rules.tie_break) before a batch."""
        keys = []
        for key in self.rules.tie_break:
            if key == "load":
                # load / capacity; exact in long double for counts below 2**31,
                # and a capacity of 0 is an infinite ratio, as in the core
                ratio = np.full(len(loads), np.inf, dtype=np.longdouble)
                nz = caps > 0
                ratio[nz] = loads[nz].astype(np.longdouble) / caps[nz].astype(np.longdouble)
                keys.append(ratio)
            elif key == "priority":
                keys.append(-self._priority)
        keys.append(np.asarray(_ranks(self._ids, len(self._ids))[1]))
        order = np.lexsort(keys[::-1])
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank

    def _fill_repeats(self, rows, oids, leader, dist, outcome, refusal, n_full, cust_col):
        """Rows of order ids already assigned: their recorded answer."""
        for i in rows.tolist():
            rec = self._log.record_of(_py(oids[i]))
            leader[i] = rec["leader"]
            dist[i] = rec["dist"]
            outcome[i] = rec["outcome"]
            refusal[i] = rec["refusal"]
            n_full[i] = rec["n_full"]
            cust_col[i] = _py(rec["customer"])

    def _skip_auto_ids(self, oids):
        """Keep automatic order ids above every explicit integer id that went in
        (whether its row was dispatched or not: it is on record)."""
        if len(oids) and oids.dtype.kind in "iu":
            self._next_order = max(self._next_order, int(oids.max()) + 1)
        elif len(oids) and oids.dtype == object:
            ints = [v for v in oids.tolist() if isinstance(v, int) and not isinstance(v, bool)]
            if ints:
                self._next_order = max(self._next_order, max(ints) + 1)

    def _dispatch_rows(self, lat, lon, chosen, bound, skip):
        """Run the core over rows in order: (leader, dist, outcome, refusal, n_full)."""
        out = _batch_outputs(len(lat), filled=False)
        self._core.assign_many(lat, lon, chosen, bound, None, False, skip, *out)
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
        """Leader ids of leader positions (-1: the missing id): a fresh array, or
        ``leader`` itself when the ids are the positions (the result makes both
        read-only)."""
        if self._ids_are_positions:
            return leader
        return self._ids_or_missing[leader]

    def suggest(self, lat, lon, k=5):
        """The k nearest active leaders with room that would serve this address.

        For the checkout page, where the buyer picks a pickup point.  Nothing is
        assigned.

        Returns
        -------
        list of (leader_id, distance_m)
            Nearest first; shorter than k when fewer leaders qualify.  Leaders
            at the same distance follow the tie rule; ``Rules.tie_tolerance_m``
            does not regroup the list (a buyer compares distances), so with a
            tolerance the leader :meth:`assign` would pick may be a later one
            within the tolerance of the first.
        """
        lat, lon = self._wgs84_point(lat, lon)
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

        The order id is remembered as released: submitting it again gives an
        INVALID row (a new order needs a new id).

        Returns
        -------
        leader_id
            The leader the order was with.

        Raises
        ------
        KeyError
            If the order is not assigned (unknown, never assigned, or already released).
        """
        self._need_orders("release")
        where = self._log.where().get(order_id)
        if where is None or not self._log.get(*where, "live"):
            raise KeyError(f"order {order_id!r} is not assigned")
        self._log.kill(*where, released=True)
        pos = int(self._log.get(*where, "leader"))
        self._core.release(pos)
        if self._store is not None:
            self._commit(orders=_Released(_py(order_id)), leaders=(pos,), now=self._time(None))
        return self._ids[pos].item()

    def _need_orders(self, what):
        if not self._keep_orders:
            raise ValueError(f"{what} needs the order log, and this dispatcher was made "
                             f"with keep_orders=False")

    def orders_of(self, leader_id):
        """Order ids currently assigned to a leader, in the order they were assigned."""
        self._need_orders("orders_of")
        i = self._leader(leader_id)
        return [_py(self._log.get(c, r, "order_id")) for c, r in self._log.live_rows(i)]

    def reassign_orders_of(self, leader_id):
        """Move every order of a leader to the next best leaders under the same rules.

        The leader takes none of them back (it is treated as inactive while they
        are dispatched); bindings and chosen points of the orders are not
        applied to it.  Orders are re-dispatched in the order they were first
        assigned.  Bindings are not written (an operator's move, not the
        customer's order).

        Returns
        -------
        BatchResult
            The new assignment of each moved order (possibly OUT_OF_RANGE or
            ALL_FULL: such orders are released and no longer assigned).
        """
        self._need_orders("reassign_orders_of")
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
            oid_a = order_id_array(oids) if n else np.zeros(0, dtype=np.int64)
            cust_a = np.empty(n, dtype=object)
            cust_a[:] = custs
            bound = (self._bound_positions(custs, self._time(None))
                     if any(c is not None for c in custs)
                     else np.full(n, _NO_LEADER, dtype=np.intp))
            bound = np.where(bound == i, _NO_LEADER, bound).astype(np.intp)
            # the buyer's choice stays on record; only the leader being emptied
            # is not offered it again
            chosen_a = np.array(chosen, dtype=np.intp).reshape(n)
            chosen_now = np.where(chosen_a == i, _NO_LEADER, chosen_a).astype(np.intp)
            leader, dist, outcome, refusal, n_full = self._dispatch_rows(
                lat_a, lon_a, chosen_now, bound, None)
            log.forget(oids)
            ok = leader >= 0
            seq_a = np.array(seqs, dtype=np.int64).reshape(n)
            log.add_many(oid_a[ok], leader[ok], lat_a[ok], lon_a[ok], cust_a[ok], chosen_a[ok],
                         seq_a[ok], dist[ok], outcome[ok], refusal[ok], n_full[ok])
        finally:
            self._core.set_leader(i, was_active, None, None)
        res = BatchResult(oid_a, self._leader_ids_of(leader), leader, dist, outcome, refusal,
                          n_full, cust_a)
        if self._store is not None:
            self._commit(orders=_BatchOrders(res, np.ones(n, dtype=bool), ok, lat_a, lon_a,
                                             chosen_a, None, seq_a),
                         leaders=sorted(set(np.unique(leader[ok]).tolist()) | {i}),
                         now=self._time(None))
        return res

    # -- saving and restoring --------------------------------------------------------------
    def to_dict(self):
        """The whole state as plain Python data (lists, numbers, strings)."""
        self._need_orders("to_dict (saving)")
        orders = self._log.live_table()
        return {
            "version": 2,
            "leaders": {
                "leader_id": self._ids.tolist(),
                "lat": self.index.lat.tolist(), "lon": self.index.lon.tolist(),
                "capacity": self.capacities().tolist(), "load": self.loads().tolist(),
                "active": self.actives().tolist(),
                "radius_m": self._radius.tolist(), "priority": self._priority.tolist(),
                "leafsize": self.index.leafsize,
            },
            "rules": self.rules.to_dict(),
            "crs": self.crs,
            "bindings": self.bindings.to_dict(),
            "identity": self.identity.to_dict(),
            "orders": orders,
            "next_order": self._next_order,
            "next_seq": self._log.next_seq,
        }

    @classmethod
    def from_dict(cls, d, *, clock=None, normalisers=None):
        """Rebuild a dispatcher saved with :meth:`to_dict`; loads are restored exactly.

        ``clock`` and ``normalisers`` (of custom identifier kinds) are not data
        and are passed again.
        """
        return cls._from_state(d, clock=clock, normalisers=normalisers)

    @classmethod
    def _from_state(cls, d, clock=None, normalisers=None):
        L = d["leaders"]
        b = d.get("bindings", [])
        if isinstance(b, dict) and "format" in b:
            bindings = Bindings.from_dict(b)
        else:                              # version 1: a list of (customer, leader) pairs
            bindings = {k: v for k, v in b}
        ident = d.get("identity")
        graph = None if ident is None else IdentityGraph.from_dict(ident, normalisers=normalisers)
        self = cls(L["leader_id"], L["lat"], L["lon"], capacity=None,
                   radius_m=L["radius_m"], priority=L["priority"], active=L["active"],
                   bindings=bindings if isinstance(bindings, Bindings) else None,
                   rules=Rules.from_dict(d["rules"]), leafsize=L.get("leafsize", 16),
                   identity=graph, clock=clock)
        if not isinstance(bindings, Bindings) and bindings:
            self._set_all(bindings, self._time(None))
        # the saved points are WGS-84 already; later points arrive in the saved system
        self.crs = _resolve_crs(d.get("crs", "wgs84"), "crs").key
        self._setup(self.index, np.asarray(L["capacity"], dtype=np.int64),
                    np.asarray(L["load"], dtype=np.int64), np.asarray(L["active"], dtype=bool),
                    self._radius, self._priority)
        O = d["orders"]
        m = len(O["order_id"])
        if m:
            oid = np.empty(m, dtype=object)
            oid[:] = O["order_id"]
            if all(type(v) is int for v in O["order_id"]):
                oid = oid.astype(np.int64)
            cust = np.empty(m, dtype=object)
            cust[:] = O.get("customer", [None] * m)
            live = np.asarray(O.get("live", [True] * m), dtype=bool)

            def col(f, default):
                return O[f] if f in O else [default] * m

            self._log.add_many(oid, O["leader"], O["lat"], O["lon"], cust,
                               col("chosen", _NO_LEADER), O.get("seq", list(range(m))),
                               col("dist", 0.0), col("outcome", 0), col("refusal", 0),
                               col("n_full", 0), live=live, released=~live)
        seqs = O.get("seq", [])
        self._log.next_seq = d.get("next_seq", max(seqs) + 1 if seqs else m)
        self._next_order = d.get("next_order", 0)
        return self

    def __getstate__(self):
        return self.to_dict()

    def __setstate__(self, state):
        other = Dispatcher.from_dict(state)
        self.__dict__.update(other.__dict__)
        # the graph's merges must reach this object's bindings, not the temporary's
        self._attach_identity(self.identity)

    def __repr__(self):
        return (f"Dispatcher(n_leaders={self.n_leaders}, load={int(self.loads().sum())}, "
                f"rules={self.rules!r})")


# -- what a call hands to the store ------------------------------------------------------------
# State of an order in the store: released (cancelled), live (assigned), unassigned.
ORDER_RELEASED, ORDER_LIVE, ORDER_UNASSIGNED = 0, 1, 2


class _OneOrder(NamedTuple):
    order_id: object
    customer: object
    pos: int
    dist: float
    outcome: int
    refusal: int
    lat: float
    lon: float
    chosen: int
    n_full: int
    seq: int

    def rows(self):
        ok = self.pos >= 0
        return [(self.order_id, self.customer, self.pos if ok else None,
                 self.dist if ok else None, self.outcome, self.refusal, self.n_full,
                 self.lat, self.lon, self.chosen, self.seq if ok else None,
                 ORDER_LIVE if ok else ORDER_UNASSIGNED)]


class _Released(NamedTuple):
    order_id: object


class _BatchOrders(NamedTuple):
    res: BatchResult
    keep: np.ndarray          # rows to write
    ok: np.ndarray            # rows assigned (and not repeats)
    lat: np.ndarray
    lon: np.ndarray
    chosen: object            # ndarray, or None: no row has a chosen leader
    next_seq: object          # the log's next seq after the batch (new orders)
    seq: object = None        # or the seq of every row (reassignment)

    def rows(self):
        """One tuple per kept row, columns as in the store's ``orders`` table."""
        res, keep, ok = self.res, self.keep, self.ok
        idx = np.flatnonzero(keep)
        if self.seq is None:
            seq = (self.next_seq - int(ok.sum()) + np.cumsum(ok) - 1).astype(object)
        else:
            seq = np.asarray(self.seq).astype(object)
        okk = ok[idx]
        seq = seq[idx]
        seq[~okk] = None
        leader = res.leader_index[idx].astype(object)
        leader[~okk] = None
        dist = res.distance_m[idx].astype(object)
        dist[~okk] = None
        state = np.where(okk, ORDER_LIVE, ORDER_UNASSIGNED)
        oid = res.order_id[idx]
        return list(zip(oid.tolist(), res.customer_id[idx].tolist(), leader.tolist(),
                        dist.tolist(), res.outcome[idx].tolist(), res.refusal[idx].tolist(),
                        res.n_full_nearer[idx].tolist(), self.lat[idx].tolist(),
                        self.lon[idx].tolist(),
                        [_NO_LEADER] * len(idx) if self.chosen is None
                        else self.chosen[idx].tolist(), seq.tolist(),
                        state.tolist()))


def _batch_outputs(n, filled):
    """The output columns of a batch: leader, dist, outcome, refusal, n_full.

    ``filled``: holding the answer of an unassigned row (INVALID, no leader),
    for a caller that writes only some rows; otherwise left empty, for the
    core, which writes every row it is given (no pass over fresh memory).
    """
    if not filled:
        return (np.empty(n, dtype=np.intp), np.empty(n), np.empty(n, dtype=np.int8),
                np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int32))
    return (np.full(n, -1, dtype=np.intp), np.full(n, math.inf),
            np.full(n, Outcome.INVALID, dtype=np.int8), np.zeros(n, dtype=np.int8),
            np.zeros(n, dtype=np.int32))


def _check_stored_ids(values, name):
    """A store keeps order and customer ids as SQLite integers or text: anything
    else (floats, tuples, ...) is refused before the call changes anything."""
    for i, v in enumerate(values):
        if v is not None and type(v) is not int and type(v) is not str:
            where = name[i] if isinstance(name, tuple) else f"{name}[{i}]"
            raise ValueError(f"{where} = {v!r}: with a store, ids must be int or str")


_FRAME_COLS = frozenset({"lat", "lon", "order_id", "customer_id", "chosen_leader"})


def _identifier_input(identifiers, n):
    """(kinds, columns as lists, None) for column input, (None, None, list of
    per-order mappings) for row input; ValueError on a wrong shape."""
    if hasattr(identifiers, "columns"):        # a DataFrame: one column per kind
        identifiers = {c: identifiers[c].to_numpy() for c in identifiers.columns}
    if hasattr(identifiers, "items") and not isinstance(identifiers, (list, tuple)):
        kinds, cols = [], []
        for k, col in identifiers.items():
            a = np.asarray(col, dtype=object)
            if a.shape != (n,):
                raise ValueError(f"identifiers[{k!r}] must have one value per order ({n}), "
                                 f"got shape {a.shape}")
            kinds.append(k)
            cols.append([None if (type(v) is float and v != v) else v for v in a.tolist()])
        return kinds, _Columns(cols), None
    maps = list(identifiers)
    if len(maps) != n:
        raise ValueError(f"identifiers must have one entry per order ({n}), got {len(maps)}")
    for i, m in enumerate(maps):
        if m is not None and not hasattr(m, "items") and not isinstance(m, (list, tuple)):
            raise ValueError(f"identifiers[{i}] must be a mapping kind -> value or None, "
                             f"got {type(m).__name__}")
    return None, None, maps


class _Columns(list):
    """Identifier columns; indexing a row gives ``[col[i] for col in self]``."""


def _identifier_rows(identifiers, n):
    """Rows that carry at least one identifier value."""
    _, cols, maps = _identifier_input(identifiers, n)
    if cols is not None:
        has = np.zeros(n, dtype=bool)
        for c in cols:
            has |= np.array([v is not None for v in c], dtype=bool)
        return has
    return np.array([bool(m) for m in maps], dtype=bool)


def _prev_same(customers, ints=None):
    """Previous row of the same customer (-1 for none) in a list of customers.

    ``ints``: the same customers as int64 (-1 for none), when available: then
    a stable argsort does it without a Python loop.
    """
    m = len(customers)
    prev = np.full(m, -1, dtype=np.intp)
    if ints is not None:
        idx = np.flatnonzero(ints >= 0)
        k = ints[idx]
        o = np.argsort(k, kind="stable")
        ks = k[o]
        same = np.flatnonzero(ks[1:] == ks[:-1])
        prev[idx[o[same + 1]]] = idx[o[same]]
        return prev
    last = {}
    for i, c in enumerate(customers):
        if c is not None:
            j = last.get(c)
            if j is not None:
                prev[i] = j
            last[c] = i
    return prev


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


def _one_to_wgs84(la, lo, system):
    """One point from ``system`` to WGS-84; a point that cannot be converted comes
    back unchanged (or NaN), for the usual checks to name."""
    if not (math.isfinite(la) and math.isfinite(lo)):
        return la, lo
    if _resolve_crs(system, "crs").degrees and not (-90.0 <= la <= 90.0
                                                    and -180.0 <= lo <= 180.0):
        return la, lo
    la, lo = _point_to_wgs84(la, lo, system)     # a non-finite result is named INVALID
    return la, lo


def _rows_to_wgs84(la, lo, system):
    """The rows of float arrays that are coordinates in ``system``, in WGS-84; the
    others are left for the checks to flag (failed conversions become NaN)."""
    ok = np.isfinite(la) & np.isfinite(lo)
    if _resolve_crs(system, "crs").degrees:
        ok &= (la >= -90) & (la <= 90) & (lo >= -180) & (lo <= 180)
    la = la.copy()
    lo = lo.copy()
    rows = np.flatnonzero(ok)
    if rows.size:
        try:
            a, b = _transform(la[rows], lo[rows], system, "wgs84")
        except ValueError:                 # a row PROJ cannot map: one at a time
            a = np.empty(rows.size)
            b = np.empty(rows.size)
            for k, r in enumerate(rows.tolist()):
                a[k], b[k] = _one_to_wgs84(float(la[r]), float(lo[r]), system)
        la[rows] = a
        lo[rows] = b
    return la, lo


def _batch_coords(lat, lon, crs="wgs84"):
    """(lat, lon, invalid code per row): bad rows are flagged, never raised;
    coordinates in another system come back in WGS-84."""
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
    if crs != "wgs84":
        la, lo = _rows_to_wgs84(la, lo, crs)
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


def _duplicate_codes(oids):
    """Invalid code 4 for repeats within the batch, 7 for a missing (None) id."""
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
    return code
