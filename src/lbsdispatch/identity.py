"""Identity resolution: one customer behind many identifiers, and customer -> leader bindings.

The same buyer reaches a brand through the official account (``openid`` of
that app), the mini-program (another ``openid``), WeChat's cross-app
``unionid``, the livestream (``live_viewer``) and a phone number.  So that a
returning customer stays with their leader, every order's identifiers are
resolved to one stable customer id by `IdentityGraph`, and `Bindings` keeps
which leader each customer belongs to.

This module is standalone on purpose (stdlib and numpy only): the dispatcher
and the SQLite store wire it in, it does not import them.

Typical wiring::

    graph_clock = {"now": 0.0}
    bindings = Bindings(mode="expiring", expire_days=30)
    graph = IdentityGraph(
        on_merge=lambda s, a: bindings.on_merge(s, a, graph_clock["now"]))
    for order in orders:
        graph_clock["now"] = order.time
        customer = graph.resolve(order.identifiers)
        leader = bindings.bound(customer, order.time)
        ...                              # dispatch; fall back to nearest leader
        bindings.record(customer, leader, order.time)

``IdentityGraph(on_merge=bindings.on_merge)`` also works; the merge is then
dated with the latest time `Bindings` has seen (see `Bindings.on_merge`).
"""
from __future__ import annotations

import math
import re
import unicodedata
from datetime import datetime, timezone
from typing import (Any, Callable, Dict, Hashable, Iterable, List, Mapping, NamedTuple,
                    Optional, Set, Tuple, Union)

import numpy as np

__all__ = [
    "AuditRecord", "BindingAuditRecord", "Bindings", "DEFAULT_BLOCKED", "IdentityGraph",
    "normalise_phone",
]

Identifiers = Union[Mapping[str, Any], Iterable[Tuple[str, Any]]]
Time = Union[float, int, datetime]

#: Placeholder and test values that never link two orders (compared case-insensitively,
#: after stripping whitespace).  "nan" is included because an empty column that went
#: through pandas arrives as the string "nan", and letting it link would merge every
#: customer with a missing value into one.
DEFAULT_BLOCKED = frozenset({
    "", "null", "none", "undefined", "nil", "-1", "0", "test", "unknown", "n/a", "nan",
})

_ACTIONS = ("new", "attach", "merge", "conflict", "blocked", "unmerge")

# Constant reason strings: the common path (new customer, attach) must not format text.
_R_NEW = "first order with this identifier"
_R_NEW_EMPTY = "no usable identifier in the order"
_R_ATTACH = "seen in the same order as an identifier of this customer"
_R_MERGE = "identifier already held by the other customer"
_R_PLACEHOLDER = "placeholder or test value"
_R_UNPARSABLE = "value could not be normalised"
_R_UNPARSABLE_PHONE = "not a Chinese mobile number"
_R_UNMERGE = "moved to a new customer by unmerge"

_DAY = 86400.0


class AuditRecord(NamedTuple):
    """One entry of `IdentityGraph.audit`.

    Attributes
    ----------
    seq : int
        Position in the audit log (0, 1, 2, ...).
    action : str
        ``"new"`` (customer created, with its first identifier if any),
        ``"attach"`` (identifier added to a customer), ``"merge"`` (``customers
        = (survivor, absorbed)``), ``"conflict"`` (an attach or merge refused:
        ``customers = (anchor,)`` or ``(anchor, other)``), ``"blocked"`` (an
        identifier ignored; ``customers = (customer the order went to,)``) or
        ``"unmerge"`` (``customers = (original, new)``).
    customers : tuple of int
        Customer ids involved, as they were at that moment (follow them with
        `IdentityGraph.find`).
    kind : str or None
        Identifier kind; None for a customer created without identifiers.
    value : str or None
        Normalised value; for ``"blocked"`` the stripped raw value.
    reason : str
        Human-readable explanation.
    """

    seq: int
    action: str
    customers: Tuple[int, ...]
    kind: Optional[str]
    value: Optional[str]
    reason: str


class BindingAuditRecord(NamedTuple):
    """One entry of `Bindings.audit`: a leader that lost a customer in a merge.

    Attributes
    ----------
    seq : int
        Position in the log.
    action : str
        Always ``"merge"`` for now.
    survivor, absorbed : int
        The merged customers (as passed to `Bindings.on_merge`).
    kept_leader, dropped_leader : hashable
        The leader that keeps the merged customer, and the one that loses it.
    time : float
        Epoch seconds of the merge.
    reason : str
        Human-readable explanation.
    """

    seq: int
    action: str
    survivor: int
    absorbed: int
    kept_leader: Hashable
    dropped_leader: Hashable
    time: float
    reason: str


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------

# The final check is done with str methods, not a regex: on the hot path a
# clean number is by far the common case and this is several times cheaper.
# isascii() matters: isdigit() alone accepts Arabic-Indic and other script
# digits, which NFKC does not fold to ASCII.
def _is_mobile(s: str) -> bool:
    return (len(s) == 11 and s.isascii() and s.isdigit() and s[0] == "1"
            and s[1] in "3456789")


# Separators people and form widgets put into phone numbers, after NFKC (which
# already folds full-width digits, "＋", "（）", "－", "．" and U+3000 to ASCII).
# Zero-width characters (U+200B-U+200D, U+2060, a stray BOM U+FEFF) come with
# numbers copied out of chat apps; NFKC keeps them and \s does not match them.
_PHONE_SEPARATORS = re.compile(
    r"[\s\-.()\[\]/\u2010-\u2015\u2212\u00b7\u30fb\u200b-\u200d\u2060\ufeff]")


def normalise_phone(value: str) -> Optional[str]:
    """Normalise a Chinese mobile number to its 11-digit form, or None.

    Parameters
    ----------
    value : str
        The number in any usual spelling: spaces, dashes, dots, parentheses,
        a ``+86`` / ``0086`` / ``86`` country prefix, full-width characters.

    Returns
    -------
    str or None
        ``"1[3-9]"`` followed by nine digits, or None when ``value`` is not a
        mainland mobile number (landlines, other countries, wrong length).

    Examples
    --------
    >>> normalise_phone("+86 138-0013-8000")
    '13800138000'
    >>> normalise_phone("（０２１）１２３４５６７８") is None
    True
    """
    # Most values are already clean; skip NFKC and the substitutions for them.
    if _is_mobile(value):
        return value
    s = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", value))
    if s.startswith("+"):
        if not s.startswith("+86"):
            return None
        s = s[3:]
    elif s.startswith("0086"):
        s = s[4:]
    elif len(s) == 13 and s.startswith("86"):
        # Only with exactly 13 digits: "86" could otherwise be part of a wrong number.
        s = s[2:]
    return s if _is_mobile(s) else None


class _KindSpec:
    """Configuration of one identifier kind (or one family such as ``openid:*``).

    ``normalise`` is None for the plain "strip whitespace" kinds, so the hot
    path skips a function call for them.  ``blocked`` holds this kind's own
    extras; ``blocked_all`` also the graph-wide values, and ``blocked_len``
    the longest of them (longer values cannot be blocked, casefold never
    shortens a string, so they skip the casefold).
    """

    __slots__ = ("name", "normalise", "limit", "priority", "negprio", "blocked",
                 "blocked_all", "blocked_len", "normaliser_tag", "unparsable_reason")

    def __init__(self, name, normalise, limit, priority, normaliser_tag):
        self.name = name
        self.normalise = normalise
        self.limit = limit
        self.priority = priority
        self.negprio = -priority          # items sort ascending: high priority first
        self.blocked = frozenset()
        self.blocked_all = frozenset()
        self.blocked_len = 0
        self.normaliser_tag = normaliser_tag
        self.unparsable_reason = (_R_UNPARSABLE_PHONE if normaliser_tag == "phone"
                                  else _R_UNPARSABLE)


_BUILTIN_NORMALISERS = {"strip": None, "phone": normalise_phone}

# name, normaliser tag, limit, priority.  Priority: higher is processed first.
_BUILTIN_KINDS = (
    ("unionid", "strip", 1, 40),
    ("phone", "phone", 1, 30),
    ("openid:*", "strip", 1, 20),
    ("live_viewer", "strip", None, 10),
)


def _check_limit(limit):
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    return int(limit)


def _items(identifiers: Identifiers):
    items = getattr(identifiers, "items", None)
    return items() if items is not None else identifiers


def _log_record(t) -> "AuditRecord":
    return AuditRecord(t[0], t[1], t[2], t[3], t[4], t[5])


# ---------------------------------------------------------------------------
# IdentityGraph
# ---------------------------------------------------------------------------

class IdentityGraph:
    """Merge the identifiers of each buyer into one stable customer id.

    Customers are the sets of a union-find forest.  Ids are ints assigned in
    creation order (0, 1, 2, ...).  When two customers merge, the older one
    (smaller id) survives and the other id keeps resolving to it through
    `find`; path compression keeps `find` cheap.

    Parameters
    ----------
    blocked : iterable of str, optional
        Values that never link anyone, compared case-insensitively after
        stripping whitespace.  Replaces `DEFAULT_BLOCKED` (the empty string is
        always blocked).
    block_all_zeros : bool, default True
        Also block any value made only of zeros ("0000...").
    blocked_by_kind : mapping of str to iterable of str, optional
        Extra blocked values per kind (e.g. ``{"phone": ["13800138000"]}``, a
        number every tester types).  Given in any spelling the kind's
        normaliser understands; ``"openid:*"`` applies to every app.
    on_merge : callable, optional
        Called as ``on_merge(survivor, absorbed)`` after every merge, e.g.
        `Bindings.on_merge`.

    Attributes
    ----------
    audit : list of AuditRecord
        Every new customer, attach, merge, refusal (conflict), blocked value
        and unmerge, in order.  Treat as read-only.

    Notes
    -----
    Kinds: ``unionid``, ``phone``, ``openid:<appid>`` (an openid is only unique
    inside its app, so the app id is part of the kind) and ``live_viewer``,
    plus any kind added with `register_kind`.  Unknown kinds raise ValueError
    rather than silently creating a kind, so that a typo cannot link customers
    through an unlimited, unnormalised kind.

    Limits: by default a customer holds at most one ``unionid``, one ``phone``
    and one openid per app; ``live_viewer`` is unlimited.  A merge or attach
    that would exceed a limit is refused and recorded as a conflict.  See
    `resolve` for the exact procedure.
    """

    def __init__(self, blocked: Optional[Iterable[str]] = None, *,
                 block_all_zeros: bool = True,
                 blocked_by_kind: Optional[Mapping[str, Iterable[str]]] = None,
                 on_merge: Optional[Callable[[int, int], Any]] = None) -> None:
        base = DEFAULT_BLOCKED if blocked is None else blocked
        if isinstance(base, str):
            raise TypeError("blocked must be an iterable of strings, not one string")
        self._blocked: Set[str] = {str(v).strip().casefold() for v in base} | {""}
        self._block_zeros = bool(block_all_zeros)
        self.on_merge = on_merge
        self._parent: List[int] = []
        # root -> {kind: [values]}; only roots have an entry.
        self._held: Dict[int, Dict[str, List[str]]] = {}
        # (kind, normalised value) -> a customer id whose root holds it.
        self._index: Dict[Tuple[str, str], int] = {}
        # root -> customer ids that must never be merged with it (set by unmerge).
        # Kept per root and merged along with the customers, so the constraint
        # follows both sides through later merges.
        self._apart: Dict[int, Set[int]] = {}
        self._n_roots = 0
        # Plain tuples (seq, action, customers, kind, value, reason): building a
        # NamedTuple costs several times more, and new customers log one entry
        # per identifier.  `audit` turns them into AuditRecords on demand.
        self._log: List[tuple] = []
        self._audit: List[AuditRecord] = []
        # Concrete kinds: registered plain kinds plus cached members of families.
        self._specs: Dict[str, _KindSpec] = {}
        # Families by prefix: "openid" -> spec of "openid:*".
        self._families: Dict[str, _KindSpec] = {}
        self._registered: Dict[str, _KindSpec] = {}
        for name, tag, limit, priority in _BUILTIN_KINDS:
            self._register(name, _BUILTIN_NORMALISERS[tag], tag, limit, priority, ())
        for kind, extras in (blocked_by_kind or {}).items():
            self._add_kind_blocked(kind, extras)

    # -- kinds -------------------------------------------------------------

    def register_kind(self, name: str, normalise: Optional[Callable[[str], Optional[str]]] = None,
                      limit: Optional[int] = None, priority: int = 0, *,
                      blocked: Iterable[str] = ()) -> None:
        """Add an identifier kind, or replace the configuration of one.

        Parameters
        ----------
        name : str
            The kind as it appears in orders.  A name ending in ``":*"``
            (like the built-in ``"openid:*"``) declares a family: every
            ``"<prefix>:<anything>"`` is a separate kind with this
            configuration, and the limit counts per concrete kind.
        normalise : callable, optional
            ``normalise(stripped_value) -> str``; returning None, an empty
            string, or raising ValueError/TypeError blocks the value.  Default:
            the stripped value, case preserved.
        limit : int, optional
            Most values of this kind one customer may hold; None = unlimited.
        priority : int, default 0
            Higher is processed first by `resolve` (built-ins: unionid 40,
            phone 30, openid:* 20, live_viewer 10).  Ties are broken by kind
            name.
        blocked : iterable of str, optional
            Extra blocked values for this kind.

        Raises
        ------
        ValueError
            Bad name or limit, or the kind already has stored identifiers
            (changing its normalisation or limit would invalidate them).
        """
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError("kind name must be a non-empty string without outer spaces, "
                             f"got {name!r}")
        if name.endswith(":*"):
            if not name[:-2] or ":" in name[:-2]:
                raise ValueError(f"family name must look like 'prefix:*', got {name!r}")
        elif name.endswith(":") or "*" in name:
            raise ValueError(f"bad kind name {name!r}")
        if self._kind_in_use(name):
            raise ValueError(f"kind {name!r} already holds identifiers; it cannot be redefined")
        if normalise is not None and not callable(normalise):
            raise TypeError("normalise must be callable or None")
        if isinstance(priority, bool) or not isinstance(priority, (int, np.integer)):
            raise TypeError(f"priority must be an int, got {priority!r}")
        # Built-in normalisers are saved by name, so to_dict/from_dict needs no help for them.
        tag = next((t for t, f in _BUILTIN_NORMALISERS.items() if f is normalise), "custom")
        self._register(name, normalise, tag, _check_limit(limit), int(priority), blocked)

    def _register(self, name, normalise, tag, limit, priority, blocked):
        spec = _KindSpec(name, normalise, limit, priority, tag)
        self._registered[name] = spec
        if name.endswith(":*"):
            prefix = name[:-2]
            self._families[prefix] = spec
            # Drop cached members of the old family so they pick up the new spec.
            for kind in [k for k, s in self._specs.items()
                         if k.partition(":")[0] == prefix and s.name == name]:
                del self._specs[kind]
        else:
            self._specs[name] = spec
        self._add_kind_blocked(name, blocked)

    def _add_kind_blocked(self, kind, extras):
        if isinstance(extras, str):
            raise TypeError("blocked values must be an iterable of strings, not one string")
        spec = self._registered.get(kind)
        if spec is None:
            # A member such as "openid:wx1" shares its family's configuration;
            # accepting it here would silently block the value for every app.
            raise ValueError("blocked values are set per registered kind "
                             f"({sorted(self._registered)}), not for {kind!r}")
        values = set(spec.blocked)
        for raw in extras:
            s = str(raw).strip()
            values.add(s.casefold())
            try:
                norm = s if spec.normalise is None else spec.normalise(s)
            except (ValueError, TypeError):
                norm = None
            if norm and isinstance(norm, str):
                values.add(norm.casefold())
        self._set_kind_blocked(spec, values)

    def _set_kind_blocked(self, spec, values):
        spec.blocked = frozenset(values)
        spec.blocked_all = frozenset(self._blocked | spec.blocked)
        spec.blocked_len = max(map(len, spec.blocked_all))

    def _kind_in_use(self, name):
        """Whether identifiers stored under ``name``'s current configuration exist."""
        if name.endswith(":*"):
            family = self._registered.get(name)
            prefix = name[:-2] + ":"
            return family is not None and any(
                k.startswith(prefix) and self._specs.get(k) is family for k, _ in self._index)
        # Also covers a plain kind shadowing a family member ("openid:wx1").
        return any(k == name for k, _ in self._index)

    def _spec(self, kind: str) -> _KindSpec:
        spec = self._specs.get(kind)
        if spec is not None:
            return spec
        if not isinstance(kind, str):
            raise TypeError(f"identifier kind must be a string, got {kind!r}")
        prefix, sep, rest = kind.partition(":")
        family = self._families.get(prefix) if sep else None
        if family is None or not rest.strip() or rest == "*" or rest != rest.strip():
            if prefix in self._families:
                raise ValueError(f"kind {kind!r} needs a non-empty id after '{prefix}:'")
            raise ValueError(f"unknown identifier kind {kind!r}; add it with register_kind()")
        self._specs[kind] = family
        return family

    # -- normalisation -----------------------------------------------------

    def _prepare(self, identifiers):
        """Normalise one order's identifiers.

        This is the only normalisation code path (`normalise`, `lookup` and
        `unmerge` go through it too), written for speed since every order
        passes through it.

        Returns
        -------
        items : list of (-priority, (kind, value), spec)
            The usable identifiers in processing order.
        blocked : list of (kind, stripped raw value, reason) or None
            Placeholder/test values and values the normaliser rejected.
            None, NaN and empty values are dropped without a trace: they
            mean "absent", not "refused".

        Raises
        ------
        ValueError
            Unknown kind.
        """
        items = []
        blocked = None
        specs = self._specs
        zeros = self._block_zeros
        as_mapping = getattr(identifiers, "items", None)
        # A mapping cannot repeat a kind; only (kind, value) pairs need de-duplicating.
        seen = None if as_mapping is not None else set()
        for kind, raw in (as_mapping() if as_mapping is not None else identifiers):
            spec = specs.get(kind) or self._spec(kind)
            if type(raw) is not str:
                if raw is None or (isinstance(raw, float) and raw != raw):
                    continue              # None, or NaN: a missing cell from a data frame
                raw = str(raw)
            value = raw.strip()
            if not value:
                continue
            why = None
            if ((len(value) <= spec.blocked_len and value.casefold() in spec.blocked_all)
                    or (value[0] == "0" and zeros and not value.strip("0"))):
                why = _R_PLACEHOLDER
            elif spec.normalise is not None:
                try:
                    norm = spec.normalise(value)
                except (ValueError, TypeError):
                    norm = None
                if not norm or type(norm) is not str or not norm.strip():
                    why = spec.unparsable_reason
                elif norm is not value:
                    # Custom normalisers may map junk onto a blocked value.
                    norm = norm.strip()
                    if ((len(norm) <= spec.blocked_len and norm.casefold() in spec.blocked_all)
                            or (norm[0] == "0" and zeros and not norm.strip("0"))):
                        why = _R_PLACEHOLDER
                    else:
                        value = norm
            if why is not None:
                if blocked is None:
                    blocked = []
                blocked.append((kind, value, why))
                continue
            key = (kind, value)
            if seen is not None:
                if key in seen:
                    continue
                seen.add(key)
            items.append((spec.negprio, key, spec))
        if len(items) > 1:
            # Keys are unique within an order, so the comparison never reaches
            # the (unorderable) spec; no key function needed.
            items.sort()
        return items, blocked

    def _one(self, kind: str, value: Any) -> Optional[str]:
        """Normalised value of one identifier, or None if absent or blocked."""
        items, _ = self._prepare(((kind, value),))
        return items[0][1][1] if items else None

    def normalise(self, kind: str, value: Any) -> Optional[str]:
        """Return the normalised ``value`` of ``kind``, or None if absent or blocked.

        Raises
        ------
        ValueError
            Unknown kind.
        """
        return self._one(kind, value)

    # -- union-find --------------------------------------------------------

    def find(self, customer_id: int) -> int:
        """Return the surviving customer id for ``customer_id`` (itself if never merged).

        Raises
        ------
        KeyError
            ``customer_id`` was never issued.
        """
        parent = self._parent
        if isinstance(customer_id, bool) or not isinstance(customer_id, (int, np.integer)):
            raise TypeError(f"customer id must be an int, got {customer_id!r}")
        c = int(customer_id)
        if not 0 <= c < len(parent):
            raise KeyError(customer_id)
        root = c
        while parent[root] != root:
            root = parent[root]
        while parent[c] != root:          # path compression
            parent[c], c = root, parent[c]
        return root

    def _refusal(self, a: int, b: int) -> Optional[str]:
        """Why roots ``a`` and ``b`` may not merge, or None if they may."""
        apart = self._apart
        if apart:
            # unmerge stores each pair on both sides and merges carry the sets
            # to the survivor, so a pair splitting a from b appears in both
            # sets: probing the smaller one is enough.
            sa, sb = apart.get(a), apart.get(b)
            if sa and sb:
                probe, other = (sa, b) if len(sa) <= len(sb) else (sb, a)
                for c in probe:
                    if self.find(c) == other:
                        return f"customers {a} and {b} were split apart by unmerge"
        ha, hb = self._held[a], self._held[b]
        if len(hb) > len(ha):
            ha, hb = hb, ha
        over = None
        for kind, vals in hb.items():
            mine = ha.get(kind)
            if mine:
                limit = self._spec(kind).limit
                if limit is not None and len(mine) + len(vals) > limit:
                    if over is None:
                        over = []
                    over.append((kind, sorted(mine + vals), limit))
        if over is None:
            return None
        # Every exceeded kind, sorted: the text must not depend on dict order
        # (which differs after from_dict), or replays would not match.
        return "merging would exceed limits: " + "; ".join(
            f"{kind} {', '.join(vals)} (limit {limit})" for kind, vals, limit in sorted(over))

    def _merge(self, a: int, b: int, kind: str, value: str) -> int:
        survivor, absorbed = (a, b) if a < b else (b, a)
        self._parent[absorbed] = survivor
        held = self._held
        hs, ha = held[survivor], held.pop(absorbed)
        if len(ha) > len(hs):       # fold the smaller dict into the larger one
            hs, ha = ha, hs
            held[survivor] = hs
        for k, vals in ha.items():
            mine = hs.get(k)
            if mine is None:
                hs[k] = vals
            else:
                mine.extend(vals)
        apart = self._apart
        if apart:
            gone = apart.pop(absorbed, None)
            if gone:
                apart.setdefault(survivor, set()).update(gone)
        self._n_roots -= 1
        log = self._log
        log.append((len(log), "merge", (survivor, absorbed), kind, value, _R_MERGE))
        if self.on_merge is not None:
            self.on_merge(survivor, absorbed)
        return survivor

    def _new_customer(self) -> int:
        cid = len(self._parent)
        self._parent.append(cid)
        self._held[cid] = {}
        self._n_roots += 1
        return cid

    def _attach(self, cid, key, spec, action, reason):
        """Attach a new identifier to root ``cid`` if the limit allows; log either way."""
        kind, value = key
        h = self._held[cid]
        vals = h.get(kind)
        log = self._log
        if vals is None:
            h[kind] = [value]
        elif spec.limit is not None and len(vals) >= spec.limit:
            log.append((len(log), "conflict", (cid,), kind, value,
                        f"customer {cid} already holds {kind} {', '.join(sorted(vals))}; "
                        f"limit {spec.limit}"))
            return False
        else:
            vals.append(value)
        self._index[key] = cid
        log.append((len(log), action, (cid,), kind, value, reason))
        return True

    # -- resolve -----------------------------------------------------------

    def resolve(self, identifiers: Identifiers) -> int:
        """Return the customer id of the buyer carrying ``identifiers``.

        Parameters
        ----------
        identifiers : mapping of str to str, or iterable of (kind, value)
            The identifiers one order carries, e.g. ``{"unionid": "u1",
            "openid:wx123": "o9", "phone": "+86 138-0013-8000"}``.  None, NaN
            and empty values are ignored; placeholder/test values and
            unparsable ones are ignored and logged as ``"blocked"``.

        Returns
        -------
        int
            The surviving customer id (a root).

        Raises
        ------
        ValueError
            An unknown kind (nothing is changed then).

        Notes
        -----
        The usable identifiers are processed in priority order (highest
        first; ties by kind name, then value).  The first one already known
        picks the anchor customer.  Then each identifier, in that order:

        * new: attached to the anchor if the kind's limit allows, else a
          ``"conflict"`` is logged and it stays unattached (so it is not
          remembered: seen alone later, it starts a new customer);
        * held by another customer: the two merge (the older survives and
          becomes the anchor) unless the union would exceed a limit or the
          two were split by `unmerge`; then a ``"conflict"`` is logged and the
          identifier is not used to link.

        If no identifier is known, a new customer is created with all of
        them.  An order with no usable identifier gets a fresh customer.
        """
        items, blocked = self._prepare(identifiers)
        return self._resolve_items(items, blocked)

    def _resolve_items(self, items, blocked):
        """`resolve` after normalisation (``items`` as `_prepare` returns them)."""
        index = self._index
        parent = self._parent
        log = self._log
        anchor = -1
        for item in items:
            c = index.get(item[1])
            if c is not None:
                anchor = c if parent[c] == c else self.find(c)
                break
        if anchor < 0:
            # Nothing known: a new customer.  Inlined (rather than _new_customer
            # + _attach) because this is the most common path in a fresh event.
            anchor = len(parent)
            parent.append(anchor)
            h = {}
            self._held[anchor] = h
            self._n_roots += 1
            if not items:
                log.append((len(log), "new", (anchor,), None, None, _R_NEW_EMPTY))
            action, reason = "new", _R_NEW
            for _, key, spec in items:
                kind = key[0]
                vals = h.get(kind)
                if vals is None:
                    h[kind] = [key[1]]
                elif spec.limit is not None and len(vals) >= spec.limit:
                    # Only (kind, value) pairs can carry two values of one kind.
                    log.append((len(log), "conflict", (anchor,), kind, key[1],
                                f"customer {anchor} already holds {kind} "
                                f"{', '.join(sorted(vals))}; limit {spec.limit}"))
                    continue
                else:
                    vals.append(key[1])
                index[key] = anchor
                log.append((len(log), action, (anchor,), kind, key[1], reason))
                action, reason = "attach", _R_ATTACH
        else:
            for _, key, spec in items:
                c = index.get(key)
                if c is None:
                    self._attach(anchor, key, spec, "attach", _R_ATTACH)
                    continue
                root = c if parent[c] == c else self.find(c)
                if root == anchor:
                    continue
                why = self._refusal(anchor, root)
                if why is None:
                    anchor = self._merge(anchor, root, key[0], key[1])
                else:
                    log.append((len(log), "conflict", (anchor, root), key[0], key[1], why))
        if blocked is not None:
            for kind, value, why in blocked:
                log.append((len(log), "blocked", (anchor,), kind, value, why))
        return anchor

    def resolve_columns(self, kinds: List[str], columns: List[List[Any]], rows: Iterable[int],
                        before_row: Optional[Callable[[int], Any]] = None) -> Dict[int, int]:
        """Resolve orders given as one column of values per kind; the batch path.

        Parameters
        ----------
        kinds : list of str
            Identifier kinds (each validated before anything changes).
        columns : list of lists
            ``columns[k][i]``: the value of ``kinds[k]`` in order ``i`` (None
            or NaN: absent).
        rows : iterable of int
            The orders to resolve, in this order; orders without any usable
            or blocked value are skipped (no customer is created for them).
        before_row : callable, optional
            Called with the row number before each order is resolved (the
            dispatcher uses it to date the merges an order causes).

        Returns
        -------
        dict
            Row -> customer id, for the rows resolved.

        Notes
        -----
        Equivalent to ``resolve({k: columns[j][i] for j, k in ...})`` for each
        row in turn; each distinct raw value is normalised once per call
        (customers come back, and one column holds one kind).
        """
        specs = [self._spec(k) for k in kinds]          # unknown kinds raise here
        # items in processing order (priority, then kind: what _prepare's sort
        # gives when each kind appears once); blocked ones keep the column order
        order = sorted(range(len(kinds)), key=lambda j: (specs[j].negprio, kinds[j]))
        norm_cols = []
        for j in order:
            col = self._prepare_column(kinds[j], specs[j], columns[j])
            norm_cols.append((j, col))
        out = {}
        resolve_items = self._resolve_items
        for i in rows:
            items = []
            blocked = None
            for j, col in norm_cols:
                v = col[i]
                if v is not None:
                    if v[0] == "blocked":
                        if blocked is None:
                            blocked = []
                        blocked.append((j, v[1]))
                    else:
                        items.append(v)
            if blocked is not None:
                blocked = [b for _, b in sorted(blocked)]
            if items or blocked:
                if before_row is not None:
                    before_row(i)
                out[i] = resolve_items(items, blocked)
        return out

    def _prepare_column(self, kind, spec, values):
        """`_prepare` of one kind over a whole column: per row None (absent), an
        item ``(-priority, (kind, value), spec)``, or ``("blocked", (kind, value,
        why))``.

        The same tests in the same order as `_prepare`, written as one loop per
        column: a batch's values are mostly distinct (every buyer has their own
        unionid and phone), so per-value calls of the generic path would
        dominate the resolution.  tests/test_identity.py checks the two agree.
        """
        negprio = spec.negprio
        blocked_all, blen = spec.blocked_all, spec.blocked_len
        zeros = self._block_zeros
        norm = spec.normalise
        is_phone = norm is normalise_phone
        out = []
        append = out.append
        for raw in values:
            if type(raw) is not str:
                if raw is None or (isinstance(raw, float) and raw != raw):
                    append(None)
                    continue
                raw = str(raw)
            value = raw.strip()
            if not value:
                append(None)
                continue
            why = None
            if ((len(value) <= blen and value.casefold() in blocked_all)
                    or (value[0] == "0" and zeros and not value.strip("0"))):
                why = _R_PLACEHOLDER
            elif norm is not None and not (is_phone and _is_mobile(value)):
                try:
                    n = norm(value)
                except (ValueError, TypeError):
                    n = None
                if not n or type(n) is not str or not n.strip():
                    why = spec.unparsable_reason
                elif n is not value:
                    n = n.strip()
                    if ((len(n) <= blen and n.casefold() in blocked_all)
                            or (n[0] == "0" and zeros and not n.strip("0"))):
                        why = _R_PLACEHOLDER
                    else:
                        value = n
            if why is None:
                append((negprio, (kind, value), spec))
            else:
                append(("blocked", (kind, value, why)))
        return out

    def resolve_many(self, orders: Iterable[Identifiers]) -> np.ndarray:
        """Resolve orders one after another; return their customer ids as int64.

        Equivalent to ``[self.resolve(o) for o in orders]``: each id is the
        customer at the moment its order was resolved; a later order may merge
        it into an older one (map with `find`).
        """
        resolve = self.resolve
        return np.asarray([resolve(o) for o in orders], dtype=np.int64)

    def lookup(self, kind: str, value: Any) -> Optional[int]:
        """Return the customer holding this identifier, or None; never creates anything."""
        v = self._one(kind, value)
        if v is None:
            return None
        c = self._index.get((kind, v))
        return None if c is None else self.find(c)

    # -- unmerge -----------------------------------------------------------

    def unmerge(self, customer_id: int, identifiers: Identifiers) -> int:
        """Split ``identifiers`` off ``customer_id`` into a new customer.

        Parameters
        ----------
        customer_id : int
            Any id of the customer (followed with `find`).
        identifiers : mapping of str to str, or iterable of (kind, value)
            Identifiers the customer holds, in any spelling the kinds'
            normalisers accept (pairs allow several values of one kind).

        Returns
        -------
        int
            The new customer id; later resolves of the moved identifiers go
            to it.

        Raises
        ------
        ValueError
            An identifier is blocked or not held by this customer, none is
            named, or all of the customer's identifiers are named (nothing
            would be split).

        Notes
        -----
        The two customers are kept apart from then on: a later order that
        links them (even through other customers they merge with) gets a
        ``"conflict"`` instead of a merge, and replaying the same orders
        gives the same conflicts rather than undoing the split.

        Customer ids that had been merged into the original customer stay
        with it (``find`` still maps them to the original), even if the
        moved identifiers first came in under one of them: the union-find
        does not remember which identifier came with which absorbed id.
        """
        root = self.find(customer_id)
        held = self._held[root]
        moving: List[Tuple[str, str]] = []
        for kind, raw in _items(identifiers):
            value = self._one(kind, raw)
            if value is None:
                raise ValueError(f"{kind}={raw!r} is not a usable identifier")
            if value not in held.get(kind, ()):
                raise ValueError(f"customer {root} does not hold {kind}={value!r}")
            if (kind, value) not in moving:
                moving.append((kind, value))
        if not moving:
            raise ValueError("unmerge needs at least one identifier")
        if len(moving) == sum(len(v) for v in held.values()):
            raise ValueError("unmerge would move every identifier; nothing to split")
        new = self._new_customer()
        target = self._held[new]
        log = self._log
        for kind, value in moving:
            vals = held[kind]
            vals.remove(value)
            if not vals:
                del held[kind]
            target.setdefault(kind, []).append(value)
            self._index[(kind, value)] = new
            log.append((len(log), "unmerge", (root, new), kind, value, _R_UNMERGE))
        self._apart.setdefault(root, set()).add(new)
        self._apart.setdefault(new, set()).add(root)
        return new

    # -- inspection --------------------------------------------------------

    @property
    def audit(self) -> List[AuditRecord]:
        """The audit log (see `AuditRecord`); read-only by convention."""
        cache, log = self._audit, self._log
        if len(cache) < len(log):
            cache.extend(map(_log_record, log[len(cache):]))
        return cache

    def explain(self, customer_id: int) -> List[AuditRecord]:
        """Return the audit records that concern this customer.

        That is every record naming ``customer_id``'s survivor or any id
        merged into it, in log order: its creation, attaches, merges,
        conflicts, blocked values of its orders and unmerges.
        """
        root = self.find(customer_id)
        members = {c for c in range(len(self._parent)) if self.find(c) == root}
        return [r for r in self.audit if not members.isdisjoint(r.customers)]

    def identifiers_of(self, customer_id: int) -> Dict[str, Tuple[str, ...]]:
        """Return ``{kind: (values, ...)}`` held by the customer (values sorted)."""
        root = self.find(customer_id)
        return {k: tuple(sorted(v)) for k, v in sorted(self._held[root].items())}

    def customers(self) -> List[int]:
        """Return the surviving customer ids, ascending."""
        return [c for c, p in enumerate(self._parent) if c == p]

    def __len__(self) -> int:
        """Return the number of surviving customers."""
        return self._n_roots

    def __repr__(self) -> str:
        """Summarise the graph's size."""
        return (f"IdentityGraph({self._n_roots} customers, {len(self._index)} identifiers, "
                f"{len(self._log)} audit records)")

    # -- persistence -------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        """Return the whole state as plain (JSON-compatible) data.

        Custom normalisers and the ``on_merge`` callback are not data: their
        kinds are marked ``"normaliser": "custom"`` and must be passed again
        to `from_dict`.
        """
        kinds = []
        for name, spec in self._registered.items():
            kinds.append({"name": name, "normaliser": spec.normaliser_tag, "limit": spec.limit,
                          "priority": spec.priority, "blocked": sorted(spec.blocked)})
        identifiers = [[cid, kind, value] for cid, h in sorted(self._held.items())
                       for kind, vals in sorted(h.items()) for value in sorted(vals)]
        # Canonical form: every id's root instead of the raw forest, whose shape
        # depends on which paths happened to be compressed.  Two graphs then give
        # the same dict exactly when they hold the same customers, and
        # to_dict(from_dict(d)) == d.  One pass suffices because union by age
        # keeps parent[c] <= c, so a parent's root is known before its child's.
        roots: List[int] = []
        for c, p in enumerate(self._parent):
            roots.append(c if p == c else roots[p])
        apart = sorted({tuple(sorted((a, roots[b]))) for a, others in self._apart.items()
                        for b in others})
        return {
            "format": "lbsdispatch.identity.IdentityGraph/1",
            "blocked": sorted(self._blocked),
            "block_all_zeros": self._block_zeros,
            "kinds": kinds,
            "parent": roots,
            "identifiers": identifiers,
            "apart": [list(p) for p in apart],
            "audit": [[seq, action, list(cs), kind, value, reason]
                      for seq, action, cs, kind, value, reason in self._log],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *,
                  normalisers: Optional[Mapping[str, Callable[[str], Optional[str]]]] = None,
                  on_merge: Optional[Callable[[int, int], Any]] = None) -> "IdentityGraph":
        """Rebuild a graph from `to_dict` output.

        Parameters
        ----------
        data : mapping
            As returned by `to_dict` (possibly through JSON).
        normalisers : mapping of str to callable, optional
            The normaliser of every kind saved as ``"custom"``.
        on_merge : callable, optional
            The merge callback to install.

        Raises
        ------
        ValueError
            Unknown format, a missing custom normaliser, or inconsistent data.
        """
        if data.get("format") != "lbsdispatch.identity.IdentityGraph/1":
            raise ValueError(f"not an IdentityGraph dict: format {data.get('format')!r}")
        normalisers = dict(normalisers or {})
        g = cls(blocked=data["blocked"], block_all_zeros=data["block_all_zeros"],
                on_merge=on_merge)
        for k in data["kinds"]:
            tag = k["normaliser"]
            if tag == "custom":
                if k["name"] not in normalisers:
                    raise ValueError(f"kind {k['name']!r} needs its normaliser: "
                                     f"from_dict(..., normalisers={{{k['name']!r}: f}})")
                fn = normalisers[k["name"]]
            elif tag in _BUILTIN_NORMALISERS:
                fn = _BUILTIN_NORMALISERS[tag]
            else:
                raise ValueError(f"unknown normaliser {tag!r} for kind {k['name']!r}")
            g._register(k["name"], fn, tag, _check_limit(k["limit"]), int(k["priority"]), ())
            g._set_kind_blocked(g._registered[k["name"]], k["blocked"])
        parent = [int(p) for p in data["parent"]]
        # Union by age: a parent is never younger than its child.
        if any(not 0 <= p <= i for i, p in enumerate(parent)):
            raise ValueError("parent array is not a valid union-by-age forest")
        g._parent = parent
        g._held = {c: {} for c, p in enumerate(parent) if c == p}
        g._n_roots = len(g._held)
        for cid, kind, value in data["identifiers"]:
            g._spec(kind)
            if cid not in g._held:
                raise ValueError(f"identifier {kind}={value!r} held by non-root {cid}")
            if (kind, value) in g._index:
                raise ValueError(f"identifier {kind}={value!r} held twice")
            g._held[cid].setdefault(kind, []).append(value)
            g._index[(kind, value)] = cid
        for cid, h in g._held.items():
            for kind, vals in h.items():
                limit = g._spec(kind).limit
                if limit is not None and len(vals) > limit:
                    raise ValueError(f"customer {cid} holds {len(vals)} {kind} values; "
                                     f"limit {limit}")
        for a, b in data["apart"]:
            a, b = g.find(a), g.find(b)
            if a == b:
                raise ValueError(f"customer {a} cannot be kept apart from itself")
            g._apart.setdefault(a, set()).add(b)
            g._apart.setdefault(b, set()).add(a)
        g._log = [(int(s), a, tuple(int(c) for c in cs), k, v, r)
                  for s, a, cs, k, v, r in data["audit"]]
        for i, rec in enumerate(g._log):
            if rec[0] != i or rec[1] not in _ACTIONS:
                raise ValueError(f"audit record {i} is malformed: {rec!r}")
        return g


# ---------------------------------------------------------------------------
# Bindings
# ---------------------------------------------------------------------------

def _seconds(now: Time) -> float:
    """Epoch seconds from a float/int or a datetime (naive datetimes are taken as UTC)."""
    if isinstance(now, datetime):
        # Naive datetimes would otherwise depend on the machine's time zone.
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return now.timestamp()
    if isinstance(now, bool) or not isinstance(now, (int, float, np.integer, np.floating)):
        raise TypeError(f"time must be epoch seconds or a datetime, got {now!r}")
    t = float(now)
    if not math.isfinite(t):
        raise ValueError(f"time must be finite, got {now!r}")
    return t


def _customer(c):
    """A customer id read back from saved data: ints (identity graph ids) as int,
    other ids (a dispatcher's own customer ids, e.g. str) as they are."""
    return int(c) if isinstance(c, (int, float, np.integer)) and not isinstance(c, bool) else c


def _customer_key(item):
    # customers may mix ints (graph ids) and strs (ids given directly): sort
    # each type apart instead of failing on int < str
    c = item[0]
    return (type(c).__name__, c)


class Bindings:
    """Which leader each customer belongs to.

    Parameters
    ----------
    mode : {"first", "override", "expiring"}
        ``"first"``: the first leader a customer is recorded with keeps them.
        ``"override"``: the latest recorded leader wins.
        ``"expiring"``: like ``"first"``, but a binding lapses when more than
        ``expire_days`` pass without an order; the next recorded leader then
        binds afresh.
    expire_days : float, optional
        Required for (and only allowed with) ``mode="expiring"``; positive.

    Attributes
    ----------
    audit : list of BindingAuditRecord
        Leaders that lost a customer when two bound customers merged.

    Notes
    -----
    Time is always passed in (``now``: epoch seconds or a datetime; naive
    datetimes are UTC); there is no clock inside.  A binding lapses strictly
    after ``expire_days`` days: at exactly ``expire_days * 86400`` seconds
    since the last order it still holds.
    """

    MODES = ("first", "override", "expiring")

    def __init__(self, mode: str = "first", expire_days: Optional[float] = None) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if mode == "expiring":
            if (expire_days is None or isinstance(expire_days, bool)
                    or not isinstance(expire_days, (int, float, np.integer, np.floating))
                    or not math.isfinite(expire_days) or expire_days <= 0):
                raise ValueError(f"mode='expiring' needs expire_days > 0, got {expire_days!r}")
        elif expire_days is not None:
            raise ValueError(f"expire_days only applies to mode='expiring' (mode={mode!r})")
        self.mode = mode
        self.expire_days = expire_days
        self._expire = None if expire_days is None else float(expire_days) * _DAY
        # customer -> [leader, binding created at, last order at]
        self._b: Dict[int, List[Any]] = {}
        # absorbed customer -> survivor, so ids issued before a merge still work.
        self._alias: Dict[int, int] = {}
        self._clock: Optional[float] = None
        self.audit: List[BindingAuditRecord] = []
        # Change tracking for a store (see `_track`): None when nobody listens,
        # so the in-memory mode pays one None test per recorded order.
        self._dirty: Optional[Set[Hashable]] = None
        self._new_alias: Optional[List[Hashable]] = None

    def _canon(self, cid: int) -> int:
        alias = self._alias
        if cid not in alias:
            return cid
        root = cid
        while root in alias:
            root = alias[root]
        while alias.get(cid, root) != root:
            alias[cid], cid = root, alias[cid]
        return root

    def _alias_root(self, cid: int) -> int:
        alias = self._alias
        while cid in alias:
            cid = alias[cid]
        return cid

    def _active(self, b, t):
        if b is None or self._expire is None or t is None:
            return b
        return None if t - b[2] > self._expire else b

    def bound(self, customer_id: int, now: Optional[Time] = None) -> Optional[Hashable]:
        """Return the leader the customer is bound to at ``now``, or None.

        ``now`` is required in ``"expiring"`` mode and ignored otherwise.
        Does not change anything.
        """
        b = self._b.get(self._canon(customer_id))
        if b is None:
            return None
        if self._expire is not None:
            if now is None:
                raise TypeError("bound() needs now in mode='expiring'")
            if _seconds(now) - b[2] > self._expire:
                return None
        return b[0]

    def record(self, customer_id: int, leader_id: Hashable, now: Time) -> Hashable:
        """Record that an order of the customer went to ``leader_id`` at ``now``.

        Applies the mode (a new binding is created when there is none, the
        mode is ``"override"`` and the leader changed, or an expiring binding
        has lapsed) and refreshes the last-order time (never moving it
        backwards, so replaying orders out of order is harmless).

        Returns
        -------
        hashable
            The leader the customer is bound to afterwards (in ``"first"``
            mode this may differ from ``leader_id``).
        """
        if leader_id is None:
            raise ValueError("leader_id must not be None (None means unbound)")
        t = _seconds(now)
        cid = self._canon(customer_id)
        b = self._b.get(cid)
        if (b is None or (self.mode == "override" and b[0] != leader_id)
                or (self._expire is not None and t - b[2] > self._expire)):
            self._b[cid] = b = [leader_id, t, t if b is None else max(t, b[2])]
        elif t > b[2]:
            b[2] = t
        if self._clock is None or t > self._clock:
            self._clock = t
        if self._dirty is not None:
            self._dirty.add(cid)
        return b[0]

    def bound_many(self, customers: List[Hashable], now: Optional[Time] = None) -> List[Any]:
        """Return `bound` for each customer (None entries stay None), in one pass.

        The batch path of the dispatcher: one dictionary lookup per order and
        no per-order function call.  ``now`` is required in ``"expiring"``
        mode.
        """
        b = self._b
        alias = self._alias
        if alias:
            canon = self._canon
            customers = [None if c is None else canon(c) for c in customers]
        get = b.get
        rows = [None if c is None else get(c) for c in customers]
        if self._expire is None:
            return [None if r is None else r[0] for r in rows]
        if now is None:
            raise TypeError("bound_many() needs now in mode='expiring'")
        limit = _seconds(now) - self._expire
        # lapsed strictly after expire_days: t - last > expire  <=>  last < t - expire
        return [None if r is None or r[2] < limit else r[0] for r in rows]

    def record_many(self, customers: List[Hashable], leaders: List[Hashable], now: Time) -> None:
        """`record` each (customer, leader) pair in order, all at time ``now``.

        Equivalent to ``for c, l in zip(customers, leaders): record(c, l, now)``
        (the dispatcher's batch path, written without a call per order).
        """
        t = _seconds(now)
        b = self._b
        alias = self._alias
        canon = self._canon
        override = self.mode == "override"
        expire = self._expire
        dirty = self._dirty
        for cid, leader_id in zip(customers, leaders):
            if leader_id is None:
                raise ValueError("leader_id must not be None (None means unbound)")
            if alias and cid in alias:
                cid = canon(cid)
            r = b.get(cid)
            if r is None:
                b[cid] = [leader_id, t, t]
            elif ((override and r[0] != leader_id)
                  or (expire is not None and t - r[2] > expire)):
                b[cid] = [leader_id, t, max(t, r[2])]
            elif t > r[2]:
                r[2] = t
            if dirty is not None:
                dirty.add(cid)
        if customers and (self._clock is None or t > self._clock):
            self._clock = t

    def set(self, customer_id: Hashable, leader_id: Hashable, now: Time) -> None:
        """Bind a customer to a leader whatever the mode (an operator's decision).

        The binding counts as created at ``now``.
        """
        if leader_id is None:
            raise ValueError("leader_id must not be None (None means unbound)")
        t = _seconds(now)
        cid = self._canon(customer_id)
        self._b[cid] = [leader_id, t, t]
        if self._clock is None or t > self._clock:
            self._clock = t
        if self._dirty is not None:
            self._dirty.add(cid)

    def _track(self) -> None:
        """Start recording which customers change (for a store's incremental writes)."""
        if self._dirty is None:
            self._dirty = set()
            self._new_alias = []

    def _take_changes(self):
        """(rows to upsert, customers to delete, new aliases) since the last call."""
        dirty, self._dirty = self._dirty or set(), set()
        aliases, self._new_alias = self._new_alias or [], []
        b = self._b
        upsert = [(c, r[0], r[1], r[2]) for c in dirty for r in (b.get(c),) if r is not None]
        delete = [c for c in dirty if c not in b]
        return upsert, delete, [(a, self._alias[a]) for a in aliases if a in self._alias]

    def on_merge(self, survivor: int, absorbed: int, now: Optional[Time] = None) -> None:
        """Carry bindings over when customer ``absorbed`` merges into ``survivor``.

        Parameters
        ----------
        survivor, absorbed : int
            As reported by ``IdentityGraph(on_merge=...)``.
        now : float or datetime, optional
            Time of the merge.  Default: the latest time passed to `record`
            or `on_merge` (so ``IdentityGraph(on_merge=bindings.on_merge)``
            can be wired directly).

        Notes
        -----
        If both were bound (and, when expiring, neither had lapsed at
        ``now``) to different leaders, the binding created earlier wins (a
        tie goes to the survivor) and the other leader is logged in `audit`.
        The merged binding's last-order time is the later of the two.
        Afterwards ``absorbed`` is an alias of ``survivor`` here too.
        """
        t = self._clock if now is None else _seconds(now)
        if now is not None and (self._clock is None or t > self._clock):
            self._clock = t
        s, a = self._canon(survivor), self._canon(absorbed)
        if s == a:
            return
        bs = self._active(self._b.pop(s, None), t)
        ba = self._active(self._b.pop(a, None), t)
        self._alias[a] = s
        if self._dirty is not None:
            self._dirty.update((s, a))
            self._new_alias.append(a)
        if bs is None and ba is None:
            return
        if bs is None or ba is None:
            self._b[s] = bs if ba is None else ba
            return
        winner, loser = (ba, bs) if ba[1] < bs[1] else (bs, ba)
        self._b[s] = [winner[0], winner[1], max(bs[2], ba[2])]
        if winner[0] != loser[0]:
            if winner[1] != loser[1]:
                why = (f"customer {absorbed} merged into {survivor}; the binding to "
                       f"{winner[0]!r} (since {winner[1]:.0f}) is older than the one to "
                       f"{loser[0]!r} (since {loser[1]:.0f})")
            else:
                why = (f"customer {absorbed} merged into {survivor}; both bindings date from "
                       f"{winner[1]:.0f}, the survivor's leader {winner[0]!r} is kept")
            self.audit.append(BindingAuditRecord(
                len(self.audit), "merge", survivor, absorbed, winner[0], loser[0],
                t if t is not None else max(bs[2], ba[2]), why))

    def __len__(self) -> int:
        """Return the number of customers with a binding (lapsed ones included)."""
        return len(self._b)

    def __repr__(self) -> str:
        """Summarise the mode and size."""
        return f"Bindings(mode={self.mode!r}, {len(self._b)} bound)"

    def to_dict(self) -> Dict[str, Any]:
        """Return the state as plain (JSON-compatible if leader ids are) data."""
        return {
            "format": "lbsdispatch.identity.Bindings/1",
            "mode": self.mode,
            "expire_days": self.expire_days,
            "clock": self._clock,
            "bindings": [[c, b[0], b[1], b[2]]
                         for c, b in sorted(self._b.items(), key=_customer_key)],
            # Each absorbed id with its final survivor: canonical, whatever chains
            # lookups happened to compress.
            "aliases": sorted(([a, self._alias_root(a)] for a in self._alias),
                              key=_customer_key),
            "audit": [list(r) for r in self.audit],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Bindings":
        """Rebuild from `to_dict` output."""
        if data.get("format") != "lbsdispatch.identity.Bindings/1":
            raise ValueError(f"not a Bindings dict: format {data.get('format')!r}")
        b = cls(mode=data["mode"], expire_days=data["expire_days"])
        b._clock = None if data["clock"] is None else float(data["clock"])
        b._b = {_customer(c): [leader, float(t0), float(t1)]
                for c, leader, t0, t1 in data["bindings"]}
        b._alias = {_customer(a): _customer(s) for a, s in data["aliases"]}
        b.audit = [BindingAuditRecord(int(r[0]), r[1], _customer(r[2]), _customer(r[3]), r[4],
                                      r[5], float(r[6]), r[7]) for r in data["audit"]]
        return b
