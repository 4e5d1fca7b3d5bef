"""Open a bilm HTML report in headless Chromium, check that every image decoded, save a screenshot.

    python scripts/screenshot_report.py reports/wt2/report.html [--out shot.png] [--height 5000]

The report marks `<body data-images="N ok, M broken">` once loaded (see bilm/report.py);
the DOM Chromium dumps after the load tells whether any image failed. Exit status 1
when an image is broken or none was found. Install the browser with
`apt-get install -y chromium` (Debian).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def run(html: Path, *extra: str, timeout: int = 120) -> str:
    """One headless Chromium run on `html` with a fresh profile; returns its stdout."""
    exe = browser()
    if exe is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="bilm-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *extra, html.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def check_images(html: Path) -> tuple[int, int]:
    """(decoded, broken) images once the page has loaded."""
    dom = run(html, "--dump-dom")
    m = re.search(r'data-images="(\d+) ok, (\d+) broken"', dom)
    if m is None:
        raise SystemExit("the page did not report its images (not a bilm report, or the load did not finish)")
    return int(m.group(1)), int(m.group(2))


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 4000) -> None:
    png.parent.mkdir(parents=True, exist_ok=True)
    run(html, f"--screenshot={png.resolve()}", f"--window-size={width},{height}")
    if not png.is_file() or png.stat().st_size == 0:
        raise SystemExit(f"chromium wrote no screenshot to {png}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--out", type=Path, help="PNG path (default: screenshot.png beside the report)")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()
    if not args.html.is_file():
        raise SystemExit(f"{args.html} not found")
    ok, broken = check_images(args.html)
    png = args.out or args.html.with_name("screenshot.png")
    screenshot(args.html, png, args.width, args.height)
    print(f"{args.html}: {ok} images decoded, {broken} broken; screenshot {png}")
    return 1 if broken or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
