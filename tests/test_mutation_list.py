"""The mutation check's list stays in step with the passes it breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.mutation_check import MUTATIONS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_each_mutation_breaks_code_that_exists(mutation) -> None:
    """Each edit's text occurs exactly once in its module, and the edit changes it (a stale
    entry would stop the hour-long check at its start)."""
    source = (REPO / mutation.path).read_text()
    assert source.count(mutation.old) == 1, f"{mutation.id}: update the list"
    assert mutation.new != mutation.old


def test_every_pass_with_rules_has_mutations() -> None:
    """Every pass module has mutations."""
    mutated = {m.module for m in MUTATIONS if m.package == "passes"}
    modules = {p.stem for p in (REPO / "passes").glob("*.py") if p.stem != "__init__"}
    assert modules <= mutated, sorted(modules - mutated)


def test_mutation_ids_are_unique() -> None:
    """Each mutant gets a scratch folder named by its id."""
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_mutated_checks_have_tests_to_run() -> None:
    """A mutation of a check (not a pass) runs ``tests/test_<module>*.py``: there must be some."""
    from benchmarks.mutation_check import tests_for

    for mutation in MUTATIONS:
        if mutation.package != "passes":
            (run,) = tests_for(mutation)
            assert run and all((REPO / path).is_file() for path in run), mutation.id
