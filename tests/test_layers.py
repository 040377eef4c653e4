"""The architecture, enforced: the import-linter contracts of pyproject.toml (the layers of
docs/architecture.md, passes independent of each other, the faces driving the flow), no import
cycle anywhere in trtcompile or passes (function-level imports included), and no module so large
that its parts are better named modules of their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx
import pytest

from tests.helpers import REPO

#: Modules above this many lines are split by concern (docs/architecture.md, "Sizes").
MAX_MODULE_LINES = 600


def import_graph() -> nx.DiGraph:
    """Every module of trtcompile and passes, an edge per import (as grimp finds them: module and
    function level; imports under ``if TYPE_CHECKING:`` excluded, they never run)."""
    graph = grimp.build_graph("trtcompile", "passes", include_external_packages=False,
                              exclude_type_checking_imports=True)
    edges = nx.DiGraph()
    for module in graph.modules:
        edges.add_node(module)
        for imported in graph.find_modules_directly_imported_by(module):
            edges.add_edge(module, imported)
    return edges


def test_the_import_linter_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run([*command, "--no-cache"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "kept" in result.stdout


def test_there_is_no_import_cycle() -> None:
    cycles = [sorted(component) for component in nx.strongly_connected_components(import_graph())
              if len(component) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check above is not vacuous: a graph with a cycle has a component of two."""
    graph = import_graph()
    graph.add_edge("trtcompile.ir", "trtcompile.flow")  # the flow already imports ir
    assert any(len(c) > 1 for c in nx.strongly_connected_components(graph))


@pytest.mark.parametrize("package", ["trtcompile", "passes"])
def test_no_module_is_over_the_size_limit(package: str) -> None:
    sizes = {path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
             for path in (REPO / package).rglob("*.py")}
    over = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert over == {}, f"modules over {MAX_MODULE_LINES} lines: {over}"


def test_architecture_md_lists_the_contracts_layers() -> None:
    """docs/architecture.md's layer table is the contract's layers, top to bottom."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    contract = [sorted(m.strip() for m in line.replace("|", ":").split(":")) for line in layers]
    doc = (REPO / "docs" / "architecture.md").read_text().split("## Layers", 1)[1]
    table = [line for line in doc.split("\n## ", 1)[0].splitlines()
             if line.startswith("| ") and "`" in line.split("|")[2]]
    documented = [sorted(cell.strip().strip("`") for cell in row.split("|")[2].split(","))
                  for row in table]
    assert documented == contract
