"""``lbsdispatch assign`` through its real entry point, on messy CSV and Parquet dumps."""
import csv
import subprocess
import sys

import numpy as np
import pytest

pd = pytest.importorskip("pandas")  # the cli extra; the test extra installs it
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq

from lbsdispatch import Dispatcher, Rules, synth
from lbsdispatch.cli import main
from lbsdispatch.geo import transform

LEADERS_GBK = ("leader_id,name,lat,lon,capacity,active\n"
               "杭州-001,张三团长,30.2700,120.1500,10,1\n"
               "杭州-002,李四,30.2800,120.1600,10,yes\n"
               "杭州-003,王五,30.2500,120.1700,0,0\n")

# (line, content, expected reason fragment or None for a good row); the header is line 1
MESSY = [
    (2, "o1,30.27,120.15,c1", None),
    (3, "o2,abc,120.15,c2", "'lat' is not a number: 'abc'"),
    (4, "", "blank"),
    (5, "o3,,120.15,c3", "'lat' missing"),
    (6, "o4,95,120.15,c4", "'lat' = 95.0 outside [-90, 90]"),
    (7, "o5,30.27,200,c5", "'lon' = 200.0 outside [-180, 180]"),
    (8, "o1,30.28,120.16,c6", "duplicate 'order_id': first on line 2"),
    (9, "o6,30.27,120.15,c7,x,y", "cannot be split into the header's columns"),
    (10, ",30.27,120.15,c8", "'order_id' missing"),
    (11, "o7,30.27,inf,c9", "'lon' is not finite"),
    (12, "o8,30.2701,120.1501,c10", None),
    (13, "   ", "'lat' missing"),
    (14, "--- end of export (12 rows) ---", "'lat' missing"),
]


def write_messy(path, bom=True, encoding="utf-8"):
    text = "order_id,lat,lon,customer_id\n" + "\n".join(c for _, c, _ in MESSY) + "\n"
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


@pytest.fixture
def leaders(tmp_path):
    p = tmp_path / "leaders.csv"
    p.write_bytes(LEADERS_GBK.encode("gbk"))
    return p


def read_rejects(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def summary_counts(out):
    line = next(s for s in out.splitlines() if s.startswith("rows in"))
    nums = [int(t.replace(",", "")) for t in line.replace("=", " ").replace("+", " ").split()
            if t.replace(",", "").isdigit()]
    return nums[0], nums[1], nums[2]


@pytest.mark.parametrize("chunksize", [1, 2, 3, 5, 1000])
def test_messy_csv_every_row_accounted_for(tmp_path, leaders, capsys, chunksize):
    orders = write_messy(tmp_path / "orders.csv")
    out = tmp_path / "result.csv"
    code = main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out", str(out),
                 "--chunksize", str(chunksize)])
    assert code == 1                               # some rows rejected
    printed = capsys.readouterr().out
    n_in, n_out, n_rej = summary_counts(printed)
    res = pd.read_csv(out, dtype=str)
    rej = read_rejects(tmp_path / "result.rejects.csv")
    assert (n_out, n_rej) == (len(res), len(rej))
    assert n_in == n_out + n_rej == len([m for m in MESSY if m[2] != "blank"])
    assert "(1 blank line skipped)" in printed
    assert sorted(res["order_id"]) == ["o1", "o8"]
    # the GBK leader ids come back as text, and the inactive / zero-capacity leader is unused
    assert set(res["leader_id"]) <= {"杭州-001", "杭州-002"}
    by_line = {int(r["line"]): r for r in rej}
    for line, content, why in MESSY:
        if why is None or why == "blank":
            assert line not in by_line
            continue
        assert why in by_line[line]["reason"], (line, by_line[line])
    # raw values as read, and the raw text of the line that could not be split
    assert by_line[3]["lat"] == "abc"
    assert by_line[9]["raw_line"] == "o6,30.27,120.15,c7,x,y"
    assert by_line[8]["customer_id"] == "c6"


def test_results_do_not_depend_on_chunk_size(tmp_path, leaders):
    ev = synth.city_event(30, 700, seed=5)
    orders = tmp_path / "o.csv"
    pd.DataFrame({"order_id": ev.order_ids, "lat": ev.order_lat, "lon": ev.order_lon,
                  "customer_id": ev.customer_ids}).to_csv(orders, index=False)
    lead = tmp_path / "l.csv"
    pd.DataFrame({"leader_id": ev.leader_ids, "lat": ev.leader_lat, "lon": ev.leader_lon,
                  "capacity": ev.capacity}).to_csv(lead, index=False)
    frames = []
    for cs in (7, 700):
        out = tmp_path / f"r{cs}.csv"
        assert main(["assign", "--leaders", str(lead), "--orders", str(orders), "--out",
                     str(out), "--chunksize", str(cs), "--quiet", "--max-distance",
                     "4000"]) == 0
        frames.append(pd.read_csv(out, dtype=str))
    pd.testing.assert_frame_equal(frames[0], frames[1])
    # the same as the library on the same data (ids as text on both sides)
    d = Dispatcher(ev.leader_ids.astype(str).astype(object), ev.leader_lat, ev.leader_lon,
                   capacity=ev.capacity, rules=Rules(max_distance_m=4000))
    ref = d.assign_batch(ev.order_lat, ev.order_lon,
                         customer_ids=ev.customer_ids.astype(str).astype(object))
    got = frames[0]
    assert list(got["outcome"]) == [o.name for o in map(type(ref[0].outcome), ref.outcome)]
    assert list(got["leader_id"].fillna("-")) == [("-" if v is None else v)
                                                  for v in ref.leader_id.tolist()]


def test_gbk_orders_and_undecodable_bytes(tmp_path, leaders, capsys):
    orders = tmp_path / "orders_gbk.csv"
    orders.write_bytes("order_id,lat,lon,customer_id\n订单1,30.27,120.15,张\n订单2,30.28,120.16,李\n"
                       .encode("gbk"))
    out = tmp_path / "r.csv"
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(out)]) == 0
    res = pd.read_csv(out, dtype=str, encoding="utf-8")
    assert list(res["order_id"]) == ["订单1", "订单2"]
    assert list(res["customer_id"]) == ["张", "李"]
    # a UTF-8 file with one stray Latin-1 byte: that row is rejected, the others go through
    bad = tmp_path / "orders_bad.csv"
    bad.write_bytes(b"order_id,lat,lon\nok1,30.27,120.15\nbad\xe9,30.27,120.15\nok2,30.28,120.16\n")
    out2 = tmp_path / "r2.csv"
    assert main(["assign", "--leaders", str(leaders), "--orders", str(bad), "--out",
                 str(out2)]) == 1
    rej = read_rejects(tmp_path / "r2.rejects.csv")
    assert len(rej) == 1 and rej[0]["line"] == "3"
    assert "undecodable bytes in 'order_id'" in rej[0]["reason"]
    assert rej[0]["order_id"] == "bad\ufffd"
    assert list(pd.read_csv(out2, dtype=str)["order_id"]) == ["ok1", "ok2"]
    # --encoding given: the GBK file read as latin-1 decodes (to the wrong text) -- the
    # caller's choice is honoured, not second-guessed
    out3 = tmp_path / "r3.csv"
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(out3), "--encoding", "gbk"]) == 0


def test_parquet_in_and_out(tmp_path, leaders, capsys):
    table = pa.table({
        "oid": pa.array(["p1", "p2", "p3", None, "p1", "p5"]),
        "lat": pa.array(["30.27", "x", "30.28", "30.27", "30.27", "-91"]),
        "lon": pa.array([120.15, 120.15, 120.16, 120.15, 120.15, 120.15]),
    })
    orders = tmp_path / "orders.parquet"
    pq.write_table(table, orders)
    out = tmp_path / "result.parquet"
    code = main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(out), "--order-id-col", "oid", "--chunksize", "4"])
    assert code == 1
    n_in, n_out, n_rej = summary_counts(capsys.readouterr().out)
    res = pq.read_table(out).to_pandas()
    rej = read_rejects(tmp_path / "result.rejects.csv")
    assert n_in == 6 == len(res) + len(rej) and (n_out, n_rej) == (len(res), len(rej))
    assert list(res["order_id"]) == ["p1", "p3"]
    assert list(res.columns) == ["order_id", "leader_id", "distance_m", "outcome", "reason",
                                 "lat", "lon"]
    why = {int(r["row"]): r["reason"] for r in rej}   # Parquet: 1-based data rows
    assert "not a number: 'x'" in why[2]
    assert "'oid' missing" in why[4]
    assert "duplicate 'oid': first on row 1" in why[5]
    assert "outside [-90, 90]" in why[6]


def test_csv_in_parquet_out_by_format_option(tmp_path, leaders):
    orders = tmp_path / "o.csv"
    orders.write_text("order_id,lat,lon\n1,30.27,120.15\n")
    out = tmp_path / "r.data"
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(out), "--format", "parquet", "--quiet"]) == 0
    assert pq.read_table(out).num_rows == 1


def test_input_errors_exit_2_with_a_clear_message(tmp_path, leaders, capsys):
    orders = write_messy(tmp_path / "orders.csv")
    out = str(tmp_path / "r.csv")
    assert main(["assign", "--leaders", str(tmp_path / "nope.csv"), "--orders", str(orders),
                 "--out", out]) == 2
    assert "leaders file" in capsys.readouterr().err
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out", out,
                 "--lat-col", "latitude"]) == 2
    err = capsys.readouterr().err
    assert "has no column 'latitude'" in err and "'lat'" in err
    bad_leaders = tmp_path / "bad_leaders.csv"
    bad_leaders.write_text("leader_id,lat,lon,capacity\nA,30.27,120.15,10\nB,30.28,x,10\n")
    assert main(["assign", "--leaders", str(bad_leaders), "--orders", str(orders),
                 "--out", out]) == 2
    err = capsys.readouterr().err
    assert "line 3, column 'lon': 'x' is not a number" in err
    dup = tmp_path / "dup_leaders.csv"
    dup.write_text("leader_id,lat,lon\nA,30.27,120.15\nA,30.28,120.1\n")
    assert main(["assign", "--leaders", str(dup), "--orders", str(orders), "--out", out]) == 2
    assert "line 3" in capsys.readouterr().err
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out", out,
                 "--crs", "mars"]) == 2
    assert "'mars'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out", out,
              "--max-distance", "-5"])
    assert e.value.code == 2
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(orders)]) == 2
    assert "overwrite an input" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["assign", "--leaders", str(leaders), "--orders", str(empty), "--out",
                 out]) == 2
    assert "empty" in capsys.readouterr().err


def test_missing_extra_is_named(tmp_path, leaders, capsys, monkeypatch):
    orders = tmp_path / "o.csv"
    orders.write_text("order_id,lat,lon\n1,30.27,120.15\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import fails
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(tmp_path / "r.csv"), "--report", str(tmp_path / "r.png")]) == 2
    assert 'pip install "lbsdispatch[report]"' in capsys.readouterr().err


def _city_files(tmp_path, ev, o_lat, o_lon, l_lat, l_lon, name, extra=None):
    o = tmp_path / f"{name}_orders.csv"
    cols = {"order_id": ev.order_ids, "lat": o_lat, "lon": o_lon}
    cols.update(extra or {})
    pd.DataFrame(cols).to_csv(o, index=False, float_format="%.12f")
    ld = tmp_path / f"{name}_leaders.csv"
    pd.DataFrame({"leader_id": ev.leader_ids, "lat": l_lat, "lon": l_lon,
                  "capacity": ev.capacity}).to_csv(ld, index=False, float_format="%.12f")
    return o, ld


def test_gcj02_input_gives_the_same_assignments_as_wgs84(tmp_path):
    ev = synth.city_event(60, 1500, seed=2)
    o_w, l_w = _city_files(tmp_path, ev, ev.order_lat, ev.order_lon, ev.leader_lat,
                           ev.leader_lon, "wgs")
    og = transform(ev.order_lat, ev.order_lon, "wgs84", "gcj02")
    lg = transform(ev.leader_lat, ev.leader_lon, "wgs84", "gcj02")
    o_g, l_g = _city_files(tmp_path, ev, *og, *lg, "gcj")
    assert main(["assign", "--leaders", str(l_w), "--orders", str(o_w), "--out",
                 str(tmp_path / "rw.csv"), "--quiet", "--max-distance", "3000"]) == 0
    assert main(["assign", "--leaders", str(l_g), "--orders", str(o_g), "--out",
                 str(tmp_path / "rg.csv"), "--quiet", "--max-distance", "3000",
                 "--crs", "gcj02"]) == 0
    rw = pd.read_csv(tmp_path / "rw.csv", dtype={"leader_id": str})
    rg = pd.read_csv(tmp_path / "rg.csv", dtype={"leader_id": str})
    assert (rw["leader_id"].fillna("") == rg["leader_id"].fillna("")).all()
    assert (rw["outcome"] == rg["outcome"]).all()
    np.testing.assert_allclose(rg["lat"], rw["lat"], atol=1e-8)     # written in WGS-84
    np.testing.assert_allclose(rg["distance_m"].fillna(-1), rw["distance_m"].fillna(-1),
                               atol=0.11)
    # mixed per row: each order in its own system, named in a column
    systems = np.array(["wgs84", "gcj02", "bd09"])[np.arange(ev.n_orders) % 3]
    m_lat, m_lon = ev.order_lat.copy(), ev.order_lon.copy()
    for s in ("gcj02", "bd09"):
        k = systems == s
        m_lat[k], m_lon[k] = transform(ev.order_lat[k], ev.order_lon[k], "wgs84", s)
    systems = systems.astype(object)
    systems[5] = "mars"
    o_m, _ = _city_files(tmp_path, ev, m_lat, m_lon, ev.leader_lat, ev.leader_lon, "mixed",
                         {"crs": systems})
    assert main(["assign", "--leaders", str(l_w), "--orders", str(o_m), "--out",
                 str(tmp_path / "rm.csv"), "--quiet", "--max-distance", "3000",
                 "--crs-col", "crs"]) == 1
    rej = read_rejects(tmp_path / "rm.rejects.csv")
    assert [r["line"] for r in rej] == ["7"] and "'mars'" in rej[0]["reason"]
    rm = pd.read_csv(tmp_path / "rm.csv", dtype={"leader_id": str, "order_id": str})
    keep = rw["order_id"].astype(str) != "5"
    # order 5 was rejected, so later orders may see one more free slot; compare those
    # placed before it, which cannot be affected
    head = rw[keep].head(5)
    assert list(rm["leader_id"].head(5).fillna("")) == list(head["leader_id"].fillna(""))


def test_mixed_crs_warning(tmp_path, capsys):
    ev = synth.city_event(150, 3000, seed=4)
    o_lat, o_lon = transform(ev.order_lat, ev.order_lon, "gcj02", "bd09")
    o_b, l_c = _city_files(tmp_path, ev, o_lat, o_lon, ev.leader_lat, ev.leader_lon, "bd")
    assert main(["assign", "--leaders", str(l_c), "--orders", str(o_b), "--out",
                 str(tmp_path / "r.csv"), "--quiet", "--crs", "gcj02"]) == 0
    err = capsys.readouterr().err
    assert "warning: orders look like BD-09 while leaders are GCJ-02" in err
    assert "--orders-crs bd09 --leaders-crs gcj02" in err
    o_c, _ = _city_files(tmp_path, ev, ev.order_lat, ev.order_lon, ev.leader_lat,
                         ev.leader_lon, "clean")
    assert main(["assign", "--leaders", str(l_c), "--orders", str(o_c), "--out",
                 str(tmp_path / "r2.csv"), "--quiet", "--crs", "gcj02"]) == 0
    assert "warning" not in capsys.readouterr().err
    # following the advice removes it
    assert main(["assign", "--leaders", str(l_c), "--orders", str(o_b), "--out",
                 str(tmp_path / "r3.csv"), "--quiet", "--orders-crs", "bd09",
                 "--leaders-crs", "gcj02"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_rules_bindings_chosen_and_store(tmp_path, leaders, capsys):
    orders = tmp_path / "o.csv"
    orders.write_text("order_id,lat,lon,customer_id,chosen_leader\n"
                      "a,30.2700,120.1500,c1,\n"          # nearest: 杭州-001
                      "b,30.2700,120.1500,c2,杭州-002\n"  # the buyer's choice
                      "c,30.2700,120.1500,c3,\n"          # bound to 杭州-002
                      "d,31.5,121.5,c4,\n", encoding="utf-8")
    bindings = tmp_path / "b.csv"
    bindings.write_text("customer_id,leader_id\nc3,杭州-002\n", encoding="utf-8")
    store = tmp_path / "event.sqlite"
    out = tmp_path / "r.csv"
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(out), "--bindings", str(bindings), "--max-distance", "5000",
                 "--store", str(store)]) == 0
    res = pd.read_csv(out, dtype=str).set_index("order_id")
    assert res.loc["a", "leader_id"] == "杭州-001" and res.loc["a", "outcome"] == "NEAREST"
    assert res.loc["b", "outcome"] == "CHOSEN" and res.loc["b", "leader_id"] == "杭州-002"
    assert res.loc["c", "outcome"] == "STICKY" and res.loc["c", "leader_id"] == "杭州-002"
    assert res.loc["d", "outcome"] == "OUT_OF_RANGE" and pd.isna(res.loc["d", "leader_id"])
    d = Dispatcher.open(store)
    try:
        assert int(d.loads().sum()) == 3
    finally:
        d.close()
    # a store file that already holds an event is refused, clearly
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(tmp_path / "r2.csv"), "--store", str(store)]) == 2
    assert "cannot set up the dispatch" in capsys.readouterr().err


def test_as_a_module(tmp_path, leaders):
    orders = write_messy(tmp_path / "orders.csv")
    r = subprocess.run([sys.executable, "-m", "lbsdispatch", "assign", "--leaders",
                        str(leaders), "--orders", str(orders), "--out",
                        str(tmp_path / "r.csv")], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1, r.stderr
    assert "rows in 12 = out 2 + rejects 10" in r.stdout
    assert "Traceback" not in r.stderr


def test_crs_column_in_the_leader_file_and_projected_orders(tmp_path):
    ev = synth.city_event(40, 800, seed=9)
    o_w, l_w = _city_files(tmp_path, ev, ev.order_lat, ev.order_lon, ev.leader_lat,
                           ev.leader_lon, "wgs")
    assert main(["assign", "--leaders", str(l_w), "--orders", str(o_w), "--out",
                 str(tmp_path / "rw.csv"), "--quiet"]) == 0
    # leaders: every other one in BD-09, named per row; empty cells are the file's system
    systems = np.where(np.arange(ev.n_leaders) % 2 == 0, "bd09", "").astype(object)
    l_lat, l_lon = ev.leader_lat.copy(), ev.leader_lon.copy()
    k = systems == "bd09"
    l_lat[k], l_lon[k] = transform(ev.leader_lat[k], ev.leader_lon[k], "wgs84", "bd09")
    leaders = tmp_path / "mixed_leaders.csv"
    pd.DataFrame({"leader_id": ev.leader_ids, "lat": l_lat, "lon": l_lon,
                  "capacity": ev.capacity, "system": systems}).to_csv(
        leaders, index=False, float_format="%.12f")
    # orders: Web Mercator metres (northing in the lat column, easting in lon)
    y, x = transform(ev.order_lat, ev.order_lon, "wgs84", "EPSG:3857")
    o_m, _ = _city_files(tmp_path, ev, y, x, ev.leader_lat, ev.leader_lon, "merc")
    assert main(["assign", "--leaders", str(leaders), "--orders", str(o_m), "--out",
                 str(tmp_path / "rm.csv"), "--quiet", "--crs-col", "system",
                 "--orders-crs", "EPSG:3857"]) == 0
    rw = pd.read_csv(tmp_path / "rw.csv", dtype={"leader_id": str})
    rm = pd.read_csv(tmp_path / "rm.csv", dtype={"leader_id": str})
    assert (rw["leader_id"].fillna("") == rm["leader_id"].fillna("")).all()
    np.testing.assert_allclose(rm["lat"], rw["lat"], atol=1e-7)
    # a point that is fine in metres but not on Earth after conversion is a reject
    bad = tmp_path / "bad_merc.csv"
    bad.write_text("order_id,lat,lon\n1,3000000,13000000\n2,1e9,13000000\n")
    assert main(["assign", "--leaders", str(l_w), "--orders", str(bad), "--out",
                 str(tmp_path / "rb.csv"), "--quiet", "--orders-crs", "EPSG:3857"]) == 1
    rej = read_rejects(tmp_path / "rb.rejects.csv")
    assert [r["line"] for r in rej] == ["3"], rej


def test_resume_after_an_interrupted_run_gives_the_one_shot_answer(tmp_path, capsys):
    ev = synth.city_event(30, 600, seed=11, capacity_ratio=0.9)
    o_all, leaders = _city_files(tmp_path, ev, ev.order_lat, ev.order_lon, ev.leader_lat,
                                 ev.leader_lon, "all")
    # the run that was cut off: only the first 250 orders reached the store
    first = tmp_path / "first.csv"
    pd.read_csv(o_all).head(250).to_csv(first, index=False, float_format="%.12f")
    store = tmp_path / "event.sqlite"
    common = ["--leaders", str(leaders), "--quiet", "--max-distance", "3000"]
    assert main(["assign", "--orders", str(first), "--out", str(tmp_path / "r1.csv"),
                 "--store", str(store)] + common) == 0
    assert main(["assign", "--orders", str(o_all), "--out", str(tmp_path / "r2.csv"),
                 "--store", str(store), "--resume"] + common) == 0
    assert main(["assign", "--orders", str(o_all), "--out", str(tmp_path / "once.csv"),
                 ] + common) == 0
    resumed = pd.read_csv(tmp_path / "r2.csv", dtype={"leader_id": str})
    once = pd.read_csv(tmp_path / "once.csv", dtype={"leader_id": str})
    assert (resumed["leader_id"].fillna("") == once["leader_id"].fillna("")).all()
    assert (resumed["outcome"] == once["outcome"]).all()
    # the first run's assigned orders are marked as repeats, the rest are not
    rep = resumed["reason"].str.contains("repeat", regex=False)
    assert rep.sum() == (once.head(250)["leader_id"].notna()).sum()
    assert not rep[250:].any()
    # a resume needs a store that exists and the same leaders
    capsys.readouterr()
    assert main(["assign", "--orders", str(o_all), "--out", str(tmp_path / "r3.csv"),
                 "--store", str(tmp_path / "nope.sqlite"), "--resume"] + common) == 2
    assert "does not exist" in capsys.readouterr().err
    other = tmp_path / "other_leaders.csv"
    pd.read_csv(leaders).head(10).to_csv(other, index=False)
    assert main(["assign", "--orders", str(o_all), "--out", str(tmp_path / "r4.csv"),
                 "--store", str(store), "--resume", "--leaders", str(other)]) == 2
    assert "does not match the event" in capsys.readouterr().err


def test_edge_files(tmp_path, leaders, capsys):
    header_only = tmp_path / "h.csv"
    header_only.write_text("order_id,lat,lon\n")
    assert main(["assign", "--leaders", str(leaders), "--orders", str(header_only), "--out",
                 str(tmp_path / "r0.csv")]) == 0
    assert "rows in 0 = out 0 + rejects 0" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "r0.csv").shape == (0, 7)
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"order_id,lat,lon\r\nA,30.27,120.15\r\n\r\nB,30.2x,120.16\r\n")
    assert main(["assign", "--leaders", str(leaders), "--orders", str(crlf), "--out",
                 str(tmp_path / "r1.csv")]) == 1
    assert [r["line"] for r in read_rejects(tmp_path / "r1.rejects.csv")] == ["4"]
    no_leaders = tmp_path / "nl.csv"
    no_leaders.write_text("leader_id,lat,lon\n")
    assert main(["assign", "--leaders", str(no_leaders), "--orders", str(crlf), "--out",
                 str(tmp_path / "r2.csv")]) == 1
    captured = capsys.readouterr()
    assert "has no leaders" in captured.err
    assert list(pd.read_csv(tmp_path / "r2.csv")["outcome"]) == ["OUT_OF_RANGE"]
    assert main(["assign", "--leaders", str(leaders), "--orders", str(crlf), "--out",
                 str(tmp_path / "no" / "such" / "dir.csv")]) == 2
    assert "cannot write" in capsys.readouterr().err
