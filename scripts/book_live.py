"""Sphinx extension for the gptlearn book: a live model in the pages, and math that renders offline.

* **The live model.** At the end of the build the book's model is exported with
  :func:`gptlearn.web.export` into ``_static/gptlearn-live/`` (the model as a classic script, the
  JavaScript forward pass, the explorer). Pages holding a ``<div class="gptlearn-live">`` get those
  scripts; the explorer fills the div. The model is :func:`gptlearn.web.page_model`'s: the one
  ``gptlearn.load_model()`` picks for the chapters when it is small enough to ship in a page, else the
  bundled gptlearn-mini, and the page says so ("this book was built with gpt2 ... runs gptlearn-mini").
* **Offline math.** Sphinx's default ``mathjax_path`` is a CDN, so offline or from ``file://`` every
  formula shows as raw TeX. MathJax 3's ``tex-mml-chtml.js``, its CHTML fonts and its TeX extensions
  (loaded on demand by ``autoload``) are copied into ``_static/mathjax/`` from the installed PyPI
  package ``sphinx-mathjax-offline`` (MathJax 3.2.2, pinned in requirements.txt; its file is checked
  against the sha256 of npm's ``mathjax@3.2.2``), and ``_config.yml``
  sets ``mathjax_path: mathjax/tex-mml-chtml.js``. Only those parts: the package's own extension
  would copy all 24 MB of it.

Enabled in ``_config.yml`` under ``sphinx.local_extensions``.
"""
from __future__ import annotations

import hashlib
import shutil
from importlib import metadata
from pathlib import Path

LIVE_DIR = "gptlearn-live"  # under _static
MARKER = 'class="gptlearn-live'
MATHJAX_PACKAGE = "sphinx-mathjax-offline"
MATHJAX_PARTS = ("tex-mml-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2")
# sha256 of es5/tex-mml-chtml.js in npm's mathjax@3.2.2, the same file the pinned PyPI package ships
MATHJAX_SHA256 = "300480069078b5892d2363a2b65e2dfbbf30fe5c80f83edbfecf4610fd093862"


def mathjax_source() -> Path:
    """MathJax 3's es5 folder inside the installed sphinx-mathjax-offline package."""
    try:
        dist = metadata.distribution(MATHJAX_PACKAGE)
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"{MATHJAX_PACKAGE} is not installed; pip install -r requirements.txt "
                           "(it brings MathJax for formulas that render offline)") from None
    folder = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    missing = [p for p in MATHJAX_PARTS if not (folder / p).exists()]
    if missing:
        raise RuntimeError(f"{folder} lacks {missing}; reinstall {MATHJAX_PACKAGE}")
    if hashlib.sha256((folder / MATHJAX_PARTS[0]).read_bytes()).hexdigest() != MATHJAX_SHA256:
        raise RuntimeError(f"{folder / MATHJAX_PARTS[0]} is not MathJax 3.2.2's; install {MATHJAX_PACKAGE}==0.0.2 "
                           "(requirements.txt)")
    return folder


def _copy_static(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    from gptlearn.web import export, page_model

    static = Path(app.outdir) / "_static"
    model, book_model = page_model()
    export(model, static / LIVE_DIR, book_model=book_model)
    source = mathjax_source()
    for part in MATHJAX_PARTS:
        src, dst = source / part, static / "mathjax" / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dst)


def _add_live_scripts(app, pagename, templatename, context, doctree) -> None:
    """Pages with an explorer load the model and the explorer (the others pay nothing). Also drops
    repeated scripts: sphinx-thebe adds its configuration twice, and a second ``const THEBE_JS_URL``
    is an error in every page's console."""
    scripts = context.get("script_files")
    if isinstance(scripts, list):  # the same script added twice, once with filename None and once ''
        seen = set()
        kept = []
        for js in scripts:
            key = (getattr(js, "filename", js) or "", tuple(sorted(getattr(js, "attributes", {}).items())))
            if key not in seen:
                seen.add(key)
                kept.append(js)
        scripts[:] = kept
    if MARKER not in context.get("body", ""):
        return
    from gptlearn.web import DATA_FILE

    for name in (DATA_FILE, "live_model.js", "live_fast.js", "live_explorer.js"):
        app.add_js_file(f"{LIVE_DIR}/{name}", priority=600, defer="defer")  # in order, after the page
    app.add_css_file(f"{LIVE_DIR}/live_explorer.css")


def setup(app):
    mathjax_source()  # fail early, with a clear message, if MathJax is missing
    app.connect("html-page-context", _add_live_scripts)
    app.connect("build-finished", _copy_static)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
