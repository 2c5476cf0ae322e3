"""The built book: a strict executed build, checks of the HTML, and every page opened in headless Chromium.

The session fixture ``built_book`` (tests/conftest.py, shared with tests/test_web_browser.py) builds the
book into ``_build/html`` with ``jupyter-book build . -W -n --keep-going`` (any cell error or Sphinx
warning fails), unless ``GPTLEARN_BOOK_PREBUILT=1`` and ``_build/html/index.html`` exists (then that
build is checked as it is).

The browser part uses Debian's ``chromium`` (``apt-get install -y chromium``) driven by Playwright; it is
skipped when chromium is missing, except in CI (``CI`` set), where that is a failure.
"""
from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from gptlearn.web.exporter import _MODELS_MARK  # how gptlearn.web.model_script marks a model it adds to a page

pytestmark = pytest.mark.book

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "_build" / "html"
SCREENSHOTS = REPO / "_build" / "screenshots"
sys.path.insert(0, str(REPO / "scripts"))
from book_sync_ipynb import is_notebook, toc_files  # noqa: E402

# Known upstream console noise (see /work/shared/BOOK-NOTES.md): sphinx-thebe declares THEBE_JS_URL twice,
# MathJax gets loaded twice (`Cannot set property Package`), FigureWidget + MathJax 3 (`reading 'Queue'`).
ALLOWED_CONSOLE = ("THEBE_JS_URL", "Cannot set property Package", "reading 'Queue'")
# calls that make plotly figures (the hidden set-up cell imports gptlearn.plotting everywhere)
FIGURE_MARKERS = re.compile(
    r"\b(attention_heatmap|attention_heads_figure|heatmap|loss_curve|LiveLossCurve|go\.Figure|make_subplots|px\.\w+)\(")
MANY_HEADS = "book/04_many_heads"
# bytes. A page without the models it carries stays under PAGE_LIMIT (inlining plotly.js, ~4.8 MB, would not);
# model data (issue 24's budget): the model every page runs together with the further models a page carries
PAGE_LIMIT = 3_000_000
MODEL_LIMIT = 16_000_000
MODEL_SCRIPT = re.compile(f"<script>{re.escape(_MODELS_MARK)}.*?</script>", re.S)


def _pages() -> list[str]:
    return toc_files(REPO)


def _html(doc: str) -> str:
    path = HTML / f"{doc}.html"
    assert path.is_file(), f"{doc} is in _toc.yml but was not built ({path} is missing)"
    return path.read_text(encoding="utf-8")


# ---- the sources (no build needed) --------------------------------------------------------------


def test_every_toc_page_has_a_source():
    missing = [d for d in _pages() if not any((REPO / f"{d}{s}").is_file() for s in (".md", ".ipynb", ".rst"))]
    assert not missing, f"_toc.yml lists pages with no source file: {missing}"


def test_colab_ipynb_twins_are_in_sync():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "book_sync_ipynb.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_builds_kernel_waits_come_in_slices_and_keep_their_timeout(monkeypatch):
    """scripts/book_zmq_wakeup.py: a reply that a missed wake-up left in the socket is read within a slice
    (it showed as a 300 s chapter), and a wait with a timeout still ends in Empty at that timeout."""
    import asyncio
    import time
    from queue import Empty

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import book_zmq_wakeup

    SLICE = 0.01
    monkeypatch.setattr(book_zmq_wakeup, "SLICE_S", SLICE)

    class Channel:  # stands in for AsyncZMQSocketChannel: the reply is there, but no wait sees it before 3 slices
        def __init__(self):
            self.waits = []

        async def get_msg(self, timeout=None):
            self.waits.append(timeout)
            if len(self.waits) < 3:
                raise Empty
            return {"msg_type": "execute_reply"}

    ch = Channel()
    assert asyncio.run(book_zmq_wakeup._sliced(Channel.get_msg)(ch, timeout=300))["msg_type"] == "execute_reply"
    assert len(ch.waits) == 3 and all(0 < w <= SLICE for w in ch.waits)  # never one 300 s wait

    async def never(self, timeout=None):  # a reply that never comes
        raise Empty

    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(book_zmq_wakeup._sliced(never)(Channel(), timeout=0.05))
    assert 0.04 < time.monotonic() - start < 1


def test_binder_environment_is_cpu_only_and_installs_the_repo():
    req = (REPO / "binder" / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in req
    assert re.search(r"^torch==[\d.]+\+cpu$", req, re.M)
    assert re.search(r"^jupytext", req, re.M)
    assert re.search(r"^-e \.", req, re.M)
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


# ---- (a) the built HTML -----------------------------------------------------------------------------


def test_every_toc_page_was_built(built_book):
    missing = [d for d in _pages() if not (built_book / f"{d}.html").is_file()]
    assert not missing, f"pages in _toc.yml missing from the HTML: {missing}"


def test_no_execution_error_reports(built_book):
    reports = sorted((built_book / "reports").rglob("*.err.log")) if (built_book / "reports").is_dir() else []
    assert not reports, "cells failed while building: " + ", ".join(p.name for p in reports)


def _cells(html: str) -> list[str]:
    return re.split(r'(?=<div class="cell[ "])', html)


@pytest.mark.parametrize("doc", _pages())
def test_page_has_no_unexpected_errors_or_dropped_figures(built_book, doc):
    html = _html(doc)
    for cell in _cells(html):
        if "tag_raises-exception" in cell.split(">", 1)[0]:
            continue
        assert 'class="output traceback' not in cell, f"{doc}: a cell printed a traceback:\n{cell[:1500]}"
        assert "Traceback (most recent call last)" not in cell, f"{doc}: a traceback in the output:\n{cell[:1500]}"
    assert "application/vnd.plotly.v1+json" not in html, f"{doc}: a plotly figure was left as raw JSON"


@pytest.mark.parametrize("doc", _pages())
def test_chapters_with_figures_have_plotly_divs(built_book, doc):
    src = REPO / f"{doc}.md"
    if not src.is_file() or not is_notebook(src) or not FIGURE_MARKERS.search(src.read_text(encoding="utf-8")):
        pytest.skip("this page makes no plotly figures")
    assert "plotly-graph-div" in _html(doc), f"{doc} makes figures but none reached the HTML"


def test_plotly_js_is_served_once_not_inlined(built_book):
    js = built_book / "_static" / "plotly.min.js"
    assert js.is_file() and js.stat().st_size > 1_000_000
    data = built_book / "_static" / "gptlearn-live" / "gptlearn-live-data.js"  # the model every page runs
    assert data.is_file() and 1_000_000 < data.stat().st_size < MODEL_LIMIT
    for doc in _pages():
        if not (built_book / f"{doc}.html").is_file():
            continue  # reported by test_every_toc_page_was_built
        html = _html(doc)
        models = MODEL_SCRIPT.findall(html)  # further models (gptlearn.web.model_script), e.g. chapter 12's tuned one
        carried = data.stat().st_size + sum(len(m.encode()) for m in models)  # the page's model and its own
        assert carried <= MODEL_LIMIT, f"{doc}.html runs {carried:,} bytes of model data, over the budget"
        page = MODEL_SCRIPT.sub("", html)
        assert len(page.encode()) < PAGE_LIMIT, f"{doc}.html is {len(page.encode()):,} bytes without its models"
        assert "* plotly.js v" not in html, f"{doc}.html inlines plotly.js"
        assert re.search(r'<script src="(\.\./)*_static/plotly\.min\.js',
                         html), f"{doc}.html does not load plotly.min.js"


# ---- (b) headless Chromium ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(built_book):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output readable
        pass


def _open(browser, url: str):
    """A page with every request to another host aborted; returns (page, errors, blocked)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    blocked: list[str] = []
    local = urlparse(url).netloc

    def route(r):
        if urlparse(r.request.url).netloc in (local, ""):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    def on_console(msg):
        if msg.type != "error":
            return
        source = (msg.location or {}).get("url", "")
        if msg.text.startswith("Failed to load resource") and urlparse(source).netloc not in (local, ""):
            return  # a request to another host that we blocked on purpose
        if any(a in msg.text for a in ALLOWED_CONSOLE):
            return
        errors.append(f"console: {msg.text} ({source})")

    page.route("**/*", route)
    page.on("console", on_console)
    page.on("pageerror",
            lambda e: errors.append(f"page error: {e}") if not any(a in str(e) for a in ALLOWED_CONSOLE) else None)
    page.goto(url, wait_until="load")
    return page, errors, blocked


def _wait_for_figures(page, doc: str) -> int:
    n = page.locator(".plotly-graph-div").count()
    if n:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))",
            timeout=60_000,
        )
    return n


def _visible_traces(page, index: int) -> list[int]:
    return page.evaluate(
        "(i) => { const gd = document.querySelectorAll('.plotly-graph-div')[i];"
        " return gd._fullData.filter(t => t.visible === true).map(t => t.index); }", index)


@pytest.mark.parametrize("doc", _pages())
def test_page_in_chromium(browser, server, doc):
    assert (HTML / f"{doc}.html").is_file(), f"{doc} is in _toc.yml but was not built"
    page, errors, _ = _open(browser, f"{server}/{doc}.html")
    try:
        n = _wait_for_figures(page, doc)
        drawn = page.locator(".plotly-graph-div .main-svg").count()
        assert drawn >= n, f"{doc}: only {drawn} of {n} plotly figures drew"
        assert not errors, f"{doc}: " + "\n".join(errors)
        if doc in (_pages()[0], "book/03_attention_one_head", MANY_HEADS, "book/05_concatenate_and_project"):
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{Path(doc).name}.png"), full_page=False)
    finally:
        page.close()


def test_many_heads_layer_dropdown_switches_visible_traces(browser, server):
    if MANY_HEADS not in _pages():
        pytest.skip(f"{MANY_HEADS} is not in _toc.yml")
    page, errors, _ = _open(browser, f"{server}/{MANY_HEADS}.html")
    try:
        _wait_for_figures(page, MANY_HEADS)
        index = page.evaluate(
            "() => [...document.querySelectorAll('.plotly-graph-div')]"
            ".findIndex(gd => gd.layout && gd.layout.updatemenus && gd.layout.updatemenus.length)")
        assert index >= 0, "no figure with a layer dropdown on the many-heads page"
        n_layers = page.evaluate(f"() => document.querySelectorAll('.plotly-graph-div')[{index}]"
                                 ".layout.updatemenus[0].buttons.length")
        if n_layers < 2:
            pytest.skip("the model has one layer: nothing to switch")
        before = _visible_traces(page, index)
        gd = page.locator(".plotly-graph-div").nth(index)
        gd.scroll_into_view_if_needed()
        gd.locator(".updatemenu-header-group").first.click()
        gd.locator(".updatemenu-dropdown-button").nth(1).click()  # the menu opened: "layer 1"
        page.wait_for_timeout(500)
        after = _visible_traces(page, index)
        assert before and after and before != after, f"the dropdown did not change the visible traces ({before})"
        n_heads = len(before)
        assert after == list(range(n_heads, 2 * n_heads)), f"layer 1 should show traces {n_heads}..{2 * n_heads - 1}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "04_many_heads_layer1.png"))
        assert not errors, "\n".join(errors)
    finally:
        page.close()
