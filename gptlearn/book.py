"""A chapter's set-up: the hidden first cell of every chapter calls :func:`setup_book`.

``import gptlearn`` never imports this module; plotly and torch are imported inside the function.
:mod:`gptlearn.plotting` re-exports :func:`setup_book` and :data:`BOOK_RENDERER`, which is how the
chapters call it (``gptlearn.plotting.setup_book()``).
"""
from __future__ import annotations

import os
import sys

__all__ = ["setup_book", "BOOK_RENDERER"]

BOOK_RENDERER = "gptlearn_book"


def setup_book(*, book_build: bool | None = None, seed: int | None = 0) -> str:
    """Prepare a chapter's kernel; the hidden first cell of every chapter calls it.

    During ``jupyter-book build`` (``GPTLEARN_BOOK_BUILD=1``, set by ``scripts/book_plotly.py``) plotly
    figures are rendered by :data:`BOOK_RENDERER`: HTML that uses the page's shared
    ``_static/plotly.min.js`` instead of embedding ~5 MB of plotly.js per page. It emits ONLY
    ``text/html``: myst-nb renders every mime type of a bundle and warns about (so ``-W`` fails on) the
    plotly JSON type. In Jupyter, Binder, VS Code or Colab plotly's own default renderer (the plotly
    mimetype, or Colab's) is kept, so figures show there as usual. Also seeds torch.
    Returns the name of the renderer in use.

    The renderer subclasses ``plotly.io._base_renderers.MimetypeRenderer``, a private plotly class.
    plotly's public renderers either put plotly.js into every figure (inline, or a CDN ``<script>``) or
    emit the plotly JSON mime type, and none of them suits a static book that loads plotly.js once per page.
    Registering a new renderer in ``plotly.io.renderers`` needs an object of plotly's renderer class, and
    plotly exports no public base class for it. A plotly release that moves the private class breaks this
    function, and ``tests/test_plotting.py`` fails on that.
    """
    import plotly.io as pio
    from plotly.io._base_renderers import MimetypeRenderer

    class _BookRenderer(MimetypeRenderer):
        def __init__(self, config=None):
            self.config = dict(config) if config else {}

        def to_mimebundle(self, fig_dict):
            html = pio.to_html(fig_dict, include_plotlyjs=False, full_html=False, config=self.config, validate=False)
            return {"text/html": html}

    pio.renderers[BOOK_RENDERER] = _BookRenderer(config={"responsive": True, "displaylogo": False})
    if book_build is None:
        book_build = os.environ.get("GPTLEARN_BOOK_BUILD", "") not in ("", "0")
    if book_build and "google.colab" not in sys.modules:
        pio.renderers.default = BOOK_RENDERER
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    return pio.renderers.default
