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

# LBSDISPATCH_ISLANDS=1 sends every batch, however small, through the island
# path of the dispatch core (tiny islands, tiny blocks: many conflicts; two
# threads), so the whole suite checks that it gives the answers of arrival order.
FORCE_ISLANDS = os.environ.get("LBSDISPATCH_ISLANDS") not in (None, "", "0")
if FORCE_ISLANDS:
    from lbsdispatch import _kdtree

    _kdtree._set_island_params(min_leaders=0, min_rows=0, link_m=500.0, block=7,
                               min_rows_per_worker=1, workers=2)


def pytest_sessionfinish(session, exitstatus):
    """In the forced island mode, say what the island path did, and fail the run
    if it never had a conflict to repair (the mode would then prove little)."""
    if not FORCE_ISLANDS:
        return
    stats = _kdtree._island_stats()
    print(f"\nisland path: {stats}")
    if exitstatus == 0 and session.testscollected > 100 and not (
            stats["blocks"] and stats["conflicts"] and stats["served_again"]):
        session.exitstatus = 1
        print("LBSDISPATCH_ISLANDS=1 but the island path never repaired a conflict")
