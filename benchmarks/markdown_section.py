"""Write one benchmark's section of docs/benchmarks.md, leaving the other sections alone.

Each script owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; a section not yet
in the file is appended.
"""

from __future__ import annotations

import platform
import os
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Every figure on this page is written by a script in `benchmarks/`; rerun the script named in a
section to refresh it. Each section says how it was measured.
"""


def machine_line() -> str:
    """One line describing the machine the figures were taken on."""
    return (f"Measured on {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}.")


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> Path:
    """Replace (or append) the section ``name`` of the benchmarks page with ``markdown``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        rest = tail.lstrip("\n")
        text = head + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
