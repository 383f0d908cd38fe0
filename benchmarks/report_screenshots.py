"""Screenshots of run reports in a headless browser (Debian's chromium driven by Playwright).

Usage::

    python benchmarks/report_screenshots.py RUN_DIR [RUN_DIR ...] --out OUT_DIR [--widths 1400 900]
        [--readme-image docs/images/report.png]

For each run directory the report is rendered afresh (``write_report``, into the run directory)
and, at each width, saved as ``OUT_DIR/<name>-<width>-full.png`` (the whole page),
``OUT_DIR/<name>-<width>-top.png`` (the first screen, 900 px high) and
``OUT_DIR/<name>-<width>-clicked.png`` (the screen after clicking the best candidate's link: it
opens below the sticky filter bar). ``<name>`` is the run directory's name without its time stamp.
With ``--readme-image`` the first run's top screenshot at the first width is also saved there (the
README's picture). Screenshots are reduced to 256-colour PNGs when Pillow is installed.

The script prints, per report and width, the page's scroll width against the window width
(a report that fits its window has ``scrollWidth <= innerWidth``).

Needs ``pip install playwright`` and a chromium binary (``apt-get install chromium``); no
browser download: the system chromium is passed as ``executable_path``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from archsmith.graph.view import write_report

HEIGHT = 900


def chromium() -> str:
    path = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if path is None:
        sys.exit("no chromium on this machine (apt-get install chromium)")
    return path


def run_name(run_dir: Path) -> str:
    return re.sub(r"^\d{8}-\d{6}-", "", run_dir.name) or run_dir.name


def shrink_png(path: Path) -> None:
    """Palette-reduce a screenshot (a page of text and flat colours loses nothing visible)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    small.save(path, optimize=True)


def screenshots(run_dirs: list[Path], out: Path, widths: list[int], readme_image: Path | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            for index, run_dir in enumerate(run_dirs):
                report = write_report(run_dir)
                name = run_name(run_dir)
                for width in widths:
                    page = browser.new_page(viewport={"width": width, "height": HEIGHT})
                    page.goto(report.as_uri())
                    page.wait_for_load_state("load")
                    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                    print(f"{name} at {width} px: scrollWidth {scroll}, innerWidth {inner}"
                          f"{'' if scroll <= inner else '  (overflows sideways)'}")
                    shots = [(out / f"{name}-{width}-top.png", False), (out / f"{name}-{width}-full.png", True)]
                    if readme_image is not None and index == 0 and width == widths[0]:
                        readme_image.parent.mkdir(parents=True, exist_ok=True)
                        shots.append((readme_image, False))
                    for path, full in shots:
                        page.screenshot(path=str(path), full_page=full)
                        shrink_png(path)
                        written.append(path)
                    link = page.locator("table.best a").first
                    if link.count():  # the best candidate, opened from its link: below the sticky filter bar
                        link.click()
                        path = out / f"{name}-{width}-clicked.png"
                        page.screenshot(path=str(path))
                        shrink_png(path)
                        written.append(path)
                    page.close()
        finally:
            browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--widths", type=int, nargs="+", default=[1400, 900])
    parser.add_argument("--readme-image", type=Path, default=None)
    args = parser.parse_args()
    for path in screenshots(args.run_dirs, args.out, args.widths, args.readme_image):
        print(f"{path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
