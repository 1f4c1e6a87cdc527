"""How an event went, for a person: a terminal summary and a map (PNG or HTML).

Reads the result file written by ``lbsdispatch assign`` (its ``lat``/``lon``
columns are the orders' WGS-84 points, written there so that the report needs
no second pass over the order dump) and, optionally, the leader table (for
capacities, leaders that took nothing, and the leaders on the map).

Out-of-range orders are grouped on a coarse grid (cells of ``cluster_m``
metres, neighbouring occupied cells joined): each group is a place where
customers ordered and no leader serves -- where to recruit one.

pandas reads the result; matplotlib (Agg backend, no display) draws the map.
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dumps import DumpError, detect_format, require, sniff_encoding

__all__ = [
    "Cluster",
    "LeaderLoad",
    "Summary",
    "load_result",
    "out_of_range_clusters",
    "render_html",
    "render_png",
    "summarise",
]

_M_PER_DEG = 111_195.08         # metres per degree of latitude on the mean sphere
_ASSIGNED = ("NEAREST", "SPILLOVER", "STICKY", "CHOSEN", "REBALANCED")
_NEEDED = ("order_id", "leader_id", "distance_m", "outcome", "lat", "lon")
# colours of the outcomes on the map (colour-blind-safe Okabe-Ito palette)
_COLOURS = {"NEAREST": "#0072B2", "SPILLOVER": "#E69F00", "STICKY": "#009E73",
            "CHOSEN": "#56B4E9", "OUT_OF_RANGE": "#D55E00", "ALL_FULL": "#CC79A7",
            "INVALID": "#000000", "REBALANCED": "#F0E442"}
#: At most this many orders are drawn (a uniform sample, seeded): beyond it a
#: scatter only gets slower, not more informative.
MAX_POINTS = 200_000


@dataclass
class LeaderLoad:
    """Leaders with their loads: positions in WGS-84, loads, capacities (or None)."""

    ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    load: np.ndarray
    capacity: np.ndarray | None = None

    @classmethod
    def from_result(cls, ids, lat, lon, result, capacity=None):
        """Loads counted from a result frame (orders assigned to each leader id)."""
        assigned = result["outcome"].isin(_ASSIGNED).to_numpy()
        lid = result["leader_id"].to_numpy(dtype=object)[assigned]
        ids = np.asarray(ids, dtype=object)
        pos = {v: i for i, v in enumerate(ids.tolist())}
        load = np.zeros(len(ids), dtype=np.int64)
        idx = np.array([pos.get(v, -1) for v in lid.tolist()], dtype=np.int64)
        unknown = int((idx < 0).sum())
        if unknown:
            raise DumpError(f"{unknown} assigned orders name leaders that are not in the "
                            f"leader file (e.g. {lid[idx < 0][0]!r}): is it the right file?")
        np.add.at(load, idx, 1)
        return cls(ids, np.asarray(lat, float), np.asarray(lon, float), load,
                   None if capacity is None else np.asarray(capacity))


@dataclass
class Cluster:
    """A group of out-of-range orders: where a new leader would serve them."""

    lat: float
    lon: float
    n_orders: int
    radius_m: float       #: distance from the centre to its farthest order


@dataclass
class Summary:
    """Figures of one result; :meth:`text` renders them for a terminal."""

    n_orders: int
    counts: dict                  #: outcome name -> orders
    reasons: list                 #: (reason, orders), most frequent first
    percentiles: dict             #: "p50" ... "max" -> metres (assigned orders)
    leaders: dict = field(default_factory=dict)
    clusters: list = field(default_factory=list)
    cluster_m: float = 2_000.0

    def text(self):
        n = max(self.n_orders, 1)
        lines = [f"orders: {self.n_orders:,}"]
        assigned = sum(self.counts.get(o, 0) for o in _ASSIGNED)
        lines.append(f"  assigned      {assigned:>10,}  {100 * assigned / n:5.1f}%")
        for o, c in self.counts.items():
            if c:
                lines.append(f"    {o:<12}{c:>10,}  {100 * c / n:5.1f}%")
        if self.reasons:
            lines.append("why not the nearest leader / why not assigned:")
            for r, c in self.reasons:
                lines.append(f"  {c:>10,}  {r}")
        if self.percentiles:
            p = self.percentiles
            lines.append("distance to the leader, assigned orders (m): "
                         + "  ".join(f"{k} {v:,.0f}" for k, v in p.items()))
        L = self.leaders
        if L:
            lines.append(f"leaders: {L['n']:,}" + (f" (from the result only: {L['note']})"
                                                   if L.get("note") else ""))
            lines.append("  orders per leader: " + "  ".join(
                f"{k} {v:,.0f}" for k, v in L["load_percentiles"].items()))
            if "fill_hist" in L:
                lines.append("  fill (load / capacity): " + "  ".join(
                    f"{k}: {v:,}" for k, v in L["fill_hist"].items()))
                lines.append(f"  over 90% full: {L['over_90']:,}   full: {L['full']:,}")
            if "empty" in L:
                lines.append(f"  empty (no order): {L['empty']:,}")
        lines.append(f"spills (nearer leaders full): {self.counts.get('SPILLOVER', 0):,}")
        oor = self.counts.get("OUT_OF_RANGE", 0)
        lines.append(f"out of range: {oor:,}")
        if self.clusters:
            lines.append(f"  where they cluster ({self.cluster_m:,.0f} m grid) -- "
                         f"recruit a leader here:")
            for c in self.clusters:
                lines.append(f"    {c.n_orders:>8,} orders around ({c.lat:.5f}, {c.lon:.5f}),"
                             f" within {c.radius_m:,.0f} m")
        return "\n".join(lines) + "\n"


def load_result(path, encoding="auto"):
    """The result file of ``lbsdispatch assign`` as a DataFrame (ids as text).

    Raises
    ------
    DumpError
        Missing file, or a column the report needs is absent.
    """
    pd = require("pandas", "cli", "reading a result file")
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"result file {str(path)!r} does not exist")
    if detect_format(path) == "parquet":
        require("pyarrow", "parquet", "reading Parquet files")
        df = pd.read_parquet(path)
    else:
        try:
            df = pd.read_csv(path, dtype={"order_id": str, "leader_id": str, "outcome": str,
                                          "reason": str, "customer_id": str},
                             keep_default_na=False, na_values=[""],
                             encoding=sniff_encoding(path, encoding))
        except pd.errors.EmptyDataError:
            raise DumpError(f"result file {str(path)!r} is empty") from None
    miss = [c for c in _NEEDED if c not in df.columns]
    if miss:
        raise DumpError(f"result file {str(path)!r} has no column "
                        + ", ".join(map(repr, miss))
                        + " (is it a result of lbsdispatch assign?)")
    return df


def out_of_range_clusters(lat, lon, cell_m=2_000.0, min_orders=3, top=10):
    """Groups of points on a grid of ``cell_m`` metres, largest first.

    Cells are ``cell_m`` tall in latitude and about ``cell_m`` wide (the
    longitude step follows the cosine of each cell row's latitude); occupied
    cells that touch (8-neighbourhood) form one group.

    Returns
    -------
    list of Cluster
        At most ``top`` groups of at least ``min_orders`` points.
    """
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    if lat.size == 0 or not cell_m > 0:
        return []
    step = cell_m / _M_PER_DEG
    row = np.floor(lat / step).astype(np.int64)
    coslat = np.maximum(np.cos(np.radians((row + 0.5) * step)), 1e-6)
    col = np.floor(lon * coslat / step).astype(np.int64)
    cells = {}
    for k, key in enumerate(zip(row.tolist(), col.tolist())):
        cells.setdefault(key, []).append(k)
    # connected components over touching cells (iterative flood fill)
    label = {}
    groups = []
    for key in cells:
        if key in label:
            continue
        gid = len(groups)
        stack, members = [key], []
        label[key] = gid
        while stack:
            r, c = stack.pop()
            members.extend(cells[(r, c)])
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    nb = (r + dr, c + dc)
                    if nb in cells and nb not in label:
                        label[nb] = gid
                        stack.append(nb)
        groups.append(members)
    out = []
    for members in groups:
        if len(members) < min_orders:
            continue
        idx = np.asarray(members)
        clat, clon = float(lat[idx].mean()), float(lon[idx].mean())
        dy = (lat[idx] - clat) * _M_PER_DEG
        dx = (lon[idx] - clon) * _M_PER_DEG * math.cos(math.radians(clat))
        out.append(Cluster(clat, clon, len(members), float(np.sqrt(dx * dx + dy * dy).max())))
    out.sort(key=lambda c: (-c.n_orders, c.lat, c.lon))
    return out[:top]


def summarise(result, leaders=None, cluster_m=2_000.0):
    """The :class:`Summary` of a result frame (and of the leaders, if given)."""
    from . import Outcome
    outcome = result["outcome"].astype(str).to_numpy()
    names = [o.name for o in Outcome]
    counts = {o: int((outcome == o).sum()) for o in names}
    unknown = sorted(set(outcome.tolist()) - set(names))
    if unknown:
        raise DumpError(f"result has unknown outcome values {unknown[:5]!r}")
    reasons = []
    if "reason" in result.columns:
        notn = outcome != "NEAREST"
        vc = result.loc[notn, "reason"].value_counts()
        reasons = [(str(r), int(c)) for r, c in vc.items()][:12]
    assigned = np.isin(outcome, _ASSIGNED)
    d = result["distance_m"].to_numpy(dtype=float)[assigned]
    pct = {}
    if d.size:
        for q in (50, 90, 95, 99):
            pct[f"p{q}"] = float(np.percentile(d, q))
        pct["max"] = float(d.max())
    L = {}
    qs = (("p50", 50), ("p90", 90), ("max", 100))
    if leaders is not None:
        load = leaders.load
        L["n"] = len(load)
        L["load_percentiles"] = {k: float(np.percentile(load, q)) if len(load) else 0.0
                                 for k, q in qs}
        L["empty"] = int((load == 0).sum())
        if leaders.capacity is not None:
            cap = leaders.capacity.astype(float)
            fill = np.where(cap > 0, load / np.maximum(cap, 1), np.where(load > 0, np.inf, 1.0))
            L["fill_hist"] = {"0%": int((load == 0).sum()),
                              "<50%": int(((load > 0) & (fill < 0.5)).sum()),
                              "50-90%": int(((fill >= 0.5) & (fill < 0.9) & (load > 0)).sum()),
                              "90-<100%": int(((fill >= 0.9) & (fill < 1.0)).sum()),
                              "full": int((fill >= 1.0).sum())}
            L["over_90"] = int((fill >= 0.9).sum())
            L["full"] = int((fill >= 1.0).sum())
    else:
        lid = result["leader_id"].to_numpy(dtype=object)[assigned]
        _, per = np.unique(lid.astype(str), return_counts=True) if lid.size else (None,
                                                                                np.zeros(0))
        L["n"] = len(per)
        L["note"] = "leaders with orders; give --leaders for capacities and empty leaders"
        L["load_percentiles"] = {k: float(np.percentile(per, q)) if len(per) else 0.0
                                 for k, q in qs}
    oor = outcome == "OUT_OF_RANGE"
    clusters = out_of_range_clusters(result["lat"].to_numpy(dtype=float)[oor],
                                     result["lon"].to_numpy(dtype=float)[oor], cluster_m)
    return Summary(len(outcome), counts, reasons, pct, L, clusters, cluster_m)


def render_png(result, leaders, path, summary=None, size=(10.0, 8.0), dpi=100):
    """Draw the event map to a PNG of ``size * dpi`` pixels (1000 x 800 by default).

    Orders are dots coloured by outcome; leaders are open circles whose area
    grows with their load (black when over 90% full); each out-of-range
    cluster is a red cross labelled with its order count.
    """
    matplotlib = require("matplotlib", "report", "drawing the report map")
    matplotlib.use("Agg", force=True)     # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    if summary is None:
        summary = summarise(result, leaders)
    lat = result["lat"].to_numpy(dtype=float)
    lon = result["lon"].to_numpy(dtype=float)
    outcome = result["outcome"].astype(str).to_numpy()
    if len(lat) > MAX_POINTS:
        take = np.sort(np.random.default_rng(0).choice(len(lat), MAX_POINTS, replace=False))
        lat, lon, outcome = lat[take], lon[take], outcome[take]
    fig, ax = plt.subplots(figsize=size, dpi=dpi)
    try:
        dot = max(0.3, min(6.0, 3e4 / max(len(lat), 1)))
        for name, colour in _COLOURS.items():
            m = outcome == name
            if m.any():
                ax.scatter(lon[m], lat[m], s=dot, c=colour, linewidths=0,
                           label=f"{name} ({summary.counts.get(name, 0):,})", zorder=2,
                           rasterized=True)
        if leaders is not None and len(leaders.load):
            load = leaders.load.astype(float)
            area = 8 + 120 * np.sqrt(load / max(load.max(), 1))
            hot = np.zeros(len(load), dtype=bool)
            if leaders.capacity is not None:
                cap = leaders.capacity.astype(float)
                hot = load >= 0.9 * np.maximum(cap, 1e-9)
            ax.scatter(leaders.lon[~hot], leaders.lat[~hot], s=area[~hot], facecolors="none",
                       edgecolors="#444444", linewidths=0.6, zorder=3,
                       label="leader (size: orders)")
            if hot.any():
                ax.scatter(leaders.lon[hot], leaders.lat[hot], s=area[hot], facecolors="none",
                           edgecolors="black", linewidths=1.4, zorder=3,
                           label="leader over 90% full")
        for c in summary.clusters:
            ax.scatter([c.lon], [c.lat], marker="X", s=160, c="red", edgecolors="white",
                       linewidths=1.0, zorder=4)
            ax.annotate(f"recruit here ({c.n_orders})", (c.lon, c.lat),
                        textcoords="offset points", xytext=(6, 6), fontsize=8, color="red",
                        zorder=5)
        if summary.clusters:
            ax.scatter([], [], marker="X", s=80, c="red", label="out-of-range cluster")
        finite = np.isfinite(lat) & np.isfinite(lon)
        if finite.any():
            mid = float(np.median(lat[finite]))
            # degrees of longitude are shorter than degrees of latitude by cos(lat)
            ax.set_aspect(1.0 / max(math.cos(math.radians(mid)), 0.05), adjustable="datalim")
        assigned = sum(summary.counts.get(o, 0) for o in _ASSIGNED)
        ax.set_title(f"{summary.n_orders:,} orders, {assigned:,} assigned, "
                     f"{summary.counts.get('SPILLOVER', 0):,} spilled, "
                     f"{summary.counts.get('OUT_OF_RANGE', 0):,} out of range")
        ax.set_xlabel("longitude (WGS-84)")
        ax.set_ylabel("latitude (WGS-84)")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            # the legend shows every marker at one readable size, whatever the
            # map's dot size and the leaders' loads
            from matplotlib.lines import Line2D
            keys = []
            for h in handles:
                fc = h.get_facecolor()
                ec = h.get_edgecolor()
                face = fc[0] if len(fc) else "none"
                edge = ec[0] if len(ec) else face
                lw = np.atleast_1d(h.get_linewidths())
                keys.append(Line2D([], [], linestyle="none",
                                   marker="X" if "cluster" in h.get_label() else "o",
                                   markersize=7, markerfacecolor=face, markeredgecolor=edge,
                                   markeredgewidth=float(lw[0]) if len(lw) else 0.0))
            ax.legend(keys, labels, loc="upper right", fontsize=8, framealpha=0.85)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=dpi)
    finally:
        plt.close(fig)


def render_html(result, leaders, path, summary=None, png=None):
    """One self-contained HTML file: the summary text and the map (PNG inline).

    ``png``: the map's PNG bytes if already drawn (else it is drawn here).
    """
    if summary is None:
        summary = summarise(result, leaders)
    if png is None:
        buf = io.BytesIO()
        render_png(result, leaders, buf, summary=summary)
        png = buf.getvalue()
    img = base64.b64encode(png).decode("ascii")
    doc = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
           "<title>lbsdispatch report</title></head><body>\n"
           "<h1>lbsdispatch report</h1>\n"
           f"<pre>{html.escape(summary.text())}</pre>\n"
           f"<img alt=\"event map\" src=\"data:image/png;base64,{img}\">\n"
           "</body></html>\n")
    Path(path).write_text(doc, encoding="utf-8")
