"""Adding a pass is its module, one registry line and its cases folder: every registered pass
follows the one-stem naming (class, module, pipeline name, cases folder), and nothing else lists
the passes by hand."""

from __future__ import annotations

import re

import pytest

import passes
from tests.helpers import REPO


def stem(pass_cls) -> str:
    return pass_cls.__module__.split(".")[1]


@pytest.mark.parametrize("pass_cls", passes.BUILTIN_PASSES, ids=lambda cls: cls.name)
def test_a_pass_is_named_by_one_stem(pass_cls) -> None:
    name = stem(pass_cls)
    assert pass_cls.name == name.replace("_", "-")
    assert pass_cls.__name__.lower() == name.replace("_", "")
    assert (REPO / "passes" / f"{name}.py").is_file() or \
        (REPO / "passes" / name / "__init__.py").is_file()


@pytest.mark.parametrize("pass_cls", passes.BUILTIN_PASSES, ids=lambda cls: cls.name)
def test_every_pass_has_its_cases_folder(pass_cls) -> None:
    cases = REPO / "tests" / "passes" / stem(pass_cls)
    assert cases.is_dir(), f"{pass_cls.name}: add tests/passes/{stem(pass_cls)}/"
    assert list(cases.rglob("*.onnxtxt")) or list(cases.glob("test_*.py")), pass_cls.name


def test_the_registry_lists_every_pass_module() -> None:
    """A pass module that is not registered is dead code (or a missing registry line)."""
    modules = {p.stem for p in (REPO / "passes").glob("*.py") if p.stem != "__init__"}
    modules |= {p.parent.name for p in (REPO / "passes").glob("*/__init__.py")}
    registered = {stem(cls) for cls in passes.BUILTIN_PASSES}
    assert modules == registered, sorted(modules ^ registered)


def test_no_doc_lists_the_passes_by_hand() -> None:
    """docs/passes.md is generated (tests/test_cli.py checks it); other docs name passes in prose,
    never as a hand-kept table of every pass."""
    names = {cls.name for cls in passes.BUILTIN_PASSES}
    for doc in (REPO / "docs").glob("*.md"):
        if doc.name == "passes.md":
            continue
        rows = [line for line in doc.read_text().splitlines() if line.startswith("|")]
        listed = {name for name in names if any(re.search(rf"`{re.escape(name)}`", r) for r in rows)}
        assert listed != names, f"{doc.name} keeps a table of every pass: generate it instead"
