"""What the dispatch benchmarks compare: events with capacity, and the peer.

The peer is what a competent user writes today without lbsdispatch: scipy's
cKDTree k=8 batch on 3-D unit vectors, then a Python loop that walks each
order's candidates in distance order and takes the first leader with room,
querying that order again with a doubled k when all its candidates are full.
"""
from __future__ import annotations

import functools

import numpy as np

from lbsdispatch import Dispatcher, Rules, geo, synth


@functools.lru_cache(maxsize=None)
def event(name: str, capacity_ratio: float = 1.15):
    """The synthetic event ``city`` or ``nation`` (seed 0) with the given capacity."""
    if name == "city":
        return synth.city_event(seed=0, capacity_ratio=capacity_ratio)
    if name == "nation":
        return synth.nation_event(seed=0, capacity_ratio=capacity_ratio)
    raise ValueError(f"unknown event {name!r}")


@functools.lru_cache(maxsize=None)
def unit_vectors(name: str):
    """(leader, order) unit vectors of an event: the peer's ready-made input."""
    ev = event(name)
    return (geo.unit_vectors(ev.leader_lat, ev.leader_lon),
            geo.unit_vectors(ev.order_lat, ev.order_lon))


def ours_assign_batch(ev, rules=None):
    """A callable that builds a fresh Dispatcher (not timed) and times assign_batch."""
    def make():
        return Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                          priority=ev.priority, rules=rules or Rules())
    return make


def ckdtree_greedy(tree, order_xyz, capacity, k=8):
    """Greedy capacitated nearest assignment with cKDTree + a Python loop.

    Returns the leader index of each order (-1 when every leader is full).
    """
    n = tree.n
    _, idx = tree.query(order_xyz, k=min(k, n))
    idx = idx.reshape(len(order_xyz), -1).tolist()
    room = capacity.tolist()
    out = [-1] * len(order_xyz)
    for i, cand in enumerate(idx):
        for j in cand:
            if j < n and room[j] > 0:
                room[j] -= 1
                out[i] = j
                break
        else:
            kk = 2 * k
            while True:
                _, more = tree.query(order_xyz[i], k=min(kk, n))
                hit = next((j for j in np.atleast_1d(more).tolist()
                            if j < n and room[j] > 0), -1)
                if hit >= 0:
                    room[hit] -= 1
                    out[i] = hit
                    break
                if kk >= n:
                    break
                kk *= 2
    return out
