"""Shared pytest options and fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("POLYGRAPHY_USE_TENSORRT_RTX", "1")


def pytest_addoption(parser):
    parser.addoption("--update-cases", action="store_true", default=False,
                     help="rewrite the expected JSON of pass cases (review the diff)")


@pytest.fixture(scope="session", autouse=True)
def example_cache_dir(tmp_path_factory) -> Iterator[str]:
    """Built-in example models are cached in a folder of this test session, never in the user's
    cache; subprocesses (the CLI tests) inherit it through the environment."""
    folder = str(tmp_path_factory.mktemp("trtcompile-cache"))
    previous = os.environ.get("TRTCOMPILE_CACHE_DIR")
    os.environ["TRTCOMPILE_CACHE_DIR"] = folder
    yield folder
    if previous is None:
        os.environ.pop("TRTCOMPILE_CACHE_DIR", None)
    else:
        os.environ["TRTCOMPILE_CACHE_DIR"] = previous
