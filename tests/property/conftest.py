"""Selects the hypothesis profile of the property suite (see tests/property/profiles.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.property import profiles

_HERE = Path(__file__).parent


def _long_selected(config: pytest.Config) -> bool:
    """True when ``-m`` selects long tests (``-m long``, not ``-m 'not long'``)."""
    expression = config.option.markexpr or ""
    return bool(re.search(r"(?<!not )\blong\b", expression))


def pytest_configure(config: pytest.Config) -> None:
    profiles.load("long" if _long_selected(config) else profiles.active())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # With -m long the property tests are the long run: mark them so the selection keeps them.
    if _long_selected(config):
        for item in items:
            if _HERE in Path(str(item.fspath)).parents:
                item.add_marker(pytest.mark.long)


def pytest_report_header(config: pytest.Config) -> str:
    return f"trtcompile property profile: {profiles.active()}"
