"""``lbsdispatch bench`` through the real entry point."""
import re
import sys

import pytest

from lbsdispatch.cli import main


def test_bench_prints_both_ratio_tables(capsys):
    pytest.importorskip("scipy")
    pytest.importorskip("sklearn")
    pytest.importorskip("pykdtree")
    # one short repeat: this checks the command, not the speed (benchmarks/ does that)
    assert main(["bench", "--event", "city", "--repeat", "1", "--min-time", "0.005"]) == 0
    out = capsys.readouterr().out
    assert "city event, 800 leaders, 20,000 orders" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| operation")}
    for label in ("build", "k=1 batch, 1 thread", "k=5 batch, 1 thread", "k=1 batch, all cores",
                  "single query (median)"):
        assert label in rows, label
    disp = next(v for k, v in rows.items() if k.startswith("assign_batch"))
    ratios = [float(x) for x in re.findall(r"\| ([0-9.]+)x", disp)]
    assert len(ratios) == 1 and ratios[0] > 0
    # every cell of the k=1 row is measured (ours, cKDTree, pykdtree, BallTree)
    assert rows["k=1 batch, 1 thread"].count("x |") == 3


def test_bench_names_the_extra_when_a_peer_is_missing(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pykdtree.kdtree", None)
    monkeypatch.setitem(sys.modules, "pykdtree", None)
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "pykdtree" in err and 'pip install "lbsdispatch[bench]"' in err
