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
