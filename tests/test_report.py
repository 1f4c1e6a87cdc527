"""``lbsdispatch report`` and ``assign --report``: the summary and the map."""
import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
from matplotlib.image import imread

from lbsdispatch import synth
from lbsdispatch.cli import main
from lbsdispatch.report import LeaderLoad, load_result, out_of_range_clusters, summarise

# a remote town with customers and no leader: where a leader should be recruited
TOWN = (30.9, 119.6)


@pytest.fixture
def event_files(tmp_path):
    ev = synth.city_event(80, 3000, seed=7, capacity_ratio=0.95)
    rng = np.random.default_rng(0)
    t_lat = TOWN[0] + rng.normal(0, 0.002, 40)
    t_lon = TOWN[1] + rng.normal(0, 0.002, 40)
    orders = tmp_path / "orders.csv"
    pd.DataFrame({"order_id": np.arange(ev.n_orders + 40),
                  "lat": np.r_[ev.order_lat, t_lat], "lon": np.r_[ev.order_lon, t_lon]}
                 ).to_csv(orders, index=False)
    leaders = tmp_path / "leaders.csv"
    cap = ev.capacity.copy()
    cap[:3] = 0                                    # three leaders take nothing
    pd.DataFrame({"leader_id": ev.leader_ids, "lat": ev.leader_lat, "lon": ev.leader_lon,
                  "capacity": cap}).to_csv(leaders, index=False)
    return ev, orders, leaders, cap


def test_assign_report_png_is_a_real_map(tmp_path, event_files, capsys):
    _, orders, leaders, _ = event_files
    png = tmp_path / "night.png"
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(tmp_path / "r.csv"), "--max-distance", "5000", "--report", str(png)]) == 0
    assert f"report:  {png}" in capsys.readouterr().out
    img = imread(png)
    assert img.shape[:2] == (800, 1000)            # 10 x 8 inches at 100 dpi
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05                        # not a blank canvas
    # the outcome colours are drawn: NEAREST blue and OUT_OF_RANGE vermilion pixels
    for hexcol in ("#0072B2", "#D55E00"):
        want = np.array([int(hexcol[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        assert (np.abs(rgb - want).max(axis=1) < 0.02).sum() > 20, hexcol


def test_report_summary_matches_the_result(tmp_path, event_files, capsys):
    ev, orders, leaders, cap = event_files
    result = tmp_path / "r.csv"
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(result), "--max-distance", "5000", "--quiet"]) == 0
    html = tmp_path / "r.html"
    png = tmp_path / "r.png"
    assert main(["report", str(result), "--leaders", str(leaders), "--html", str(html),
                 "--png", str(png)]) == 0
    text = capsys.readouterr().out
    res = pd.read_csv(result, dtype={"leader_id": str})
    n = len(res)
    assert f"orders: {n:,}" in text
    for name, c in res["outcome"].value_counts().items():
        assert f"{name:<12}{c:>10,}" in text
    d = res["distance_m"][res["leader_id"].notna()]
    assert f"p50 {np.percentile(d, 50):,.0f}" in text
    assert f"max {d.max():,.0f}" in text
    load = res["leader_id"].value_counts().reindex(ev.leader_ids.astype(str), fill_value=0)
    assert f"empty (no order): {int((load.to_numpy() == 0).sum()):,}" in text
    fill = load.to_numpy() / np.maximum(cap, 1)
    over = int(((fill >= 0.9) | ((cap == 0) & (load.to_numpy() > 0))).sum()) + int(
        ((cap == 0) & (load.to_numpy() == 0)).sum())
    assert f"over 90% full: {over:,}" in text
    # the remote town is found as a cluster of out-of-range orders
    line = next(s for s in text.splitlines() if "orders around (" in s)
    lat, lon = (float(v) for v in line.split("(")[1].split(")")[0].split(","))
    assert abs(lat - TOWN[0]) < 0.01 and abs(lon - TOWN[1]) < 0.01
    assert int(line.split()[0].replace(",", "")) >= 35
    page = html.read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "recruit a leader here" in page
    assert imread(png).shape[:2] == (800, 1000)


def test_report_without_leaders_and_bad_input(tmp_path, event_files, capsys):
    _, orders, leaders, _ = event_files
    result = tmp_path / "r.parquet"
    pytest.importorskip("pyarrow")
    assert main(["assign", "--leaders", str(leaders), "--orders", str(orders), "--out",
                 str(result), "--quiet"]) == 0
    assert main(["report", str(result)]) == 0
    assert "give --leaders" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["report", str(other)]) == 2
    assert "has no column" in capsys.readouterr().err


def test_clusters_join_touching_cells_only():
    rng = np.random.default_rng(3)
    a = (30.0 + rng.normal(0, 0.003, 25), 120.0 + rng.normal(0, 0.003, 25))
    b = (31.0 + rng.normal(0, 0.003, 10), 121.0 + rng.normal(0, 0.003, 10))
    lone = (np.array([29.0, 29.5]), np.array([118.0, 118.5]))
    lat = np.concatenate([a[0], b[0], lone[0]])
    lon = np.concatenate([a[1], b[1], lone[1]])
    cl = out_of_range_clusters(lat, lon, cell_m=2_000, min_orders=3)
    assert [c.n_orders for c in cl] == [25, 10]
    assert abs(cl[0].lat - 30.0) < 0.005 and abs(cl[1].lon - 121.0) < 0.005
    assert cl[0].radius_m < 2_000
    assert out_of_range_clusters([], [], 2_000) == []


def test_leader_load_refuses_a_result_from_other_leaders(tmp_path):
    from lbsdispatch.dumps import DumpError
    res = pd.DataFrame({"order_id": ["1"], "leader_id": ["Z"], "distance_m": [1.0],
                        "outcome": ["NEAREST"], "lat": [30.0], "lon": [120.0]})
    with pytest.raises(DumpError, match="not in the leader file"):
        LeaderLoad.from_result(np.array(["A"], dtype=object), [30.0], [120.0], res)
    s = summarise(res)
    assert s.counts["NEAREST"] == 1 and s.leaders["n"] == 1
    p = tmp_path / "r.csv"
    res.to_csv(p, index=False)
    assert len(load_result(p)) == 1
