"""lbsdispatch: assign livestream orders to community group-buying leaders by location."""
from . import geo, identity, synth
from .geo import EARTH_RADIUS_M
from .dispatch import Assignment, BatchResult, Dispatcher, Outcome, Refusal
from .identity import Bindings, IdentityGraph
from .index import LeaderIndex
from .rules import Rules

__all__ = [
    "EARTH_RADIUS_M", "Assignment", "BatchResult", "Bindings", "Dispatcher", "IdentityGraph",
    "LeaderIndex", "Outcome", "Refusal", "Rules", "geo", "identity", "synth",
]
__version__ = "0.1.0"
