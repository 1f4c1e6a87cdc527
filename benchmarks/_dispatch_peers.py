"""What the dispatch benchmarks compare: events with capacity, and the peer.

The peer is what a competent user writes today without lbsdispatch: scipy's
cKDTree k=8 batch on 3-D unit vectors, then a Python loop that walks each
order's candidates in distance order and takes the first leader with room,
querying that order again with a doubled k when all its candidates are full.

The code lives in :mod:`lbsdispatch.bench` (``lbsdispatch bench`` runs it too).
"""
from __future__ import annotations

from lbsdispatch.bench import ckdtree_greedy, ours_assign_batch  # noqa: F401
from lbsdispatch.bench import dispatch_event as event  # noqa: F401
from lbsdispatch.bench import event_unit_vectors as unit_vectors  # noqa: F401
