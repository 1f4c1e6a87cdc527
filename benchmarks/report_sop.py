"""Print the SOP outbox figures of docs/performance.md (median of N runs).

    python benchmarks/report_sop.py [--runs 5]

Also times the real store's commit of a persisted batch (bench_store's
``measure``: ``Dispatcher(store=...).assign_batch`` with identities) when it
runs on this checkout, so the enqueue can be set against both floors.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sop  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args(argv)
    runs = []
    real = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.runs):
            runs.append(bench_sop.measure(tmp))
        try:
            import bench_store
            for _ in range(min(a.runs, 3)):
                real.append(bench_store.measure(tmp)["commit"])
        except Exception as e:     # the store is another issue's work: report, go on
            print(f"(real store commit not measured: {type(e).__name__}: {e})")
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    ms = lambda s: f"{s * 1e3:8.1f} ms"  # noqa: E731
    print(f"runs: {a.runs} (median)")
    print(f"store commit, 20,000 assignment rows (bare executemany)  {ms(med['store_commit'])}")
    if real:
        print(f"store commit of assign_batch with identities (real)    "
              f"{ms(statistics.median(real))}")
    print(f"sop.enqueue of the same batch ({int(med['enqueue_rows'])} rows)          "
          f"{ms(med['enqueue'])}  ({med['enqueue'] / med['store_commit']:.2f}x the bare commit)")
    print(f"fold of 20,000 outbox rows into tasks                   {ms(med['fold'])}")
    print(f"run_due, 20,000 no-op hook calls                        {ms(med['run_due'])}  "
          f"({med['calls_per_s']:,.0f} calls/s)")


if __name__ == "__main__":
    main()
