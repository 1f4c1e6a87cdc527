"""Print the optimal-mode table (markdown) for docs/performance.md (issue 7).

Usage::

    python benchmarks/report_optimal.py                  # city event
    python benchmarks/report_optimal.py --nation         # + nation event (time, peak memory)

Times are the best of ``--repeat`` runs, ours and OR-Tools interleaved in the
same process so background load hits both alike.  Before timing, our plan is
checked against OR-Tools on the graph our certificate ends with (same count,
same total integer metres).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _optimal_peers import (event, greedy, ortools_edges, ortools_k, ours,  # noqa: E402
                            plan_edges, summary)
from memory import _reset_hwm, _status_kib  # noqa: E402


def timed(fn, *args):
    gc.disable()
    t0 = time.perf_counter()
    out = fn(*args)
    t = time.perf_counter() - t0
    gc.enable()
    return t, out


def city(repeat):
    ev, index = event("city")
    plan = ours(ev, index)
    rows, cols, w = plan_edges(ev, index)
    exact = ortools_edges(ev.n_orders, index.n_leaders, ev.capacity, rows, cols, w)
    mine = summary(plan.leader, plan.distance_m)
    assert mine[:2] == exact, (mine, exact)
    t_ours, t_bot, t_or = [], [], []
    for _ in range(repeat):
        t_ours.append(timed(ours, ev, index)[0])
        t_bot.append(timed(ours, ev, index, "bottleneck")[0])
        t_or.append(timed(ortools_k, ev, index)[0])
    peer = ortools_k(ev, index)
    bot = ours(ev, index, "bottleneck")
    g = summary(*greedy(ev))
    b = summary(bot.leader, bot.distance_m)
    a, o = min(t_ours), min(t_or)
    print(f"City event (20,000 orders, 800 leaders, capacity 1.15x, range 5 km); "
          f"best of {repeat}:\n")
    print("| run | time | assigned | total m | p95 m | max m |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| optimal, total (k=10, {plan.info['rounds']} solves, "
          f"{plan.info['extended']} lists extended, {plan.info['edges']:,} edges) "
          f"| {a * 1e3:.0f} ms | {mine[0]:,} | {mine[1]:,} | {mine[2]:.0f} "
          f"| {plan.info['max_cost_m']:,} |")
    print(f"| optimal, bottleneck | {min(t_bot) * 1e3:.0f} ms | {b[0]:,} | {b[1]:,} "
          f"| {b[2]:.0f} | {bot.info['max_cost_m']:,} |")
    print(f"| OR-Tools SimpleMinCostFlow, 10 candidates (query+build+solve) "
          f"| {o * 1e3:.0f} ms | {peer[0]:,} | {peer[1]:,} | | |")
    print(f"| OR-Tools on our certified graph (check) | | {exact[0]:,} | {exact[1]:,} | | |")
    print(f"| greedy `assign_batch` | | {g[0]:,} | {g[1]:,} | {g[2]:.0f} | |")
    print(f"\nOR-Tools / optimal: {o / a:.2f}x (all runs: ours "
          f"{', '.join(f'{x * 1e3:.0f}' for x in t_ours)} ms; OR-Tools "
          f"{', '.join(f'{x * 1e3:.0f}' for x in t_or)} ms)")


def nation():
    ev, index = event("nation")
    gc.collect()
    before = _status_kib()
    _reset_hwm()
    t, plan = timed(ours, ev, index)
    after = _status_kib()
    s = summary(plan.leader, plan.distance_m)
    print(f"\nNation event (1,000,000 orders, 100,000 leaders, range 5 km): {t:.2f} s, "
          f"peak RSS +{(after['VmHWM'] - before['VmRSS']) / 1024:.0f} MiB over the loaded "
          f"event and index; assigned {s[0]:,}, total {s[1]:,} m, p95 {s[2]:.0f} m; "
          f"{plan.info}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--nation", action="store_true")
    args = ap.parse_args()
    city(args.repeat)
    if args.nation:
        nation()


if __name__ == "__main__":
    main()
