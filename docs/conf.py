"""Sphinx configuration of the lbsdispatch documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html`` (warnings are
errors, as in the test suite's ``tests/test_docs.py``).
"""
import os
import sys

sys.path.insert(0, os.path.abspath("_ext"))

import lbsdispatch  # noqa: E402

project = "lbsdispatch"
author = "the lbsdispatch developers"
copyright = "2026, the lbsdispatch developers"
release = lbsdispatch.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_parser",
    "cli_help",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Markdown pages link to each other and to code by relative paths
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"
# numpydoc renders Parameters/Returns; listing every member again is noise
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

html_theme = "alabaster"
html_title = f"lbsdispatch {release}"
