"""lbsdispatch: assign livestream orders to community group-buying leaders by location."""
from . import geo, synth
from .geo import EARTH_RADIUS_M
from .dispatch import Assignment, BatchResult, Dispatcher, Outcome, Refusal
from .index import LeaderIndex
from .rules import Rules

__all__ = [
    "EARTH_RADIUS_M", "Assignment", "BatchResult", "Dispatcher", "LeaderIndex", "Outcome",
    "Refusal", "Rules", "geo", "synth",
]
__version__ = "0.1.0"
