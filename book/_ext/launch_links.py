"""Sphinx extension: launch buttons that open notebooks, not py:percent text.

The notebooks are kept as py:percent files (and executable chapters as MyST markdown), so sphinx-book-theme's
launch links point at ``.py`` / ``.md`` text.
- Binder: ``binder/postBuild`` pairs every notebook with an ``.ipynb``, so the link is pointed at that.
- Colab opens only ``.ipynb`` files from a GitHub branch: the build writes output-free copies (with a setup cell)
  to ``_colab/<page>.ipynb`` in the HTML folder, and the link points at them on the branch they are published to.
  ``colab_branch`` names that branch and ``colab_root`` the folder of the built HTML that becomes the branch's
  root: the book's deploy workflow (``.github/workflows/book.yml``) serves the HTML from a GitHub Pages artifact,
  which makes no branch, and pushes ``_build/html/_colab`` alone to the branch ``colab`` (``colab_root: _colab``).
  A branch-based deploy of the whole HTML (``ghp-import`` to ``gh-pages``) would be ``colab_root: ""``.
"""

from __future__ import annotations

from pathlib import Path

from xaiutils.book import COLAB_DIR, write_colab_notebooks


def _is_text_notebook(path: Path) -> bool:
    """A py:percent notebook, or a MyST markdown page with a kernelspec (executed like a notebook)."""
    if path.suffix == ".py":
        return True
    return path.suffix == ".md" and "kernelspec:" in path.read_text().split("\n---", 1)[0]


def _notebook_sources(app) -> dict[str, Path]:
    """docname → source path of every text notebook in the build."""
    paths = {docname: Path(app.env.doc2path(docname)) for docname in app.env.found_docs}
    return {docname: path for docname, path in paths.items() if _is_text_notebook(path)}


def _rewrite(buttons, docname: str, colab_base: str) -> None:
    for button in buttons:
        if not isinstance(button, dict):
            continue
        _rewrite(button.get("buttons", []), docname, colab_base)
        url = button.get("url", "")
        if button.get("text") == "Colab":
            button["url"] = f"{colab_base}/{docname}.ipynb"
        elif button.get("text") == "Binder":
            for suffix in (".py", ".md"):  # binder/postBuild pairs each text notebook with an .ipynb
                if url.endswith(f"{docname}{suffix}"):
                    button["url"] = url.removesuffix(suffix) + ".ipynb"


def fix_launch_buttons(app, pagename, templatename, context, doctree) -> None:
    if pagename not in app.env.found_docs or "header_buttons" not in context:
        return
    if not _is_text_notebook(Path(app.env.doc2path(pagename))):
        return
    repository = app.config.html_theme_options.get("repository_url", "").rstrip("/")
    owner_repo = repository.removeprefix("https://github.com/")
    colab_url = app.config.html_theme_options.get("launch_buttons", {}).get("colab_url", "").rstrip("/")
    colab_base = f"{colab_url}/github/{owner_repo}/blob/{app.config.colab_branch}"
    # the copies lie in <html>/_colab/; the branch holds <html>/<colab_root>/ as its root
    inside_root = Path(COLAB_DIR).relative_to(app.config.colab_root or ".").as_posix()
    if inside_root != ".":
        colab_base = f"{colab_base}/{inside_root}"
    _rewrite(context["header_buttons"], pagename, colab_base)


def write_copies(app, exception) -> None:
    if exception is not None or app.builder.name != "html":
        return
    sources = _notebook_sources(app)
    repository = app.config.html_theme_options.get("repository_url", "")
    branch = app.config.html_theme_options.get("repository_branch", "main")
    for docname, source in sources.items():
        folder = Path(app.outdir, COLAB_DIR, docname).parent
        write_colab_notebooks([source], folder, repository, branch)


def setup(app):
    app.add_config_value("colab_branch", "colab", "html")
    app.add_config_value("colab_root", COLAB_DIR, "html")
    # after sphinx-book-theme has built the launch buttons (its priority is 501)
    app.connect("html-page-context", fix_launch_buttons, priority=600)
    app.connect("build-finished", write_copies)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
