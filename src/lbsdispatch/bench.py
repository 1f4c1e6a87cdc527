"""``lbsdispatch bench``: the event benchmarks against the peers, as ratio tables.

The peers are what a competent user reaches for without lbsdispatch:

* index: scipy's ``cKDTree`` (``workers=1`` and ``-1``) and ``pykdtree`` on 3-D
  unit vectors, scikit-learn's ``BallTree`` with the haversine metric;
* dispatch: ``cKDTree`` k=8 batch then a Python loop that walks each order's
  candidates in distance order and takes the first leader with room
  (:func:`ckdtree_greedy`).

This module holds what both the command and the scripts in ``benchmarks/``
use (those import it): the events with every peer's input made ready
(:func:`load`), one place that says how each peer is built and queried
(:func:`build`, :func:`batch_query`), timeit-style timing (:func:`best_time`,
:func:`calibrate`, :func:`time_loop`), per-call latency
(:func:`scalar_latency_ns`) and :class:`PykdtreeWorker`.

pykdtree runs its queries with OpenMP and reads ``OMP_NUM_THREADS`` when its
runtime loads, so "pykdtree on one thread" is measured in a child process
started with ``OMP_NUM_THREADS=1`` (``python -m lbsdispatch.bench
pykdtree-worker EVENT``), which times itself: no IPC in its numbers.

Needs ``pip install "lbsdispatch[bench]"`` (scipy, scikit-learn, pykdtree).
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

import numpy as np

EVENTS = ("city", "nation")
#: BallTree (haversine) is far slower than the kd-trees; on the nation event it
#: only queries this many orders and is compared per order.
BALLTREE_SUBSET = 20_000
#: Calls timed one by one for the scalar latency (cKDTree is ~10-40 us a call,
#: so fewer calls are enough for it).
SCALAR_CALLS = {"ours": 20_000, "pykdtree": 20_000, "ckdtree": 2_000}
LABELS = {"ours": "lbsdispatch.LeaderIndex", "ckdtree": "scipy cKDTree",
          "pykdtree": "pykdtree KDTree", "balltree": "sklearn BallTree(haversine)"}


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
        from .geo import unit_vectors
        return np.ascontiguousarray(unit_vectors(self.leader_lat, self.leader_lon))

    @functools.cached_property
    def order_xyz(self) -> np.ndarray:
        from .geo import unit_vectors
        return np.ascontiguousarray(unit_vectors(self.order_lat, self.order_lon))

    @functools.cached_property
    def leader_rad(self) -> np.ndarray:
        return np.radians(np.column_stack([self.leader_lat, self.leader_lon]))

    @functools.cached_property
    def order_rad(self) -> np.ndarray:
        return np.radians(np.column_stack([self.order_lat, self.order_lon]))

    def orders(self, n: int | None) -> Data:
        """The same leaders with only the first ``n`` orders (orders arrive
        shuffled across cities, so a prefix is a fair sample)."""
        if n is None or n >= self.n_orders:
            return self
        return Data(f"{self.name}[:{n}]", self.leader_lat, self.leader_lon,
                    self.order_lat[:n].copy(), self.order_lon[:n].copy())


@functools.cache
def load(event: str) -> Data:
    """The event ``city`` or ``nation`` (seed 0), generated once per process."""
    from . import synth
    if event == "city":
        ev = synth.city_event(seed=0)
    elif event == "nation":
        ev = synth.nation_event(seed=0)
    else:
        raise ValueError(f"unknown event {event!r}; expected one of {EVENTS}")
    as_f8 = lambda a: np.ascontiguousarray(a, dtype=np.float64)
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
        from .index import LeaderIndex
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
            [sys.executable, "-m", "lbsdispatch.bench", "pykdtree-worker", event],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            env=omp_env(threads))
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
    except Exception as exc:  # noqa: BLE001  # pragma: no cover - reported to the parent
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
        except Exception as exc:  # noqa: BLE001 -- any failure goes back to the parent
            reply({"error": repr(exc)})


def versions() -> dict:
    """Versions of the libraries compared."""
    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    from importlib.metadata import version
    for name in ("lbsdispatch", "scipy", "scikit-learn", "pykdtree"):
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001  # pragma: no cover
            out[name] = "?"
    return out



# ------------------------------------------------------------------ dispatch peer
@functools.cache
def dispatch_event(name: str, capacity_ratio: float = 1.15):
    """The synthetic event ``city`` or ``nation`` (seed 0) with the given capacity."""
    from . import synth
    if name == "city":
        return synth.city_event(seed=0, capacity_ratio=capacity_ratio)
    if name == "nation":
        return synth.nation_event(seed=0, capacity_ratio=capacity_ratio)
    raise ValueError(f"unknown event {name!r}")


@functools.cache
def event_unit_vectors(name: str):
    """(leader, order) unit vectors of an event: the peer's ready-made input."""
    ev = dispatch_event(name)
    from . import geo
    return (geo.unit_vectors(ev.leader_lat, ev.leader_lon),
            geo.unit_vectors(ev.order_lat, ev.order_lon))


def ours_assign_batch(ev, rules=None):
    """A callable that builds a fresh Dispatcher (not timed) and times assign_batch."""
    from . import Dispatcher, Rules

    def make():
        return Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                          priority=ev.priority, rules=rules or Rules())
    return make


def ckdtree_greedy(tree, order_xyz, capacity, k=8):
    """Greedy capacitated nearest assignment with cKDTree + a Python loop.

    Returns the leader index of each order (-1 when every leader is full).
    """
    n = tree.n
    _, idx = tree.query(order_xyz, k=min(k, n))
    idx = idx.reshape(len(order_xyz), -1).tolist()
    room = capacity.tolist()
    out = [-1] * len(order_xyz)
    for i, cand in enumerate(idx):
        for j in cand:
            if j < n and room[j] > 0:
                room[j] -= 1
                out[i] = j
                break
        else:
            kk = 2 * k
            while True:
                _, more = tree.query(order_xyz[i], k=min(kk, n))
                hit = next((j for j in np.atleast_1d(more).tolist()
                            if j < n and room[j] > 0), -1)
                if hit >= 0:
                    room[hit] -= 1
                    out[i] = hit
                    break
                if kk >= n:
                    break
                kk *= 2
    return out


# ------------------------------------------------------------------ the command
PEER_MODULES = (("scipy.spatial", "scipy"), ("sklearn.neighbors", "scikit-learn"),
                ("pykdtree.kdtree", "pykdtree"))


def missing_peers():
    """Names of the peer libraries that cannot be imported."""
    import importlib

    out = []
    for mod, name in PEER_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError:
            out.append(name)
    return out


class InProcess:
    """A callable timed in this process."""

    def __init__(self, fn):
        self.fn = fn

    def calibrate(self, min_time):
        return calibrate(self.fn, min_time)

    def loop(self, number):
        return time_loop(self.fn, number)


class InChild:
    """An operation of a pykdtree child process, timed by the child itself."""

    def __init__(self, worker, op):
        self.worker, self.op = worker, op

    def calibrate(self, min_time):
        r = self.worker.ask("calibrate", self.op, min_time)
        return r["number"], r["seconds"]

    def loop(self, number):
        return self.worker.ask("loop", self.op, number)["seconds"]


def interleaved(timers, repeat, min_time):
    """``{key: seconds per call}``: min over ``repeat`` rounds, each round timing
    every peer once in a rotating order (background load hits all alike)."""
    number, best = {}, {}
    for key, t in timers.items():
        number[key], best[key] = t.calibrate(min_time)
    keys = list(timers)
    for r in range(max(1, repeat)):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            best[key] = min(best[key], timers[key].loop(number[key]))
    return best


def _fmt(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e9:.0f} ns"


def _table(out, title, cols, rows):
    """Print a markdown table: each row (label, {col: seconds}); ratios peer / ours."""
    peers = [c for c in cols if c != "ours"]
    head = ["operation"] + list(cols) + [f"{c} / ours" for c in peers]
    out.write(f"\n{title}\n\n| " + " | ".join(head) + " |\n|"
              + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|\n")
    for label, vals in rows:
        cells = [label] + [_fmt(vals[c]) if c in vals else "-" for c in cols]
        o = vals.get("ours")
        cells += [f"{vals[c] / o:.2f}x" if (c in vals and o) else "-" for c in peers]
        out.write("| " + " | ".join(cells) + " |\n")


def index_rows(event, repeat, min_time, log=None):
    """The index comparison: rows (label, {column: seconds})."""
    d = load(event)
    d.leader_xyz, d.order_xyz, d.leader_rad, d.order_rad  # noqa: B018 -- peers' inputs
    pk1 = PykdtreeWorker(event, 1)
    pkall = PykdtreeWorker(event, None)
    rows = []
    try:
        if log:
            log("build")
        rows.append(("build", interleaved({
            "ours": InProcess(build_fn("ours", d)), "cKDTree w=1": InProcess(
                build_fn("ckdtree", d)), "pykdtree 1 thread": InChild(pk1, "build"),
            "BallTree": InProcess(build_fn("balltree", d))}, repeat, min_time)))
        trees = {p: build(p, d) for p in ("ours", "ckdtree", "balltree")}
        sub = d.orders(balltree_orders(d))
        for k in (1, 5):
            if log:
                log(f"k={k} batch")
            got = interleaved({
                "ours": InProcess(batch_query("ours", trees["ours"], d, k=k, workers=1)),
                "cKDTree w=1": InProcess(batch_query("ckdtree", trees["ckdtree"], d, k=k,
                                                      workers=1)),
                "pykdtree 1 thread": InChild(pk1, f"q{k}"),
                "BallTree": InProcess(batch_query("balltree", trees["balltree"], sub, k=k))},
                repeat, min_time)
            # BallTree is slow: on a large event it queries a prefix, scaled per order
            got["BallTree"] *= d.n_orders / sub.n_orders
            rows.append((f"k={k} batch, 1 thread", got))
        if log:
            log("all cores")
        rows.append(("k=1 batch, all cores", interleaved({
            "ours": InProcess(batch_query("ours", trees["ours"], d, k=1, workers=-1)),
            "cKDTree w=-1": InProcess(batch_query("ckdtree", trees["ckdtree"], d, k=1,
                                                   workers=-1)),
            "pykdtree default": InChild(pkall, "q1")}, repeat, min_time)))
        if log:
            log("single queries")
        n = max(500, int(2000 * min_time / 0.1))
        rows.append(("single query (median)", {
            "ours": scalar_latency_ns("ours", trees["ours"], d, n=n * 5)["median_ns"] * 1e-9,
            "cKDTree w=1": scalar_latency_ns("ckdtree", trees["ckdtree"], d,
                                             n=n)["median_ns"] * 1e-9,
            "pykdtree 1 thread": pk1.scalar(n * 5)["median_ns"] * 1e-9}))
    finally:
        pk1.close()
        pkall.close()
    return rows


def dispatch_rows(event, repeat, log=None):
    """The dispatch comparison: rows (label, {column: seconds})."""
    from scipy.spatial import cKDTree
    ev = dispatch_event(event)
    lx, ox = event_unit_vectors(event)
    tree = cKDTree(lx)
    make = ours_assign_batch(ev)

    def once(fn, setup):
        args = setup()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn(*args)
            return time.perf_counter() - t0
        finally:
            gc.enable()

    ours, peer = [], []
    for _ in range(max(1, repeat)):      # interleaved, best of each
        if log:
            log("assign_batch / cKDTree + Python loop")
        ours.append(once(lambda d: d.assign_batch(ev.order_lat, ev.order_lon),
                         lambda: (make(),)))
        peer.append(once(ckdtree_greedy, lambda: (tree, ox, ev.capacity)))
    return [(f"assign_batch, capacity 1.15x ({ev.n_orders:,} orders)",
             {"ours": min(ours), "cKDTree k=8 + Python loop": min(peer)})]


def run(event="city", repeat=3, out=None, min_time=0.1):
    """Print the index and dispatch tables of ``event``; returns the exit code.

    Raises
    ------
    lbsdispatch.dumps.DumpError
        When a peer library is missing (naming the extra to install).
    """
    from .dumps import DumpError
    out = sys.stdout if out is None else out
    miss = missing_peers()
    if miss:
        raise DumpError(f"lbsdispatch bench compares against {', '.join(miss)}, which "
                        f"{'is' if len(miss) == 1 else 'are'} not installed: "
                        f'pip install "lbsdispatch[bench]"')
    t0 = time.perf_counter()

    def log(msg):
        sys.stderr.write(f"[{time.perf_counter() - t0:6.1f} s] {event}: {msg}\n")
        sys.stderr.flush()

    d = load(event)
    v = versions()
    out.write(f"lbsdispatch bench: {event} event, {d.n_leaders:,} leaders, "
              f"{d.n_orders:,} orders; {os.cpu_count()} CPUs; "
              + ", ".join(f"{k} {val}" for k, val in v.items()) + "\n"
              f"best of {repeat} interleaved repeats; ratio columns are peer / ours "
              f"(> 1: ours is faster)\n")
    cols = ["ours", "cKDTree w=1", "cKDTree w=-1", "pykdtree 1 thread", "pykdtree default",
            "BallTree"]
    _table(out, "Nearest-leader index (ours from lat/lon degrees, peers from ready-made "
                "unit vectors / radians)", cols, index_rows(event, repeat, min_time, log))
    if balltree_orders(d) is not None:
        out.write(f"\nBallTree queried the first {balltree_orders(d):,} orders, scaled per "
                  f"order.\n")
    _table(out, "Dispatch under capacity (greedy, in order)",
           ["ours", "cKDTree k=8 + Python loop"], dispatch_rows(event, repeat, log))
    out.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "pykdtree-worker":
        _worker_main(sys.argv[2])
    else:
        sys.exit("usage: python -m lbsdispatch.bench pykdtree-worker {city,nation}")
