#!/usr/bin/env python
"""Markdown report: ``lbsdispatch.LeaderIndex`` against cKDTree, pykdtree and BallTree.

Runs the measurements of ``bench_index.py`` directly (no pytest) with robust
timing -- for each number, the min over ``--repeat`` repeats of a timed loop
long enough to last ``--min-time`` seconds, as :mod:`timeit` does, the repeats
of the peers of one row interleaved so background load hits them alike -- and
prints one table per event plus the performance targets, marked met / UNMET.

    python benchmarks/report_index.py                       # city event
    python benchmarks/report_index.py --events city,nation --repeat 5
    python benchmarks/report_index.py --events nation --no-memory --json out.json

What is timed (same calls as the pytest suite, see ``_bench_common.py``):

* ours starts from lat/lon degrees, its conversion to unit vectors is timed;
  cKDTree and pykdtree get ready-made unit vectors, BallTree (haversine)
  ready-made radians -- their conversion is not timed;
* "1 thread": ours ``workers=1``, cKDTree ``workers=1``, pykdtree in a child
  process started with ``OMP_NUM_THREADS=1`` (the child times itself, no IPC
  in the number), BallTree (always single threaded);
* "all cores": ours and cKDTree ``workers=-1``, pykdtree in a child process
  with ``OMP_NUM_THREADS`` unset (OpenMP default: one thread per core);
* scalar: one point per call, each call timed with ``perf_counter_ns``
  (20,000 distinct points; 2,000 for cKDTree), median and p99;
* peak memory: RSS growth of build + a k=1 batch over every order, each peer
  in a fresh process (``memory.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _bench_common import (  # noqa: E402
    EVENTS, SCALAR_CALLS, PykdtreeWorker, balltree_orders, batch_query, build, build_fn,
    load, scalar_latency_ns, versions,
)
import memory  # noqa: E402

from lbsdispatch.bench import InChild, InProcess, interleaved  # noqa: E402

# Columns: (key, header).  Values are stored as results[event][(row, col)].
COLS = [("ours", "ours"), ("ck1", "cKDTree w=1"), ("ckall", "cKDTree w=-1"),
        ("pk1", "pykdtree 1 thread"), ("pkdef", "pykdtree default"), ("ball", "BallTree")]
PEER_COLS = [c for c, _ in COLS if c != "ours"]
ROWS = [("build", "build"), ("k1", "k=1 batch, 1 thread"), ("k5", "k=5 batch, 1 thread"),
        ("all", "k=1 batch, all cores"), ("smed", "scalar median"), ("sp99", "scalar p99"),
        ("mem", "peak memory (build + k=1 batch)"), ("membuild", "peak memory (build only)"),
        ("memin", "peak memory + unit-vector inputs (build + k=1 batch)"),
        ("membuildin", "peak memory + leader unit vectors (build only)")]
BATCH_ROWS = ("k1", "k5", "all")
TIME_ROWS = ("build", "k1", "k5", "all")


# ---------------------------------------------------------------- measuring
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def measure_event(event: str, repeat: int, min_time: float, with_memory: bool) -> dict:
    """All the numbers of one event: ``{(row, col): value}`` plus metadata."""
    d = load(event)
    res: dict = {}
    meta = {"n_leaders": d.n_leaders, "n_orders": d.n_orders, "ball_orders": None}

    log(f"{event}: {d.n_leaders:,} leaders, {d.n_orders:,} orders; starting pykdtree children")
    d.leader_xyz, d.order_xyz, d.leader_rad, d.order_rad  # noqa: B018 -- ready-made inputs
    pk1 = PykdtreeWorker(event, 1)
    pkdef = PykdtreeWorker(event, None)
    meta["pykdtree_threads"] = {"1 thread": pk1.ready.get("openmp_threads"),
                                "default": pkdef.ready.get("openmp_threads")}
    try:
        log(f"{event}: build")
        got = interleaved({"ours": InProcess(build_fn("ours", d)),
                           "ck1": InProcess(build_fn("ckdtree", d)),
                           "pk1": InChild(pk1, "build"), "pkdef": InChild(pkdef, "build"),
                           "ball": InProcess(build_fn("balltree", d))}, repeat, min_time)
        res.update((("build", c), v) for c, v in got.items())

        trees = {p: build(p, d) for p in ("ours", "ckdtree", "balltree")}
        sub = d.orders(balltree_orders(d))
        meta["ball_orders"] = sub.n_orders
        for k in (1, 5):
            row = f"k{k}"
            log(f"{event}: batch k={k}, 1 thread (BallTree on {sub.n_orders:,} orders)")
            timers = {"ours": InProcess(batch_query("ours", trees["ours"], d, k=k, workers=1)),
                      "ck1": InProcess(batch_query("ckdtree", trees["ckdtree"], d, k=k,
                                                   workers=1)),
                      "pk1": InChild(pk1, f"q{k}"),
                      "ball": InProcess(batch_query("balltree", trees["balltree"], sub, k=k))}
            if sub is not d:  # ours on the very same subset, for BallTree's ratio
                timers["ours_sub"] = InProcess(batch_query("ours", trees["ours"], sub, k=k,
                                                           workers=1))
            got = interleaved(timers, repeat, min_time)
            # BallTree per order, scaled to the whole event (exact when sub is everything)
            got["ball"] = got["ball"] / sub.n_orders * d.n_orders
            if "ours_sub" in got:
                meta[f"ours_subset_{row}"] = got.pop("ours_sub") / sub.n_orders
            res.update(((row, c), v) for c, v in got.items())

        log(f"{event}: batch k=1, all cores")
        got = interleaved({"ours": InProcess(batch_query("ours", trees["ours"], d, k=1,
                                                         workers=-1)),
                           "ckall": InProcess(batch_query("ckdtree", trees["ckdtree"], d, k=1,
                                                          workers=-1)),
                           "pkdef": InChild(pkdef, "q1")}, repeat, min_time)
        res.update((("all", c), v) for c, v in got.items())

        log(f"{event}: scalar latency")
        lat = {"ours": scalar_latency_ns("ours", trees["ours"], d),
               "ck1": scalar_latency_ns("ckdtree", trees["ckdtree"], d),
               "pk1": pk1.scalar(SCALAR_CALLS["pykdtree"]),
               "pkdef": pkdef.scalar(SCALAR_CALLS["pykdtree"])}
        for col, s in lat.items():
            res["smed", col] = s["median_ns"] * 1e-9
            res["sp99", col] = s["p99_ns"] * 1e-9
        meta["timer_overhead_ns"] = lat["ours"]["timer_overhead_ns"]
    finally:
        pk1.close()
        pkdef.close()

    if with_memory:
        log(f"{event}: peak memory (fresh process per peer)")
        with tempfile.TemporaryDirectory(prefix="lbsd-mem-") as tmp:
            memory.export_event(event, tmp)
            for col, peer, omp in (("ours", "ours", None), ("ck1", "ckdtree", None),
                                   ("pk1", "pykdtree", 1), ("pkdef", "pykdtree", None)):
                m = memory.peak_memory(peer, event, tmp, omp_threads=omp)
                res["mem", col] = m["peak_kib"] * 1024
                res["membuild", col] = m["peak_build_kib"] * 1024
                res["memin", col] = (m["peak_kib"] + m["input_kib"]) * 1024
                res["membuildin", col] = (m["peak_build_kib"] + m["input_build_kib"]) * 1024
                meta["memory_method"] = m["method"]
    meta["peer_input_bytes"] = d.leader_xyz.nbytes + d.order_xyz.nbytes
    return {"res": res, "meta": meta}


# ---------------------------------------------------------------- formatting
def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.1f} µs"
    return f"{s * 1e9:.0f} ns"


def fmt_bytes(b: float) -> str:
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 1024:.0f} KiB"


def cell(row: str, col: str, res: dict, meta: dict) -> str:
    v = res.get((row, col))
    if v is None:
        return "—"
    if row.startswith("mem"):
        return fmt_bytes(v)
    if row in BATCH_ROWS:
        star = "*" if col == "ball" and meta["ball_orders"] != meta["n_orders"] else ""
        return f"{fmt_time(v)}{star} ({v / meta['n_orders'] * 1e9:,.0f} ns/order)"
    return fmt_time(v)


def ratio(row: str, col: str, res: dict, meta: dict):
    """peer / ours (> 1: ours is faster or smaller)."""
    v, o = res.get((row, col)), res.get((row, "ours"))
    if v is None or o is None:
        return None
    if col == "ball" and f"ours_subset_{row}" in meta:  # same orders as BallTree
        o = meta[f"ours_subset_{row}"] * meta["n_orders"]
    if o <= 0:
        return float("inf") if v > 0 else 1.0
    return v / o


def fmt_ratio(r) -> str:
    if r is None:
        return "—"
    return "∞" if r == float("inf") else f"{r:.2f}×"


# target: (description, row, peer column, threshold on peer/ours)
TARGETS = [
    ("k=1 batch, 1 thread: ≥ 2× faster than cKDTree w=1", "k1", "ck1", 2.0),
    ("k=1 batch, 1 thread: ≥ 1.3× faster than pykdtree 1 thread", "k1", "pk1", 1.3),
    ("k=5 batch, 1 thread: ≥ 2× faster than cKDTree w=1", "k5", "ck1", 2.0),
    ("k=1 batch, all cores: no slower than pykdtree default threads", "all", "pkdef", 1.0),
    ("scalar median: ≤ 1/30 of cKDTree's", "smed", "ck1", 30.0),
    ("build: within 1.5× of cKDTree's time", "build", "ck1", 1 / 1.5),
    ("peak memory incl. the unit vectors a peer must hold (build + k=1): ≤ cKDTree",
     "memin", "ck1", 1.0),
]


def render(event: str, out: dict) -> str:
    res, meta = out["res"], out["meta"]
    lines = [f"### {event} event — {meta['n_leaders']:,} leaders, {meta['n_orders']:,} orders", ""]
    head = ["operation"] + [h for _, h in COLS] + [f"{h} / ours" for c, h in COLS if c != "ours"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for row, label in ROWS:
        if not any((row, c) in res for c, _ in COLS):
            continue
        cells = [label] + [cell(row, c, res, meta) for c, _ in COLS]
        cells += [fmt_ratio(ratio(row, c, res, meta)) for c in PEER_COLS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| target | measured (peer / ours) | status |", "|---|---:|---|"]
    for desc, row, col, need in TARGETS:
        r = ratio(row, col, res, meta)
        if r is None:
            status, shown = "not measured", "—"
        elif r >= need:
            status, shown = "met", fmt_ratio(r)
        else:
            near = r >= need * 0.95
            status = "**UNMET**" + (" (within 5%: noise?)" if near else "")
            shown = fmt_ratio(r)
        if r is None:
            pass
        elif row == "build":  # easier read the other way round
            shown = f"ours / cKDTree = {1 / r:.2f}× (need ≤ 1.5×)" if r > 0 else "—"
        else:
            shown = f"{shown} (need ≥ {need:g}×)"
        lines.append(f"| {desc} | {shown} | {status} |")
    notes = ["", "Notes:"]
    if meta["ball_orders"] != meta["n_orders"]:
        notes.append(f"* BallTree queried the first {meta['ball_orders']:,} orders only; its "
                     f"total is extrapolated per order, and its ratio compares with ours on "
                     f"the same {meta['ball_orders']:,} orders.")
    notes.append("* ours: from lat/lon degrees (conversion timed and counted in memory); "
                 f"cKDTree/pykdtree were handed ready-made unit vectors "
                 f"({fmt_bytes(meta['peer_input_bytes'])} for leaders + orders, not counted); "
                 "BallTree ready-made radians.")
    if "timer_overhead_ns" in meta:
        notes.append(f"* scalar samples include the perf_counter_ns pair "
                     f"(~{meta['timer_overhead_ns']:.0f} ns), not subtracted.")
    notes.append(f"* pykdtree OpenMP threads seen by threadpoolctl in its child processes: "
                 f"{meta.get('pykdtree_threads')}.")
    if "memory_method" in meta:
        notes.append(f"* peak memory: {meta['memory_method']}, one fresh process per cell.")
    return "\n".join(lines + notes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", default="city",
                    help="comma-separated events among city,nation (default: city)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed repeats per number, the min is kept (default 5)")
    ap.add_argument("--min-time", type=float, default=0.1,
                    help="seconds one repeat lasts at least (loop length calibrated; default 0.1)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON")
    args = ap.parse_args(argv)
    events = [e.strip() for e in args.events.split(",") if e.strip()]
    bad = [e for e in events if e not in EVENTS]
    if bad or not events:
        ap.error(f"unknown event(s) {bad}; choose among {','.join(EVENTS)}")

    t0 = time.perf_counter()
    results = {e: measure_event(e, args.repeat, args.min_time, not args.no_memory)
               for e in events}
    v = versions()
    print("## Nearest-leader index benchmark\n")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.system()} {platform.release()}; "
          + ", ".join(f"{k} {val}" for k, val in v.items())
          + f". Timing: min of {args.repeat} interleaved repeats (each ≥ {args.min_time:g} s). "
          "Ratio columns are peer / ours: > 1 means ours is faster (or smaller).\n")
    for e in events:
        print(render(e, results[e]))
        print()
    log(f"done in {time.perf_counter() - t0:.0f} s")
    if args.json:
        raw = {e: {"meta": r["meta"],
                   "results": {f"{row}/{col}": val for (row, col), val in r["res"].items()}}
               for e, r in results.items()}
        Path(args.json).write_text(json.dumps({"versions": v, "events": raw}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
