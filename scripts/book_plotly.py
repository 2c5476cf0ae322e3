"""Sphinx extension for the gptlearn book: plotly figures that draw offline without bloating pages.

* plotly.js is served ONCE, as ``_static/plotly.min.js``, copied at build time from the installed
  ``plotly`` Python package, so the JavaScript always matches the Python side that wrote the figures,
  and no CDN (network) is needed, not even when the site is opened from ``file://``.
* Every page loads it with a plain ``<script>`` in ``<head>`` (the browser caches it after the first
  page), so figure outputs can be emitted with ``include_plotlyjs=False`` (~10-500 KB instead of ~5 MB).
* It sets ``GPTLEARN_BOOK_BUILD=1`` before the notebooks run; the kernels inherit it, and
  ``gptlearn.plotting.setup_book()`` (the hidden first cell of every chapter) then switches plotly to
  the ``gptlearn_book`` renderer: HTML that references the shared plotly.js (outside the build, in
  Jupyter/Binder/Colab, plotly's own renderers are left alone).

Enabled in ``_config.yml`` under ``sphinx.local_extensions``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

PLOTLY_JS = "plotly.min.js"


def _plotly_js_source() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall plotly (pip install --force-reinstall plotly)")
    return path


def _copy_plotly_js(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    static = Path(app.outdir) / "_static"
    static.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_plotly_js_source(), static / PLOTLY_JS)


def setup(app):
    os.environ["GPTLEARN_BOOK_BUILD"] = "1"  # read by gptlearn.plotting.setup_book() in the kernels
    _plotly_js_source()  # fail early, with a clear message, if plotly.js is missing
    app.add_js_file(PLOTLY_JS, priority=200)
    app.connect("build-finished", _copy_plotly_js)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
