"""xaiutils.bookcheck on a tiny fake site: each kind of problem is reported on its page, and only there."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from xaiutils import bookcheck
from xaiutils.__main__ import main

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def browser():
    """Skip without Chromium, except in CI (CI=true), where a skipped browser test would hide a broken check."""
    missing = [path for path in (bookcheck.CHROMIUM, bookcheck.CHROMEDRIVER) if not Path(path).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (requirements.txt)")
    if missing:
        reason = f"{', '.join(missing)} missing; `make browser` installs chromium and chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: browser tests must run, not skip)")
        pytest.skip(reason)


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><article class='bd-article'><h1 id='top'>{title}</h1>{body}</article></body></html>")


def write_site(root: Path) -> None:
    (root / "book").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "_images").mkdir()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 0])
    fig.savefig(root / "_images" / "fig.png", dpi=50)
    plt.close(fig)
    figure = "<p>A figure:</p><img id='figure' src='../_images/fig.png' alt='a figure'>"
    # index.html is a meta refresh to book/intro.html, as jupyter-book writes it.
    (root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    (root / "book" / "intro.html").write_text(page("Intro", (
        "<p><a href='good.html'>good</a> <a href='good.html#figure'>its figure</a> <a href='#top'>top</a>"
        " <a href='broken_image.html'>x</a> <a href='broken_links.html'>x</a> <a href='blank.html'>x</a>"
        " <a href='../notebooks/01_ok.html'>x</a> <a href='../notebooks/02_no_figure.html'>x</a>"
        " <a href='https://example.org/missing.html'>external, not followed</a> <a href='mailto:a@b.c'>mail</a>"
        " <a href='#'>theme button</a></p>")))
    (root / "book" / "good.html").write_text(page("Good", figure + "<p><a href='intro.html#top'>back</a></p>"))
    (root / "book" / "broken_image.html").write_text(page("Broken image", "<img src='../_images/missing.png'>"))
    (root / "book" / "broken_links.html").write_text(page("Broken links", (
        "<p><a href='no_such_page.html'>missing page</a> <a href='good.html#no-such-id'>missing id</a>"
        " <a href='good.html#figure'>fine</a></p>")))
    (root / "book" / "blank.html").write_text("<!DOCTYPE html><html><head></head><body></body></html>")
    (root / "notebooks" / "01_ok.html").write_text(page("Notebook with a figure", figure))
    (root / "notebooks" / "02_no_figure.html").write_text(page("Notebook without a figure", "<p>Only text.</p>"))
    # A library warning that prints its install path, and a run folder printed as an absolute path of the checkout
    # (the site is <checkout>/_build/html, here <checkout>/html). Relative paths and URLs are fine.
    checkout = root.parent
    (root / "notebooks" / "03_leaks.html").write_text(page("Notebook that shows machine paths", figure + (
        "<pre>/opt/venv/lib/python3.12/site-packages/captum/attr/_core/saliency.py:129: UserWarning: grads</pre>"
        f"<p>Saved to {checkout}/runs/smoke/03_finetune.</p>"
        "<p>Fine: runs/smoke/03_finetune, https://example.org/site-packages.html, /usr/bin/chromium</p>")))


EXPECTED = {
    "index.html": [],
    "notebooks/01_ok.html": [],
    "notebooks/02_no_figure.html": ["0 figure(s) shown, at least 1 expected"],
    "book/blank.html": ["blank page (screenshot is one colour; no visible text in the article)"],
    "book/broken_image.html": ["broken image ../_images/missing.png"],
    "book/broken_links.html": [
        "broken link no_such_page.html: missing file book/no_such_page.html",
        "broken link good.html#no-such-id: no id 'no-such-id' in book/good.html",
    ],
    "notebooks/03_leaks.html": [
        "shows a path of the build machine: /opt/venv/lib/python3.12/site-packages/captum/attr/_core/saliency.py",
        "shows a path of the build machine: {checkout}/runs/smoke/03_finetune",
    ],
    "book/good.html": [],
    "book/intro.html": [],
}


def expected(root: Path) -> dict[str, list[str]]:
    """EXPECTED with this site's checkout path filled in."""
    return {page: [problem.format(checkout=root.parent) for problem in problems] for page, problems in EXPECTED.items()}


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    root = tmp_path_factory.mktemp("site") / "html"
    write_site(root)
    shots = root.parent / "screenshots"
    return root, shots, bookcheck.check_book(root, screenshot_dir=shots)


def test_default_pages_are_index_notebooks_and_book(checked):
    root, _, results = checked
    assert [result.page for result in results] == list(bookcheck.default_pages(root))
    assert sorted(result.page for result in results) == sorted(EXPECTED)
    assert results[0].page == "index.html" and results[0].final_page == "book/intro.html"


def test_each_page_reports_exactly_its_problems(checked):
    root, _, results = checked
    assert {result.page: result.problems for result in results} == expected(root)
    by_page = {result.page: result for result in results}
    assert by_page["book/blank.html"].blank and not any(r.blank for r in results if r.page != "book/blank.html")
    assert by_page["book/broken_image.html"].n_broken_images == 1
    assert by_page["book/broken_links.html"].broken_links == ["no_such_page.html", "good.html#no-such-id"]
    assert (by_page["book/good.html"].n_images, by_page["book/good.html"].n_figures) == (1, 1)
    # intro: 9 file:// targets checked (a bare '#' is the page itself); the external and mailto links are not.
    assert by_page["book/intro.html"].n_links == 9


def test_a_screenshot_per_page(checked):
    _, shots, results = checked
    for result in results:
        path = Path(result.screenshot)
        assert path == shots / Path(result.page).with_suffix(".png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(shots.rglob("*.tmp"))


def test_report_lists_every_problem(checked):
    root, _, results = checked
    text = bookcheck.report(results)
    assert text.splitlines()[0] == "book check failed: 7 problem(s) on 5 of 9 page(s)"
    lines = [f"{page}: {problem}" for page, problems in expected(root).items() for problem in problems]
    assert sorted(text.splitlines()[1:]) == sorted(lines)


def test_cli_exit_status(tmp_path, capsys):
    root = tmp_path / "html"
    write_site(root)
    assert main(["check-book", str(root)]) == 1
    out = capsys.readouterr().out
    assert "book/broken_links.html: broken link no_such_page.html" in out
    assert (tmp_path / "screenshots" / "book" / "good.png").is_file()  # default: screenshots/ beside HTML_DIR
    # Remove the bad pages: the same site then passes.
    for name in ("blank", "broken_image", "broken_links"):
        (root / "book" / f"{name}.html").unlink()
    for name in ("02_no_figure", "03_leaks"):
        (root / "notebooks" / f"{name}.html").unlink()
    intro = root / "book" / "intro.html"
    intro.write_text(page("Intro", "<p><a href='good.html#figure'>good</a></p>"))
    assert main(["check-book", str(root), "--screenshots", str(tmp_path / "shots")]) == 0
    out = capsys.readouterr().out
    assert "book check passed: 4 pages" in out
    assert str(tmp_path / "shots" / "index.png") in out
