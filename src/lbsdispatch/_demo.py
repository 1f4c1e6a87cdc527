"""``lbsdispatch demo``: the main job end to end on built-in data.

A synthetic livestream night in one city: the buyers' identifiers from several
channels are merged into customers, returning customers stay with the leader
they belonged to, every other order goes to the nearest active leader with
room, the event is persisted to a SQLite file, the SOP starts for every
assignment and its first steps run through a host plugin; then the summary,
and the report files where the optional packages are installed.
"""
from __future__ import annotations

import datetime as _dt
import tempfile
import time
from pathlib import Path

import numpy as np

from .sop import hookimpl

#: The night of the demo: 20:00 in Hangzhou (UTC+8), 2026-11-11.
EVENT_AT = _dt.datetime(2026, 11, 11, 12, 0, tzinfo=_dt.timezone.utc).timestamp()
_DAY = 86_400.0


class _DemoHost:
    """The order system's side of the SOP: counts what it is asked to do.

    A real host sends a WeCom message or an app push here, and drops a repeat of
    an idempotency key it has already handled (delivery is at least once).
    """

    def __init__(self):
        self.calls = {}
        self.keys = set()

    def _effect(self, name, key):
        if key not in self.keys:             # exactly-once effect: drop repeats
            self.keys.add(key)
            self.calls[name] = self.calls.get(name, 0) + 1

    @hookimpl
    def on_new_neighbor(self, key):
        self._effect("on_new_neighbor", key)

    @hookimpl
    def on_welcome_due(self, key):
        self._effect("on_welcome_due", key)

    @hookimpl
    def on_pickup_reminder(self, key):
        self._effect("on_pickup_reminder", key)

    @hookimpl
    def on_group_invite(self, key):
        self._effect("on_group_invite", key)

    @hookimpl
    def on_coupon(self, key):
        self._effect("on_coupon", key)


def _ms(t0):
    return (time.perf_counter() - t0) * 1e3


def run(args, out):
    """Run the demo (``args`` from the ``demo`` subparser); returns the exit code."""
    from . import Dispatcher, LeaderIndex, Outcome, Rules, synth
    from .sop import SopEngine

    w = out.write
    t0 = time.perf_counter()
    ev = synth.city_event(args.leaders, args.orders, capacity_ratio=args.capacity_ratio,
                          seed=args.seed)
    idents, returning, leader_of = synth.identities(ev, returning=0.30, seed=args.seed)
    t_gen = _ms(t0)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lbsdispatch-demo-"))
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--dir {str(folder)!r} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "event.sqlite"
    for stale in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
        if stale.exists():
            stale.unlink()           # the demo's own file of an earlier run

    # the index alone: the online path's building block
    t0 = time.perf_counter()
    index = LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids)
    t_build = _ms(t0)
    t0 = time.perf_counter()
    nearest_m, _ = index.query(ev.order_lat, ev.order_lon)
    t_query = _ms(t0)
    n_calls = min(2000, ev.n_orders)
    t0 = time.perf_counter()
    for a, b in zip(ev.order_lat[:n_calls].tolist(), ev.order_lon[:n_calls].tolist()):
        index.query(a, b)
    t_scalar = _ms(t0) / max(n_calls, 1) * 1e3

    # the event: leaders, last month's customers and their leaders, tonight's dump
    disp = Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                      priority=ev.priority, rules=Rules(max_distance_m=args.max_distance),
                      store=str(store), clock=lambda: EVENT_AT)
    known = {disp.identity.resolve({"unionid": idents["unionid"][i]}): int(lid)
             for i, lid in zip(_first_order_of(ev.customer_ids, returning), leader_of.tolist())}
    disp.set_bindings(known, now=EVENT_AT - 30 * _DAY)
    t0 = time.perf_counter()
    res = disp.assign_batch(ev.order_lat, ev.order_lon, order_ids=ev.order_ids,
                            identifiers=idents, now=EVENT_AT)
    t_dispatch = _ms(t0)

    # the SOP: the leader is told at once, welcomes within the hour
    host = _DemoHost()
    engine = SopEngine(str(store), plugins=[host], pickup_at=EVENT_AT + 2 * _DAY)
    t0 = time.perf_counter()
    stats = engine.run_due(now=EVENT_AT + 3600.0)
    t_sop = _ms(t0)
    engine.close()

    counts = res.counts()
    assigned = res.leader_index >= 0
    loads = disp.loads()
    fill = loads / np.maximum(ev.capacity, 1)
    w(f"lbsdispatch demo: city event, {ev.n_leaders} leaders, {ev.n_orders} orders, "
      f"capacity {int(ev.capacity.sum())} ({args.capacity_ratio:.2f} x orders), "
      f"radius {args.max_distance:.0f} m\n\n")
    w("buyers: identifiers from WeChat (unionid, mini-program openid) and phone\n")
    w(f"  {len(np.unique(res.customer_id[assigned | ~assigned].astype(np.int64)))} customers "
      f"behind {ev.n_orders} orders; {len(known)} known from before and bound to a leader\n\n")
    w("nearest leader (no capacity), great-circle metres:\n")
    if ev.n_orders:
        p50, p90, p99 = np.percentile(nearest_m, [50, 90, 99])
        w(f"  median {p50:,.0f}  p90 {p90:,.0f}  p99 {p99:,.0f}  max {nearest_m.max():,.0f}\n\n")
    w("dispatch under capacity, radius and bindings:\n")
    for o in Outcome:
        if counts[o]:
            w(f"  {o.name:<13}{counts[o]:>8,}  {100 * counts[o] / max(ev.n_orders, 1):5.1f}%\n")
    if assigned.any():
        d = res.distance_m[assigned]
        w(f"  assigned distance: median {np.median(d):,.0f} m, "
          f"p95 {np.percentile(d, 95):,.0f} m\n")
    w(f"  leaders full: {int((loads >= ev.capacity).sum())}, over 90% full: "
      f"{int((fill >= 0.9).sum())}, empty: {int((loads == 0).sum())}\n\n")
    w("SOP, first hour after the event (default playbook, through a host plugin):\n")
    for name, n in sorted(host.calls.items()):
        w(f"  {name:<20}{n:>8,}\n")
    w(f"  (ran {stats.called:,} hook calls; later steps wait for pickup and the group)\n\n")
    w("timings:\n")
    w(f"  generate event          {t_gen:8.1f} ms\n")
    w(f"  build index             {t_build:8.2f} ms\n")
    w(f"  batch query, k=1        {t_query:8.2f} ms  "
      f"({t_query * 1e6 / max(ev.n_orders, 1):.0f} ns/order)\n")
    w(f"  single query            {t_scalar:8.2f} us/call\n")
    w(f"  dispatch + store        {t_dispatch:8.2f} ms  (identities, bindings, one SQLite "
      f"transaction)\n")
    w(f"  SOP run_due             {t_sop:8.2f} ms\n\n")
    w(f"event store: {store}\n")
    w(f"  due SOP tasks per leader: lbsdispatch sop {store}\n")
    _write_report(res, ev, disp, folder, w)
    disp.close()
    return 0


def _first_order_of(customers, wanted):
    """Row of each wanted customer's first order (wanted: sorted customer ids)."""
    rows = np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(customers, kind="stable")
    first = np.searchsorted(customers[order], wanted)
    rows[:] = order[first]
    return rows.tolist()


def _write_report(res, ev, disp, folder, w):
    """The result file and the report map, when pandas and matplotlib are there."""
    try:
        import matplotlib  # noqa: F401
        import pandas  # noqa: F401
    except ImportError:
        w('report: pip install "lbsdispatch[report,cli]" for the result file and the map\n')
        return
    from .report import LeaderLoad, render_png, summarise
    frame = res.to_frame()
    frame["outcome"] = frame["outcome"].astype(str)
    frame["lat"] = ev.order_lat
    frame["lon"] = ev.order_lon
    path = folder / "result.csv"
    frame.to_csv(path, index=False)
    leaders = LeaderLoad(disp.leader_ids, ev.leader_lat, ev.leader_lon, disp.loads(),
                         ev.capacity)
    summary = summarise(frame, leaders)
    png = folder / "report.png"
    render_png(frame, leaders, png, summary=summary)
    w(f"result: {path}\n")
    w(f"report map: {png}   (summary: lbsdispatch report {path})\n")
