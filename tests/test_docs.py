"""The documentation works: the guide's code runs as written and the Sphinx site
builds without a single warning."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _python_blocks(page):
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)


def test_guide_has_code():
    assert len(_python_blocks("guide.md")) >= 8


def test_guide_code_runs_in_order(capsys):
    """Each page's blocks share one namespace, like a reader typing them in turn."""
    ns = {"__name__": "guide"}
    for i, block in enumerate(_python_blocks("guide.md")):
        try:
            exec(compile(block, f"guide.md block {i}", "exec"), ns)
        except Exception as e:                      # name the block that broke
            pytest.fail(f"guide.md block {i} raised {type(e).__name__}: {e}\n{block}")
    out = capsys.readouterr().out
    assert "Dispatcher(n_leaders=800" in out


def test_readme_code_runs(tmp_path, monkeypatch, capsys):
    """The README's examples, as a newcomer pastes them (in an empty folder: they
    write event.sqlite)."""
    monkeypatch.chdir(tmp_path)
    text = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    ns = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md block {i}", "exec"), ns)
    out = capsys.readouterr().out
    assert "hz-002 147" in out and "True STICKY" in out
    assert (tmp_path / "event.sqlite").is_file()


def test_sphinx_builds_without_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "html" / "index.html").is_file()
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    for name in ("Dispatcher", "LeaderIndex", "assign_batch", "transform", "IdentityGraph"):
        assert name in api
    cli = (tmp_path / "html" / "cli_reference.html").read_text(encoding="utf-8")
    assert "lbsdispatch demo" in cli
