"""Settings shared by every test suite in this repository (each tox env runs from here).

Hypothesis: the examples and their number stay as each test chooses, but no test fails
for being slow. A per-example ``deadline`` and the ``too_slow`` health check measure the
machine, not the code, and a busy CI machine trips them at random; the benchmarks in
``bench/`` measure speed. ``HYPOTHESIS_PROFILE=default`` restores Hypothesis' own checks.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "darkmesh", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "darkmesh"))
