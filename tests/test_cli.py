"""The ``lbsdispatch`` command, through its real entry points."""
import subprocess
import sys

import pytest

from lbsdispatch.cli import main


def test_demo_prints_every_order_accounted_for(capsys):
    assert main(["demo", "--leaders", "40", "--orders", "2000", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "40 leaders, 2000 orders" in out
    counts = [int(line.split()[1].replace(",", "")) for line in out.splitlines()
              if line.strip().split(" ")[0] in ("NEAREST", "SPILLOVER", "OUT_OF_RANGE",
                                                "ALL_FULL", "STICKY", "CHOSEN", "INVALID")]
    assert sum(counts) == 2000          # nothing lost: every order has one outcome
    assert "dispatch batch" in out


def test_demo_as_a_module():
    r = subprocess.run([sys.executable, "-m", "lbsdispatch", "demo", "--leaders", "20",
                        "--orders", "500"], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "20 leaders, 500 orders" in r.stdout


def test_bad_option_value_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--leaders", "0"])
    assert e.value.code == 2
    assert "lbsdispatch: error: n_leaders must be >= 1" in capsys.readouterr().err
