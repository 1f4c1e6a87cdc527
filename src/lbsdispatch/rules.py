"""`Rules`: how a dispatcher chooses among leaders."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Rules", "TIE_KEYS"]

#: Keys a tie can be broken by: ``"load"`` (less loaded first, by load /
#: capacity), ``"priority"`` (higher first) and ``"id"`` (smaller first).
TIE_KEYS = ("load", "priority", "id")


@dataclass(frozen=True)
class Rules:
    """Dispatch rules of one event.

    Parameters
    ----------
    max_distance_m : float, optional
        No order is sent to a leader farther than this (metres).  ``None``:
        no global limit (a leader's own ``radius_m`` still applies).
    tie_tolerance_m : float, default 0.0
        Leaders whose distance is within this many metres of the nearest
        leader with room are tied and ordered by ``tie_break``.  With 0 only
        exactly equal distances (e.g. two leaders registered at the same
        pickup point) tie.
    tie_break : sequence of str, default ("load", "priority", "id")
        Order of tied leaders: ``"load"`` less loaded first (load / capacity),
        ``"priority"`` higher priority first, ``"id"`` smaller id first.  The
        id is always the last key, so the answer never depends on input order.
    capacity : {"strict", "unlimited"}, default "strict"
        ``"strict"``: a leader never takes more orders than its capacity; the
        order spills to the next nearest leader with room.  ``"unlimited"``:
        capacities are ignored (loads are still counted).
    """

    max_distance_m: float | None = None
    tie_tolerance_m: float = 0.0
    tie_break: tuple = field(default=TIE_KEYS)
    capacity: str = "strict"

    def __post_init__(self):
        if self.max_distance_m is not None:
            m = _number(self.max_distance_m, "max_distance_m")
            if not (m >= 0):
                raise ValueError(f"Rules.max_distance_m must be >= 0, got {self.max_distance_m!r}")
            object.__setattr__(self, "max_distance_m", m)
        t = _number(self.tie_tolerance_m, "tie_tolerance_m")
        if not (0 <= t < math.inf):
            raise ValueError(f"Rules.tie_tolerance_m must be finite and >= 0, "
                             f"got {self.tie_tolerance_m!r}")
        object.__setattr__(self, "tie_tolerance_m", t)
        keys = (self.tie_break,) if isinstance(self.tie_break, str) else tuple(self.tie_break)
        for k in keys:
            if k not in TIE_KEYS:
                raise ValueError(f"Rules.tie_break: unknown key {k!r}; use some of {TIE_KEYS}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"Rules.tie_break repeats a key: {keys!r}")
        if "id" in keys:
            keys = keys[:keys.index("id") + 1]
        else:
            keys = keys + ("id",)
        object.__setattr__(self, "tie_break", keys)
        if self.capacity not in ("strict", "unlimited"):
            raise ValueError(f"Rules.capacity must be 'strict' or 'unlimited', got {self.capacity!r}")

    def to_dict(self):
        """Plain-data form (for saving an event)."""
        return {"max_distance_m": self.max_distance_m, "tie_tolerance_m": self.tie_tolerance_m,
                "tie_break": list(self.tie_break), "capacity": self.capacity}

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`."""
        return cls(d.get("max_distance_m"), d.get("tie_tolerance_m", 0.0),
                   tuple(d.get("tie_break", TIE_KEYS)), d.get("capacity", "strict"))


def _number(v, name):
    if isinstance(v, bool):
        raise ValueError(f"Rules.{name} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"Rules.{name} must be a number, got {v!r}") from None
