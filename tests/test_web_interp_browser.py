"""The explorer's lens and ablate parts in Chromium, from an exported folder opened over file:// with every
other request aborted and counted: no console error, no request leaves the page, a click on a head knocks
it out with PyTorch's numbers (<= 1e-3), the lens equals ln_f then the unembedding (<= 1e-3), and bad
options give a message. The built book's pages are tested in tests/test_web_browser.py."""
from __future__ import annotations

import re

import pytest
import torch
from browser_kit import open_page

from gptlearn import GPT
from gptlearn.patching import ablate_heads
from gptlearn.web import export

TEXT = "the cat sat on the mat. the cat sat on the"


@pytest.fixture(scope="module")
def mini():
    return GPT.from_pretrained("gptlearn-mini").eval()


@pytest.fixture(scope="module")
def site(mini, tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    export(mini, folder)
    return folder / "index.html"


def _open(browser, site):
    page, errors, external = open_page(browser, site)
    page.wait_for_function("() => document.querySelector('.gptlearn-live').dataset.rendered "
                           "&& document.querySelector('.gl-check').textContent", timeout=60_000)
    return page, errors, external


def _redrawn(page, action):
    box = page.locator(".gptlearn-live").first
    before = int(box.get_attribute("data-rendered") or 0)
    action()
    page.wait_for_function("([el, n]) => Number(el.dataset.rendered || 0) > n", arg=[box.element_handle(), before],
                           timeout=30_000)


def test_ablate_and_lens_in_chromium(browser, site, mini):
    page, errors, external = _open(browser, site)
    try:
        box = page.locator(".gptlearn-live").first
        _redrawn(page, lambda: (box.locator(".gl-input").fill(TEXT), box.locator(".gl-input").dispatch_event("input")))
        ids = mini.tokenizer.encode_ordinary(TEXT)
        # the page's API under ablation and with the lens, against PyTorch
        for heads in ([], [(0, 2)], [(1, 4), (1, 1)], [(l, h) for l in range(4) for h in range(0, 8, 3)]):
            out = page.evaluate("([t, a]) => gptlearn.live.forward(t, {ablate: a, lens: true})",
                                [TEXT, [list(p) for p in heads]])
            assert out["message"] is None and out["ids"] == ids
            with torch.no_grad(), ablate_heads(mini, heads):
                logits, cache = mini.run_with_cache(torch.tensor([ids]))
            torch.testing.assert_close(torch.tensor(out["logits"]), logits[0, -1], atol=1e-3, rtol=0)
            for layer in range(4):
                want = mini.lm_head(mini.ln_f(cache["resid_pre", layer]))[0, -1]
                torch.testing.assert_close(torch.tensor(out["lens"][layer]), want, atol=1e-3, rtol=0)
        bad = page.evaluate("() => gptlearn.live.forward('hello', {ablate: [[9, 0]]})")
        assert "head [9, 0] does not exist" in bad["message"] and bad["logits"] is None
        empty = page.evaluate("() => gptlearn.live.forward('', {lens: true})")
        assert empty["lens"] is None and empty["message"]

        # the lens part: one row per layer plus the output, whose top token is the model's
        lens_rows = box.locator(".gl-part.gl-lens tr")
        assert lens_rows.count() == 5
        top = int(torch.tensor(page.evaluate("t => gptlearn.live.forward(t).logits", TEXT)).argmax())
        assert lens_rows.nth(4).locator("td").first.get_attribute("title") == f"id {top}"
        # click token 2: the lens moves there
        _redrawn(page, lambda: box.locator(".gl-part.gl-lens .gl-chip").nth(2).click())
        assert "at token 2" in box.locator(".gl-part.gl-lens h4").inner_text()

        # the ablate part: knock out 0.2, the change of the top token's probability is PyTorch's
        _redrawn(page, lambda: box.locator(".gl-head", has_text="0.2").click())
        change = box.locator(".gl-change").inner_text()
        with torch.no_grad():
            p0 = mini(torch.tensor([ids]))[0, -1].softmax(-1)
            with ablate_heads(mini, [(0, 2)]):
                p1 = mini(torch.tensor([ids]))[0, -1].softmax(-1)
        found = re.search(r"Without 0\.2: .* goes from ([\d.e+-]+)% to ([\d.e+-]+)%", change)
        assert found, change
        assert abs(float(found.group(1)) - 100 * float(p0[top])) < 0.06
        assert abs(float(found.group(2)) - 100 * float(p1[top])) < 0.06 * max(1.0, 100 * float(p1[top]) / 10)
        assert box.locator(".gl-head.gl-off").count() == 1
        _redrawn(page, lambda: box.locator(".gl-head", has_text="0.2").click())  # put it back
        assert box.locator(".gl-head.gl-off").count() == 0 and box.locator(".gl-change").count() == 0
        # the older parts, now drawn by module-level functions, still respond
        _redrawn(page, lambda: box.locator(".gl-attention select[aria-label=layer]").select_option("2"))
        assert "layer 2 head 0" in box.locator(".gl-part.gl-attention h4").inner_text()
        assert "layer 2" in box.locator(".gl-part.gl-heads h4").inner_text()
        _redrawn(page, lambda: box.locator(".gl-grid .gl-cell").nth(8 + 3).click())  # layer 1, head 3
        assert "layer 1 head 3" in box.locator(".gl-part.gl-attention h4").inner_text()
        _redrawn(page, lambda: box.locator("input[aria-label=temperature]").fill("0.5"))
        assert box.locator(".gl-temp").inner_text() == "0.50"
        assert box.locator(".gl-part.gl-embedding .gl-cos li").count() == 3
        assert not errors, "\n".join(errors)
        assert not external, external
    finally:
        page.close()
