"""docs/cli.md lists every flag of the parser: its flag tables are generated and must be current."""

from __future__ import annotations

import argparse

import pytest

from tests.helpers import REPO
from trtcompile import cli, cli_reference

CLI_MD = REPO / "docs" / "cli.md"


def test_docs_cli_md_flag_tables_are_the_generated_ones() -> None:
    committed = CLI_MD.read_text()
    assert cli_reference.regenerate(committed) == committed, (
        "docs/cli.md is stale: run python -m trtcompile.cli_reference --write docs/cli.md")


def test_every_option_string_of_every_subcommand_is_in_docs_cli_md() -> None:
    text = CLI_MD.read_text()
    for command, subparser in cli_reference._subparsers(cli.build_parser()).items():
        for action in subparser._actions:
            for option in action.option_strings:
                if option in ("-h", "--help"):
                    continue
                assert f"`{option}" in text, f"trtcompile {command} {option} is not in docs/cli.md"


def test_a_new_flag_changes_the_generated_block_and_a_missing_block_is_an_error() -> None:
    parser = cli.build_parser()
    compile_parser = cli_reference._subparsers(parser)["compile"]
    compile_parser.add_argument("--brand-new-flag", action="store_true", help="a new flag")
    regenerated = cli_reference.regenerate(CLI_MD.read_text(), parser)
    assert "| `--brand-new-flag` | a new flag |" in regenerated
    with pytest.raises(ValueError, match="no block <!-- generated: trtcompile compile flags -->"):
        cli_reference.regenerate("# no blocks here\n", parser)
    assert isinstance(parser, argparse.ArgumentParser)
