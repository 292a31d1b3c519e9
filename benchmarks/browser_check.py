"""Opens a `dynscale report` HTML page in headless Chromium, checks that every image loaded and
the tables are there, and saves a screenshot of the whole page.

    .venv/bin/python benchmarks/browser_check.py docs/report/report.html docs/report/screenshot.png

Needs Debian's `chromium` and `chromium-driver` (and selenium, a dev dependency); exits 2 with
one line when they are missing, 1 when the page fails a check.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or None."""
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no Chromium here: apt-get install chromium chromium-driver"
    if not shutil.which(DRIVER):
        return "no chromedriver here: apt-get install chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no selenium here: pip install -e '.[dev]'"
    return None


def check_page(page: Path, screenshot: Path | None = None, width: int = 1400) -> dict:
    """Renders ``page`` in headless Chromium (``--headless --no-sandbox --disable-gpu``).

    Returns:
        ``{"images", "loaded", "tables", "rows", "title"}``: how many ``img`` elements the page
        has, how many finished loading with a non-zero size, how many tables and table rows.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    flags = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},900")
    for flag in flags:
        options.add_argument(flag)
    binary = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
    options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(shutil.which(DRIVER)))
    try:
        driver.get(page.resolve().as_uri())
        found = driver.execute_script("""
            const images = Array.from(document.images);
            return {images: images.length,
                    loaded: images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
                    tables: document.querySelectorAll('table').length,
                    rows: document.querySelectorAll('table tbody tr').length,
                    title: document.title,
                    height: document.body.scrollHeight};""")
        if screenshot is not None:
            driver.set_window_size(width, min(int(found["height"]) + 100, 16000))
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return found
    finally:
        driver.quit()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", type=Path)
    p.add_argument("screenshot", type=Path, nargs="?")
    args = p.parse_args()
    if not args.page.is_file():
        print(f"browser_check: {args.page} is not a file; write a report first (dynscale report)", file=sys.stderr)
        sys.exit(2)
    missing = browser_missing()
    if missing:
        print(f"browser_check: {missing}", file=sys.stderr)
        sys.exit(2)
    found = check_page(args.page, args.screenshot)
    print(f"{args.page}: {found['loaded']}/{found['images']} images loaded, {found['tables']} tables, "
          f"{found['rows']} rows" + (f"; screenshot {args.screenshot}" if args.screenshot else ""))
    if found["images"] == 0 or found["loaded"] != found["images"] or found["tables"] == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
