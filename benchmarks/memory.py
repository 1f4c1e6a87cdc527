"""Peak memory of building an index (and running one k=1 batch), per peer.

Each measurement runs in a fresh Python process so that nothing another
peer allocated (or a previous run cached) is counted:

1. the child imports the peer's library and warms it up on a tiny index
   (shared-library code pages and OpenMP threads are touched *before* the
   baseline), then loads the event's arrays from ``.npy`` files written by the
   parent (``np.load`` allocates exactly the arrays, with no temporaries);
2. it resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``,
   Linux) and notes the resident set size (RSS) -- the baseline;
3. it builds the index, reads the high-water mark (peak of the build), runs the
   k=1 batch over every order and reads the high-water mark again.

RSS is used rather than :mod:`tracemalloc` because cKDTree allocates its tree
in C++ and pykdtree with ``malloc``, which tracemalloc does not see.  Where the
high-water mark cannot be reset (not Linux), the fallback is the growth of
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` over the baseline, which is the
same number as long as nothing before the baseline peaked higher (hence
loading the data from files).

Ours is given lat/lon degrees (its conversion to unit vectors is counted); the
kd-tree peers are given ready-made unit vectors (not counted), as in the
timings.  The query results (distance + index arrays) are part of the peak.

Library use::

    from memory import export_event, peak_memory
    with tempfile.TemporaryDirectory() as tmp:
        export_event("city", tmp)
        peak_memory("ckdtree", "city", tmp)   # -> dict, KiB

Command line (prints one JSON line per peer)::

    python benchmarks/memory.py --event city --peers ours,ckdtree,pykdtree
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
MEMORY_PEERS = ("ours", "ckdtree", "pykdtree")
_FILES = ("leader_lat", "leader_lon", "order_lat", "order_lon", "leader_xyz", "order_xyz")


# ------------------------------------------------------------------ parent
def export_event(event: str, directory) -> Path:
    """Write the event's arrays (and the peers' unit vectors) as ``.npy`` files."""
    import numpy as np
    from _bench_common import load
    d = load(event)
    out = Path(directory) / event
    out.mkdir(parents=True, exist_ok=True)
    for name in _FILES:
        path = out / f"{name}.npy"
        if not path.exists():
            np.save(path, getattr(d, name))
    return out


def peak_memory(peer: str, event: str, data_dir, k: int = 1, omp_threads: int | None = None,
                timeout: float = 600) -> dict:
    """Measure ``peer`` on ``event`` in a fresh process; sizes in KiB.

    Returns a dict with ``peak_build_kib`` (build only), ``peak_kib`` (build
    + a k-nearest batch over every order), ``retained_kib`` (RSS growth still
    held at the end: index + results), ``baseline_kib`` and ``method``.
    ``data_dir`` is the directory given to :func:`export_event`.
    ``omp_threads`` sets ``OMP_NUM_THREADS`` for the child (None: unset).
    """
    data = Path(data_dir) / event
    if not (data / "order_xyz.npy").exists():
        export_event(event, data_dir)
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if omp_threads is not None:
        env["OMP_NUM_THREADS"] = str(omp_threads)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--peer", peer,
         "--data", str(data), "--k", str(k)],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=str(HERE))
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {peer}/{event} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(peer=peer, event=event, k=k, omp_num_threads=omp_threads)
    return result


def measure_all(event: str, peers=MEMORY_PEERS, k: int = 1) -> dict:
    """``{peer: peak_memory(...)}`` for ``event``, data exported to a temp dir."""
    with tempfile.TemporaryDirectory(prefix="lbsd-mem-") as tmp:
        export_event(event, tmp)
        return {p: peak_memory(p, event, tmp, k=k) for p in peers}


# ------------------------------------------------------------------- child
def _status_kib() -> dict:
    """VmRSS and VmHWM of this process, KiB (Linux)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0])
    return out


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _libc():
    import ctypes
    import ctypes.util
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> bool:
    """Give free heap memory back to the kernel (glibc), so that the RSS
    baseline holds no free pages that the build could reuse unseen."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def _heap_in_use():
    """Bytes in use in the C heap (glibc ``mallinfo2``: arena + mmapped), or None.

    Exact for memory still held (the index and the results), whatever
    allocated it (numpy, C++ ``new``, ``malloc``); it cannot see a peak.
    """
    import ctypes
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = Mallinfo2
    mi = libc.mallinfo2()
    return int(mi.uordblks + mi.hblkhd)


def _maxrss_kib() -> int:
    import resource
    m = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return m // 1024 if sys.platform == "darwin" else m  # bytes on macOS, KiB on Linux


def _child(peer: str, data: Path, k: int) -> dict:
    import numpy as np
    from _bench_common import Data, batch_query, build

    # Warm up the library on a tiny index so that its code pages, caches and
    # (for pykdtree) OpenMP threads exist before the baseline.
    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(20, 40, 64), rng.uniform(100, 120, 64)
    tiny = Data("warmup", lat, lon, lat[:16].copy(), lon[:16].copy())
    t = build(peer, tiny)
    batch_query(peer, t, tiny, k=k)()
    del t, tiny

    names = _FILES[:4] if peer == "ours" else _FILES
    arrays = {name: np.load(data / f"{name}.npy") for name in names}
    d = Data(data.name, arrays["leader_lat"], arrays["leader_lon"],
             arrays["order_lat"], arrays["order_lon"])
    if peer != "ours":  # ready-made unit vectors, as in the timings
        d.__dict__["leader_xyz"] = arrays["leader_xyz"]
        d.__dict__["order_xyz"] = arrays["order_xyz"]
    del arrays
    gc.collect()
    gc.disable()
    trimmed = _malloc_trim()
    heap0 = _heap_in_use()

    have_proc = os.path.exists("/proc/self/status")
    reset = have_proc and _reset_hwm()
    if reset:
        base = _status_kib()["VmRSS"]
        tree = build(peer, d)
        peak_build = _status_kib()["VmHWM"] - base
        res = batch_query(peer, tree, d, k=k)()
        st = _status_kib()
        peak = st["VmHWM"] - base
        retained = st["VmRSS"] - base
        method = "VmHWM after clear_refs reset, minus VmRSS baseline"
    else:
        base = _maxrss_kib()
        base_rss = _status_kib()["VmRSS"] if have_proc else None
        tree = build(peer, d)
        peak_build = _maxrss_kib() - base
        res = batch_query(peer, tree, d, k=k)()
        peak = _maxrss_kib() - base
        retained = (_status_kib()["VmRSS"] - base_rss) if have_proc else None
        method = "ru_maxrss growth over the baseline"
    heap1 = _heap_in_use()
    heap_kib = None if heap0 is None or heap1 is None else round((heap1 - heap0) / 1024, 1)
    del res, tree
    # The unit vectors a kd-tree peer is handed are part of what it needs: the
    # tree keeps a reference to the leaders' array, and the batch reads the
    # orders' one.  Ours computes them internally, and they count in its peak.
    inputs = 0 if peer == "ours" else (d.leader_xyz.nbytes, d.order_xyz.nbytes)
    return {"peak_build_kib": peak_build, "peak_kib": peak, "retained_kib": retained,
            "input_build_kib": 0 if peer == "ours" else inputs[0] // 1024,
            "input_kib": 0 if peer == "ours" else sum(inputs) // 1024,
            "heap_retained_kib": heap_kib, "baseline_kib": base,
            "method": method + (" (after malloc_trim)" if trimmed else ""),
            "n_leaders": int(d.n_leaders), "n_orders": int(d.n_orders)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--event", default="city", help="city or nation (default city)")
    ap.add_argument("--peers", default=",".join(MEMORY_PEERS),
                    help="comma-separated peers (default %(default)s)")
    ap.add_argument("--k", type=int, default=1, help="neighbours in the batch (default 1)")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.peer, Path(args.data), args.k)))
        return
    for peer, res in measure_all(args.event, args.peers.split(","), k=args.k).items():
        print(json.dumps(res))


if __name__ == "__main__":
    main()
