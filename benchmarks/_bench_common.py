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

Run as a script only as that worker: ``python _bench_common.py pykdtree-worker EVENT``.
"""
from __future__ import annotations

import functools
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EVENTS = ("city", "nation")
#: BallTree (haversine) is far slower than the kd-trees; on the nation event it
#: only queries this many orders and is compared per order.
BALLTREE_SUBSET = 20_000
#: Calls timed one by one for the scalar latency (cKDTree is ~10-40 us a call,
#: so fewer calls are enough for it).
SCALAR_CALLS = {"ours": 20_000, "pykdtree": 20_000, "ckdtree": 2_000}
#: Lines printed at the end of a pytest run (what only lives in extra_info).
SUMMARY: list = []
LABELS = {"ours": "lbsdispatch.LeaderIndex", "ckdtree": "scipy cKDTree",
          "pykdtree": "pykdtree KDTree", "balltree": "sklearn BallTree(haversine)"}


def nation_enabled(config=None) -> bool:
    """Whether the slow nation event was asked for (``--nation`` or the env var)."""
    if config is not None and config.getoption("--nation", default=False):
        return True
    return os.environ.get("LBSDISPATCH_BENCH_NATION", "").strip() not in ("", "0", "false", "no")


# --------------------------------------------------------------------- data
@dataclass
class Data:
    """One event with every peer's input made ready."""

    name: str
    leader_lat: np.ndarray
    leader_lon: np.ndarray
    order_lat: np.ndarray
    order_lon: np.ndarray

    @property
    def n_leaders(self) -> int:
        return self.leader_lat.shape[0]

    @property
    def n_orders(self) -> int:
        return self.order_lat.shape[0]

    @functools.cached_property
    def leader_xyz(self) -> np.ndarray:
        from lbsdispatch.geo import unit_vectors
        return np.ascontiguousarray(unit_vectors(self.leader_lat, self.leader_lon))

    @functools.cached_property
    def order_xyz(self) -> np.ndarray:
        from lbsdispatch.geo import unit_vectors
        return np.ascontiguousarray(unit_vectors(self.order_lat, self.order_lon))

    @functools.cached_property
    def leader_rad(self) -> np.ndarray:
        return np.radians(np.column_stack([self.leader_lat, self.leader_lon]))

    @functools.cached_property
    def order_rad(self) -> np.ndarray:
        return np.radians(np.column_stack([self.order_lat, self.order_lon]))

    def orders(self, n: int | None) -> "Data":
        """The same leaders with only the first ``n`` orders (orders arrive
        shuffled across cities, so a prefix is a fair sample)."""
        if n is None or n >= self.n_orders:
            return self
        return Data(f"{self.name}[:{n}]", self.leader_lat, self.leader_lon,
                    self.order_lat[:n].copy(), self.order_lon[:n].copy())


@functools.lru_cache(maxsize=None)
def load(event: str) -> Data:
    """The event ``city`` or ``nation`` (seed 0), generated once per process."""
    from lbsdispatch import synth
    if event == "city":
        ev = synth.city_event(seed=0)
    elif event == "nation":
        ev = synth.nation_event(seed=0)
    else:
        raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
    as_f8 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return Data(event, as_f8(ev.leader_lat), as_f8(ev.leader_lon),
                as_f8(ev.order_lat), as_f8(ev.order_lon))


def balltree_orders(d: Data) -> int | None:
    """How many orders BallTree queries on this event (None: all of them)."""
    return None if d.n_orders <= BALLTREE_SUBSET else BALLTREE_SUBSET


# -------------------------------------------------------------------- peers
def build(peer: str, d: Data):
    """Build ``peer``'s index on the leaders.

    Ours starts from lat/lon degrees (its conversion is part of the timing);
    the kd-trees get ready-made unit vectors, BallTree ready-made radians.
    All use their default leaf size (16 for the kd-trees, 40 for BallTree).
    """
    if peer == "ours":
        from lbsdispatch import LeaderIndex
        return LeaderIndex(d.leader_lat, d.leader_lon)
    if peer == "ckdtree":
        from scipy.spatial import cKDTree
        return cKDTree(d.leader_xyz)
    if peer == "pykdtree":
        from pykdtree.kdtree import KDTree
        return KDTree(d.leader_xyz)
    if peer == "balltree":
        from sklearn.neighbors import BallTree
        return BallTree(d.leader_rad, metric="haversine")
    raise ValueError(f"unknown peer {peer!r}")


def build_fn(peer: str, d: Data):
    """A no-argument callable building ``peer``'s index (inputs prepared now)."""
    if peer in ("ckdtree", "pykdtree"):
        d.leader_xyz  # noqa: B018 -- prepare outside the timing
    elif peer == "balltree":
        d.leader_rad  # noqa: B018
    return functools.partial(build, peer, d)


def batch_query(peer: str, tree, d: Data, k: int = 1, workers: int = 1):
    """A no-argument callable querying every order of ``d`` against ``tree``.

    ``workers`` applies to ours and cKDTree; pykdtree's threads are whatever
    its OpenMP runtime was started with; BallTree is single threaded.
    """
    if peer == "ours":
        return functools.partial(tree.query, d.order_lat, d.order_lon, k=k, workers=workers)
    if peer == "ckdtree":
        return functools.partial(tree.query, d.order_xyz, k=k, workers=workers)
    if peer == "pykdtree":
        return functools.partial(tree.query, d.order_xyz, k=k)
    if peer == "balltree":
        return functools.partial(tree.query, d.order_rad, k=k)
    raise ValueError(f"unknown peer {peer!r}")


# ------------------------------------------------------------------- timing
def time_loop(fn, number: int) -> float:
    """Seconds per call of ``number`` back-to-back calls, garbage collector off."""
    pc = time.perf_counter
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = pc()
        for _ in range(number):
            fn()
        return (pc() - t0) / number
    finally:
        if gc_was:
            gc.enable()


def calibrate(fn, min_seconds: float = 0.1) -> tuple:
    """``(number, seconds_per_call)``: the loop length making one timed loop
    last at least ``min_seconds`` (like :meth:`timeit.Timer.autorange`), and
    the per-call time of the last calibration loop.  Doubles as a warm-up."""
    number = 1
    while True:
        per_call = time_loop(fn, number)
        if per_call * number >= min_seconds:
            return number, per_call
        number = max(number * 2, int(min_seconds / max(per_call, 1e-9) * 1.1) + 1)


def best_time(fn, repeat: int = 5, min_seconds: float = 0.1) -> float:
    """Seconds per call: the min over ``repeat`` repeats of a timed loop.

    As :mod:`timeit` does, the loop length is chosen so that one repeat lasts
    at least ``min_seconds`` (the calibration also serves as a warm-up), and
    the garbage collector is off while timing.
    """
    number, best = calibrate(fn, min_seconds)
    for _ in range(max(1, repeat)):
        best = min(best, time_loop(fn, number))
    return best


def scalar_points(peer: str, d: Data, n: int):
    """Argument tuples for ``n`` single-point calls, cycling over the orders."""
    m = min(n, d.n_orders)
    if peer == "ours":
        lat, lon = d.order_lat[:m].tolist(), d.order_lon[:m].tolist()
        return [(lat[i % m], lon[i % m]) for i in range(n)]
    if peer == "ckdtree":     # cKDTree takes one point as a (3,) array
        return [(d.order_xyz[i % m],) for i in range(n)]
    if peer == "pykdtree":    # pykdtree needs a (1, 3) array
        return [(d.order_xyz[i % m: i % m + 1],) for i in range(n)]
    raise ValueError(f"no scalar call for {peer!r}")


def scalar_latency_ns(peer: str, tree, d: Data, n: int | None = None, warmup: int = 500) -> dict:
    """Median and p99 of ``n`` single-point calls, each timed on its own.

    The cost of the two ``perf_counter_ns`` calls is inside every sample (it
    is reported as ``timer_overhead_ns`` and not subtracted).
    """
    n = n or SCALAR_CALLS[peer]
    call = tree.query  # ours: the online fast path index.query(lat, lon) -> (float, int)
    args = scalar_points(peer, d, n)
    pc = time.perf_counter_ns
    out = [0] * n
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(min(warmup, n)):
            call(*args[i])
        if len(args[0]) == 2:
            for i in range(n):
                a, b = args[i]
                t0 = pc()
                call(a, b)
                t1 = pc()
                out[i] = t1 - t0
        else:
            for i in range(n):
                (a,) = args[i]
                t0 = pc()
                call(a)
                t1 = pc()
                out[i] = t1 - t0
        over = []
        for _ in range(2000):
            t0 = pc()
            t1 = pc()
            over.append(t1 - t0)
    finally:
        if gc_was:
            gc.enable()
    s = np.asarray(out, dtype=np.float64)
    return {"calls": n, "median_ns": float(np.median(s)), "p99_ns": float(np.percentile(s, 99)),
            "min_ns": float(s.min()), "timer_overhead_ns": float(np.median(over))}


# ------------------------------------------------------------ pykdtree child
def omp_env(threads: int | None) -> dict:
    """The environment for a child: ``OMP_NUM_THREADS=threads``, or unset
    (the OpenMP default, one thread per core) when ``threads`` is None."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


class PykdtreeWorker:
    """pykdtree in a child process started with a given ``OMP_NUM_THREADS``.

    Commands (one JSON reply each):

    * ``run OP`` -- run ``OP`` (``build``, ``q1``, ``q5``) once;
    * ``time OP REPEAT`` -- the child times ``OP`` itself with :func:`best_time`;
    * ``calibrate OP MIN_SECONDS`` / ``loop OP NUMBER`` -- the two halves of
      :func:`best_time`, so a parent can interleave the repeats of several peers;
    * ``scalar N`` -- :func:`scalar_latency_ns` over ``N`` (1, 3) queries;
    * ``noop`` -- nothing, to measure the round trip;
    * ``info`` -- OpenMP threads as seen by threadpoolctl, if installed.
    """

    def __init__(self, event: str, threads: int | None):
        self.event, self.threads = event, threads
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_bench_common.py"), "pykdtree-worker", event],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env=omp_env(threads), cwd=str(HERE))
        self.ready = self._read()  # the child says hello once its data is loaded

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pykdtree worker ({self.event}, OMP_NUM_THREADS="
                               f"{self.threads}) exited with {self.proc.wait()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"pykdtree worker: {reply['error']}")
        return reply

    def ask(self, *cmd) -> dict:
        self.proc.stdin.write(" ".join(str(c) for c in cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, op: str) -> None:
        self.ask("run", op)

    def time(self, op: str, repeat: int = 5) -> float:
        return self.ask("time", op, repeat)["seconds"]

    def scalar(self, n: int = SCALAR_CALLS["pykdtree"]) -> dict:
        return self.ask("scalar", n)

    def roundtrip_s(self, n: int = 200) -> float:
        """Median seconds of a no-op round trip (the IPC part of ``run``)."""
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.ask("noop")
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _openmp_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "openmp"] or None


def _worker_main(event: str) -> None:
    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        d = load(event)
        d.leader_xyz, d.order_xyz  # noqa: B018
        tree = build("pykdtree", d)
        tree.query(d.order_xyz[:64], k=5)  # load OpenMP, start its threads
        ops = {"build": build_fn("pykdtree", d),
               "q1": batch_query("pykdtree", tree, d, k=1),
               "q5": batch_query("pykdtree", tree, d, k=5)}
    except Exception as exc:  # pragma: no cover - reported to the parent
        reply({"error": repr(exc)})
        return
    reply({"ready": True, "n_orders": d.n_orders,
           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
           "openmp_threads": _openmp_threads()})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        try:
            if cmd[0] == "noop":
                reply({})
            elif cmd[0] == "run":
                ops[cmd[1]]()
                reply({})
            elif cmd[0] == "time":
                reply({"seconds": best_time(ops[cmd[1]], repeat=int(cmd[2]))})
            elif cmd[0] == "calibrate":
                number, sec = calibrate(ops[cmd[1]], float(cmd[2]))
                reply({"number": number, "seconds": sec})
            elif cmd[0] == "loop":
                reply({"seconds": time_loop(ops[cmd[1]], int(cmd[2]))})
            elif cmd[0] == "scalar":
                reply(scalar_latency_ns("pykdtree", tree, d, n=int(cmd[1])))
            elif cmd[0] == "info":
                reply({"omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
                       "openmp_threads": _openmp_threads()})
            else:
                reply({"error": f"unknown command {line.strip()!r}"})
        except Exception as exc:
            reply({"error": repr(exc)})


def versions() -> dict:
    """Versions of the libraries compared."""
    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    from importlib.metadata import version
    for name in ("lbsdispatch", "scipy", "scikit-learn", "pykdtree"):
        try:
            out[name] = version(name)
        except Exception:  # pragma: no cover
            out[name] = "?"
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "pykdtree-worker":
        _worker_main(sys.argv[2])
    else:
        sys.exit("usage: python _bench_common.py pykdtree-worker {city,nation}")
