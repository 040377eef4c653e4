"""The flag tables of docs/cli.md, generated from the command's argparse parser.

docs/cli.md is prose written by hand with one generated block per subcommand, between the markers
``<!-- generated: trtcompile <command> flags -->`` and ``<!-- end generated -->``. The blocks list
every flag (aliases included), its value and its help, grouped as ``--help`` groups them, so the
reference cannot drift from the parser: a test compares the committed file with this output.
After adding or changing a flag::

    python -m trtcompile.cli_reference --write docs/cli.md
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

BEGIN = "<!-- generated: trtcompile {command} flags -->"
END = "<!-- end generated -->"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def _flag_cell(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    takes_value = action.nargs != 0
    value = ""
    if takes_value:
        value = " " + (action.metavar if isinstance(action.metavar, str)
                       else "{" + ",".join(map(str, action.choices)) + "}" if action.choices
                       else action.dest.upper())
    return ", ".join(f"`{option}{value}`" for option in action.option_strings)


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")  # NNN_<pass>.onnx is not an HTML tag


def flag_tables(parser: argparse.ArgumentParser) -> str:
    """Markdown tables of a (sub)parser's flags, one per argument group."""
    lines: list[str] = []
    for group in parser._action_groups:  # noqa: SLF001
        actions = [a for a in group._group_actions  # noqa: SLF001
                   if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))  # noqa: SLF001
                   and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        title = {"positional arguments": "arguments", "options": "flags"}.get(group.title,
                                                                             group.title)
        lines += [f"**{title}**" + (f": {_cell(group.description)}" if group.description else ""),
                  "", "| flag | meaning |", "| --- | --- |"]
        for action in actions:
            meaning = action.help or ""
            if action.choices and "{" not in _flag_cell(action):
                meaning += f" (one of: {', '.join(map(str, action.choices))})"
            lines.append(f"| {_flag_cell(action)} | {_cell(meaning)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def generated_blocks(parser: argparse.ArgumentParser | None = None) -> dict[str, str]:
    """Command name -> its generated block (markers included)."""
    if parser is None:
        from trtcompile.cli import build_parser

        parser = build_parser()
    blocks = {}
    for command, subparser in _subparsers(parser).items():
        blocks[command] = (f"{BEGIN.format(command=command)}\n\n{flag_tables(subparser)}\n{END}")
    return blocks


def regenerate(text: str, parser: argparse.ArgumentParser | None = None) -> str:
    """``text`` (docs/cli.md) with every generated block replaced by the parser's current one.
    A subcommand without a block in ``text`` is an error (the doc must list every flag)."""
    for command, block in generated_blocks(parser).items():
        pattern = re.compile(re.escape(BEGIN.format(command=command)) + r".*?" + re.escape(END),
                             re.S)
        if not pattern.search(text):
            raise ValueError(f"docs/cli.md has no block {BEGIN.format(command=command)}")
        text = pattern.sub(lambda _: block, text, count=1)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(
        prog="python -m trtcompile.cli_reference",
        description="Regenerate the flag tables of docs/cli.md from the parser.")
    arguments.add_argument("path", nargs="?", default="docs/cli.md")
    arguments.add_argument("--write", action="store_true", help="rewrite the file in place "
                                                                "(default: print it)")
    args = arguments.parse_args(argv)
    path = Path(args.path)
    text = regenerate(path.read_text())
    if args.write:
        path.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
