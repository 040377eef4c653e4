"""Docs that cannot drift: every fenced block of README.md and docs/*.md runs, or is compared
with what a command prints today, or says in the Markdown why not (docs/testing.md, "Docs that
run"; the directives are read by tests/docs_blocks.py)."""

from __future__ import annotations

import ast
import collections
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import docs_blocks
from tests.docs_blocks import (
    Block,
    DirectiveError,
    compare_output,
    console_parts,
    document_blocks,
)
from tests.docs_workspace import FIXTURES, Workspace
from tests.helpers import REPO

#: Documents whose blocks build several engines or lower TensorFlow models (tens of seconds).
SLOW_DOCUMENTS = {"README.md", "docs/api.md", "docs/backend.md", "docs/golden.md", "docs/migrating-from-tf-trt.md",
                  "docs/precision.md"}


@dataclass
class DocumentRun:
    """What running one document's blocks found: failures (``path:line: ...``) and counts."""

    failures: list[str] = field(default_factory=list)
    counts: collections.Counter = field(default_factory=collections.Counter)
    skipped: list[str] = field(default_factory=list)
    last_output: str | None = None
    last_where: str | None = None


def _run_commands(block: Block, commands: list[str], workspace: Workspace, run: DocumentRun) -> str:
    """Runs ``commands`` of ``block`` (those not skipped by a directive); returns their output."""
    outputs = []
    for command in commands:
        reason = block.skip_reason(command)
        if reason is not None:
            run.counts["commands skipped"] += 1
            run.skipped.append(f"{block.where}: `{command}`: {reason}")
            continue
        code, output = workspace.run_command(command)
        run.counts["commands run"] += 1
        if code != block.expected_exit:
            tail = "\n    ".join(output.rstrip().split("\n")[-8:])
            run.failures.append(f"{block.where}: `{command}` exited {code}, the docs expect "
                                f"{block.expected_exit}:\n    {tail}")
        outputs.append(output)
    return "".join(outputs)


def _compare(block: Block, shown: list[str], output: str, first_line: int, workspace: Workspace,
             run: DocumentRun) -> None:
    problem = compare_output(shown, output, block.where, first_line, excerpt=block.has("excerpt"),
                             workspace=str(workspace.folder))
    run.counts["outputs compared"] += 1
    if problem:
        run.failures.append(problem)


def run_block(block: Block, workspace: Workspace, run: DocumentRun) -> None:
    """Runs or compares one block in ``workspace``, recording into ``run``."""
    role = block.role
    if role == "generated":
        run.counts["generated blocks"] += 1
        return
    if role == "skip":
        run.counts["blocks skipped"] += 1
        run.skipped.append(f"{block.where}: {block.argument('skip')}")
        return
    workspace.place(block.fixtures())
    if role == "save-as":
        run.counts["blocks saved as files"] += 1
    elif role == "run" and block.lang == "python":
        error, output = workspace.run_python(block.text, block.where, block.has("continues"))
        run.counts["python blocks run"] += 1
        if error:
            run.failures.append(f"{block.where}: the python block raised:\n    {error}")
        run.last_output, run.last_where = output, block.where
    elif role == "run":
        run.counts["bash blocks run"] += 1
        run.last_output = _run_commands(block, docs_blocks.commands_of(block), workspace, run)
        run.last_where = block.where
    elif role == "output":
        if run.last_output is None:
            run.failures.append(f"{block.where}: an output block with no run block before it")
        else:
            _compare(block, block.lines, run.last_output, block.line + 1, workspace, run)
    elif role == "output-of":
        command = block.argument("output-of")
        if block.has("earlier"):
            if command not in workspace.outputs:
                run.failures.append(f"{block.where}: `{command}` did not run earlier in the document")
                return
            output = workspace.outputs[command][1]
        else:
            output = _run_commands(block, [command], workspace, run)
        _compare(block, block.lines, output, block.line + 1, workspace, run)
    elif role == "console":
        for command, shown, first_line in console_parts(block):
            output = _run_commands(block, [command], workspace, run)
            _compare(block, shown, output, first_line, workspace, run)


def run_document(path: str, folder: Path, text: str | None = None) -> DocumentRun:
    """Runs every block of one document, in order, in ``folder``."""
    run = DocumentRun()
    workspace = Workspace(folder)
    blocks = document_blocks(path, text)
    for block in blocks:
        if block.role == "save-as":
            (folder / block.argument("save-as")).write_text(block.text)
    for block in blocks:
        run_block(block, workspace, run)
    return run


# ----------------------------------------------------------------------------------------------
# Every block says what it is
# ----------------------------------------------------------------------------------------------


def test_every_block_of_every_document_runs_or_says_why_not() -> None:
    problems = []
    for path in docs_blocks.DOCUMENTS:
        blocks = document_blocks(path)
        problems += docs_blocks.unclassified(blocks)
        problems += [f"{block.where}: no fixture {fixture!r} (tests/docs_workspace.py FIXTURES)"
                     for block in blocks for fixture in block.fixtures().values()
                     if fixture not in FIXTURES]
    assert not problems, "\n".join(problems)


def test_every_generated_document_names_a_test_that_compares_it() -> None:
    generators = {block.generated_by for path in docs_blocks.DOCUMENTS
                  for block in document_blocks(path) if block.generated_by}
    assert generators, "docs/passes.md is generated: its docs-test-file directive is missing"
    for generator in generators:
        module, _, name = generator.partition("::")
        tree = ast.parse((REPO / module).read_text())
        assert name in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, (
            f"{generator} is named as the test of a generated document but does not exist")


def test_a_block_without_a_directive_a_bad_directive_or_two_roles_is_reported() -> None:
    text = ("# t\n\n```bash\ntrtcompile passes\n```\n\n<!-- docs-test: skip: needs a GPU -->\n"
            "```python\nprint(1)\n```\n\n<!-- docs-test: run -->\n<!-- docs-test: output -->\n"
            "```\nx\n```\n")
    problems = docs_blocks.unclassified(docs_blocks.parse_blocks(text, "new.md"))
    assert problems == [
        ("new.md:3: a ```bash block without a docs-test directive (run, output, output-of, console, "
         "save-as or skip: REASON)"),
        "new.md:14: a block is one of run, output, console, save-as, skip; it says run, output"]
    stale = ("<!-- docs-test: skip-command trtcompile export ...: needs a server -->\n"
             "<!-- docs-test: run -->\n```bash\ntrtcompile passes\n```\n")
    assert docs_blocks.unclassified(docs_blocks.parse_blocks(stale, "new.md")) == [
        "new.md:3: skip-command 'trtcompile export ...' matches no command of the block"]
    with pytest.raises(DirectiveError, match=r"new.md:1: unknown docs-test directive 'runn'"):
        docs_blocks.parse_blocks("<!-- docs-test: runn -->\n```bash\nls\n```\n", "new.md")
    with pytest.raises(DirectiveError, match=r"new.md:1: docs-test directive 'skip' needs an argument"):
        docs_blocks.parse_blocks("<!-- docs-test: skip -->\n```bash\nls\n```\n", "new.md")
    with pytest.raises(DirectiveError, match=r"new.md:2: a docs-test directive must be followed"):
        docs_blocks.parse_blocks("<!-- docs-test: run -->\nsome text\n```bash\nls\n```\n", "new.md")


# ----------------------------------------------------------------------------------------------
# Shown output: normalised narrowly, so an edited count or word fails
# ----------------------------------------------------------------------------------------------


def test_normalisation_replaces_times_versions_and_rounding_errors_only() -> None:
    line = ("lowering (tf2onnx 1.17.0, faithful)   97 TF ops   81 nodes   7.74 s  tensorflow_ops=97 "
            "max_abs=1.19e-07 rtol=0.001 (1 build, 0.2 s) 0.03s 2 segments 3 builds")
    assert docs_blocks.normalise(line) == (
        "lowering (tf2onnx <version>, faithful) 97 TF ops 81 nodes <time> tensorflow_ops=97 "
        "max_abs=<rounding> rtol=0.001 (1 build, <time>) <time> 2 segments 3 builds")
    assert docs_blocks.normalise("x 4.02e-04 5.35 1.5e+05") == "x 4.02e-04 5.35 1.5e+05"


def test_ellipsis_lines_stand_for_any_lines_and_the_rest_must_be_contiguous() -> None:
    output = "a\nb 1.0 s\nc\nd\ne\n"
    assert compare_output(["a", "b 2.5 s", "...", "e"], output, "x.md:1", 2) is None
    assert compare_output(["c", "d"], output, "x.md:1", 2, excerpt=True) is None
    message = compare_output(["a", "...", "c", "e"], output, "x.md:1", 2)
    assert message.startswith("x.md:1: shown output differs at x.md:5:")
    assert compare_output(["b 1 s", "...", "e"], output, "x.md:1", 2).startswith(
        "x.md:1: shown output differs at x.md:2:")
    assert "goes on after" in compare_output(["a", "...", "d"], output, "x.md:1", 2)
    assert compare_output(["a", "b ...", "...", "e"], output, "x.md:1", 2) is None
    assert compare_output(["a", "... 1.0 s", "...", "e"], output, "x.md:1", 2) is None
    assert compare_output(["a", "c ...", "...", "e"], output, "x.md:1", 2).startswith(
        "x.md:1: shown output differs at x.md:3:")


def _bisect_block() -> Block:
    return next(block for block in document_blocks("docs/cli.md")
                if block.role == "console" and "swap-operands" in block.text)


@pytest.mark.parametrize("edit", [("checks: 10 compiles", "checks: 9 compiles"),
                                  ("first failing rewrite: #5", "first failing rewrite: #4"),
                                  ("nodes: sub_1", "nodes: add_1"),
                                  ("first failing pass", "first broken pass")])
def test_an_edited_shown_output_fails_naming_its_file_and_line(tmp_path: Path, edit) -> None:
    """The docs/cli.md bisect example as committed passes; with one number or word of its shown
    output edited, it fails and the message names the edited line."""
    block = _bisect_block()
    committed = DocumentRun()
    run_block(block, Workspace(tmp_path / "committed"), committed)
    assert committed.failures == [] and committed.counts["outputs compared"] == 1
    text = (REPO / "docs" / "cli.md").read_text()
    old, new = edit
    edited_line = next(block.line + 1 + offset for offset, line in enumerate(block.lines)
                       if old in line)
    lines = text.split("\n")
    assert old in lines[edited_line - 1]
    lines[edited_line - 1] = lines[edited_line - 1].replace(old, new)
    edited_block = next(b for b in docs_blocks.parse_blocks("\n".join(lines), "docs/cli.md")
                        if b.line == block.line)
    edited = DocumentRun()
    run_block(edited_block, Workspace(tmp_path / "edited"), edited)
    assert len(edited.failures) == 1
    assert f"shown output differs at docs/cli.md:{edited_line}:" in edited.failures[0]
    assert new.split()[-1] in edited.failures[0]


# ----------------------------------------------------------------------------------------------
# Every document runs
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [pytest.param(path, marks=[pytest.mark.slow] if path in SLOW_DOCUMENTS
                                               else []) for path in docs_blocks.DOCUMENTS])
def test_the_documents_blocks_run_and_show_what_they_print(path: str, tmp_path: Path) -> None:
    run = run_document(path, tmp_path)
    assert not run.failures, f"{path}: {len(run.failures)} block(s) do not do what the docs say:\n" + (
        "\n".join(run.failures))
