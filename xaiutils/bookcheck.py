"""Open the built book in headless Chromium and fail on blank pages, missing figures, broken internal links and
paths of the build machine shown to the reader.

``check_book("_build/html", screenshot_dir="_build/screenshots")`` loads each page from disk (file:// URLs), saves a
full-page PNG screenshot and returns one :class:`PageResult` per page; :func:`report` lists every problem.
CLI: ``python -m xaiutils check-book [HTML_DIR] [--screenshots DIR]`` (``make check-book``).

It drives Debian's ``chromium`` and ``chromium-driver`` (``make browser`` installs them) through Selenium, with both
paths given explicitly so that Selenium Manager never tries to download a driver. Only links inside the built site are
followed; http(s) links and images are not (the check must work offline).
"""

from __future__ import annotations

import base64
import fnmatch
import io
import os
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from xaiutils.foundation.files import write_atomic

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 2000)
# Taller pages are cut in the screenshot (Chromium's capture limit is ~16k px); images and links are checked in the
# DOM, below the cut too.
MAX_SCREENSHOT_HEIGHT = 16000
# Notebook pages must show at least this many figures (loaded <img> inside the article). Globs match the page's path
# relative to the built site; every notebook, 00_overview included, draws figures.
MIN_FIGURES = {"notebooks/*.html": 1}
# A screenshot is blank when fewer than this fraction of its pixels differ from its most common colour
# (0.01%: 256 of the 2.56 million pixels of a 1280x2000 shot; one line of text is well above it).
BLANK_FRACTION = 1e-4
WAIT_S = 10
# Text that gives the build machine away: a library's install path (a warning prints the file it came from) or
# the checkout's absolute path. Neither means anything to a reader, and both change from machine to machine.
_PATH_TAIL = r"[^\s'\"<>():,]*"
_INSTALLED_PATH = re.compile(r"[^\s'\"<>()]*(?:site|dist)-packages/" + _PATH_TAIL)

# The article the reader sees: sphinx-book-theme's <article class="bd-article">, else the closest generic element.
_ARTICLE = (
    "(document.querySelector('article.bd-article') || document.querySelector('article')"
    " || document.querySelector('[role=main]') || document.querySelector('main') || document.body)"
)
_INSPECT = f"""
const article = {_ARTICLE};
const images = Array.from(document.images).map(img => ({{
    src: img.currentSrc || img.src, raw: img.getAttribute('src') || '',
    ok: img.complete && img.naturalWidth > 0, inArticle: !!article && article.contains(img)}}));
const links = Array.from(document.querySelectorAll('a[href]')).map(a => ({{raw: a.getAttribute('href'), url: a.href}}));
return {{text: article ? article.innerText : '', images: images, links: links,
         width: document.documentElement.scrollWidth,
         height: Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)}};
"""


@dataclass
class PageResult:
    page: str  # path relative to the built site, as requested (index.html)
    final_page: str  # where the browser ended up (index.html is a meta refresh to book/intro.html)
    screenshot: str | None = None
    n_images: int = 0
    n_broken_images: int = 0
    n_figures: int = 0  # images that loaded, inside the article
    n_links: int = 0  # internal links checked
    broken_links: list[str] = field(default_factory=list)
    blank: bool = False
    problems: list[str] = field(default_factory=list)


def default_pages(html_dir: str | Path) -> list[str]:
    """index.html, every page under notebooks/ and under book/ (found by glob, so new notebooks are included)."""
    root = Path(html_dir)
    found = ["index.html"] + [
        path.relative_to(root).as_posix()
        for folder in ("notebooks", "book")
        for path in sorted((root / folder).glob("*.html"))
    ]
    return found


def make_driver(chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER):
    """Headless Chromium driven by the given chromedriver; never Selenium Manager, never the network."""
    os.environ.setdefault("SE_OFFLINE", "true")  # belt and braces: Selenium Manager must not go online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (chromium, chromedriver):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} not found; `make browser` installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in containers and CI
        "--disable-gpu",
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--disable-background-networking",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",  # offline by construction: no host resolves
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(60)
    return driver


class _Anchors(HTMLParser):
    """Every id (and <a name>) in an HTML file: what a #fragment may point to."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


def _anchors(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        parser = _Anchors()
        parser.feed(path.read_text(errors="replace"))
        cache[path] = parser.ids
    return cache[path]


def _link_problem(url: str, root: Path, cache: dict[Path, set[str]]) -> str | None:
    """Why an internal (file://) link is broken, or None when its file and #fragment exist."""
    parts = urlsplit(url)
    target = Path(url2pathname(parts.path)).resolve()
    if not target.is_relative_to(root):
        return "points outside the built site"
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"missing file {target.relative_to(root).as_posix()}"
    fragment = unquote(parts.fragment)
    if fragment and target.suffix in (".html", ".htm") and fragment not in _anchors(target, cache):
        return f"no id '{fragment}' in {target.relative_to(root).as_posix()}"
    return None


def machine_paths(text: str, checkout: str | Path | None = None) -> list[str]:
    """The distinct paths in ``text`` that belong to the build machine: installed packages, or under ``checkout``."""
    found = _INSTALLED_PATH.findall(text)
    if checkout is not None and Path(checkout).parent != Path(checkout):  # never the file-system root itself
        found += re.findall(re.escape(str(Path(checkout))) + "/" + _PATH_TAIL, text)
    return sorted({path.rstrip(".") for path in found})  # a path that ends a sentence keeps its full stop out


def _is_blank(png: bytes) -> bool:
    """Essentially one colour: almost every pixel equals the most common one."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    total = image.width * image.height
    colours = image.getcolors(maxcolors=4096)  # None: more colours than that, so certainly not blank
    if colours is None:
        return False
    return total - max(count for count, _ in colours) < BLANK_FRACTION * total


def _screenshot(driver, width: int, height: int) -> bytes:
    """The page from the top, up to MAX_SCREENSHOT_HEIGHT px, in one PNG (CDP captures beyond the viewport)."""
    clip = {"x": 0, "y": 0, "width": min(max(width, 1), WINDOW[0]), "scale": 1,
            "height": min(max(height, WINDOW[1]), MAX_SCREENSHOT_HEIGHT)}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    return base64.b64decode(shot["data"])


def _load(driver, url: str) -> None:
    """Open url, follow a <meta http-equiv=refresh> redirect, then wait until every image has loaded or failed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    if driver.execute_script("return !!document.querySelector('meta[http-equiv=\"refresh\" i]')"):
        try:
            WebDriverWait(driver, WAIT_S).until(lambda d: d.current_url != url)
            WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")
        except TimeoutException:
            pass  # the caller sees that the page did not move
    # Lazy images only load when scrolled to; make them eager so that a figure far down the page is checked too.
    driver.execute_script("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; });")
    try:
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
    except TimeoutException:
        pass  # the images still loading are reported as broken


def check_page(driver, root: Path, page: str, screenshot_dir: Path | None = None, min_figures: int = 0,
               anchors: dict[Path, set[str]] | None = None) -> PageResult:
    """Load one page of the built site and collect its problems."""
    result = PageResult(page=page, final_page=page)
    path = root / page
    if not path.is_file():
        result.problems.append("page not found in the built site")
        return result
    url = path.as_uri()
    try:
        _load(driver, url)
    except Exception as error:  # a crashed tab or a load timeout: report it, check the other pages
        result.problems.append(f"could not load: {type(error).__name__}: {str(error).splitlines()[0]}")
        return result
    final = Path(url2pathname(urlsplit(driver.current_url).path)).resolve()
    if driver.current_url.startswith("file:") and final.is_relative_to(root):
        result.final_page = final.relative_to(root).as_posix()
    if not final.is_file():
        result.problems.append(f"redirects to a missing page: {driver.current_url}")
    info = driver.execute_script(_INSPECT)

    png = _screenshot(driver, info["width"], info["height"])
    if screenshot_dir is not None:
        shot = Path(screenshot_dir) / Path(page).with_suffix(".png")
        write_atomic(shot, png)
        result.screenshot = str(shot)
    reasons = (["screenshot is one colour"] if _is_blank(png) else []) + (
        ["no visible text in the article"] if not info["text"].strip() else [])
    if reasons:
        result.blank = True
        result.problems.append(f"blank page ({'; '.join(reasons)})")

    # The site is <checkout>/_build/html: paths under the checkout are this machine's.
    for leaked in machine_paths(info["text"], checkout=root.parent.parent):
        result.problems.append(f"shows a path of the build machine: {leaked}")

    # Images: all of them must load, except remote ones (no network here, as for links).
    result.n_images = len(info["images"])
    for image in info["images"]:
        if image["ok"]:
            result.n_figures += image["inArticle"]
        elif not image["src"].startswith(("http:", "https:")):
            result.n_broken_images += 1
            result.problems.append(f"broken image {image['raw'] or image['src']}")
    if result.n_figures < min_figures:
        result.problems.append(f"{result.n_figures} figure(s) shown, at least {min_figures} expected")

    # Links: every file:// target (relative hrefs resolve to file:// here) must exist, with its #fragment id.
    anchors = {} if anchors is None else anchors
    seen = set()
    for link in info["links"]:
        if not link["url"].startswith("file:") or link["url"] in seen:
            continue
        seen.add(link["url"])
        problem = _link_problem(link["url"], root, anchors)
        if problem:
            result.broken_links.append(link["raw"])
            result.problems.append(f"broken link {link['raw']}: {problem}")
    result.n_links = len(seen)
    return result


def _min_figures(page: str, table: dict[str, int]) -> int:
    return max((n for pattern, n in table.items() if fnmatch.fnmatch(page, pattern)), default=0)


def check_book(html_dir: str | Path, pages: list[str] | None = None, screenshot_dir: str | Path | None = None,
               min_figures: dict[str, int] | None = None, chromium: str = CHROMIUM,
               chromedriver: str = CHROMEDRIVER) -> list[PageResult]:
    """Check each page (default: :func:`default_pages`); min_figures maps page globs to a minimum figure count."""
    root = Path(html_dir).resolve()
    pages = default_pages(root) if pages is None else list(pages)
    min_figures = MIN_FIGURES if min_figures is None else min_figures
    screenshots = None if screenshot_dir is None else Path(screenshot_dir)
    anchors: dict[Path, set[str]] = {}
    driver = make_driver(chromium, chromedriver)
    try:
        return [
            check_page(driver, root, page, screenshots, _min_figures(page, min_figures), anchors)
            for page in pages
        ]
    finally:
        driver.quit()


def summary_line(result: PageResult) -> str:
    page = result.page if result.final_page == result.page else f"{result.page} -> {result.final_page}"
    return (f"{page:<34} {result.n_images:3d} images {result.n_figures:3d} figures {result.n_links:4d} links  "
            f"{result.screenshot or '(no screenshot)'}")


def report(results: list[PageResult]) -> str:
    """Every problem, one line each as 'page: what'; an empty string when there is none."""
    lines = [f"{result.page}: {problem}" for result in results for problem in result.problems]
    if not lines:
        return ""
    bad = sum(bool(result.problems) for result in results)
    return "\n".join([f"book check failed: {len(lines)} problem(s) on {bad} of {len(results)} page(s)"] + lines)


def main(html_dir: str | Path = "_build/html", screenshot_dir: str | Path | None = None) -> int:
    """Print one line per page, then the report; 1 when there is any problem, else 0."""
    if not (Path(html_dir) / "index.html").is_file():
        print(f"error: no {Path(html_dir) / 'index.html'}; build the book first (make book)", file=sys.stderr)
        return 2
    results = check_book(html_dir, screenshot_dir=screenshot_dir)
    for result in results:
        print(summary_line(result))
    text = report(results)
    print(text or f"book check passed: {len(results)} pages")
    return 1 if text else 0
