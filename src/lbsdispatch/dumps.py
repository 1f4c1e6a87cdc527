"""Reading and writing order dumps and leader tables (CSV or Parquet), in chunks.

This is the file layer of ``lbsdispatch assign``: it turns whatever an order
system exported into clean arrays for :class:`~lbsdispatch.Dispatcher`, and
every row it cannot use into a *reject* with its position in the file and
the reason.  Nothing is dropped without a trace: each data row of the order
file ends up either in the result or in the rejects; lines that hold no
value at all (blank lines) are counted and reported, not treated as rows.

Positions
---------
CSV rows are numbered by **file line** (1-based, the header is line 1), so
a person can jump to them in an editor; this is exact as long as no quoted
field holds a line break.  Parquet rows are numbered by **data row**
(1-based, no header).

Identifiers
-----------
Order, customer, leader and chosen-leader ids are read as text, exactly as
written (``"007"`` stays ``"007"``), so ids of any kind round-trip into the
result unchanged and compare equal across files.

pandas is needed to read files, pyarrow to read or write Parquet (and it
makes CSV output several times faster); :func:`require` names the extra to
install when one is missing.
"""
from __future__ import annotations

import codecs
import csv
import functools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "RESULT_COLUMNS",
    "DumpError",
    "LeaderColumns",
    "LeaderTable",
    "OrderChunk",
    "OrderColumns",
    "OrderReader",
    "RejectWriter",
    "ResultWriter",
    "SeenIds",
    "detect_format",
    "read_bindings",
    "read_leaders",
    "require",
    "sniff_encoding",
]

#: Columns of a result file, in order (``customer_id`` only when the orders had one).
RESULT_COLUMNS = ("order_id", "leader_id", "distance_m", "outcome", "reason", "customer_id",
                  "lat", "lon")
_SAMPLE_BYTES = 1 << 16


class DumpError(Exception):
    """A problem with a whole input file or an option (``lbsdispatch`` exits with 2)."""


def require(module, extra, what):
    """Import ``module`` or raise :class:`DumpError` naming the extra to install.

    Parameters
    ----------
    module : str
        Module to import (e.g. ``"pandas"``).
    extra : str
        The optional-dependency group that provides it (e.g. ``"cli"``).
    what : str
        What needs it, for the message (e.g. ``"reading CSV files"``).
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DumpError(f"{what} needs {module.split('.')[0]}, which is not installed: "
                        f'pip install "lbsdispatch[{extra}]"') from None


def detect_format(path, fmt=None):
    """``"csv"`` or ``"parquet"``: ``fmt`` if given, else from the file extension.

    ``.parquet``/``.pq`` are Parquet; everything else (``.csv``, ``.txt``,
    ``.tsv``...) is read as CSV.
    """
    if fmt is not None:
        if fmt not in ("csv", "parquet"):
            raise DumpError(f"--format must be csv or parquet, got {fmt!r}")
        return fmt
    return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"


def sniff_encoding(path, encoding="auto"):
    """The encoding to read a CSV file with.

    ``"auto"``: a UTF-8 byte-order mark gives ``utf-8-sig``; otherwise the
    first 64 KiB are tried as UTF-8 and then as GB18030 (the superset of GBK
    and GB2312 that Chinese Excel and order systems write); if neither
    decodes, UTF-8 (the undecodable rows are then rejected one by one).
    A given encoding is used as is, except that ``utf-8`` on a file that
    starts with a byte-order mark becomes ``utf-8-sig`` (the mark is not
    part of the first column's name).
    """
    with open(path, "rb") as f:
        head = f.read(_SAMPLE_BYTES)
    has_bom = head.startswith(codecs.BOM_UTF8)
    if encoding not in (None, "auto"):
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise DumpError(f"--encoding {encoding!r} is not an encoding Python knows") from None
        return "utf-8-sig" if (name == "utf-8" and has_bom) else encoding
    if has_bom:
        return "utf-8-sig"
    for cand in ("utf-8", "gb18030"):
        # incremental, so that a character cut at the end of the sample is no error
        try:
            codecs.getincrementaldecoder(cand)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        return cand
    return "utf-8"


def header(path, fmt=None, encoding="auto"):
    """Column names of a CSV or Parquet file (stripped of spaces and a BOM).

    Raises
    ------
    DumpError
        Missing, empty or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"file {str(path)!r} does not exist")
    if detect_format(path, fmt) == "parquet":
        pq = require("pyarrow.parquet", "parquet", "reading Parquet files")
        try:
            return [_clean_name(c) for c in pq.ParquetFile(path).schema_arrow.names]
        except (OSError, ValueError) as e:   # pyarrow's errors derive from these
            raise DumpError(f"{str(path)!r} is not a readable Parquet file: {e}") from None
    enc = sniff_encoding(path, encoding)
    with open(path, "r", encoding=enc, errors="replace", newline="") as f:
        first = next(csv.reader(f), None)
    if first is None:
        raise DumpError(f"file {str(path)!r} is empty (no header line)")
    return [_clean_name(c) for c in first]


def _clean_name(c):
    return str(c).strip().lstrip("\ufeff").strip()


# ----------------------------------------------------------------------------------------
# column names
# ----------------------------------------------------------------------------------------
@dataclass
class OrderColumns:
    """Column names of an order file (``None``: not used)."""

    order_id: str = "order_id"
    lat: str = "lat"
    lon: str = "lon"
    customer: str | None = "customer_id"
    chosen: str | None = "chosen_leader"
    crs: str | None = None

    def required(self):
        return [self.order_id, self.lat, self.lon]

    def optional(self):
        return [c for c in (self.customer, self.chosen, self.crs) if c]


@dataclass
class LeaderColumns:
    """Column names of a leader file (optional columns may be absent from the file)."""

    leader_id: str = "leader_id"
    lat: str = "lat"
    lon: str = "lon"
    capacity: str | None = "capacity"
    radius: str | None = "radius_m"
    priority: str | None = "priority"
    active: str | None = "active"
    crs: str | None = None


# ----------------------------------------------------------------------------------------
# reading whole (small) tables: leaders and bindings
# ----------------------------------------------------------------------------------------
def _text(values):
    """Object array of str with None for missing (NaN, None, pd.NA)."""
    out = np.asarray(values, dtype=object)
    miss = _isna(out)
    if miss.any():
        out = out.copy()
        out[miss] = None
    return out


def _isna(a):
    import pandas as pd
    return np.asarray(pd.isna(a), dtype=bool)


def _read_table(path, fmt, encoding, what, wanted):
    """(DataFrame of text columns, positions, position name, column map) of a small file.

    ``wanted``: column names to read (those absent are simply not returned).
    Every column is read as text; numbers are converted by the caller so
    that it can name the bad row.
    """
    pd = require("pandas", "cli", f"reading the {what} file")
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"{what} file {str(path)!r} does not exist")
    if fmt == "parquet":
        pq = require("pyarrow.parquet", "parquet", "reading Parquet files")
        try:
            pf = pq.ParquetFile(path)
        except (OSError, ValueError) as e:   # pyarrow's errors derive from these
            raise DumpError(f"{what} file {str(path)!r} is not a readable Parquet file: {e}") \
                from None
        names = {_clean_name(c): c for c in pf.schema_arrow.names}
        cols = [names[c] for c in wanted if c in names]
        table = pf.read(columns=cols)
        import pyarrow as pa
        import pyarrow.compute as pc
        arrays = {}
        for c in cols:
            col = table.column(c)
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                col = pc.cast(col, pa.string())
            arrays[_clean_name(c)] = col.to_pandas().to_numpy(dtype=object)
        df = pd.DataFrame(arrays)
        df.attrs["found"] = list(names)
        return df, np.arange(1, len(df) + 1), "row"
    enc = sniff_encoding(path, encoding)
    try:
        with open(path, "rb") as f:
            df = pd.read_csv(f, dtype=object, keep_default_na=False, na_values=[""],
                             skip_blank_lines=False, encoding=enc,
                             encoding_errors="replace")
    except pd.errors.EmptyDataError:
        raise DumpError(f"{what} file {str(path)!r} is empty (no header line)") from None
    except pd.errors.ParserError as e:
        raise DumpError(f"{what} file {str(path)!r}: {e}".strip()) from None
    df.columns = [_clean_name(c) for c in df.columns]
    found = list(df.columns)
    df = df[[c for c in df.columns if c in wanted]]
    df.attrs["found"] = found
    pos = np.arange(2, len(df) + 2)
    blank = df.isna().all(axis=1).to_numpy() if len(df.columns) else np.zeros(len(df), bool)
    return df[~blank], pos[~blank], "line"


def _missing_columns(df, required, what, path):
    miss = [c for c in required if c not in df.columns]
    if miss:
        raise DumpError(f"{what} file {str(path)!r} has no column "
                        + ", ".join(repr(c) for c in miss)
                        + f" (columns found: "
                        f"{', '.join(map(repr, df.attrs.get('found', df.columns))) or 'none'}); "
                        f"name the column with the matching --*-col option")


@dataclass
class LeaderTable:
    """A validated leader table in WGS-84, ready for :class:`~lbsdispatch.Dispatcher`."""

    ids: np.ndarray          #: object array of str
    lat: np.ndarray
    lon: np.ndarray
    capacity: np.ndarray | None = None
    radius_m: np.ndarray | None = None
    priority: np.ndarray | None = None
    active: np.ndarray | None = None
    names: dict = field(default_factory=dict)   #: input column name of each field

    def __len__(self):
        return len(self.ids)


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def read_leaders(path, cols=None, fmt=None, encoding="auto", crs="wgs84"):
    """Read and check a leader file; any bad value is a :class:`DumpError` naming it.

    A leader table is small and every leader matters to every order, so a
    bad leader row stops the run (exit 2) rather than being skipped: the
    message names the file position, the column and the value.

    Parameters
    ----------
    path : str or path
    cols : LeaderColumns, optional
    fmt : {"csv", "parquet"}, optional
        Default from the extension.
    encoding : str, default "auto"
        See :func:`sniff_encoding` (CSV only).
    crs : str, default "wgs84"
        System of the coordinates (per row from ``cols.crs`` when that
        column is given).

    Returns
    -------
    LeaderTable

    Notes
    -----
    Empty cells: ``radius_m`` empty means no radius of its own, ``priority``
    empty means 0; an empty ``capacity`` or ``active`` is an error (an
    unlimited or switched-off leader must be said, not guessed).
    """
    from .geo import transform

    cols = cols or LeaderColumns()
    fmt = detect_format(path, fmt)
    wanted = [c for c in (cols.leader_id, cols.lat, cols.lon, cols.capacity, cols.radius,
                          cols.priority, cols.active, cols.crs) if c]
    df, pos, unit = _read_table(path, fmt, encoding, "leaders", wanted)
    _missing_columns(df, [cols.leader_id, cols.lat, cols.lon]
                     + ([cols.crs] if cols.crs else []), "leaders", path)

    def where(j, c, v):
        return f"leaders file {str(path)!r}, {unit} {int(pos[j])}, column {c!r}: {v!r}"

    def check_text(c):
        a = _text(df[c].to_numpy(dtype=object))
        if not _any_surrogates(a):
            return a
        for j, v in enumerate(a.tolist()):
            if v is not None and _has_surrogates(v):
                raise DumpError(where(j, c, v) + " holds bytes that are not valid in the "
                                f"file's encoding (shown as {_BAD_CHAR}; give --encoding)")
        return a

    ids = check_text(cols.leader_id)
    bad = np.flatnonzero([v is None for v in ids.tolist()])
    if bad.size:
        raise DumpError(where(int(bad[0]), cols.leader_id, "") + " leader id missing")
    first = {}
    for j, v in enumerate(ids.tolist()):
        if v in first:
            raise DumpError(where(j, cols.leader_id, v)
                            + f" repeats the leader id of {unit} {int(pos[first[v]])}")
        first[v] = j

    pd = require("pandas", "cli", "reading the leaders file")

    def number(c, empty=None, integer=False):
        raw = check_text(c)
        # vectorised first; the loop below only runs to name a bad value
        out = np.array(pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan))
        miss = np.equal(raw, None)
        fine = ~np.isnan(out) & ~miss
        if integer:
            fine &= np.isfinite(out) & (out == np.round(out))
        if fine.all():
            return out
        if empty is not None and (fine | miss).all():
            out[miss] = empty
            return out
        out = np.empty(len(raw))
        for j, v in enumerate(raw.tolist()):
            if v is None:
                if empty is None:
                    raise DumpError(where(j, c, "") + " is empty")
                out[j] = empty
                continue
            try:
                x = float(v)
            except ValueError:
                raise DumpError(where(j, c, v) + " is not a number") from None
            if integer and not (math.isfinite(x) and x == int(x)):
                raise DumpError(where(j, c, v) + " is not a whole number")
            out[j] = x
        return out

    lat, lon = number(cols.lat), number(cols.lon)
    for a, c in ((lat, cols.lat), (lon, cols.lon)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            j = int(bad[0])
            raise DumpError(where(j, c, df[c].iloc[j]) + " is not a finite number")
    systems = (_text(df[cols.crs].to_numpy(dtype=object)) if cols.crs
               else np.full(len(df), crs, dtype=object))
    systems[np.equal(systems, None)] = crs     # an empty cell: the file's system
    wlat, wlon = np.empty(len(df)), np.empty(len(df))
    for s in sorted({str(v) for v in systems.tolist()}):
        rows = np.flatnonzero(systems.astype(str) == s)
        try:
            la, lo = transform(lat[rows], lon[rows], s, "wgs84")
        except ValueError as e:
            j = int(rows[0])
            msg = str(e)
            # the library names the row within the group; name the file position
            for k, r in enumerate(rows.tolist()):
                try:
                    transform(lat[r:r + 1], lon[r:r + 1], s, "wgs84")
                except ValueError as e2:
                    j, msg = r, str(e2)
                    break
            raise DumpError(f"leaders file {str(path)!r}, {unit} {int(pos[j])}: {msg}") \
                from None
        wlat[rows], wlon[rows] = la, lo
    t = LeaderTable(ids, wlat, wlon, names={"leader_id": cols.leader_id})
    if cols.capacity and cols.capacity in df.columns:
        cap = number(cols.capacity, integer=True)
        bad = np.flatnonzero(cap < 0)
        if bad.size:
            raise DumpError(where(int(bad[0]), cols.capacity, df[cols.capacity].iloc[bad[0]])
                            + " is negative")
        t.capacity = cap.astype(np.int64)
    if cols.radius and cols.radius in df.columns:
        rad = number(cols.radius, empty=math.inf)
        bad = np.flatnonzero(~(rad >= 0))
        if bad.size:
            raise DumpError(where(int(bad[0]), cols.radius, df[cols.radius].iloc[bad[0]])
                            + " must be >= 0 metres")
        t.radius_m = rad
    if cols.priority and cols.priority in df.columns:
        t.priority = number(cols.priority, empty=0, integer=True).astype(np.int64)
    if cols.active and cols.active in df.columns:
        raw = check_text(cols.active)
        act = np.empty(len(raw), dtype=bool)
        for j, v in enumerate(raw.tolist()):
            s = "" if v is None else v.strip().lower()
            if s in _TRUE:
                act[j] = True
            elif s in _FALSE:
                act[j] = False
            else:
                raise DumpError(where(j, cols.active, v or "")
                                + " is not a yes/no value (1/0, true/false, yes/no)")
        t.active = act
    return t


def read_bindings(path, customer_col="customer_id", leader_col="leader_id", fmt=None,
                  encoding="auto"):
    """A mapping customer id -> leader id (both text) from a two-column file.

    A customer listed twice with different leaders is an error naming both
    positions; exact repeats are harmless.
    """
    fmt = detect_format(path, fmt)
    df, pos, unit = _read_table(path, fmt, encoding, "bindings", [customer_col, leader_col])
    _missing_columns(df, [customer_col, leader_col], "bindings", path)
    cust = _text(df[customer_col].to_numpy(dtype=object)).tolist()
    lead = _text(df[leader_col].to_numpy(dtype=object)).tolist()
    out, where = {}, {}
    for j, (c, lid) in enumerate(zip(cust, lead)):
        if c is None or lid is None:
            col = customer_col if c is None else leader_col
            raise DumpError(f"bindings file {str(path)!r}, {unit} {int(pos[j])}: "
                            f"column {col!r} is empty")
        if c in out and out[c] != lid:
            raise DumpError(f"bindings file {str(path)!r}, {unit} {int(pos[j])}: customer "
                            f"{c!r} is bound to {lid!r} here and to {out[c]!r} on "
                            f"{unit} {where[c]}")
        out[c] = lid
        where[c] = int(pos[j])
    return out


def _has_surrogates(s):
    # files are decoded with errors="replace": each undecodable byte becomes
    # U+FFFD, which no order system writes on purpose.  (Not surrogateescape:
    # pandas may store text in Arrow, which refuses lone surrogates.)
    return _BAD_CHAR in s


_BAD_CHAR = "\ufffd"


# ----------------------------------------------------------------------------------------
# order ids seen so far
# ----------------------------------------------------------------------------------------
class SeenIds:
    """Order ids seen in earlier chunks, kept as 64-bit hashes with their position.

    Memory is 16 bytes per order instead of a Python string per order.  The
    hashes are kept as a few sorted runs that are merged like a binary
    counter (a run is merged into the next when it grows as large), so a
    lookup costs a binary search per run and the total work stays
    O(n log n) whatever the chunk size.

    Two different ids share a 64-bit hash with probability about
    n**2 / 2**65 (3e-8 for a million orders); such a false "duplicate" would
    be visible in the rejects, which name the position of the first id.
    """

    def __init__(self):
        self.runs = []   # list of (sorted hashes, positions), largest first

    @staticmethod
    def hash(ids):
        """64-bit hashes of an object array of str."""
        import pandas as pd
        return pd.util.hash_array(np.asarray(ids, dtype=object), categorize=False)

    def first_position(self, h):
        """Position of the earlier row with each hash, 0 where unseen."""
        out = np.zeros(len(h), dtype=np.int64)
        for keys, pos in self.runs:
            j = np.searchsorted(keys, h)
            j = np.minimum(j, len(keys) - 1)
            hit = (keys[j] == h) & (out == 0)
            out[hit] = pos[j[hit]]
        return out

    def add(self, h, pos):
        if len(h) == 0:
            return
        o = np.argsort(h, kind="stable")
        run = (h[o], np.asarray(pos, dtype=np.int64)[o])
        while self.runs and len(self.runs[-1][0]) <= len(run[0]):
            k0, p0 = self.runs.pop()
            keys = np.concatenate([k0, run[0]])
            o = np.argsort(keys, kind="stable")
            run = (keys[o], np.concatenate([p0, run[1]])[o])
        self.runs.append(run)


# ----------------------------------------------------------------------------------------
# streaming the order file
# ----------------------------------------------------------------------------------------
@dataclass
class OrderChunk:
    """One chunk of the order file, checked.

    Attributes
    ----------
    pos : ndarray of int64
        File line (CSV) or data row (Parquet) of each row.
    ok : ndarray of bool
        Rows that can be dispatched.
    reason : ndarray of object
        Why each row that is not ok was rejected (None for ok rows).
    raw : dict
        Column name -> object array of the values as read (for rejects).
    order_id, customer, chosen : ndarray of object
        Text ids (None for none); customer/chosen None when not in the file.
    lat, lon : ndarray of float64
        WGS-84 degrees (NaN for rejected rows).
    bad_lines : list of (int, str, str)
        Lines the CSV parser could not split into the header's fields:
        (line, reason, raw text).
    """

    pos: np.ndarray
    ok: np.ndarray
    reason: np.ndarray
    raw: dict
    order_id: np.ndarray
    customer: np.ndarray | None
    chosen: np.ndarray | None
    lat: np.ndarray
    lon: np.ndarray
    bad_lines: list
    n_blank: int

    def __len__(self):
        return len(self.pos)


class OrderReader:
    """Reads an order file in chunks and checks every row.

    Parameters
    ----------
    path : str or path
    cols : OrderColumns
    fmt : {"csv", "parquet"}, optional
    encoding : str, default "auto"
    crs : str, default "wgs84"
        System of the coordinates of every row without a ``cols.crs`` value.
    chunksize : int, default 100_000

    Attributes
    ----------
    unit : {"line", "row"}
        What positions count (see the module notes).
    present : list of str
        The columns of ``cols`` that the file has.
    encoding : str or None
        The encoding used (CSV).
    """

    def __init__(self, path, cols=None, fmt=None, encoding="auto", crs="wgs84",
                 chunksize=100_000):
        self.pd = require("pandas", "cli", "reading order files")
        self.path = Path(path)
        self.cols = cols or OrderColumns()
        self.fmt = detect_format(path, fmt)
        self.crs = crs
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise DumpError(f"--chunksize must be a whole number >= 1, got {chunksize!r}")
        self.chunksize = chunksize
        if not self.path.is_file():
            raise DumpError(f"orders file {str(self.path)!r} does not exist")
        self.size = self.path.stat().st_size
        self.seen = SeenIds()
        self.encoding = None
        self.unit = "row" if self.fmt == "parquet" else "line"
        self._systems = {}
        self._open()

    # -- opening -------------------------------------------------------------------------
    def _open(self):
        self.total_rows = None
        self._header = None
        if self.fmt == "parquet":
            pq = require("pyarrow.parquet", "parquet", "reading Parquet files")
            try:
                self._pf = pq.ParquetFile(self.path)
            except (OSError, ValueError) as e:   # pyarrow's errors derive from these
                raise DumpError(f"orders file {str(self.path)!r} is not a readable Parquet "
                                f"file: {e}") from None
            self._header = list(self._pf.schema_arrow.names)
            self.total_rows = self._pf.metadata.num_rows

    # -- header --------------------------------------------------------------------------
    def _csv_header(self, enc):
        pd = self.pd
        try:
            with open(self.path, "rb") as f:
                head = pd.read_csv(f, nrows=0, encoding=enc, encoding_errors="replace")
        except pd.errors.EmptyDataError:
            raise DumpError(f"orders file {str(self.path)!r} is empty (no header line)") \
                from None
        return list(head.columns)

    def columns(self, encoding="auto"):
        """Check the header; returns the file's names of the columns used.

        Raises
        ------
        DumpError
            A required column is missing (named, with the columns found).
        """
        if self.fmt == "csv":
            self.encoding = sniff_encoding(self.path, encoding)
            self._header = self._csv_header(self.encoding)
        names = {_clean_name(c): c for c in self._header}
        c = self.cols
        need = c.required() + ([c.crs] if c.crs else [])
        miss = [x for x in need if x not in names]
        if miss:
            raise DumpError(f"orders file {str(self.path)!r} has no column "
                            + ", ".join(repr(x) for x in miss)
                            + f" (columns found: {', '.join(map(repr, names)) or 'none'}); "
                            f"name the column with the matching --*-col option")
        self.present = [x for x in c.required() + c.optional() if x in names]
        self._file_names = {x: names[x] for x in self.present}
        return self.present

    # -- chunks --------------------------------------------------------------------------
    def chunks(self, progress=None):
        """Yield :class:`OrderChunk` objects until the file is read.

        ``progress(n)`` is called with the bytes (CSV) or rows (Parquet)
        consumed since the last call.
        """
        if not hasattr(self, "present"):
            self.columns()
        if self.fmt == "parquet":
            yield from self._parquet_chunks(progress)
        else:
            yield from self._csv_chunks(progress)

    def _csv_chunks(self, progress):
        pd = self.pd
        names = self._file_names
        text_cols = [names[x] for x in self.present if x not in (self.cols.lat, self.cols.lon)]
        bad_lines = []
        line = 2                               # line of the next data row

        def on_warning(message, *a, **k):
            # the C parser reports each line with the wrong number of fields as
            # "Skipping line N: expected A fields, saw B"
            text = str(message)
            for part in text.strip().split("\n"):
                part = part.strip()
                if part.startswith("Skipping line "):
                    head, _, rest = part[len("Skipping line "):].partition(":")
                    try:
                        bad_lines.append((int(head), rest.strip()))
                    except ValueError:
                        pass

        # pandas takes a first data line wider than the header for an index
        # column (or truncates it without saying which line): such lines are
        # found here and skipped, and reported like any other unsplittable line
        wide = _wide_head_lines(self.path, self.encoding, len(self._header))
        pending = [(b, f"expected {len(self._header)} fields, saw {k}") for b, k in wide]
        with open(self.path, "rb") as f:
            try:
                # every column is parsed, not only the used ones: with usecols the
                # parser silently drops the extra fields of a line, and a stray comma
                # (an unquoted address) would shift lat/lon without a trace
                reader = pd.read_csv(
                    f, dtype={c: object for c in text_cols},
                    keep_default_na=False, na_values=[""], skip_blank_lines=False,
                    encoding=self.encoding, encoding_errors="replace",
                    on_bad_lines="warn", chunksize=self.chunksize,
                    skiprows=[b - 1 for b, _ in wide] or None)
            except pd.errors.EmptyDataError:
                raise DumpError(f"orders file {str(self.path)!r} is empty") from None
            done = 0                          # pending: bad lines not yet placed
            while True:
                with warnings.catch_warnings():
                    warnings.simplefilter("always")
                    warnings.showwarning = on_warning
                    try:
                        df = next(reader)
                    except StopIteration:
                        df = None
                    except pd.errors.ParserError as e:
                        raise DumpError(f"orders file {str(self.path)!r}: {e}".strip()) from None
                if progress is not None:
                    now = f.tell()
                    progress(now - done)
                    done = now
                pending.extend(bad_lines)
                bad_lines.clear()
                if df is None:
                    if pending:
                        yield self._only_bad(pending)
                    return
                m = len(df)
                # lines of the rows: the next m lines that the parser did not skip
                skip = sorted(b for b, _ in pending)
                pos = np.empty(m, dtype=np.int64)
                k = 0
                cur = line
                placed = []
                for b in skip:
                    if b < cur:
                        placed.append(b)
                        continue
                    take = min(b - cur, m - k)
                    pos[k:k + take] = np.arange(cur, cur + take)
                    k += take
                    cur += take
                    if k == m:
                        break
                    placed.append(b)
                    cur = b + 1
                pos[k:] = np.arange(cur, cur + (m - k))
                line = cur + (m - k)
                mine = [p for p in pending if p[0] in set(placed)]
                pending = [p for p in pending if p[0] not in set(placed)]
                yield self._check(df, pos, [(b, "cannot be split into the header's columns: "
                                               + why, None) for b, why in mine])

    def _only_bad(self, pending):
        e = np.zeros(0, dtype=np.int64)
        o = np.zeros(0, dtype=object)
        return OrderChunk(e, np.zeros(0, bool), o, {}, o, None, None, np.zeros(0), np.zeros(0),
                          [(b, f"cannot be split into the header's columns: {why}", None)
                           for b, why in pending], 0)

    def _parquet_chunks(self, progress):
        import pyarrow as pa
        import pyarrow.compute as pc
        pd = self.pd
        names = self._file_names
        text = {names[x] for x in self.present if x not in (self.cols.lat, self.cols.lon)}
        start = 1
        for batch in self._pf.iter_batches(batch_size=self.chunksize,
                                           columns=list(names.values())):
            cols = {}
            for c in batch.schema.names:
                a = batch.column(c)
                if c in text and not (pa.types.is_string(a.type)
                                      or pa.types.is_large_string(a.type)):
                    a = pc.cast(a, pa.string())     # ids of any type, as text
                cols[c] = a.to_pandas()
            df = pd.DataFrame(cols)
            m = len(df)
            if progress is not None:
                progress(m)
            yield self._check(df, np.arange(start, start + m, dtype=np.int64), [])
            start += m

    # -- checking ------------------------------------------------------------------------
    def _system(self, name):
        """(ok, degrees or message) for a coordinate system name, cached."""
        r = self._systems.get(name)
        if r is None:
            from . import crs as _crs
            try:
                r = (True, _crs._resolve(name, "crs").degrees)
            except ValueError as e:
                r = (False, str(e).replace("crs = ", ""))
            self._systems[name] = r
        return r

    def _check(self, df, pos, bad_lines):
        c, names = self.cols, self._file_names
        m = len(df)
        reason = np.full(m, None, dtype=object)
        # numbers stay float64 (the parser already converted them); text is object
        raw = {x: _column(df[names[x]]) for x in self.present}
        # rows where every field is empty are blank lines, not rows
        blank = np.ones(m, dtype=bool)
        for x in self.present:
            blank &= _isna(raw[x])
        n_blank = int(blank.sum())
        if n_blank:
            keep = ~blank
            df = df[keep]
            pos = pos[keep]
            raw = {x: v[keep] for x, v in raw.items()}
            reason = reason[keep]
            m = len(pos)

        def flag(mask, text):
            mask = mask & (reason == None)
            if mask.any():
                reason[mask] = text if isinstance(text, str) else text[mask]

        def text_col(x):
            if x is None or x not in raw:
                return None
            v = _text(raw[x])
            return v

        oid = text_col(c.order_id)
        cust = text_col(c.customer)
        chosen = text_col(c.chosen)
        systems = text_col(c.crs)
        # undecodable bytes first: the rest of such a row cannot be trusted
        for x in self.present:
            v = raw[x]
            if len(v) and v.dtype == object and _any_surrogates(v):
                bad = np.array([isinstance(s, str) and _has_surrogates(s) for s in v.tolist()])
                flag(bad, f"undecodable bytes in {x!r}, shown as {_BAD_CHAR} (the file is "
                          f"not {self.encoding or 'utf-8'}; give --encoding)")
        flag(np.equal(oid, None), f"{c.order_id!r} missing")

        lat = self._number(raw[c.lat], c.lat, flag)
        lon = self._number(raw[c.lon], c.lon, flag)
        wlat = np.full(m, np.nan)
        wlon = np.full(m, np.nan)
        if systems is None:
            groups = [(self.crs, np.flatnonzero(reason == None))]
        else:
            systems = systems.copy()
            systems[np.equal(systems, None)] = self.crs   # an empty cell: the file's system
            live = reason == None
            s_str = np.where(live, systems, "").astype(str)
            groups = [(s, np.flatnonzero(live & (s_str == s)))
                      for s in np.unique(s_str[live]).tolist()]
        for s, rows in groups:
            if rows.size == 0:
                continue
            ok, degrees = self._system(s)
            if not ok:
                flag(_mask(m, rows), f"{c.crs or 'crs'} {s!r}: {degrees}")
                continue
            la, lo = lat[rows], lon[rows]
            if degrees:
                self._ranges(la, lo, rows, m, flag, s)
                good = np.isin(rows, np.flatnonzero(reason == None))
                rows, la, lo = rows[good], la[good], lo[good]
            if rows.size == 0:
                continue
            tl, tn = self._transform(la, lo, s, rows, m, flag)
            if not degrees:
                self._area_of_use(tl, tn, s, rows, m, flag)
            wlat[rows], wlon[rows] = tl, tn
        # after conversion, the WGS-84 point itself must be valid (projected input)
        live = reason == None
        self._ranges(wlat[live], wlon[live], np.flatnonzero(live), m, flag, "wgs84",
                     after=True)
        # duplicates among rows that are otherwise fine (a corrected copy of a
        # rejected row is not a duplicate)
        live = np.flatnonzero(reason == None)
        if live.size:
            h = self.seen.hash(oid[live])
            first = self.seen.first_position(h)
            # repeats inside the chunk: the first occurrence stays
            o = np.argsort(h, kind="stable")
            hs = h[o]
            rep = np.zeros(live.size, dtype=bool)
            same = hs[1:] == hs[:-1]
            rep[o[1:][same]] = True
            # position of the first occurrence in this chunk for each repeat
            grp_first = np.empty(live.size, dtype=np.int64)
            starts = np.r_[True, ~same]
            idx_first = np.maximum.accumulate(np.where(starts, np.arange(live.size), 0))
            grp_first[o] = pos[live][o[idx_first]]
            prev = np.where(first > 0, first, np.where(rep, grp_first, 0))
            dup = prev > 0
            if dup.any():
                msg = np.array([f"duplicate {c.order_id!r}: first on {self.unit} {p}"
                                for p in prev[dup].tolist()], dtype=object)
                full = np.full(m, None, dtype=object)
                full[live[dup]] = msg
                flag(_mask(m, live[dup]), full)
            fresh = ~dup
            self.seen.add(h[fresh], pos[live][fresh])
        ok = reason == None
        return OrderChunk(pos, ok, reason, raw, oid, cust, chosen, wlat, wlon,
                          bad_lines, n_blank)

    def _number(self, v, name, flag):
        """float64 of a column; flags missing, non-numeric and non-finite values."""
        pd = self.pd
        m = len(v)
        miss = _isna(v)
        flag(miss, f"{name!r} missing")
        if v.dtype.kind == "f":
            out = v.astype(np.float64)
        else:
            out = pd.to_numeric(pd.Series(v, dtype=object), errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan)
            bad = np.isnan(out) & ~miss
            if bad.any():
                full = np.full(m, None, dtype=object)
                full[bad] = [f"{name!r} is not a number: {s!r}" for s in v[bad].tolist()]
                flag(bad, full)
        inf = np.isinf(out)
        flag(inf, f"{name!r} is not finite")
        return out

    def _ranges(self, la, lo, rows, m, flag, system, after=False):
        c = self.cols
        where = f" after conversion from {self.crs}" if after else ""
        bad_lat = ~((la >= -90) & (la <= 90))
        bad_lon = ~((lo >= -180) & (lo <= 180))
        if bad_lat.any():
            full = np.full(m, None, dtype=object)
            full[rows[bad_lat]] = [f"{c.lat!r} = {x!r} outside [-90, 90]{where}"
                                   for x in la[bad_lat].tolist()]
            flag(_mask(m, rows[bad_lat]), full)
        if bad_lon.any():
            full = np.full(m, None, dtype=object)
            full[rows[bad_lon]] = [f"{c.lon!r} = {x!r} outside [-180, 180]{where}"
                                   for x in lo[bad_lon].tolist()]
            flag(_mask(m, rows[bad_lon]), full)

    def _area_of_use(self, lat, lon, system, rows, m, flag):
        """Flag converted points far outside the area a projected system is defined for.

        PROJ inverts a projection for any numbers (a northing of 1e9 in Web
        Mercator comes back as latitude 90), so a point in the wrong zone or
        with a typo would land somewhere valid-looking.  The registry's area
        of use, widened by :data:`AREA_MARGIN_DEG`, catches that.
        """
        box = _area(system)
        if box is None:
            return
        w, south, e, north = box
        g = AREA_MARGIN_DEG
        inside_lat = (lat >= south - g) & (lat <= north + g)
        if w <= e:
            inside_lon = (lon >= w - g) & (lon <= e + g)
        else:                                   # the area crosses the antimeridian
            inside_lon = (lon >= w - g) | (lon <= e + g)
        out = ~(inside_lat & inside_lon) & np.isfinite(lat)
        if out.any():
            full = np.full(m, None, dtype=object)
            full[rows[out]] = [f"({a:.5f}, {b:.5f}) after conversion from {system} is outside "
                               f"the area that system is defined for ({south:g}..{north:g} N, "
                               f"{w:g}..{e:g} E): wrong system or zone?"
                               for a, b in zip(lat[out].tolist(), lon[out].tolist())]
            flag(_mask(m, rows[out]), full)

    def _transform(self, la, lo, system, rows, m, flag):
        from .geo import transform
        try:
            return transform(la, lo, system, "wgs84")
        except ValueError:
            pass
        # some point failed (PROJ could not map it): find which, one by one
        tl, tn = np.full(len(la), np.nan), np.full(len(la), np.nan)
        for k in range(len(la)):
            try:
                tl[k], tn[k] = transform(la[k:k + 1], lo[k:k + 1], system, "wgs84")
            except ValueError as e:
                flag(_mask(m, rows[k:k + 1]), f"cannot convert from {system}: {e}")
        return tl, tn


#: Degrees by which a converted point may lie outside its projected system's
#: area of use before it is rejected (the registry's areas are drawn tightly
#: around the zones; points just beyond an edge are still good).
AREA_MARGIN_DEG = 1.0


@functools.lru_cache(maxsize=64)
def _area(system):
    """(west, south, east, north) of an EPSG system's area of use, or None."""
    try:
        from pyproj import CRS
        a = CRS.from_user_input(system).area_of_use
    except Exception:  # noqa: BLE001 -- no area known: nothing to check against
        return None
    return None if a is None else (a.west, a.south, a.east, a.north)


def _column(series):
    """A frame column as float64 if numeric, else as an object array."""
    if series.dtype.kind in "fiu":
        return series.to_numpy(dtype=np.float64)
    return series.to_numpy(dtype=object)


def _wide_head_lines(path, encoding, n_fields):
    """(line, fields) of the lines before the first data line with at most
    ``n_fields`` fields that have more (blank lines count as fitting)."""
    out = []
    with open(path, "r", encoding=encoding or "utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)                     # the header
        for row in reader:
            if len(row) <= n_fields:
                break
            out.append((reader.line_num, len(row)))
    return out


def _any_surrogates(v):
    # one search in the joined text tells whether any value needs a closer look
    # (a Python test per value costs more than the whole parse of the column)
    s = v[~_isna(v)]
    try:
        return _has_surrogates("".join(s.tolist())) if s.size else False
    except TypeError:             # not all text (a number in an object column)
        return _has_surrogates("".join(map(str, s.tolist())))


def _mask(m, rows):
    out = np.zeros(m, dtype=bool)
    out[rows] = True
    return out


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------
class ResultWriter:
    """Writes result rows incrementally as CSV or Parquet (UTF-8 text).

    Columns: :data:`RESULT_COLUMNS` (``customer_id`` only when
    ``with_customer``).  Unassigned orders have an empty ``leader_id`` and
    ``distance_m``; ``lat``/``lon`` are the order's WGS-84 point.
    """

    def __init__(self, path, fmt, with_customer):
        self.path = Path(path)
        self.fmt = fmt
        self.columns = [x for x in RESULT_COLUMNS if with_customer or x != "customer_id"]
        self.rows = 0
        self._w = None
        self._pa = None
        try:
            import pyarrow
            import pyarrow.csv  # noqa: F401
            self._pa = True
        except ImportError:
            if fmt == "parquet":
                require("pyarrow", "parquet", "writing Parquet files")
        try:
            self._f = open(self.path, "wb")  # noqa: SIM115 -- closed by close()
        except OSError as e:
            raise DumpError(f"cannot write {str(self.path)!r}: {e.strerror}") from None

    def write(self, cols):
        """Append rows: ``cols`` maps each column name to an array (None / NaN = empty)."""
        n = len(cols["order_id"])
        if self._pa:
            import pyarrow as pa
            arrays = []
            for name in self.columns:
                v = cols[name]
                if name in ("distance_m", "lat", "lon"):
                    v = np.asarray(v, dtype=np.float64)
                    arrays.append(pa.array(v, mask=~np.isfinite(v)))
                else:
                    arrays.append(pa.array(np.asarray(v, dtype=object), type=pa.string(),
                                           from_pandas=True))
            table = pa.Table.from_arrays(arrays, names=self.columns)
            if self._w is None:
                if self.fmt == "parquet":
                    import pyarrow.parquet as pq
                    self._w = pq.ParquetWriter(self._f, table.schema)
                else:
                    import pyarrow.csv as pcsv
                    self._w = pcsv.CSVWriter(self._f, table.schema, write_options=
                                             pcsv.WriteOptions(quoting_style="needed"))
            self._w.write_table(table)
        else:
            import pandas as pd
            df = pd.DataFrame({k: cols[k] for k in self.columns})
            text = df.to_csv(index=False, header=self.rows == 0 and not self._w)
            self._f.write(text.encode("utf-8"))
            self._w = True
        self.rows += n

    def close(self):
        """Finish the file (an empty result still gets its header / schema)."""
        if self._w is None:
            empty = {k: np.zeros(0, dtype=np.float64 if k in ("distance_m", "lat", "lon")
                                 else object) for k in self.columns}
            self.write(empty)
        if self._pa and self._w is not None:
            self._w.close()
        self._f.close()


class RejectWriter:
    """The rejects file: CSV, UTF-8, one row per rejected order row.

    Columns: ``line`` (CSV input; ``row`` for Parquet input), ``reason``,
    then the used input columns with their values as read, then
    ``raw_line`` with the text of a line the parser could not split.
    Undecodable bytes of the input appear as U+FFFD.
    """

    def __init__(self, path, unit, columns):
        self.path = Path(path)
        self.rows = 0
        self.columns = list(columns)
        try:
            self._f = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as e:
            raise DumpError(f"cannot write {str(self.path)!r}: {e.strerror}") from None
        self._w = csv.writer(self._f)
        self._w.writerow([unit, "reason"] + self.columns + ["raw_line"])

    def write(self, pos, reason, raw, raw_line=None):
        """One reject: position, reason, raw values (mapping column -> value)."""
        vals = []
        for c in self.columns:
            v = raw.get(c) if raw else None
            vals.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
        self._w.writerow([pos, reason] + vals + ["" if raw_line is None else raw_line])
        self.rows += 1

    def close(self):
        self._f.close()


def read_lines(path, numbers, encoding):
    """The text of the given 1-based file lines (for rejects of unsplittable lines)."""
    want = set(numbers)
    out = {}
    if not want:
        return out
    last = max(want)
    with open(path, "r", encoding=encoding or "utf-8", errors="replace",
              newline="") as f:
        for i, text in enumerate(f, start=1):
            if i in want:
                out[i] = text.rstrip("\r\n")
            if i >= last:
                break
    return out


def file_size(path):
    """Size of a file in bytes (0 if unknown)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
