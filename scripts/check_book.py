"""Open every page of the built book in headless Chromium, as a reader would, and fail on what a reader would see.

Serves ``_build/html`` on 127.0.0.1 (a free port), opens each page at 1400 px and 1920 px width and checks:
browser console errors, images that did not load, internal links to missing pages or anchors, stderr or warning
blocks in notebook outputs, raw LaTeX left unrendered (MathJax must work offline), and any absolute path of the
build machine, and tables wider than the text column (at 1400 px). Saves one screenshot per page and width under
``_build/screenshots`` for review.

Usage: ``python scripts/check_book.py [--html _build/html]`` (after ``bash scripts/book.sh``); needs Debian's
``chromium`` and ``chromium-driver`` and the ``selenium`` package (``bash scripts/check_book.sh`` installs them).
Exit status 1 when any page has a problem, with one line per problem.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

WIDTHS = (1400, 1920)
#: Fragments of absolute paths of a build machine that must never reach a reader.
MACHINE_PATHS = re.compile(r"(/work/|/home/[a-z]\w*/|/root/|site-packages|\.venv/lib/)")
#: Console messages of the theme itself that no reader sees (a browser asks for /favicon.ico; the theme logs its
#: colour mode on a fresh profile).
CONSOLE_NOISE = ("favicon.ico", "Got invalid theme mode")
RAW_LATEX = re.compile(r"\$\$|\\\(|\\mathrm|\\frac")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on the terminal
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def check_page(driver, base: str, page: str, html_root: Path, shots: Path) -> list[str]:
    problems = []
    for width in WIDTHS:
        driver.set_window_size(width, 1000)
        driver.get(urljoin(base, page))
        time.sleep(0.3)
        for _ in range(40):  # MathJax typesets asynchronously
            if driver.execute_script(
                "return !window.MathJax || !MathJax.startup || "
                "MathJax.startup.promise === undefined || window.__mjdone === true"
            ):
                break
            driver.execute_script(
                "if (window.MathJax && MathJax.startup) MathJax.startup.promise.then("
                "() => { window.__mjdone = true; });"
            )
            time.sleep(0.1)
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(width, min(max(height, 800), 12000))
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / f"{page.replace('/', '_')}-{width}.png"))
        if width != WIDTHS[0]:
            continue
        for entry in driver.get_log("browser"):
            if entry["level"] == "SEVERE" and not any(n in entry["message"] for n in CONSOLE_NOISE):
                problems.append(f"{page}: console error: {entry['message'][:200]}")
        broken = driver.execute_script(
            "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
        )
        problems += [f"{page}: image did not load: {src}" for src in broken]
        text = driver.execute_script(
            "return document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText"
        )
        for m in MACHINE_PATHS.finditer(text):
            line = text[max(0, m.start() - 40) : m.end() + 40].replace("\n", " ")
            problems.append(f"{page}: path of the build machine: ...{line}...")
            break
        if RAW_LATEX.search(text):
            problems.append(f"{page}: raw LaTeX left unrendered (MathJax did not run)")
        wide = driver.execute_script(  # tables wider than the text column (a reader would scroll sideways)
            "const main = document.querySelector('main') || document.body; const w = main.clientWidth;"
            "return [...main.querySelectorAll('table')].filter(t => t.getBoundingClientRect().width > w + 1)"
            ".map(t => Math.round(t.getBoundingClientRect().width) + ' of ' + w + ' px')"
        )
        problems += [f"{page}: table wider than the text column at {width} px: {w}" for w in wide]
        blocks = driver.execute_script("return document.querySelectorAll('.output.stderr, .stderr').length")
        if blocks:
            problems.append(f"{page}: {blocks} stderr/warning output block(s)")
        links = driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")
        for href in links:
            url = urlparse(href)
            if url.netloc != urlparse(base).netloc:
                continue
            target = html_root / unquote(url.path.lstrip("/"))
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{page}: broken link {url.path}")
            elif url.fragment:
                body = target.read_text(errors="replace")
                if f'id="{url.fragment}"' not in body:
                    problems.append(f"{page}: broken anchor {url.path}#{url.fragment}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", default="_build/html", help="the built book (default _build/html)")
    args = parser.parse_args(argv)
    root = Path(args.html)
    if not (root / "index.html").is_file():
        print(f"error: {root}/index.html not found; build the book first with `bash scripts/book.sh`", file=sys.stderr)
        return 2
    pages = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.html")
        if not any(part.startswith("_") for part in p.relative_to(root).parts)
        and p.name != "search.html"
        and p.name != "genindex.html"
    )
    server, base = serve(root)
    driver = browser()
    problems = []
    try:
        for page in pages:
            problems += check_page(driver, base, page, root, root.parent / "screenshots")
    finally:
        driver.quit()
        server.shutdown()
    for line in problems:
        print(line)
    print(
        f"{len(pages)} pages checked at {', '.join(map(str, WIDTHS))} px; {len(problems)} problems; screenshots in "
        f"{root.parent / 'screenshots'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
