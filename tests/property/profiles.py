"""Hypothesis settings profiles of the property suite and how one is chosen.

* ``ci`` (the default): few examples, ``derandomize=True`` (the same examples on every run, so a CI
  failure reproduces anywhere), no example database, no deadline. The whole suite fits in about five
  minutes on two cores.
* ``dev``: random examples, the local example database on (failures replay first next time).
* ``long``: many random examples on larger graphs, database on; for nightly or pre-release runs.

Chosen by ``TRTCOMPILE_PROPERTY_PROFILE=<name>``, or ``long`` when pytest runs with ``-m long``;
``TRTCOMPILE_PROPERTY_EXAMPLES=<n>`` overrides the example count.
Tests scale their example counts with :func:`examples` so one profile sets the whole suite's size.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Examples per property test, and the most layers a generated graph may have, per profile.
PROFILES = {
    "ci": {"max_examples": 100, "max_layers": 10},
    "dev": {"max_examples": 200, "max_layers": 10},
    "long": {"max_examples": 2000, "max_layers": 16},
}

#: ``TRTCOMPILE_PROPERTY_EXAMPLES=<n>`` overrides the example count of every profile.
EXAMPLES_VAR = "TRTCOMPILE_PROPERTY_EXAMPLES"
if os.environ.get(EXAMPLES_VAR):
    for _profile in PROFILES.values():
        _profile["max_examples"] = int(os.environ[EXAMPLES_VAR])

_COMMON = {
    "deadline": None,  # ONNX Runtime session creation varies too much for a per-example deadline
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}

settings.register_profile("ci", max_examples=PROFILES["ci"]["max_examples"], derandomize=True,
                          database=None, **_COMMON)
settings.register_profile("dev", max_examples=PROFILES["dev"]["max_examples"], **_COMMON)
settings.register_profile("long", max_examples=PROFILES["long"]["max_examples"], **_COMMON)

ENV_VAR = "TRTCOMPILE_PROPERTY_PROFILE"


def active() -> str:
    """Name of the profile in use."""
    return os.environ.get(ENV_VAR, "ci")


def load(name: str) -> None:
    """Make ``name`` the active profile (for this process and for :func:`active`)."""
    if name not in PROFILES:
        raise ValueError(f"{ENV_VAR}={name!r}: expected one of {', '.join(PROFILES)}")
    os.environ[ENV_VAR] = name
    settings.load_profile(name)
    if name == "ci":
        _draw_without_local_constants()


def _draw_without_local_constants() -> None:
    """Make the ``ci`` profile's examples the same whichever tests run.

    Hypothesis also draws constants it finds in the project's modules that are loaded at the time
    (its "local constants"). Which modules those are depends on which tests ran before, so a
    derandomized test would draw other examples alone than in the whole suite, and a generator
    coverage check could pass in one and fail in the other. The ``ci`` profile promises the same
    examples on every run, so it draws without them; ``dev`` and ``long`` keep them (they find
    bugs). Hypothesis has no setting for this: its provider's lookup is replaced, and a
    hypothesis without it is left as it is.
    """
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - another hypothesis layout
        return
    if hasattr(providers, "_get_local_constants") and hasattr(providers, "Constants"):
        empty = providers.Constants()
        providers._get_local_constants = lambda: empty
        if hasattr(providers, "CONSTANTS_CACHE"):
            providers.CONSTANTS_CACHE.cache.clear()


def examples(fraction: float = 1.0) -> settings:
    """Settings running ``fraction`` of the active profile's examples (at least one)."""
    return settings(max_examples=max(1, round(PROFILES[active()]["max_examples"] * fraction)))


def max_layers() -> int:
    """The most layers a generated graph has under the active profile."""
    return PROFILES[active()]["max_layers"]
