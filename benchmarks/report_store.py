"""Print the table of the persisted city event with identities (issue 4) for
docs/performance.md.

Usage::

    python benchmarks/report_store.py                # 5 runs, best of each phase
    python benchmarks/report_store.py --repeat 9

Each run builds a fresh event file (returning customers known and bound; not
timed), times one ``assign_batch`` of the 20,000 orders with their identifiers
(phases: identity resolution, dispatch, store commit), then writes the very rows
that call wrote into a fresh file with the same schema, one bare
``executemany`` per table in one transaction: the floor.  The floor is measured
in the same run, right after the batch, so background load hits both alike.
Figures are the best over the runs (per column); the ratios are taken within
each run and the median is reported.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import event_with_identities, measure  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    ev, idents, returning, _, n_returning = event_with_identities()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        measure(tmp)                              # warm-up (imports, caches)
        for _ in range(args.repeat):
            gc.collect()
            gc.disable()
            try:
                runs.append(measure(tmp))
            finally:
                gc.enable()
    n = ev.n_orders
    n_ident = sum(v is not None for col in idents.values() for v in col)
    best = {k: min(r[k] for r in runs) for k in ("total", "resolve", "dispatch", "commit",
                                                 "floor")}
    ratio_total = statistics.median(r["total"] / r["floor"] for r in runs)
    ratio_resolve = statistics.median(r["resolve"] / r["floor"] for r in runs)
    rows = runs[0]["rows"]
    print(f"city event: {ev.n_leaders} leaders, {n:,} orders, {n_ident:,} identifiers "
          f"({n_ident / n:.2f} per order), {n_returning:,} orders ({n_returning / n:.0%}) from "
          f"{len(returning):,} returning customers bound before the batch")
    print("rows written by the batch: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
    print("outcomes: " + ", ".join(f"{o.name} {c:,}" for o, c in runs[0]["counts"].items() if c))
    print()
    print("| phase (best of %d runs) | time | ns/order |" % args.repeat)
    print("|---|---:|---:|")
    for label, key in (("identity resolution", "resolve"), ("dispatch", "dispatch"),
                       ("store commit (one transaction)", "commit"),
                       ("whole persisted `assign_batch`", "total"),
                       ("floor: bare `executemany` per table, one transaction", "floor")):
        print(f"| {label} | {best[key] * 1e3:,.1f} ms | {best[key] / n * 1e9:,.0f} |")
    print()
    print("| target (issue 4) | measured (median of per-run ratios) | |")
    print("|---|---:|---|")
    print(f"| whole persisted batch <= 3x the bare insert | {ratio_total:.2f}x | "
          f"{'met' if ratio_total <= 3 else '**not met**'} |")
    print(f"| identity resolution faster than the bare insert | {ratio_resolve:.2f}x of it | "
          f"{'met' if ratio_resolve < 1 else '**not met**'} |")
    print()
    print("per run (ms): " + "; ".join(
        f"total {r['total'] * 1e3:.0f} / resolve {r['resolve'] * 1e3:.0f} / dispatch "
        f"{r['dispatch'] * 1e3:.0f} / commit {r['commit'] * 1e3:.0f} / floor "
        f"{r['floor'] * 1e3:.0f}" for r in runs))


if __name__ == "__main__":
    main()
