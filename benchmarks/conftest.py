"""pytest configuration of the benchmark suite (``benchmarks/`` only).

* Collects ``bench_*.py`` here, without touching the project's pytest
  settings (``pyproject.toml`` keeps ``testpaths = ["tests"]``, so ``pytest``
  and ``pytest tests`` never see the benchmarks).  The files are collected
  only when ``benchmarks/`` (or a path inside it) is named on the command
  line, so ``pytest .`` does not start a benchmark run by accident.
* ``--nation`` (or ``LBSDISPATCH_BENCH_NATION=1``) enables the nation event
  (100,000 leaders, 1,000,000 orders; a few minutes); otherwise its
  benchmarks are skipped.
* Prints, after the run, what the benchmarks put in ``extra_info``
  (pykdtree on one thread, scalar median/p99, peak memory), since the
  pytest-benchmark tables do not show it (``--benchmark-json`` does).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _bench_common import SUMMARY, nation_enabled  # noqa: E402


def pytest_addoption(parser):
    group = parser.getgroup("lbsdispatch benchmarks")
    group.addoption("--nation", action="store_true", default=False,
                    help="also run the nation event (100k leaders, 1M orders; takes minutes). "
                         "Same as LBSDISPATCH_BENCH_NATION=1.")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "nation: benchmark on the nation event (needs --nation or "
                   "LBSDISPATCH_BENCH_NATION=1)")


def _benchmarks_named(config) -> bool:
    """Whether a command-line path is benchmarks/ or inside it."""
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        p = (base / str(arg).split("::", 1)[0]).resolve()
        if p == HERE or HERE in p.parents:
            return True
    return False


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and file_path.parent == HERE
            # a file named on the command line is collected by pytest itself
            and not parent.session.isinitpath(file_path)
            and _benchmarks_named(parent.config)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config, items):
    if nation_enabled(config):
        return
    skip = pytest.mark.skip(reason="nation event: pass --nation or set LBSDISPATCH_BENCH_NATION=1")
    for item in items:
        if item.get_closest_marker("nation") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.write_sep("-", "lbsdispatch benchmarks: extra_info highlights")
        for line in SUMMARY:
            terminalreporter.write_line(line)
