#!/usr/bin/env python
"""``lbsdispatch assign`` on a national dump against pandas alone reading and writing it.

Writes the nation event of :mod:`lbsdispatch.synth` (100,000 leaders,
1,000,000 orders with customer ids) as CSV files in a temporary folder, then
runs, each in a fresh process (so that peak memory is that run's alone):

* ``pandas``: ``pd.read_csv`` of the orders + ``DataFrame.to_csv`` of a frame
  with the same rows and the result's columns (order_id, leader_id,
  distance_m, outcome, reason, customer_id, lat, lon) -- the floor the target
  is measured against (issue 6: the command within 3x of it);
* ``pyarrow``: the same read and write with ``pyarrow.csv`` (a stricter
  reference: the fastest CSV I/O available in the environment);
* ``assign``: ``python -m lbsdispatch assign`` at each ``--chunksize``.

Wall time is the best of ``--repeat`` runs (interleaved); peak memory is the
child's maximum resident set size (``os.wait4``), the largest over the runs.
The figures go to ``docs/performance.md`` ("Command line (issue 6)").

    python benchmarks/bench_cli.py                       # 1M orders, chunks 20k and 200k
    python benchmarks/bench_cli.py --orders 200000 --leaders 20000 --repeat 1
    python benchmarks/bench_cli.py --no-customers        # without the customer column
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PANDAS = """
import sys, numpy as np, pandas as pd
src, dst = sys.argv[1], sys.argv[2]
df = pd.read_csv(src)
out = pd.DataFrame({"order_id": df["order_id"], "leader_id": df["order_id"],
                    "distance_m": np.round(df["lat"].to_numpy() * 10, 1),
                    "outcome": "NEAREST", "reason": "nearest leader with room"})
if "customer_id" in df.columns:
    out["customer_id"] = df["customer_id"]
out["lat"] = df["lat"]
out["lon"] = df["lon"]
out.to_csv(dst, index=False)
"""

PYARROW = """
import sys, numpy as np, pyarrow as pa, pyarrow.compute as pc, pyarrow.csv as pcsv
src, dst = sys.argv[1], sys.argv[2]
t = pcsv.read_csv(src)
n = t.num_rows
cols = {"order_id": t["order_id"], "leader_id": t["order_id"],
        "distance_m": pc.round(pc.multiply(t["lat"], 10), 1),
        "outcome": pa.array(["NEAREST"] * n), "reason": pa.array(["nearest leader with room"] * n)}
if "customer_id" in t.column_names:
    cols["customer_id"] = t["customer_id"]
cols["lat"] = t["lat"]
cols["lon"] = t["lon"]
pcsv.write_csv(pa.table(cols), dst)
"""


def write_event(folder, n_orders, n_leaders, customers):
    """Write the nation event's leader and order CSV files; returns their paths."""
    import pandas as pd

    from lbsdispatch import synth
    ev = synth.nation_event(n_leaders, n_orders, seed=0)
    leaders = Path(folder) / "leaders.csv"
    orders = Path(folder) / "orders.csv"
    pd.DataFrame({"leader_id": ev.leader_ids, "lat": ev.leader_lat, "lon": ev.leader_lon,
                  "capacity": ev.capacity, "priority": ev.priority}).to_csv(leaders, index=False)
    cols = {"order_id": ev.order_ids, "lat": ev.order_lat, "lon": ev.order_lon}
    if customers:
        cols["customer_id"] = ev.customer_ids
    pd.DataFrame(cols).to_csv(orders, index=False)
    return leaders, orders


def run(cmd, env=None):
    """(wall seconds, peak RSS MiB, stdout) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix the runs)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out, err = p.stdout.read().decode(), p.stderr.read().decode()
    p.stdout.close()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} exited with {p.returncode}:\n{err}")
    return wall, ru.ru_maxrss / 1024, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--leaders", type=int, default=100_000)
    ap.add_argument("--chunksize", default="20000,200000",
                    help="comma-separated chunk sizes for assign (default 20000,200000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-customers", action="store_true",
                    help="orders without the customer_id column")
    ap.add_argument("--dir", help="folder for the files (default: a temporary one)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.chunksize.split(",") if s.strip()]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")

    with tempfile.TemporaryDirectory(prefix="lbsd-cli-", dir=args.dir) as tmp:
        t0 = time.perf_counter()
        leaders, orders = write_event(tmp, args.orders, args.leaders, not args.no_customers)
        print(f"[{time.perf_counter() - t0:.0f} s] wrote {orders.stat().st_size / 2**20:.0f} MiB "
              f"of orders, {leaders.stat().st_size / 2**20:.1f} MiB of leaders", file=sys.stderr)
        out = str(Path(tmp) / "out.csv")
        runs = {"pandas read_csv + to_csv": [sys.executable, "-c", PANDAS, str(orders), out]}
        try:
            import pyarrow  # noqa: F401
            runs["pyarrow csv read + write"] = [sys.executable, "-c", PYARROW, str(orders), out]
        except ImportError:
            pass
        for cs in sizes:
            runs[f"lbsdispatch assign --chunksize {cs:,}"] = [
                sys.executable, "-m", "lbsdispatch", "assign", "--leaders", str(leaders),
                "--orders", str(orders), "--out", out, "--chunksize", str(cs)]
        best = {k: float("inf") for k in runs}
        peak = {k: 0.0 for k in runs}
        summary = ""
        for r in range(args.repeat):
            for name, cmd in runs.items():
                wall, rss, text = run(cmd, env)
                best[name] = min(best[name], wall)
                peak[name] = max(peak[name], rss)
                if "assign" in name:
                    summary = text
                print(f"[{time.perf_counter() - t0:.0f} s] round {r + 1}: {name}: {wall:.2f} s, "
                      f"{rss:,.0f} MiB", file=sys.stderr)
    base = best["pandas read_csv + to_csv"]
    print(f"{args.orders:,} orders ({'with' if not args.no_customers else 'without'} customer "
          f"ids), {args.leaders:,} leaders; best of {args.repeat}, {os.cpu_count()} CPUs\n")
    print("| run | wall time | / pandas | peak RSS |\n|---|---:|---:|---:|")
    for name in runs:
        print(f"| {name} | {best[name]:.2f} s | {best[name] / base:.2f}x | {peak[name]:,.0f} MiB |")
    print("\nassign printed:\n" + "\n".join("    " + s for s in summary.strip().splitlines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
