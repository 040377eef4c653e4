"""The IR is the bottom layer: it imports nothing of trtcompile but itself and the errors; passes build
on it and never on each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trtcompile import ir

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


IR_FILES = sorted((REPO / "trtcompile" / "ir").glob("*.py"))
PASS_FILES = sorted(p for p in (REPO / "passes").rglob("*.py") if p != REPO / "passes" / "__init__.py")


@pytest.mark.parametrize("path", IR_FILES, ids=[p.name for p in IR_FILES])
def test_ir_imports_only_itself_and_the_errors(path: Path) -> None:
    outside = sorted(m for m in imported_modules(path)
                     if (m == "passes" or m.startswith("passes."))
                     or (m.startswith("trtcompile.") and not m.startswith("trtcompile.ir")
                         and m != "trtcompile.errors" and not m.startswith("trtcompile.errors.")))
    assert not outside, f"{path.name} imports {outside}"


@pytest.mark.parametrize("path", PASS_FILES, ids=[str(p.relative_to(REPO)) for p in PASS_FILES])
def test_a_pass_never_imports_another_pass(path: Path) -> None:
    relative = path.relative_to(REPO / "passes")
    own = f"passes.{relative.parts[0].removesuffix('.py')}"
    others = sorted(m for m in imported_modules(path)
                    if m.startswith("passes.") and m != own and not m.startswith(own + "."))
    assert not others, f"{relative} imports {others}"


def test_the_package_keeps_every_name_of_the_former_module() -> None:
    """``ir.<name>`` works for every public helper the single-module IR had."""
    former = {
        "DEFAULT_OPSET", "IR_VERSION", "NameScope", "SHAPE_VALUE_LIMIT", "Structure",
        "TRTCOMPILE_DOMAIN", "add_local_function", "atomic_write_bytes", "call", "call_key",
        "constant_value", "consumers", "exclusive_lock", "export_model", "find_function",
        "fingerprint", "function_key", "function_of", "functions_by_key", "has_single_use",
        "histogram_delta", "import_model", "inferred_dims", "is_fused_layer", "is_onnx_domain",
        "is_onnx_op", "iter_nodes", "layer_count", "load", "name_nodes", "op_histogram", "op_key",
        "opset", "outer_scope_reads", "output_names", "producer", "replace_uses", "same_pads",
        "save", "static_shape", "subgraphs", "text_attr", "to_networkx", "toposort",
        "trace_provenance",
    }
    assert not sorted(name for name in former if not hasattr(ir, name))
    assert set(ir.__all__) >= former
