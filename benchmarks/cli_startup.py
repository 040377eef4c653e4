"""Start-up time of ``trtcompile --help`` and ``--version``: wall time of the command (median of
several runs), next to a bare ``python -c pass``, and the modules the command imports (read from
``python -X importtime``). Writes the ``cli-startup`` section of docs/benchmarks.md.

Usage: ``python benchmarks/cli_startup.py [--runs N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.markdown_section import machine_line, write_section

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "onnx", "onnx_graphsurgeon", "polygraphy", "tensorflow", "tqdm", "ml_dtypes")


def wall_seconds(argv: list[str], runs: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def imported_modules(argv: list[str]) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env,
                            capture_output=True, text=True, check=True)
    return [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
            if line.startswith("import time:") and "|" in line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    rows = []
    baseline = wall_seconds([sys.executable, "-c", "pass"], args.runs)
    for flags in (["--help"], ["--version"], ["compile", "--help"]):
        argv = ["-m", "trtcompile.cli", *flags]
        seconds = wall_seconds([sys.executable, *argv], args.runs)
        modules = imported_modules(argv)
        heavy = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
        ours = sum(1 for m in modules if m.startswith("trtcompile"))
        rows.append(f"| `trtcompile {' '.join(flags)}` | {seconds * 1000:.0f} ms | "
                    f"{ours} | {', '.join(heavy) or 'none'} |")
    markdown = "\n".join([
        "## Command start-up (`benchmarks/cli_startup.py`)", "",
        f"Median wall time of {args.runs} runs; a bare `python -c pass` takes "
        f"{baseline * 1000:.0f} ms here. Heavy modules are looked for in `python -X importtime`.",
        machine_line(), "",
        "| command | wall time | trtcompile modules imported | heavy modules imported |",
        "| --- | --- | --- | --- |", *rows])
    print(markdown)
    write_section("cli-startup", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
