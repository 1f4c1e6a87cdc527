"""The ``lbsdispatch`` command, through its real entry points."""
import subprocess
import sys

import pytest

from lbsdispatch.cli import main


def test_demo_runs_the_whole_job(capsys, tmp_path):
    """Identities, bindings, dispatch into a SQLite store, the SOP's first hour, the
    report files; every order accounted for, and the store reopens equal."""
    from lbsdispatch import Dispatcher

    assert main(["demo", "--leaders", "40", "--orders", "2000", "--seed", "3",
                 "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "40 leaders, 2000 orders" in out
    counts = {line.split()[0]: int(line.split()[1].replace(",", ""))
              for line in out.splitlines()
              if line.strip().split(" ")[0] in ("NEAREST", "SPILLOVER", "OUT_OF_RANGE",
                                                "ALL_FULL", "STICKY", "CHOSEN", "INVALID")}
    assert sum(counts.values()) == 2000        # nothing lost: every order has one outcome
    assert counts.get("STICKY", 0) > 0         # returning customers kept their leader
    assigned = sum(v for k, v in counts.items() if k in ("NEAREST", "SPILLOVER", "STICKY"))
    new = assigned - counts.get("STICKY", 0)
    sop = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in out.splitlines()
           if line.strip().startswith("on_")}
    assert sop["on_new_neighbor"] == new       # every new neighbour announced, once
    store = tmp_path / "event.sqlite"
    assert f"event store: {store}" in out
    d = Dispatcher.open(store)
    assert int(d.loads().sum()) == assigned
    d.close()
    png = tmp_path / "report.png"
    assert (tmp_path / "result.csv").is_file() and png.is_file()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_as_a_module(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lbsdispatch", "demo", "--leaders", "20",
                        "--orders", "500", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "20 leaders, 500 orders" in r.stdout


def test_bad_option_value_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--leaders", "0"])
    assert e.value.code == 2
    assert "lbsdispatch: error: n_leaders must be >= 1" in capsys.readouterr().err


def test_demo_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--leaders", "5", "--orders", "10", "--dir", str(f)])
    assert e.value.code == 2
    assert "is a file, not a folder" in capsys.readouterr().err
