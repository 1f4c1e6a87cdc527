"""The ``lbsdispatch`` command line."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["assign", "bench", "build_parser", "main", "report"]


def build_parser():
    """The argument parser of ``lbsdispatch`` (also used to document the CLI)."""
    p = argparse.ArgumentParser(
        prog="lbsdispatch",
        description="Assign livestream orders to community group-buying leaders by location.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="dispatch a synthetic city event and print a summary",
                       description="Build a synthetic city event (a Hangzhou-sized city) "
                                   "with buyers' identifiers from several channels and last "
                                   "month's customers, dispatch every order against a SQLite "
                                   "event store, run the first hour of the default SOP "
                                   "through a host plugin, and print what happened, with "
                                   "timings and where the files are.")
    d.add_argument("--leaders", type=int, default=800, help="number of leaders (default 800)")
    d.add_argument("--orders", type=int, default=20_000, help="number of orders (default 20000)")
    d.add_argument("--capacity-ratio", type=float, default=1.15,
                   help="total capacity as a multiple of the orders (default 1.15)")
    d.add_argument("--max-distance", type=float, default=5_000.0,
                   help="global radius in metres (default 5000)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--dir", metavar="DIR",
                   help="folder for the event store and the report (default: a new "
                        "temporary folder)")
    _assign_parser(sub)
    _report_parser(sub)
    _bench_parser(sub)
    from .sop import add_sop_parser
    add_sop_parser(sub)
    return p


def _ms(t0):
    return (time.perf_counter() - t0) * 1e3


def demo(args, out=None):
    """Run the demo (see :mod:`lbsdispatch._demo`) to ``out`` (default stdout)."""
    from ._demo import run
    return run(args, sys.stdout if out is None else out)


# ------------------------------------------------------------------------------------------
# assign: a dump of orders against a leader table
# ------------------------------------------------------------------------------------------
_EXIT_OK, _EXIT_REJECTS, _EXIT_USAGE = 0, 1, 2


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _metres(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of metres, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 metres, got {text!r}")
    return v


def _workers(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if v == 0 or v < -1:
        raise argparse.ArgumentTypeError(f"must be >= 1, or -1 for every core, got {text!r}")
    return v


def _assign_parser(sub):
    a = sub.add_parser(
        "assign", help="dispatch a file of orders to a file of leaders",
        description="Read a leader table and an order dump (CSV or Parquet), dispatch every "
                    "order under the rules given, and write one result row per order plus a "
                    "rejects file for rows that cannot be read.  Rows in = rows out + "
                    "rejects, printed at the end.  Exit code 0: every row dispatched "
                    "(assigned or with its outcome); 1: some rows rejected; 2: a usage or "
                    "input-file error.",
        epilog="See docs/cli.md for the file formats and a worked example.")
    f = a.add_argument_group("files")
    f.add_argument("--leaders", required=True, metavar="L", help="leader table (CSV or Parquet)")
    f.add_argument("--orders", required=True, metavar="O", help="order dump (CSV or Parquet)")
    f.add_argument("--out", required=True, metavar="R", help="result file to write")
    f.add_argument("--rejects", metavar="F",
                   help="rejects file (CSV; default: <R without extension>.rejects.csv)")
    f.add_argument("--format", choices=("csv", "parquet"),
                   help="format of the result (default: from R's extension; .parquet/.pq "
                        "is Parquet, anything else CSV); inputs go by their own extensions")
    f.add_argument("--bindings", metavar="FILE",
                   help="customer bindings: a file with the customer and leader id columns")
    f.add_argument("--store", metavar="PATH",
                   help="persist the event to this SQLite file (a new file, or see --resume)")
    f.add_argument("--resume", action="store_true",
                   help="with --store: continue the event already in PATH after an "
                        "interrupted run; orders it holds keep their recorded answer and "
                        "take no slot; its leaders, rules and bindings are used")
    f.add_argument("--report", metavar="PNG", help="also draw the report map to this PNG")
    f.add_argument("--encoding", default="auto",
                   help="encoding of CSV inputs: auto (default: UTF-8 with or without BOM, "
                        "else GB18030/GBK), or any Python codec name (utf-8, gbk, ...)")
    f.add_argument("--chunksize", type=_positive_int, default=100_000,
                   help="order rows read, dispatched and written at a time (default 100000)")
    c = a.add_argument_group("columns of the order file")
    c.add_argument("--order-id-col", default="order_id", metavar="NAME",
                   help="order id (default order_id)")
    c.add_argument("--lat-col", default="lat", metavar="NAME",
                   help="latitude, in both files (default lat)")
    c.add_argument("--lon-col", default="lon", metavar="NAME",
                   help="longitude, in both files (default lon)")
    c.add_argument("--customer-col", default="customer_id", metavar="NAME",
                   help="customer id, used if present; also the bindings file's column "
                        "(default customer_id)")
    c.add_argument("--chosen-col", default="chosen_leader", metavar="NAME",
                   help="the leader the buyer chose, used if present (default chosen_leader)")
    c.add_argument("--crs-col", metavar="NAME",
                   help="per-row coordinate system column (in either file, where present)")
    c = a.add_argument_group("columns of the leader file")
    c.add_argument("--leader-id-col", default="leader_id", metavar="NAME",
                   help="leader id; also the bindings file's column (default leader_id)")
    c.add_argument("--capacity-col", default="capacity", metavar="NAME",
                   help="orders each leader can take, used if present (default capacity)")
    c.add_argument("--radius-col", default="radius_m", metavar="NAME",
                   help="leader's own service radius in metres, if present (default radius_m)")
    c.add_argument("--priority-col", default="priority", metavar="NAME",
                   help="tie priority, higher wins, if present (default priority)")
    c.add_argument("--active-col", default="active", metavar="NAME",
                   help="yes/no: the leader takes orders, if present (default active)")
    r = a.add_argument_group("rules")
    r.add_argument("--max-distance", type=_metres, metavar="M",
                   help="no order goes to a leader farther than M metres (default: no limit)")
    r.add_argument("--tie-tolerance", type=_metres, default=0.0, metavar="M",
                   help="leaders within M metres of the nearest are tied (default 0)")
    r.add_argument("--capacity-mode", choices=("strict", "unlimited"), default="strict",
                   help="strict: never above capacity (default); unlimited: ignore capacities")
    r.add_argument("--mode", choices=("greedy", "optimal"), default="greedy",
                   help="greedy: first come, first served, chunk by chunk (default); "
                        "optimal: one min-cost-flow plan for the whole dump (most orders "
                        "placed, then least distance; the dump is read at once)")
    r.add_argument("--objective", choices=("total", "bottleneck"), default="total",
                   help="optimal mode: least total distance (default), or least worst "
                        "distance first")
    r.add_argument("--workers", type=_workers, default=1, metavar="N",
                   help="greedy mode: threads for large events (-1: every core; default 1); "
                        "the answers are the same for every N")
    r.add_argument("--compare", action="store_true",
                   help="with --mode optimal: also run greedy on the same orders (in memory) "
                        "and print both side by side")
    g = a.add_argument_group("coordinate systems",
                             "wgs84 (GPS, mini-program location), gcj02 (AMap, Tencent, WeChat "
                             "map picker), bd09 (Baidu) or EPSG:nnnn; everything is converted "
                             "to WGS-84 before dispatch and written in WGS-84")
    g.add_argument("--crs", default="wgs84", help="system of both files (default wgs84)")
    g.add_argument("--orders-crs", help="system of the order file (default: --crs)")
    g.add_argument("--leaders-crs", help="system of the leader file (default: --crs)")
    a.add_argument("--quiet", action="store_true",
                   help="no progress bar and no summary (warnings and errors still print)")


def _check_system(name, option):
    from . import crs as _crs
    from .dumps import DumpError
    try:
        _crs._resolve(name, option)
    except ValueError as e:
        raise DumpError(str(e)) from None
    return name


def _dispatcher(args, leaders, bindings):
    """The Dispatcher of the run (with a store when asked and available)."""
    import inspect

    from . import Dispatcher, Rules
    from .dumps import DumpError
    rules = Rules(max_distance_m=args.max_distance, tie_tolerance_m=args.tie_tolerance,
                  capacity=args.capacity_mode)
    kw = {}
    if args.resume and not args.store:
        raise DumpError("--resume continues the event of a --store file: give --store PATH")
    if args.store:
        if "store" not in inspect.signature(Dispatcher).parameters:
            raise DumpError("--store needs a version of lbsdispatch whose Dispatcher takes "
                            "store= (this one does not)")
        if args.resume:
            return _resume(args, leaders, rules)
        kw["store"] = args.store
    else:
        # the file layer finds repeated order ids itself: no order log, so the
        # memory of a dump is the chunk's, the loads and the bindings
        kw["keep_orders"] = False
    try:
        return Dispatcher(leaders.ids, leaders.lat, leaders.lon, capacity=leaders.capacity,
                          radius_m=leaders.radius_m, priority=leaders.priority,
                          active=leaders.active, bindings=bindings, rules=rules, **kw)
    except ValueError as e:
        raise DumpError(f"cannot set up the dispatch: {e}") from None


def _resume(args, leaders, rules):
    """The dispatcher of the event in ``args.store``, checked against the leader file."""
    from pathlib import Path

    from . import Dispatcher
    from .dumps import DumpError
    if not Path(args.store).is_file():
        raise DumpError(f"--resume: {args.store!r} does not exist (leave out --resume to "
                        f"start a new event there)")
    try:
        disp = Dispatcher.open(args.store)
    except ValueError as e:
        raise DumpError(f"--resume: cannot open the event in {args.store!r}: {e}") from None
    stored = sorted(str(v) for v in disp.leader_ids.tolist())
    if stored != sorted(leaders.ids.tolist()):
        disp.close()
        raise DumpError(f"--resume: the leader file does not match the event in "
                        f"{args.store!r} ({len(leaders)} leaders in the file, {len(stored)} in "
                        f"the store, or different ids): is it the same event?")
    if disp.rules != rules:
        sys.stderr.write(f"lbsdispatch assign: warning: --resume keeps the stored rules "
                         f"{disp.rules}; the options given ({rules}) are not used\n")
    return disp


class _Progress:
    """A tqdm bar on stderr when it is a terminal (and tqdm is installed); else nothing."""

    def __init__(self, total, unit, quiet):
        self.bar = None
        if quiet or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        kw = {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if unit == "bytes" \
            else {"unit": " rows"}
        self.bar = tqdm(total=total, file=sys.stderr, desc="assign", leave=False, **kw)

    def __call__(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def assign(args, out=None):
    """Run ``lbsdispatch assign``; returns the exit code (see :func:`main`)."""
    from pathlib import Path

    from . import Outcome
    from .crs import detect_offset
    from .dumps import (
        DumpError,
        LeaderColumns,
        OrderColumns,
        OrderReader,
        RejectWriter,
        ResultWriter,
        detect_format,
        header,
        read_bindings,
        read_leaders,
        read_lines,
        require,
    )
    out = sys.stdout if out is None else out
    err = sys.stderr
    require("pandas", "cli", "lbsdispatch assign")
    orders_crs = _check_system(args.orders_crs or args.crs, "--orders-crs")
    leaders_crs = _check_system(args.leaders_crs or args.crs, "--leaders-crs")
    out_fmt = detect_format(args.out, args.format)
    if out_fmt == "parquet":
        require("pyarrow", "parquet", "writing Parquet files")
    rejects_path = Path(args.rejects) if args.rejects else \
        Path(args.out).with_suffix("").with_name(Path(args.out).stem + ".rejects.csv")
    if args.report:
        require("matplotlib", "report", "--report")
    for p, what in ((args.out, "--out"), (rejects_path, "--rejects")):
        if Path(p).resolve() in (Path(args.orders).resolve(), Path(args.leaders).resolve()):
            raise DumpError(f"{what} {str(p)!r} would overwrite an input file")

    t0 = time.perf_counter()
    # --crs-col names a column of either file (or both); the rows of a file
    # without it are in that file's --*-crs
    crs_in = {}
    if args.crs_col:
        for what, path in (("leaders", args.leaders), ("orders", args.orders)):
            crs_in[what] = args.crs_col in header(path, encoding=args.encoding)
        if not any(crs_in.values()):
            raise DumpError(f"--crs-col {args.crs_col!r}: neither the leaders nor the orders "
                            f"file has this column")
    lcols = LeaderColumns(args.leader_id_col, args.lat_col, args.lon_col, args.capacity_col,
                          args.radius_col, args.priority_col, args.active_col,
                          args.crs_col if crs_in.get("leaders") else None)
    leaders = read_leaders(args.leaders, lcols, encoding=args.encoding, crs=leaders_crs)
    bindings = None
    if args.bindings:
        bindings = read_bindings(args.bindings, args.customer_col, args.leader_id_col,
                                 encoding=args.encoding)
    disp = _dispatcher(args, leaders, bindings)
    lid_text = np.array([str(v) for v in disp.leader_ids.tolist()] + [None], dtype=object)
    if len(leaders) == 0:
        err.write(f"lbsdispatch assign: warning: the leaders file {args.leaders!r} has no "
                  f"leaders: every order will be OUT_OF_RANGE\n")

    ocols = OrderColumns(args.order_id_col, args.lat_col, args.lon_col, args.customer_col,
                         args.chosen_col, args.crs_col if crs_in.get("orders") else None)
    if args.compare and args.mode != "optimal":
        raise DumpError("--compare compares greedy with --mode optimal: give --mode optimal")
    # optimal mode plans the whole dump at once: one chunk
    reader = OrderReader(args.orders, ocols, encoding=args.encoding, crs=orders_crs,
                         chunksize=args.chunksize if args.mode == "greedy" else 2**40)
    twin = _dispatcher(_memory_only(args), leaders, bindings) if args.compare else None
    side = {"greedy": [], "optimal": []}
    present = reader.columns(args.encoding)
    with_customer = ocols.customer in present
    with_chosen = ocols.chosen in present

    writer = ResultWriter(args.out, out_fmt, with_customer)
    rejects = RejectWriter(rejects_path, reader.unit, present)
    unit = reader.unit
    progress = _Progress(reader.size if reader.fmt == "csv" else reader.total_rows,
                         "bytes" if reader.fmt == "csv" else "rows", args.quiet)
    n_in = n_blank = 0
    counts = np.zeros(len(Outcome), dtype=np.int64)
    bad_lines = []
    checked = False
    pass_ids = bool(args.store)        # a store keeps the real order ids
    try:
        for ch in reader.chunks(progress):
            n_in += len(ch) + len(ch.bad_lines)
            n_blank += ch.n_blank
            bad_lines.extend(ch.bad_lines)
            ok = ch.ok
            rows = np.flatnonzero(ok)
            if not checked and rows.size:
                checked = True
                _offset_warning(detect_offset, ch.lat[rows], ch.lon[rows], leaders, err)
            batch = dict(order_ids=ch.order_id[rows] if pass_ids else None,
                         customer_ids=ch.customer[rows] if with_customer else None,
                         chosen_leaders=ch.chosen[rows] if with_chosen else None)
            res = disp.assign_batch(ch.lat[rows], ch.lon[rows], mode=args.mode,
                                    objective=args.objective, workers=args.workers, **batch)
            if twin is not None:
                g = twin.assign_batch(ch.lat[rows], ch.lon[rows], **batch)
                side["greedy"].append(g.distance_m[g.leader_index >= 0])
                side["optimal"].append(res.distance_m[res.leader_index >= 0])
            outcome = res.outcome
            inv = outcome == Outcome.INVALID
            if inv.any():          # the dispatcher refused a row the file layer let through
                reason = res.reason
                for k in np.flatnonzero(inv).tolist():
                    ch.ok[rows[k]] = False
                    ch.reason[rows[k]] = reason[k]
                keep = ~inv
                rows = rows[keep]
            else:
                keep = slice(None)
            counts += np.bincount(outcome[keep].astype(np.intp), minlength=len(Outcome))
            # leader ids as text from the positions (-1: none); the dispatcher's own
            # leader_id column is int64 when it has no leaders at all
            leader_id = lid_text[res.leader_index[keep]]
            names = np.array([o.name for o in Outcome], dtype=object)
            cols = {"order_id": ch.order_id[rows], "leader_id": leader_id,
                    "distance_m": np.round(res.distance_m[keep], 1),
                    "outcome": names[outcome[keep].astype(np.intp)], "reason": res.reason[keep],
                    "lat": ch.lat[rows], "lon": ch.lon[rows]}
            if with_customer:
                cols["customer_id"] = ch.customer[rows]
            writer.write(cols)
            for k in np.flatnonzero(~ch.ok).tolist():
                rejects.write(int(ch.pos[k]), ch.reason[k],
                              {c: ch.raw[c][k] for c in present})
        if bad_lines:
            text = read_lines(args.orders, [b for b, _, _ in bad_lines], reader.encoding)
            for b, why, _ in bad_lines:
                rejects.write(b, why, None, text.get(b))
    finally:
        progress.close()
        writer.close()
        rejects.close()
        if args.store:
            disp.close()
    n_out, n_rej = writer.rows, rejects.rows
    if n_in != n_out + n_rej:       # pragma: no cover - a bug, never a silent loss
        err.write(f"lbsdispatch assign: internal error: {n_in} rows in but {n_out} out + "
                  f"{n_rej} rejected\n")
        return _EXIT_USAGE
    if not args.quiet:
        w = out.write
        w(f"rows in {n_in:,} = out {n_out:,} + rejects {n_rej:,}"
          + (f"  ({n_blank:,} blank {'line' if unit == 'line' else 'row'}"
             f"{'' if n_blank == 1 else 's'} skipped)" if n_blank else "") + f"  [{time.perf_counter() - t0:.1f} s]\n")
        for o in Outcome:
            if counts[o]:
                w(f"  {o.name:<13}{int(counts[o]):>10,}  {100 * counts[o] / max(n_out, 1):5.1f}%\n")
        if twin is not None:
            w(_compare_table(side))
        w(f"result:  {args.out}\n")
        w(f"rejects: {rejects_path}" + ("" if n_rej else " (empty)") + "\n")
    if args.report:
        from .report import LeaderLoad, load_result, render_png
        res = load_result(args.out)
        ll = LeaderLoad(leaders.ids, leaders.lat, leaders.lon, disp.loads(),
                        leaders.capacity)
        render_png(res, ll, args.report)
        if not args.quiet:
            out.write(f"report:  {args.report}\n")
    return _EXIT_REJECTS if n_rej else _EXIT_OK


def _memory_only(args):
    """The run's options without the store (for the greedy twin of --compare)."""
    twin = argparse.Namespace(**vars(args))
    twin.store = None
    twin.resume = False
    return twin


def _compare_table(side):
    """Greedy and optimal side by side: orders assigned, total and p95 distance."""
    rows = ["greedy vs optimal (same orders, same leaders):\n",
            f"  {'':<10}{'assigned':>10}{'total km':>12}{'p95 m':>9}{'worst m':>10}\n"]
    for name in ("greedy", "optimal"):
        d = np.concatenate(side[name]) if side[name] else np.zeros(0)
        p95 = np.percentile(d, 95) if d.size else float("nan")
        worst = d.max() if d.size else float("nan")
        rows.append(f"  {name:<10}{d.size:>10,}{d.sum() / 1e3:>12,.1f}{p95:>9,.0f}"
                    f"{worst:>10,.0f}\n")
    return "".join(rows)


def _offset_warning(detect_offset, lat, lon, leaders, err):
    """Print detect_offset's warning when orders sit systematically off their leaders."""
    active = leaders.active if leaders.active is not None else np.ones(len(leaders), bool)
    if not active.any():
        return
    check = detect_offset(lat, lon, leaders.lat[active], leaders.lon[active])
    if check.suspect:
        err.write(f"lbsdispatch assign: warning: {check.message}; if so, rerun with "
                  f"--orders-crs {check.likely_src} --leaders-crs {check.likely_dst} "
                  f"(or fix the export)\n")


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------
def _report_parser(sub):
    r = sub.add_parser(
        "report", help="summarise a result file (terminal, PNG, HTML)",
        description="Summarise a result file of `lbsdispatch assign`: outcomes and reasons, "
                    "distance percentiles, leader loads, spills, full and empty leaders, "
                    "and where out-of-range orders cluster (where to recruit a leader).  "
                    "With --png/--html, a map.")
    r.add_argument("result", metavar="R", help="result file of lbsdispatch assign")
    r.add_argument("--leaders", metavar="L",
                   help="the leader table (for capacities, empty leaders and the map's leaders)")
    r.add_argument("--png", metavar="OUT", help="write the map to this PNG")
    r.add_argument("--html", metavar="OUT", help="write summary + map as one HTML file")
    r.add_argument("--cluster-m", type=_metres, default=2_000.0, metavar="M",
                   help="grid cell of the out-of-range clusters, metres (default 2000)")
    r.add_argument("--leader-id-col", default="leader_id", metavar="NAME")
    r.add_argument("--lat-col", default="lat", metavar="NAME")
    r.add_argument("--lon-col", default="lon", metavar="NAME")
    r.add_argument("--capacity-col", default="capacity", metavar="NAME")
    r.add_argument("--active-col", default="active", metavar="NAME")
    r.add_argument("--crs", default="wgs84", help="system of the leader file (default wgs84)")
    r.add_argument("--encoding", default="auto", help="encoding of CSV files (default auto)")


def report(args, out=None):
    """Run ``lbsdispatch report``; returns the exit code."""
    from pathlib import Path

    from .dumps import LeaderColumns, read_leaders, require
    from .report import LeaderLoad, load_result, render_html, render_png, summarise
    out = sys.stdout if out is None else out
    require("pandas", "cli", "lbsdispatch report")
    if args.png or args.html:
        require("matplotlib", "report", "drawing the report map")
    res = load_result(args.result, encoding=args.encoding)
    ll = None
    if args.leaders:
        cols = LeaderColumns(args.leader_id_col, args.lat_col, args.lon_col, args.capacity_col,
                             None, None, args.active_col)
        t = read_leaders(args.leaders, cols, encoding=args.encoding,
                         crs=_check_system(args.crs, "--crs"))
        ll = LeaderLoad.from_result(t.ids, t.lat, t.lon, res, t.capacity)
    s = summarise(res, ll, cluster_m=args.cluster_m)
    out.write(s.text())
    png = None
    if args.png:
        render_png(res, ll, args.png, summary=s)
        png = Path(args.png).read_bytes()     # drawn once, also for the HTML
        out.write(f"map: {args.png}\n")
    if args.html:
        render_html(res, ll, args.html, summary=s, png=png)
        out.write(f"html: {args.html}\n")
    return 0


# ------------------------------------------------------------------------------------------
# bench
# ------------------------------------------------------------------------------------------
def _bench_parser(sub):
    b = sub.add_parser(
        "bench", help="compare against scipy cKDTree, pykdtree and BallTree",
        description="Time the index (build, k=1/k=5 batches, all cores, single queries) and "
                    "the dispatch (assign_batch) on a synthetic event against the peers, "
                    "and print the tables of ratios (peer time / ours: > 1 means ours is "
                    'faster).  Needs pip install "lbsdispatch[bench]".')
    b.add_argument("--event", choices=("city", "nation"), default="city",
                   help="city: 800 leaders / 20,000 orders (default, ~1 min); nation: "
                        "100,000 / 1,000,000 (several minutes)")
    b.add_argument("--repeat", type=_positive_int, default=3,
                   help="timed repeats per number, the best is kept (default 3)")
    b.add_argument("--min-time", type=float, default=0.1, help=argparse.SUPPRESS)


def bench(args, out=None):
    """Run ``lbsdispatch bench``; returns the exit code."""
    from .bench import run
    return run(args.event, args.repeat, out=sys.stdout if out is None else out,
               min_time=args.min_time)


def main(argv=None):
    """Entry point of the ``lbsdispatch`` command.

    Returns
    -------
    int
        The exit code: 0 success (every order dispatched, whatever its
        outcome), 1 some order rows rejected (see the rejects file), 2 a
        usage or input-file error (raised as ``SystemExit(2)`` by argparse
        for bad options).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from .dumps import DumpError
    try:
        if args.command == "demo":
            return demo(args)
        if args.command == "assign":
            return assign(args)
        if args.command == "report":
            return report(args)
        if args.command == "bench":
            return bench(args)
        if args.command == "sop":
            from .sop import run_sop
            return run_sop(args)
    except DumpError as e:         # a file or an option the run cannot use
        sys.stderr.write(f"lbsdispatch {args.command}: error: {e}\n")
        return 2
    except BrokenPipeError:        # e.g. `lbsdispatch demo | head`
        sys.stderr.close()
        return 0
    except OSError as e:           # disk full, permission denied, ... while reading or writing
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        sys.stderr.write(f"lbsdispatch {args.command}: error: {e.strerror or e}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"lbsdispatch {args.command}: interrupted\n")
        return 130
    except ValueError as e:        # bad option values: say so, no traceback
        parser.exit(2, f"lbsdispatch: error: {e}\n")
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
