"""The ``lbsdispatch`` command line."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main", "build_parser"]


def build_parser():
    """The argument parser of ``lbsdispatch`` (also used to document the CLI)."""
    p = argparse.ArgumentParser(
        prog="lbsdispatch",
        description="Assign livestream orders to community group-buying leaders by location.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="dispatch a synthetic city event and print a summary",
                       description="Build a synthetic city event (a Hangzhou-sized city), "
                                   "index its leaders, dispatch every order under the default "
                                   "rules and print what happened, with timings.")
    d.add_argument("--leaders", type=int, default=800, help="number of leaders (default 800)")
    d.add_argument("--orders", type=int, default=20_000, help="number of orders (default 20000)")
    d.add_argument("--capacity-ratio", type=float, default=1.15,
                   help="total capacity as a multiple of the orders (default 1.15)")
    d.add_argument("--max-distance", type=float, default=5_000.0,
                   help="global radius in metres (default 5000)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def _ms(t0):
    return (time.perf_counter() - t0) * 1e3


def demo(args, out=None):
    """Run the demo: build, query, dispatch, summarise (to ``out``, default stdout)."""
    out = sys.stdout if out is None else out
    from . import Dispatcher, LeaderIndex, Outcome, Rules, synth

    t0 = time.perf_counter()
    ev = synth.city_event(args.leaders, args.orders, capacity_ratio=args.capacity_ratio,
                          seed=args.seed)
    t_gen = _ms(t0)
    t0 = time.perf_counter()
    index = LeaderIndex(ev.leader_lat, ev.leader_lon, ids=ev.leader_ids)
    t_build = _ms(t0)
    t0 = time.perf_counter()
    dist, _ = index.query(ev.order_lat, ev.order_lon)
    t_query = _ms(t0)
    n_calls = min(2000, ev.n_orders)
    t0 = time.perf_counter()
    for a, b in zip(ev.order_lat[:n_calls].tolist(), ev.order_lon[:n_calls].tolist()):
        index.query(a, b)
    t_scalar = _ms(t0) / max(n_calls, 1) * 1e3

    disp = Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                      priority=ev.priority, rules=Rules(max_distance_m=args.max_distance))
    t0 = time.perf_counter()
    res = disp.assign_batch(ev.order_lat, ev.order_lon, order_ids=ev.order_ids,
                            customer_ids=ev.customer_ids)
    t_dispatch = _ms(t0)

    counts = res.counts()
    assigned = res.leader_index >= 0
    loads = disp.loads()
    fill = loads / np.maximum(ev.capacity, 1)
    w = out.write
    w(f"lbsdispatch demo: city event, {ev.n_leaders} leaders, {ev.n_orders} orders, "
      f"capacity {int(ev.capacity.sum())} ({args.capacity_ratio:.2f} x orders), "
      f"radius {args.max_distance:.0f} m\n\n")
    w("nearest leader (no capacity), great-circle metres:\n")
    if ev.n_orders:
        p50, p90, p99 = np.percentile(dist, [50, 90, 99])
        w(f"  median {p50:,.0f}  p90 {p90:,.0f}  p99 {p99:,.0f}  max {dist.max():,.0f}\n\n")
    w("dispatch under capacity and radius:\n")
    for o in Outcome:
        if counts[o]:
            w(f"  {o.name:<13}{counts[o]:>8,}  {100 * counts[o] / max(ev.n_orders, 1):5.1f}%\n")
    if assigned.any():
        d = res.distance_m[assigned]
        w(f"  assigned distance: median {np.median(d):,.0f} m, p95 {np.percentile(d, 95):,.0f} m\n")
    w(f"  leaders full: {int((loads >= ev.capacity).sum())}, over 90% full: "
      f"{int((fill >= 0.9).sum())}, empty: {int((loads == 0).sum())}\n\n")
    w("timings:\n")
    w(f"  generate event          {t_gen:8.1f} ms\n")
    w(f"  build index             {t_build:8.2f} ms\n")
    w(f"  batch query, k=1        {t_query:8.2f} ms  "
      f"({t_query * 1e6 / max(ev.n_orders, 1):.0f} ns/order)\n")
    w(f"  single query            {t_scalar:8.2f} us/call\n")
    w(f"  dispatch batch          {t_dispatch:8.2f} ms  "
      f"({t_dispatch * 1e6 / max(ev.n_orders, 1):.0f} ns/order)\n")
    return 0


def main(argv=None):
    """Entry point of the ``lbsdispatch`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo(args)
    except ValueError as e:        # bad option values: say so, no traceback
        parser.exit(2, f"lbsdispatch: error: {e}\n")
    except BrokenPipeError:        # e.g. `lbsdispatch demo | head`
        sys.stderr.close()
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
