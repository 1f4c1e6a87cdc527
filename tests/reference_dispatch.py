"""A brute-force reference dispatcher, written from the dispatch specification.

Plain Python, O(orders x leaders), sharing no code with lbsdispatch: the only
number taken from the library's documentation is the Earth radius (and the
documented value ``2**31 - 1`` that ``Dispatcher.capacities()`` reports for an
unlimited capacity, used as the denominator of the "load" tie key).

Specification implemented (per order, in input order)
-----------------------------------------------------
1. A chosen leader: unknown id -> refusal CHOSEN_UNKNOWN; else usable (active,
   inside ``max_distance_m`` and its own ``radius_m``, load < capacity) ->
   CHOSEN; else CHOSEN_INACTIVE / CHOSEN_OUT_OF_RANGE / CHOSEN_FULL, checked in
   that order.
2. Else a bound leader (bindings: customer -> leader id): the same checks ->
   STICKY, else BOUND_* (recorded only if no chosen refusal was recorded).
3. Else the candidates are the active leaders with room within range.  None:
   ALL_FULL if an active (full) leader is within range, else OUT_OF_RANGE.
   Otherwise best = the smallest distance; the tied candidates are those with
   distance <= best + tie_tolerance_m (exactly equal distances when the
   tolerance is 0); the first of them by the tie keys ("load": smaller
   load/capacity, compared as load_a*cap_b < load_b*cap_a; "priority": higher
   first; "id": smaller first; the id is always the last key) is picked.
   A capacity of 0 (a candidate only under capacity="unlimited") is an infinite
   load ratio: after every leader with a capacity, tied with other zeros (the
   plain cross-multiplication would tie it with everyone, which is no ordering).
   n_full_nearer = active full leaders within range strictly nearer than the
   pick; outcome SPILLOVER if > 0 else NEAREST.
4. The picked leader's load grows by one.
5. Bindings (issue 4): customer -> (leader id, created, last order), written
   after every assignment of an order with a customer, at the call's ``now``:
   ``first``: created when the customer has none; ``override``: replaced when
   the leader differs; ``expiring``: like ``first``, but a binding whose last
   order is more than ``expire_days`` before ``now`` counts as absent (it is
   neither read in 2. nor kept when written).  Every assignment refreshes
   ``last``.  ``merge(survivor, absorbed, now)``: the binding created earlier
   wins (a tie: the survivor's), lapsed ones are dropped first, and the
   absorbed id becomes an alias of the survivor.  Reassignment writes none.
6. Order ids: an id that is assigned (live) gives back its recorded result,
   flagged ``repeat``, and changes nothing; a released id is INVALID
   ("released"); an id that came out unassigned is dispatched again.  In a
   batch, the second and later rows of one id are INVALID ("dup_batch").  The
   id decides first: the checks run in the order repeat (in a batch: first row
   of an id only), dup_batch (batch), released, then what the row holds:
   coordinates, chosen type.  ``assign`` and ``assign_batch`` agree.

Floating point
--------------
Distances here come from the atan2 ("Vincenty on the sphere") formula on
latitude/longitude; the library measures chords between 3-D unit vectors.  The
two agree to ~1e-9 m, so any decision that hinges on two *different* distances
(or a distance and a limit) being closer than ``EPS_M`` = 1e-6 m is flagged as
``ambiguous`` on the result: the library may legitimately decide it either
way.  Leaders at an identical (lat, lon) are at exactly the same distance in
both implementations, so ties between them are never ambiguous.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

EARTH_RADIUS_M = 6371008.8
EPS_M = 1e-6
#: documented value of an unlimited capacity in ``Dispatcher.capacities()``
UNLIMITED_CAPACITY = 2**31 - 1
TIE_KEYS = ("load", "priority", "id")

ASSIGNED = ("NEAREST", "SPILLOVER", "STICKY", "CHOSEN")
REPEAT_NOTE = " [repeat: order already assigned, nothing changed]"
DAY_S = 86400.0

OUTCOME_TEXT = {
    "NEAREST": "nearest leader with room",
    "SPILLOVER": "nearer leaders full; next nearest with room",
    "STICKY": "kept the customer's bound leader",
    "CHOSEN": "the buyer's chosen pickup point",
    "OUT_OF_RANGE": "no active leader within range",
    "ALL_FULL": "all leaders within range are full",
}
REFUSAL_TEXT = {
    "NONE": "",
    "CHOSEN_UNKNOWN": "chosen leader unknown",
    "CHOSEN_INACTIVE": "chosen leader inactive",
    "CHOSEN_OUT_OF_RANGE": "chosen leader out of range",
    "CHOSEN_FULL": "chosen leader full",
    "BOUND_UNKNOWN": "bound leader unknown",
    "BOUND_INACTIVE": "bound leader inactive",
    "BOUND_OUT_OF_RANGE": "bound leader out of range",
    "BOUND_FULL": "bound leader full",
}
INVALID_TEXT = {
    "coords": "invalid: lat/lon not finite",
    "lat": "invalid: lat outside [-90, 90]",
    "lon": "invalid: lon outside [-180, 180]",
    "dup_batch": "invalid: duplicate order id in this batch",
    "released": "invalid: order id was released (cancelled); a new order needs a new id",
    "chosen_type": "invalid: chosen_leader has the wrong type for leader ids",
}


def reason_text(outcome, refusal):
    text = OUTCOME_TEXT[outcome]
    why = REFUSAL_TEXT[refusal]
    return f"{text} ({why})" if why else text


def great_circle_m(lat1, lon1, lat2, lon2):
    """Great-circle metres, atan2 form (exact at 0 and at antipodes)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    s1, c1 = math.sin(p1), math.cos(p1)
    s2, c2 = math.sin(p2), math.cos(p2)
    sdl, cdl = math.sin(dl), math.cos(dl)
    y = math.hypot(c2 * sdl, c1 * s2 - s1 * c2 * cdl)
    x = s1 * s2 + c1 * c2 * cdl
    return EARTH_RADIUS_M * math.atan2(y, x)


@dataclass
class RefLeader:
    id: object
    lat: float
    lon: float
    cap: object          # int or None (unlimited)
    radius: float        # inf: none
    priority: int
    active: bool
    load: int = 0


@dataclass
class RefOrder:
    order_id: object
    leader_id: object
    lat: float
    lon: float
    customer: object
    chosen: object
    seq: int             # when the order was first assigned


@dataclass
class RefResult:
    order_id: object
    leader_id: object            # None when unassigned
    distance_m: float            # inf when unassigned
    outcome: str                 # Outcome name
    refusal: str                 # Refusal name ("NONE"), or invalid key for INVALID
    n_full_nearer: int
    why: str = ""                 # non-empty: the decision is ambiguous (why)
    plausible: set = field(default_factory=set)   # leader ids the library may pick then
    customer: object = None
    repeat: bool = False

    @property
    def ambiguous(self):
        return bool(self.why)

    @property
    def reason(self):
        if self.outcome == "INVALID":
            return INVALID_TEXT[self.refusal]
        return reason_text(self.outcome, self.refusal) + (REPEAT_NOTE if self.repeat else "")

    @property
    def assigned(self):
        return self.outcome in ASSIGNED


class ReferenceDispatcher:
    """Live state of one event, brute force."""

    def __init__(self, leader_ids, lat, lon, capacity=None, radius_m=None, priority=None,
                 active=None, bindings=None, max_distance_m=None, tie_tolerance_m=0.0,
                 tie_break=TIE_KEYS, capacity_rule="strict", binding_mode="first",
                 expire_days=None, now=0.0):
        self.leaders = []
        self.by_id = {}
        self.max_distance_m = math.inf if max_distance_m is None else float(max_distance_m)
        self.tie_tolerance_m = float(tie_tolerance_m)
        keys = (tie_break,) if isinstance(tie_break, str) else tuple(tie_break)
        self.tie_break = keys
        self.strict = capacity_rule == "strict"
        self.mode = binding_mode
        self.expire_s = None if expire_days is None else expire_days * DAY_S
        # customer -> [leader id, created, last order]
        self.bound = {c: [lid, now, now] for c, lid in (bindings or {}).items()}
        self.alias = {}          # absorbed customer -> survivor
        self.binding_audit = []  # (survivor, absorbed, kept leader, dropped leader)
        self.live = {}           # order id -> RefOrder
        self.results = {}        # order id -> RefResult of its live assignment
        self.released = set()    # order ids released (cancelled)
        self._seq = 0
        self.add_leaders(leader_ids, lat, lon, capacity, radius_m, priority, active)

    # -- leaders ---------------------------------------------------------------------
    def add_leaders(self, ids, lat, lon, capacity=None, radius_m=None, priority=None,
                    active=None):
        n = len(ids)

        def col(x, default):
            if x is None:
                return [default] * n
            if isinstance(x, (list, tuple)):
                return list(x)
            try:
                return [v for v in x]
            except TypeError:
                return [x] * n

        caps = col(capacity, None)
        rads = col(radius_m, math.inf)
        pris = col(priority, 0)
        acts = col(active, True)
        for i in range(n):
            lid = ids[i]
            lid = lid.item() if hasattr(lid, "item") else lid
            assert lid not in self.by_id
            cap = caps[i]
            rad = rads[i]
            L = RefLeader(lid, float(lat[i]), float(lon[i]),
                          None if cap is None else int(cap),
                          math.inf if rad is None else float(rad), int(pris[i]),
                          bool(acts[i]))
            self.leaders.append(L)
            self.by_id[lid] = L

    @property
    def int_ids(self):
        return all(isinstance(L.id, int) for L in self.leaders) if self.leaders else True

    def set_active(self, leader_id, active=True):
        self.by_id[leader_id].active = bool(active)

    def set_capacity(self, leader_id, capacity):
        self.by_id[leader_id].cap = int(capacity)

    def move_leader(self, leader_id, lat, lon):
        L = self.by_id[leader_id]
        L.lat, L.lon = float(lat), float(lon)

    def loads(self):
        return [L.load for L in self.leaders]

    # -- bindings ----------------------------------------------------------------------
    def _canon(self, c):
        while c in self.alias:
            c = self.alias[c]
        return c

    def _lapsed(self, b, now):
        return self.expire_s is not None and now - b[2] > self.expire_s

    def binding(self, customer, now):
        """The leader id the customer is bound to at ``now`` (None: none)."""
        if customer is None:
            return None
        b = self.bound.get(self._canon(customer))
        return None if b is None or self._lapsed(b, now) else b[0]

    def bind(self, customer, leader_id, now=0.0):
        self.bound[self._canon(customer)] = [leader_id, now, now]

    def _write_binding(self, customer, leader_id, now):
        c = self._canon(customer)
        b = self.bound.get(c)
        if b is None or self._lapsed(b, now) or (self.mode == "override" and b[0] != leader_id):
            self.bound[c] = [leader_id, now, now if b is None else max(now, b[2])]
        else:
            b[2] = max(b[2], now)

    def merge(self, survivor, absorbed, now):
        s, a = self._canon(survivor), self._canon(absorbed)
        if s == a:
            return
        bs, ba = self.bound.pop(s, None), self.bound.pop(a, None)
        bs = None if bs is None or self._lapsed(bs, now) else bs
        ba = None if ba is None or self._lapsed(ba, now) else ba
        self.alias[a] = s
        if bs is None or ba is None:
            if bs is not None or ba is not None:
                self.bound[s] = bs if ba is None else ba
            return
        win, lose = (ba, bs) if ba[1] < bs[1] else (bs, ba)
        self.bound[s] = [win[0], win[1], max(bs[2], ba[2])]
        if win[0] != lose[0]:
            self.binding_audit.append((survivor, absorbed, win[0], lose[0]))

    def orders_of(self, leader_id):
        return [o.order_id for o in sorted(self.live.values(), key=lambda o: o.seq)
                if o.leader_id == leader_id]

    # -- helpers ---------------------------------------------------------------------
    def _has_room(self, L):
        if not self.strict:
            return True
        return L.cap is None or L.load < L.cap

    def _is_full(self, L):
        return L.active and not self._has_room(L)

    def _cap_int(self, L):
        return UNLIMITED_CAPACITY if L.cap is None else L.cap

    def _cmp(self, a, b):
        for k in self.tie_break:
            if k == "load":
                ca, cb = self._cap_int(a), self._cap_int(b)
                if ca == 0 or cb == 0:
                    # capacity 0 (a candidate only under capacity="unlimited"): an
                    # infinite ratio, after every leader with a capacity; two such tie
                    if (ca == 0) != (cb == 0):
                        return 1 if ca == 0 else -1
                    continue
                x = a.load * cb
                y = b.load * ca
                if x != y:
                    return -1 if x < y else 1
            elif k == "priority":
                if a.priority != b.priority:
                    return -1 if a.priority > b.priority else 1
            elif k == "id":
                break
            else:
                raise ValueError(k)
        if a.id == b.id:
            return 0
        return -1 if a.id < b.id else 1

    class _Ctx:
        def __init__(self):
            self.ambiguous = False
            self.why = ""

        def flag(self, why):
            if not self.ambiguous:
                self.ambiguous, self.why = True, why

    def _in_range(self, ctx, L, d):
        lim = min(self.max_distance_m, L.radius)
        if math.isfinite(lim) and abs(d - lim) <= EPS_M:
            ctx.flag("distance within 1e-6 m of a range limit")
        return d <= lim

    def _usable(self, ctx, L, d):
        """None if L can take the order, else the refusal suffix."""
        if not L.active:
            return "INACTIVE"
        if not self._in_range(ctx, L, d):
            return "OUT_OF_RANGE"
        if not self._has_room(L):
            return "FULL"
        return None

    def _plausible(self, lat, lon):
        out = {None}
        for L in self.leaders:
            d = great_circle_m(lat, lon, L.lat, L.lon)
            if L.active and self._has_room(L) and d <= min(self.max_distance_m, L.radius) + EPS_M:
                out.add(L.id)
        return out

    # -- dispatch --------------------------------------------------------------------
    def _decide(self, lat, lon, chosen, bound, exclude=None):
        """(leader or None, distance, outcome, refusal, n_full_nearer, why).

        ``why`` is "" for a decision the spec and the floating point settle, else
        the reason it is open.

        ``chosen`` / ``bound``: a leader id, None (none), or the marker
        ``UNKNOWN`` for an id that is no leader.  ``exclude``: a leader treated
        as inactive (reassignment).
        """
        ctx = self._Ctx()
        refusal = "NONE"
        for kind, want in (("CHOSEN", chosen), ("BOUND", bound)):
            if want is None:
                continue
            L = self.by_id.get(want)
            if L is None:
                if refusal == "NONE":
                    refusal = f"{kind}_UNKNOWN"
                continue
            d = great_circle_m(lat, lon, L.lat, L.lon)
            why = "INACTIVE" if L is exclude else self._usable(ctx, L, d)
            if why is None:
                outcome = "CHOSEN" if kind == "CHOSEN" else "STICKY"
                return L, d, outcome, refusal, 0, ctx.why
            if refusal == "NONE":
                refusal = f"{kind}_{why}"
        cands = []
        full_in_range = []
        for L in self.leaders:
            if not L.active or L is exclude:
                continue
            d = great_circle_m(lat, lon, L.lat, L.lon)
            if not self._in_range(ctx, L, d):
                continue
            if self._has_room(L):
                cands.append((d, L))
            else:
                full_in_range.append((d, L))
        if not cands:
            outcome = "ALL_FULL" if full_in_range else "OUT_OF_RANGE"
            return None, math.inf, outcome, refusal, 0, ctx.why
        best = min(d for d, _ in cands)
        near_best = {(L.lat, L.lon) for d, L in cands if d <= best + EPS_M}
        if len(near_best) > 1:
            ctx.flag("two different sites nearest within 1e-6 m")
        if self.tie_tolerance_m == 0.0:
            tied = [(d, L) for d, L in cands if d == best]
        else:
            t = best + self.tie_tolerance_m
            if any(abs(d - t) <= 2 * EPS_M and (L.lat, L.lon) not in near_best
                   for d, L in cands):
                ctx.flag("a site within 1e-6 m of the tie tolerance edge")
            tied = [(d, L) for d, L in cands if d <= t]
        dpick, pick = min(tied, key=functools.cmp_to_key(lambda a, b: self._cmp(a[1], b[1])))
        if any(self._cmp(pick, L) >= 0 for _, L in tied if L is not pick):
            # no tied leader comes before all the others: the tie keys would be no
            # ordering (a safety net: _cmp is a total order by construction)
            ctx.flag("tie keys do not order the tied leaders")
        n_full = 0
        for d, L in full_in_range:
            if (L.lat, L.lon) == (pick.lat, pick.lon):
                continue
            if abs(d - dpick) <= EPS_M:
                ctx.flag("a full leader within 1e-6 m of the pick's distance")
            if d < dpick:
                n_full += 1
        outcome = "SPILLOVER" if n_full > 0 else "NEAREST"
        return pick, dpick, outcome, refusal, n_full, ctx.why

    def _coord_problem(self, lat, lon):
        try:
            la, lo = float(lat), float(lon)
        except (TypeError, ValueError):
            return "coords"
        if not (math.isfinite(la) and math.isfinite(lo)):
            return "coords"
        if not -90.0 <= la <= 90.0:
            return "lat"
        if not -180.0 <= lo <= 180.0:
            return "lon"
        return None

    def _chosen_type_ok(self, chosen):
        if chosen is None:
            return True
        if self.int_ids:
            return isinstance(chosen, int) and not isinstance(chosen, bool)
        return isinstance(chosen, str)

    def _unassigned_id(self):
        return -1 if self.int_ids else None

    def _invalid(self, order_id, why):
        return RefResult(order_id, None, math.inf, "INVALID", why, 0)

    def _repeat(self, order_id):
        r = self.results[order_id]
        return RefResult(r.order_id, r.leader_id, r.distance_m, r.outcome, r.refusal,
                         r.n_full_nearer, r.why, r.plausible, r.customer, True)

    def assign(self, lat, lon, order_id, customer_id=None, chosen_leader=None, now=0.0,
               _checked=None):
        """One order (order_id must be given) at time ``now``."""
        why = _checked
        if why is None:
            if order_id in self.live:
                return self._repeat(order_id)
            if order_id in self.released:
                why = "released"
            else:
                why = self._coord_problem(lat, lon)
                if not why and not self._chosen_type_ok(chosen_leader):
                    why = "chosen_type"
        if why:
            return self._invalid(order_id, why)
        lat, lon = float(lat), float(lon)
        bound = self.binding(customer_id, now)
        plausible = None
        L, d, outcome, refusal, n_full, amb = self._decide(lat, lon, chosen_leader, bound)
        if amb:
            plausible = self._plausible(lat, lon)
        res = RefResult(order_id, None if L is None else L.id, d, outcome, refusal, n_full,
                        amb, plausible or set(), customer_id)  # amb: the reason, "" if none
        if L is not None:
            L.load += 1
            self.live[order_id] = RefOrder(order_id, L.id, lat, lon, customer_id,
                                           chosen_leader, self._seq)
            self.results[order_id] = res
            self._seq += 1
            if customer_id is not None:
                self._write_binding(customer_id, L.id, now)
        return res

    def assign_batch(self, lat, lon, order_ids, customer_ids=None, chosen_leaders=None,
                     now=0.0):
        """A batch: duplicates within it are invalid, the rest as ``assign`` in order."""
        n = len(lat)
        seen = set()
        out = []
        for i in range(n):
            oid = order_ids[i]
            ch = None if chosen_leaders is None else chosen_leaders[i]
            cu = None if customer_ids is None else customer_ids[i]
            if oid not in seen and oid in self.live:
                seen.add(oid)
                out.append(self._repeat(oid))
                continue
            if oid in seen:
                why = "dup_batch"
            elif oid in self.released:
                why = "released"
            else:
                why = self._coord_problem(lat[i], lon[i])
                if not why and not self._chosen_type_ok(ch):
                    why = "chosen_type"
            seen.add(oid)
            if why:
                out.append(self._invalid(oid, why))
            else:
                out.append(self.assign(lat[i], lon[i], oid, cu, ch, now, _checked=""))
        return out

    def suggest(self, lat, lon, k=5):
        """([(leader_id, distance)], why): ``why`` is non-empty when the order of the
        list is below floating-point resolution."""
        ctx = self._Ctx()
        cands = []
        for L in self.leaders:
            if not (L.active and self._has_room(L)):
                continue
            d = great_circle_m(lat, lon, L.lat, L.lon)
            if self._in_range(ctx, L, d):
                cands.append((d, L))
        cands.sort(key=functools.cmp_to_key(
            lambda a, b: (-1 if a[0] < b[0] else 1) if a[0] != b[0] else self._cmp(a[1], b[1])))
        for (d1, a), (d2, b) in zip(cands, cands[1:]):
            if (a.lat, a.lon) != (b.lat, b.lon) and abs(d1 - d2) <= EPS_M:
                ctx.flag("two different sites within 1e-6 m")
        return [(L.id, d) for d, L in cands[:k]], ctx.why

    # -- order log -------------------------------------------------------------------
    def release(self, order_id):
        o = self.live.pop(order_id)     # KeyError if not assigned
        del self.results[order_id]
        self.released.add(order_id)
        self.by_id[o.leader_id].load -= 1
        return o.leader_id

    def reassign_orders_of(self, leader_id, now=0.0):
        """Move the leader's live orders (in the order they were first assigned) to other
        leaders; the leader itself takes none (its chosen/bound role is dropped).  An
        order that finds no leader is no longer assigned (its id may come again)."""
        L = self.by_id[leader_id]
        moving = sorted((o for o in self.live.values() if o.leader_id == leader_id),
                        key=lambda o: o.seq)
        for o in moving:
            del self.live[o.order_id]
            del self.results[o.order_id]
            L.load -= 1
        out = []
        for o in moving:
            chosen = None if o.chosen == leader_id else o.chosen
            bound = self.binding(o.customer, now)
            if bound == leader_id:
                bound = None
            P, d, outcome, refusal, n_full, amb = self._decide(o.lat, o.lon, chosen, bound,
                                                              exclude=L)
            res = RefResult(o.order_id, None if P is None else P.id, d, outcome, refusal,
                            n_full, amb, self._plausible(o.lat, o.lon) if amb else set(),
                            o.customer)
            if P is not None:
                P.load += 1
                self.live[o.order_id] = RefOrder(o.order_id, P.id, o.lat, o.lon, o.customer,
                                                 o.chosen, o.seq)
                self.results[o.order_id] = res
            out.append(res)
        return out
