"""Shared test configuration: Hypothesis profiles.

Profiles
--------
ci    derandomized, 50 examples per property, printed reproduction blobs;
      loaded whenever the environment variable ``CI`` is set.
dev   300 random examples per property (the default on a workstation).
long  3000 examples per property, for a soak run:
      ``HYPOTHESIS_PROFILE=long python -m pytest tests``.
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, max_examples=50, deadline=None,
                          print_blob=True)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.register_profile("long", max_examples=3000, deadline=None)

if os.environ.get("CI"):
    settings.load_profile("ci")
else:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))



import pytest  # noqa: E402

BATCH_PATHS = ("search-ahead", "in-order")


def pytest_generate_tests(metafunc):
    """Run every test of the dispatch modules down both paths of ``assign_batch``."""
    if metafunc.module.__name__.startswith("test_dispatch"):
        metafunc.parametrize("batch_path", BATCH_PATHS, indirect=True)


@pytest.fixture(autouse=True)
def batch_path(request):
    """The path ``assign_batch`` takes (dispatch tests run once down each).

    Batches of at least ``MORTON_MIN`` rows search plain orders ahead in Morton
    order and fall back to the in-order search only where a pick filled up
    (see ``_DispatchCore._assign_block``); smaller batches search in order.
    Test batches are small, so the threshold is moved to send them down each
    path in turn.  Elsewhere nothing changes.
    """
    path = getattr(request, "param", None)
    if path is None:
        yield None
        return
    from lbsdispatch._kdtree import _set_morton_min
    old = _set_morton_min(1 if path == "search-ahead" else 2**62)
    try:
        yield path
    finally:
        _set_morton_min(old)
