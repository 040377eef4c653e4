"""Regenerate docs/report-screenshot.png: the HTML report of a real compile of the built-in example,
rendered by headless Chromium.

Run: ``python -m benchmarks.report_screenshot [--out docs/report-screenshot.png] [--width 1280]
[--height 1600]``. It compiles the built-in example (TensorFlow to engine) into a temporary folder
with ``--report-html``, then has Chromium (``chromium`` or ``chromium-browser`` on PATH; Debian:
``apt-get install chromium``) screenshot the page's top. The picture then shows what a compile
gives today, so docs/cli.md cannot show stale figures.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS_PNG = Path(__file__).resolve().parent.parent / "docs" / "report-screenshot.png"


def chromium() -> str:
    """The Chromium executable, or SystemExit naming what to install."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("chromium is not on PATH (Debian: apt-get install chromium)")
    return found


def screenshot(page: Path, out: Path, width: int, height: int, profile: Path) -> None:
    """Render ``page`` offline in headless Chromium and write its top ``width`` x ``height`` to
    ``out``."""
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={width},{height}",
         f"--screenshot={out}", page.as_uri()],
        check=True, capture_output=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS_PNG)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args(argv)
    from trtcompile.cli import main as trtcompile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        page = work / "report.html"
        code = trtcompile(["compile", "-o", str(work / "out"), "--report-html", str(page),
                           "--no-progress", "-q"])
        if code != 0:
            print(f"the compile of the built-in example exited with {code}", file=sys.stderr)
            return code
        screenshot(page, args.out, args.width, args.height, work / "profile")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
