"""Shared pieces of the nearest-leader index benchmarks.

Used by ``bench_index.py`` (pytest-benchmark), ``report_index.py`` (plain
script) and ``memory.py`` (peak memory, one fresh process per measurement).

* :func:`load` -- the synthetic events, cached per process, with the inputs
  every peer wants made ready in advance (unit vectors for cKDTree/pykdtree,
  radians for BallTree) so that only *our* coordinate conversion is timed.
* :func:`build` / :func:`batch_query` -- one place that says how each peer is
  built and queried, so the two harnesses measure exactly the same calls.
* :func:`best_time` -- timeit-style "min over repeats of the mean of a loop"
  (:func:`calibrate` + :func:`time_loop`, which the report interleaves across peers).
* :func:`scalar_latency_ns` -- per-call latency (median / p99) of single-point
  queries, timed call by call with ``time.perf_counter_ns``.
* :class:`PykdtreeWorker` -- pykdtree in a child process.  pykdtree runs its
  queries with OpenMP and reads ``OMP_NUM_THREADS`` when its OpenMP runtime is
  loaded, so "pykdtree on one thread" has to be measured in a process started
  with ``OMP_NUM_THREADS=1``.  The worker keeps the data and the tree loaded
  and answers commands over a pipe, so pytest-benchmark can time a call (round
  trip included; the no-op round trip is reported) and the report can ask the
  child to time itself (no IPC in the number).

The shared pieces live in :mod:`lbsdispatch.bench` (the ``lbsdispatch bench``
command uses them too); this module re-exports them for the scripts here and
keeps what only the pytest suites need (:data:`SUMMARY`, :func:`nation_enabled`).
Run as a script only as the pykdtree worker:
``python _bench_common.py pykdtree-worker EVENT`` (the same as
``python -m lbsdispatch.bench pykdtree-worker EVENT``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from lbsdispatch.bench import (  # noqa: F401 -- re-exported for the benchmark scripts
    BALLTREE_SUBSET,
    EVENTS,
    LABELS,
    SCALAR_CALLS,
    Data,
    PykdtreeWorker,
    _openmp_threads,
    _worker_main,
    balltree_orders,
    batch_query,
    best_time,
    build,
    build_fn,
    calibrate,
    load,
    omp_env,
    scalar_latency_ns,
    scalar_points,
    time_loop,
    versions,
)

HERE = Path(__file__).resolve().parent
#: Lines printed at the end of a pytest run (what only lives in extra_info).
SUMMARY: list = []


def nation_enabled(config=None) -> bool:
    """Whether the slow nation event was asked for (``--nation`` or the env var)."""
    if config is not None and config.getoption("--nation", default=False):
        return True
    return os.environ.get("LBSDISPATCH_BENCH_NATION", "").strip() not in ("", "0", "false", "no")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "pykdtree-worker":
        _worker_main(sys.argv[2])
    else:
        sys.exit("usage: python _bench_common.py pykdtree-worker {city,nation}")
