"""``lbsdispatch assign --mode optimal [--compare]`` and ``lbsdispatch sop``."""
import numpy as np
import pandas as pd
import pytest

from lbsdispatch import Dispatcher, Rules, synth
from lbsdispatch.cli import main
from lbsdispatch.geo import great_circle_m


@pytest.fixture
def dump(tmp_path):
    ev = synth.city_event(n_leaders=60, n_orders=1500, capacity_ratio=1.0, seed=5)
    pd.DataFrame({"leader_id": ev.leader_ids, "lat": ev.leader_lat, "lon": ev.leader_lon,
                  "capacity": ev.capacity}).to_csv(tmp_path / "leaders.csv", index=False)
    pd.DataFrame({"order_id": ev.order_ids, "lat": ev.order_lat,
                  "lon": ev.order_lon}).to_csv(tmp_path / "orders.csv", index=False)
    return ev, tmp_path


def _run(tmp, *extra):
    return main(["assign", "--leaders", str(tmp / "leaders.csv"), "--orders",
                 str(tmp / "orders.csv"), "--out", str(tmp / "r.csv"), "--max-distance", "3000",
                 "--chunksize", "400", *extra])


def test_optimal_mode_equals_the_library_plan(dump, capsys):
    ev, tmp = dump
    assert _run(tmp, "--mode", "optimal", "--compare") == 0
    out = capsys.readouterr().out
    got = pd.read_csv(tmp / "r.csv")
    d = Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                   rules=Rules(max_distance_m=3000))
    exp = d.assign_batch(ev.order_lat, ev.order_lon, mode="optimal")
    # one plan over the whole file, whatever --chunksize says: the same count and total
    # (the CLI keeps ids as text, so equal-cost alternatives may be broken differently)
    placed = got["leader_id"].notna().to_numpy()
    assert placed.sum() == (exp.leader_index >= 0).sum()
    pos = {int(v): i for i, v in enumerate(ev.leader_ids.tolist())}
    li = np.array([pos[int(v)] for v in got["leader_id"][placed]])
    metres = great_circle_m(got["lat"][placed].to_numpy(), got["lon"][placed].to_numpy(),
                            ev.leader_lat[li], ev.leader_lon[li])
    ok = exp.leader_index >= 0
    # the objective: integer metres, equal however equal-cost ties were broken
    assert np.floor(metres + 0.5).sum() == np.floor(exp.distance_m[ok] + 0.5).sum()
    assert (got["outcome"] == "REBALANCED").sum() > 0
    g = Dispatcher(ev.leader_ids, ev.leader_lat, ev.leader_lon, capacity=ev.capacity,
                   rules=Rules(max_distance_m=3000)).assign_batch(ev.order_lat, ev.order_lon)
    line = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()
            if ln.strip().startswith(("greedy ", "optimal "))}
    assert int(line["greedy"][0].replace(",", "")) == int((g.leader_index >= 0).sum())
    assert int(line["optimal"][0].replace(",", "")) == int((exp.leader_index >= 0).sum())
    assert int((exp.leader_index >= 0).sum()) >= int((g.leader_index >= 0).sum())


def test_workers_give_the_same_file(dump, capsys):
    """--workers: the same result file for 1 and 2 threads (the island path forced
    on, since the event is small), and a clear error for a bad count."""
    from lbsdispatch import _kdtree
    _, tmp = dump
    old = _kdtree._set_island_params(min_leaders=0, min_rows=0, link_m=300.0,
                                     min_rows_per_worker=1)
    try:
        assert _run(tmp, "--workers", "1") == 0
        one = (tmp / "r.csv").read_bytes()
        assert _run(tmp, "--workers", "2") == 0
        assert (tmp / "r.csv").read_bytes() == one
    finally:
        _kdtree._set_island_params(**old)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _run(tmp, "--workers", "0")
    assert "--workers" in capsys.readouterr().err


def test_compare_needs_optimal_mode(dump, capsys):
    _, tmp = dump
    assert _run(tmp, "--compare") == 2
    assert "--mode optimal" in capsys.readouterr().err


def test_sop_command_lists_due_tasks_per_leader(dump, capsys):
    ev, tmp = dump
    store = tmp / "e.sqlite"
    assert _run(tmp, "--store", str(store)) == 0
    capsys.readouterr()
    assert main(["sop", str(store), "--now", "2030-01-01T12:00:00+08:00"]) == 0
    text = capsys.readouterr().out
    d = Dispatcher.open(store)
    busy = np.flatnonzero(d.loads() > 0)
    assert len(busy) > 0
    for i in busy[:5].tolist():
        assert f"leader {d.leader_ids[i]}" in text
    assert "OVERDUE" in text             # the welcome was due within the hour
