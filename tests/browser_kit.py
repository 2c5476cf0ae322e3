"""What the Chromium tests share (test_web_browser, test_web_interp_browser): a page opened from disk with
every request that leaves ``file:`` aborted and recorded, and its console errors collected."""
from __future__ import annotations

from pathlib import Path


def open_page(browser, path: Path):
    """The page at ``path``; returns (page, errors, external): console errors and aborted non-file: URLs."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    external: list[str] = []

    def route(r):
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(path.as_uri(), wait_until="load")
    return page, errors, external
