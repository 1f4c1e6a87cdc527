"""lbsdispatch: assign livestream orders to community group-buying leaders by location."""
from . import geo, synth
from .geo import EARTH_RADIUS_M
from .index import LeaderIndex

__all__ = ["EARTH_RADIUS_M", "LeaderIndex", "geo", "synth"]
__version__ = "0.1.0"
