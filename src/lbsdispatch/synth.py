"""Reproducible synthetic events for the demo, the tests and the benchmarks.

Two shapes of event are provided:

* :func:`city_event` -- one livestream night in a Hangzhou-sized city: about
  800 leaders placed at residential compounds and 20,000 orders clustered
  around those compounds, plus a thin scatter of orders from the outskirts.
* :func:`nation_event` -- the same pattern over many cities across China:
  100,000 leaders and 1,000,000 orders.

Everything is drawn from a seeded :class:`numpy.random.Generator`, so the same
arguments always give the same event, on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Event", "city_event", "identities", "nation_event"]

# Metres per degree of latitude on the mean sphere (2 * pi * R / 360).
_M_PER_DEG = 111_195.08

# Hangzhou's centre, the reference city of the mission.
_HANGZHOU = (30.2741, 120.1551)


@dataclass(frozen=True)
class Event:
    """One synthetic event: a leader table and an order stream.

    Attributes
    ----------
    leader_ids : ndarray of int64, shape (n_leaders,)
    leader_lat, leader_lon : ndarray of float64, shape (n_leaders,)
        WGS-84 degrees.
    capacity : ndarray of int64, shape (n_leaders,)
        Orders each leader can take; sums to about ``capacity_ratio * n_orders``.
    priority : ndarray of int64, shape (n_leaders,)
        0 for most leaders, 1 or 2 for the brand's star leaders.
    order_ids : ndarray of int64, shape (n_orders,)
    order_lat, order_lon : ndarray of float64, shape (n_orders,)
        Delivery addresses in arrival order (cities interleaved, as in a
        national livestream).
    customer_ids : ndarray of int64, shape (n_orders,)
        Buyer of each order; some buyers order more than once.
    """

    leader_ids: np.ndarray
    leader_lat: np.ndarray
    leader_lon: np.ndarray
    capacity: np.ndarray
    priority: np.ndarray
    order_ids: np.ndarray
    order_lat: np.ndarray
    order_lon: np.ndarray
    customer_ids: np.ndarray

    @property
    def n_leaders(self) -> int:
        """Number of leaders."""
        return len(self.leader_ids)

    @property
    def n_orders(self) -> int:
        """Number of orders."""
        return len(self.order_ids)


def _offset(rng, lat0, lon0, sigma_m, n):
    """Points scattered normally (``sigma_m`` metres) around centres."""
    dlat = rng.normal(0.0, 1.0, n) * sigma_m / _M_PER_DEG
    coslat = np.cos(np.radians(lat0))
    dlon = rng.normal(0.0, 1.0, n) * sigma_m / (_M_PER_DEG * coslat)
    return np.clip(lat0 + dlat, -90.0, 90.0), ((lon0 + dlon + 180.0) % 360.0) - 180.0


def _capacities(rng, demand, n_orders, capacity_ratio):
    """Integer capacities that follow local demand and sum to about ``ratio * orders``."""
    weight = (demand + 1.0) * rng.gamma(4.0, 0.25, len(demand))
    cap = np.floor(weight / weight.sum() * capacity_ratio * n_orders).astype(np.int64)
    cap = np.maximum(cap, 1)
    # Hand out what flooring lost, to the heaviest leaders first, so the
    # total is exact whenever the ratio leaves room for it.
    short = int(round(capacity_ratio * n_orders)) - int(cap.sum())
    if short > 0:
        cap[np.argsort(-weight, kind="stable")[:short] % len(cap)] += 1
    return cap


def _build(rng, comp_lat, comp_lon, comp_weight, n_leaders, n_orders,
           capacity_ratio, spread_m, outskirt_lat, outskirt_lon, outskirt_m):
    n_comp = len(comp_lat)
    # Leaders sit at compounds; a busy compound may have two leaders at the
    # very same registered coordinate (a real source of exact ties).
    host = rng.choice(n_comp, size=n_leaders, replace=n_leaders > n_comp,
                      p=comp_weight / comp_weight.sum())
    leader_lat = comp_lat[host].copy()
    leader_lon = comp_lon[host].copy()
    # Most leaders register a point a few tens of metres from the compound centre.
    moved = rng.random(n_leaders) < 0.9
    jl, jo = _offset(rng, leader_lat[moved], leader_lon[moved], 40.0, int(moved.sum()))
    leader_lat[moved], leader_lon[moved] = jl, jo

    # Orders: most from around a leader's compound, a few from the outskirts.
    n_out = n_orders // 50
    n_in = n_orders - n_out
    near = rng.integers(0, n_leaders, n_in)
    olat, olon = _offset(rng, leader_lat[near], leader_lon[near], spread_m, n_in)
    xlat, xlon = _offset(rng, outskirt_lat, outskirt_lon, outskirt_m, n_out)
    order_lat = np.concatenate([olat, xlat])
    order_lon = np.concatenate([olon, xlon])
    perm = rng.permutation(n_orders)
    order_lat, order_lon = order_lat[perm], order_lon[perm]

    demand = np.bincount(near, minlength=n_leaders).astype(float)
    capacity = _capacities(rng, demand, n_orders, capacity_ratio)
    priority = np.where(rng.random(n_leaders) < 0.05, rng.integers(1, 3, n_leaders), 0)

    # About 15% of orders come from buyers who already ordered tonight.
    n_cust = max(1, int(n_orders * 0.85))
    customer_ids = np.arange(n_orders, dtype=np.int64)
    repeat = rng.random(n_orders) < 0.15
    customer_ids[repeat] = rng.integers(0, n_cust, int(repeat.sum()))

    return Event(
        leader_ids=np.arange(n_leaders, dtype=np.int64),
        leader_lat=leader_lat,
        leader_lon=leader_lon,
        capacity=capacity,
        priority=priority.astype(np.int64),
        order_ids=np.arange(n_orders, dtype=np.int64),
        order_lat=order_lat,
        order_lon=order_lon,
        customer_ids=customer_ids,
    )


def city_event(n_leaders: int = 800, n_orders: int = 20_000, *, capacity_ratio: float = 1.15,
               seed: int = 0, center: tuple[float, float] = _HANGZHOU,
               city_radius_m: float = 25_000.0) -> Event:
    """A livestream night in one city.

    Parameters
    ----------
    n_leaders, n_orders : int
        Size of the event (the mission's city event is 800 and 20,000).
    capacity_ratio : float
        Total leader capacity as a multiple of ``n_orders``.
    seed : int
        Seed of the random generator; the same seed gives the same event.
    center : (float, float)
        Latitude and longitude of the city centre, degrees.
    city_radius_m : float
        Scale of the urban area; compounds are denser towards the centre.

    Returns
    -------
    Event
    """
    if n_leaders < 1 or n_orders < 0:
        raise ValueError("n_leaders must be >= 1 and n_orders >= 0")
    rng = np.random.default_rng(seed)
    n_comp = max(1, int(n_leaders * 0.8))
    # Residential compounds: dense centre, sparser rings (a 2-D normal plus a
    # few satellite towns).
    lat0, lon0 = center
    c_lat, c_lon = _offset(rng, np.full(n_comp, lat0), np.full(n_comp, lon0),
                           city_radius_m / 2.5, n_comp)
    comp_weight = rng.pareto(2.0, n_comp) + 1.0
    return _build(rng, c_lat, c_lon, comp_weight, n_leaders, n_orders, capacity_ratio,
                  spread_m=350.0, outskirt_lat=np.full(n_orders // 50, lat0),
                  outskirt_lon=np.full(n_orders // 50, lon0), outskirt_m=city_radius_m * 1.5)


def nation_event(n_leaders: int = 100_000, n_orders: int = 1_000_000, *,
                 capacity_ratio: float = 1.15, seed: int = 0, n_cities: int = 300) -> Event:
    """A national livestream: the city pattern repeated over many cities in China.

    City sizes follow a heavy-tailed (Zipf-like) law, so a few metropolises hold
    many leaders and most cities hold a few hundred.

    Parameters
    ----------
    n_leaders, n_orders : int
        Size of the event (the mission's nation event is 100,000 and 1,000,000).
    capacity_ratio : float
        Total leader capacity as a multiple of ``n_orders``.
    seed : int
        Seed of the random generator.
    n_cities : int
        Number of cities.

    Returns
    -------
    Event
    """
    if n_leaders < 1 or n_orders < 0 or n_cities < 1:
        raise ValueError("n_leaders and n_cities must be >= 1 and n_orders >= 0")
    rng = np.random.default_rng(seed)
    # City centres inside mainland China's rough populated box.
    city_lat = rng.uniform(22.0, 41.0, n_cities)
    city_lon = rng.uniform(102.0, 122.0, n_cities)
    city_size = 1.0 / np.arange(1, n_cities + 1) ** 0.9
    city_size /= city_size.sum()
    radius_m = 6_000.0 + 30_000.0 * np.sqrt(city_size / city_size[0])

    n_comp = max(1, int(n_leaders * 0.8))
    comp_city = rng.choice(n_cities, size=n_comp, p=city_size)
    c_lat, c_lon = _offset(rng, city_lat[comp_city], city_lon[comp_city], 1.0, n_comp)
    # Scale each compound's offset by its city's size (the 1 m draw is a unit normal).
    c_lat = city_lat[comp_city] + (c_lat - city_lat[comp_city]) * radius_m[comp_city] / 2.5
    c_lon = city_lon[comp_city] + (c_lon - city_lon[comp_city]) * radius_m[comp_city] / 2.5
    comp_weight = rng.pareto(2.0, n_comp) + 1.0

    n_out = n_orders // 50
    out_city = rng.choice(n_cities, size=n_out, p=city_size)
    return _build(rng, c_lat, c_lon, comp_weight, n_leaders, n_orders, capacity_ratio,
                  spread_m=350.0, outskirt_lat=city_lat[out_city], outskirt_lon=city_lon[out_city],
                  outskirt_m=radius_m[out_city] * 1.5)


def identities(ev: Event, returning: float = 0.30, seed: int = 0):
    """Identifiers of an event's buyers, and which of them are returning customers.

    Every order carries 2-3 identifiers of its buyer: a WeChat ``unionid``, a
    phone number, and for every second buyer the ``openid`` of one mini-program
    (kind ``openid:wx1``).  Returning customers are drawn until their orders make
    ``returning`` of the event (a buyer with several orders counts with all of
    them); each is given the leader they belonged to before the event.

    Parameters
    ----------
    ev : Event
    returning : float, default 0.30
        Share of the orders placed by returning customers.
    seed : int

    Returns
    -------
    identifiers : dict of str -> list
        One column per kind (None where an order has none of that kind), as
        ``Dispatcher.assign_batch(identifiers=...)`` takes them.
    returning_customers : ndarray of int64
        ``ev.customer_ids`` values of the returning customers.
    leader_of : ndarray of int64
        The leader id each returning customer belonged to, in the same order:
        one of the three leaders nearest to the customer's first order.
    """
    if not 0.0 <= returning <= 1.0:
        raise ValueError(f"returning must be in [0, 1], got {returning!r}")
    c = ev.customer_ids.tolist()
    idents = {"unionid": [f"u{x:07d}" for x in c],
              "phone": [f"1{3 + x % 7}{x:09d}" for x in c],
              "openid:wx1": [f"o{x:09d}" if x % 2 else None for x in c]}
    rng = np.random.default_rng(seed + 1)
    cust, count = np.unique(ev.customer_ids, return_counts=True)
    perm = rng.permutation(len(cust))
    k = int(np.searchsorted(np.cumsum(count[perm]), returning * ev.n_orders)) if returning else 0
    back = np.sort(cust[perm[:k]])
    # a returning customer belonged to one of the three leaders nearest to where
    # they order (people use a pickup point near home)
    from .index import LeaderIndex

    first = np.argsort(ev.customer_ids, kind="stable")
    rows = first[np.searchsorted(ev.customer_ids[first], back)]
    kk = min(3, ev.n_leaders)
    _, near = LeaderIndex(ev.leader_lat, ev.leader_lon).query(
        ev.order_lat[rows], ev.order_lon[rows], k=kk)
    near = near.reshape(len(rows), kk)
    leader_of = ev.leader_ids[near[np.arange(len(rows)), rng.integers(0, kk, len(rows))]]
    return idents, back, leader_of
