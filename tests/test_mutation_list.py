"""The mutation check's list stays in step with the passes it breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.mutation_check import MUTATIONS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_each_mutation_breaks_code_that_exists(mutation) -> None:
    """Each edit's text occurs exactly once in its pass module, and the edit changes it (a stale
    entry would stop the hour-long check at its start)."""
    source = (REPO / mutation.file).read_text()
    assert source.count(mutation.old) == 1, f"{mutation.id}: update the list"
    assert mutation.new != mutation.old


def test_every_pass_with_rules_has_mutations() -> None:
    """Every registered pass (a module, or a package of modules) has mutations: the list derives
    its passes from the registry, so a new pass without mutations fails here, by name."""
    import passes

    mutated = {m.module for m in MUTATIONS if m.package == "passes"}
    registered = {cls.__module__.split(".")[1] for cls in passes.BUILTIN_PASSES}
    assert registered - mutated == set(), f"passes without mutations: {sorted(registered - mutated)}"


def test_each_mutation_names_a_pass_with_tests() -> None:
    """A mutant is judged by the tests of the pass it names: the pass exists as a module or a
    package, and the edited file is in the repository."""
    for mutation in MUTATIONS:
        if mutation.package != "passes":  # a check the passes are judged by, with its own tests
            assert (REPO / mutation.package / f"{mutation.module}.py").is_file(), mutation.id
            assert list((REPO / "tests").glob(f"test_{mutation.module}*.py")), mutation.id
            continue
        package = REPO / "passes" / mutation.module / "__init__.py"
        assert (REPO / "passes" / f"{mutation.module}.py").exists() or package.exists(), mutation.id
        assert (REPO / mutation.file).is_file(), mutation.id


def test_mutation_ids_are_unique() -> None:
    """Each mutant gets a scratch folder named by its id."""
    ids = [m.id for m in MUTATIONS]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
