"""The live book in Chromium, opened from disk (file://), with every request that is not a file: aborted
and counted: formulas render, nothing leaves the page, no console error, and the explorers run the
exported model with PyTorch's numbers (token ids equal, last-position logits within 1e-3, every attention
weight within 1e-4), draw what the reader types, and show each weight on hover.

Uses the strict book build (``built_book`` in tests/conftest.py) and Debian's chromium (``browser``).
Screenshots go to _build/screenshots/live_*.png; the parity figures to _build/screenshots/live_parity.json.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.book

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "_build" / "screenshots"
sys.path.insert(0, str(REPO / "scripts"))
from book_sync_ipynb import toc_files  # noqa: E402
from browser_kit import open_page  # noqa: E402

MARKER = 'class="gptlearn-live"'
NEEDS_EXPLORER = ["book/00_start_here", "book/03_attention_one_head", "book/04_many_heads",
                  "book/05_concatenate_and_project", "book/06_the_block_and_gpt2", "book/08_sentence_embeddings",
                  "book/05b_reading_the_residual_stream", "book/05c_the_induction_circuit_tested"]
TEXTS = [  # over twenty: scripts, emoji, whitespace runs, contractions, one character, nothing, too long
    "The big red car drove quickly", "Hello, world!", "日本語のテキストです。", "こんにちは世界",
    "Ελληνικά και русский",
    "emoji 🙂👍🏽 and 👨‍👩‍👧 family", "    four spaces before", "trailing spaces    ", "tabs\tand\nnewlines\n\n\n",
    "\u00a0non-breaking\u3000ideographic", "don't I'll we've they're she'd it's", "x", "🙂", " ", "",
    "numbers 1234567890 3.14159 and ½", "<|endoftext|> stays plain text", "CamelCaseWordsAndsnake_case",
    "mixed: αβγ + 中文 + عربى + हिन्दी", "ROMEO:\nBut soft, what light through yonder window breaks?",
    "to be or not " * 100,
]


def _pages() -> list[str]:
    return toc_files(REPO)


def _explorer_pages() -> list[str]:
    return [d for d in _pages()
            if (REPO / f"{d}.md").is_file() and MARKER in (REPO / f"{d}.md").read_text(encoding="utf-8")]


def show(token: str) -> str:
    from gptlearn.plotting import display_token

    return display_token(token)


@pytest.fixture(scope="module")
def exported(built_book):
    """The model the pages run, rebuilt in PyTorch from the exported script (so the reference is exactly
    what the page received), and its export's data."""
    from gptlearn import GPT, GPTConfig
    from gptlearn.web import read_export

    data = read_export(built_book / "_static" / "gptlearn-live")
    model = GPT(GPTConfig.from_hf_dict(data["config"])).eval()
    model.load_state_dict(data["state_dict"])
    model.tokenizer = data["tokenizer_object"]
    return model, data


def _open(browser, built_book: Path, doc: str):
    """The book's page ``doc`` from disk; returns (page, errors, external) (:func:`browser_kit.open_page`)."""
    return open_page(browser, built_book / f"{doc}.html")


def _shoot(page, box, name: str) -> None:
    """A screenshot of one explorer, without the theme's sticky header drawn over it."""
    page.add_style_tag(content=".bd-header, .bd-header-article, .skip-link { visibility: hidden !important; }")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    box.screenshot(path=str(SCREENSHOTS / name))


def _redrawn(page, box, action) -> None:
    """Do ``action()`` and wait until the explorer has drawn every part again."""
    before = int(box.get_attribute("data-rendered") or 0)
    action()
    page.wait_for_function("([el, n]) => Number(el.dataset.rendered || 0) > n", arg=[box.element_handle(), before],
                           timeout=30_000)


def _settle(page) -> None:
    """Wait for MathJax's first typesetting and for every explorer's first drawing."""
    page.wait_for_function("() => !window.MathJax || !MathJax.startup || !MathJax.startup.promise "
                           "|| MathJax.startup.promise.then(() => true)", timeout=60_000)
    page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.wait_for_function("() => [...document.querySelectorAll('.gptlearn-live')].every(e => "
                           "e.dataset.rendered && e.querySelector('.gl-check').textContent)", timeout=60_000)


RAW_MATH = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script, style, mjx-container, .MathJax, .gl-api').forEach(e => e.remove());
  const text = body.innerText || body.textContent;
  return (text.match(/\\\\\\(|\\\\\\[/g) || []).length;
}"""


@pytest.mark.parametrize("doc", _pages())
def test_page_works_offline_from_file(browser, built_book, doc):
    page, errors, external = _open(browser, built_book, doc)
    try:
        _settle(page)
        raw = page.evaluate(RAW_MATH)
        formulas = page.locator("mjx-container").count()
        assert raw == 0, f"{doc}: {raw} formulas left as raw \\( or \\[ ({formulas} rendered)"
        assert not external, f"{doc}: {len(external)} requests left the page: {external[:5]}"
        assert not errors, f"{doc}: " + "\n".join(errors)
        html = (built_book / f"{doc}.html").read_text(encoding="utf-8")
        assert "application/vnd.jupyter.widget-view+json" not in html, f"{doc}: a widget that needs a kernel"
        assert "require.js" not in html and "html-manager" not in html, f"{doc}: loads the widget manager"
    finally:
        page.close()


def test_the_chapters_have_explorers():
    missing = [d for d in NEEDS_EXPLORER if d not in _explorer_pages()]
    assert not missing, f"no live explorer in {missing}"


@pytest.mark.parametrize("doc", _explorer_pages())
def test_explorer_runs_the_exported_model(browser, built_book, exported, doc):
    model, data = exported
    page, errors, external = _open(browser, built_book, doc)
    try:
        _settle(page)
        box = page.locator(".gptlearn-live").first
        assert data["label"] in box.inner_text(), "the explorer must say which model it runs"
        if data["book_model"]:
            assert f"built with {data['book_model']}" in box.inner_text()
        assert box.locator(".gl-check").inner_text().startswith("✓ Same numbers as PyTorch")
        assert "in a worker" in box.locator(".gl-status").inner_text()
        ids = model.tokenizer.encode_ordinary(box.locator(".gl-input").input_value())
        chips = ".gl-chip[title^='token ']"  # the token row's chips (the lens part has clickable chips too)
        assert box.locator(chips).count() == len(ids)
        assert box.locator(f"{chips} small").all_inner_texts() == [str(i) for i in ids]
        _shoot(page, box, f"live_{Path(doc).name}.png")
        assert not errors and not external, errors + external
    finally:
        page.close()


def test_forward_parity_with_pytorch(browser, built_book, exported):
    model, _ = exported
    page, errors, external = _open(browser, built_book, NEEDS_EXPLORER[0])
    worst = {"texts": len(TEXTS), "id_mismatches": 0, "logits": 0.0, "attention": 0.0}
    try:
        results = page.evaluate("(texts) => texts.map(t => gptlearn.live.forward(t))", TEXTS)
        for text, out in zip(TEXTS, results):
            ids = model.tokenizer.encode_ordinary(text)  # the page reads typed text as plain text
            worst["id_mismatches"] += out["ids"] != ids
            assert out["ids"] == ids, text
            assert out["tokens"] == model.tokenizer.str_tokens(ids), text
            if not ids or len(ids) > model.config.n_positions:
                assert out["logits"] is None and out["attention"] is None and out["message"], text
                continue
            with torch.no_grad():
                logits, cache = model.run_with_cache(torch.tensor([ids]))
            got_logits = torch.tensor(out["logits"], dtype=torch.float32)
            got_attention = torch.tensor(out["attention"], dtype=torch.float32)  # [layer][head][query][key]
            torch.testing.assert_close(got_logits, logits[0, -1], atol=1e-3, rtol=0)
            torch.testing.assert_close(got_attention, cache.stack("pattern")[:, 0], atol=1e-4, rtol=0)
            worst["logits"] = max(worst["logits"], (got_logits - logits[0, -1]).abs().max().item())
            worst["attention"] = max(worst["attention"],
                                     (got_attention - cache.stack("pattern")[:, 0]).abs().max().item())
        too_long = results[-1]
        assert "reads at most" in too_long["message"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "live_parity.json").write_text(json.dumps(worst, indent=1) + "\n")
        assert not errors and not external, errors + external
    finally:
        page.close()


def _canvas(page, selector: str) -> str:
    return page.locator(selector).first.evaluate("c => c.toDataURL()")


def _retype(page, box, text: str) -> None:
    box.locator(".gl-input").fill("")
    _redrawn(page, box, lambda: box.locator(".gl-input").type(text, delay=2))


def test_typing_redraws_the_heatmap_and_the_next_token_is_pythons(browser, built_book, exported):
    model, _ = exported
    page, errors, _ = _open(browser, built_book, "book/00_start_here")
    try:
        _settle(page)
        box = page.locator(".gptlearn-live").first
        before = _canvas(page, ".gl-attention canvas")
        text = "Once upon a time there was a little"
        _retype(page, box, text)
        assert _canvas(page, ".gl-attention canvas") != before, "typing did not redraw the attention map"
        ids = model.tokenizer.encode_ordinary(text)
        with torch.no_grad():
            top = model(torch.tensor([ids]))[0, -1].argmax().item()
        assert box.locator(".gl-top li code").first.inner_text() == show(model.tokenizer.decode([top]))
        assert box.locator(".gl-chip").count() == len(ids)
        _redrawn(page, box, lambda: box.locator(".gl-top li").first.click())  # clicking a next token appends it
        assert box.locator(".gl-input").input_value() == text + model.tokenizer.decode([top])
        _shoot(page, box, "live_00_start_here_typed.png")
        assert not errors, errors
    finally:
        page.close()


def test_temperature_reshapes_the_distribution(browser, built_book):
    page, errors, _ = _open(browser, built_book, "book/00_start_here")
    try:
        _settle(page)
        box = page.locator(".gptlearn-live").first
        top = {}
        for t in ("0.1", "1", "2"):
            _redrawn(page, box, lambda: box.locator("input[type=range]").fill(t))
            assert float(box.locator(".gl-temp").inner_text()) == float(t)
            top[t] = float(box.locator(".gl-top .gl-prob").first.inner_text().rstrip("%"))
        assert top["0.1"] > top["1"] > top["2"], top
        assert not errors, errors
    finally:
        page.close()


def _cell_center(page, selector: str, row: int, col: int, rows: int, cols: int, left: int, top: int, right: int):
    page.locator(selector).first.scroll_into_view_if_needed()
    bbox = page.locator(selector).first.bounding_box()  # in the viewport, after scrolling
    cell = (bbox["width"] - left - right) / cols
    return bbox["x"] + left + (col + 0.5) * cell, bbox["y"] + top + (row + 0.5) * cell


def test_hover_shows_the_attention_weight_and_a_grid_click_picks_the_head(browser, built_book):
    page, errors, _ = _open(browser, built_book, "book/04_many_heads")
    try:
        _settle(page)
        box = page.locator(".gptlearn-live").first
        text = box.locator(".gl-input").input_value()
        H = int(page.evaluate("gptlearn.live.model().config.n_head"))
        _redrawn(page, box, lambda: box.locator(".gl-grid .gl-cell").nth(1 * H + 2).click())
        assert box.locator(".gl-attention select").nth(0).input_value() == "1"  # layer 1
        assert box.locator(".gl-attention select").nth(1).input_value() == "2"  # head 2
        out = page.evaluate("(t) => gptlearn.live.forward(t)", text)
        T = len(out["ids"])
        x, y = _cell_center(page, ".gl-attention canvas", 5, 2, T, T, 96, 70, 40)
        page.mouse.move(x, y)
        tip = box.locator(".gl-attention .gl-tip").inner_text()
        assert tip.endswith(f": {out['attention'][1][2][5][2]:.4f}"), tip
        x, y = _cell_center(page, ".gl-attention canvas", 2, 5, T, T, 96, 70, 40)
        page.mouse.move(x, y)
        assert "cannot see" in box.locator(".gl-attention .gl-tip").inner_text()  # the causal mask
        _shoot(page, box, "live_04_many_heads_hover.png")
        assert not errors, errors
    finally:
        page.close()


def test_too_long_a_text_is_a_message_on_the_page(browser, built_book, exported):
    model, _ = exported
    page, errors, _ = _open(browser, built_book, "book/03_attention_one_head")
    try:
        _settle(page)
        box = page.locator(".gptlearn-live").first
        _redrawn(page, box, lambda: box.locator(".gl-input").fill("to be or not " * 100))
        status = box.locator(".gl-status").inner_text()
        assert f"at most {model.config.n_positions}" in status
        assert not box.locator(".gl-attention").is_visible()
        _redrawn(page, box, lambda: box.locator(".gl-input").fill(""))
        assert "at least one token" in box.locator(".gl-status").inner_text()
        assert not errors, errors
    finally:
        page.close()


def test_head_contributions_are_the_norms_of_z_h_W_O_h(browser, built_book, exported):
    model, _ = exported
    page, errors, _ = _open(browser, built_book, "book/05_concatenate_and_project")
    try:
        _settle(page)
        box = page.locator(".gptlearn-live").first
        ids = model.tokenizer.encode_ordinary(box.locator(".gl-input").input_value())
        T, H, hs = len(ids), model.config.n_head, model.config.d_head
        _, cache = model.run_with_cache(torch.tensor([ids]))
        W_O = model.blocks[0].attn.c_proj.weight.T
        t, h = T - 1, H - 1
        want = (cache["z", 0][0, t, h] @ W_O[h * hs:(h + 1) * hs]).norm().item()
        x, y = _cell_center(page, ".gl-heads canvas", t, h, T, H, 96, 70, 40)
        page.mouse.move(x, y)
        tip = box.locator(".gl-heads .gl-tip").inner_text()
        assert float(re.search(r"= ([\d.]+)$", tip).group(1)) == pytest.approx(want, abs=1e-3), tip
        assert not errors, errors
    finally:
        page.close()


def test_embedding_cosines_are_the_embedders(browser, built_book, exported):
    from gptlearn import Embedder

    model, _ = exported
    page, errors, _ = _open(browser, built_book, "book/08_sentence_embeddings")
    try:
        _settle(page)
        box = page.locator(".gptlearn-live").first
        text = box.locator(".gl-input").input_value()
        refs = box.locator(".gl-cos .gl-ref").all_inner_texts()
        assert len(refs) >= 3
        for pooling in ("mean", "last"):
            if pooling != "mean":
                _redrawn(page, box, lambda: box.locator(".gl-embedding select").select_option(label=pooling))
            shown = [float(v) for v in box.locator(".gl-cos .gl-prob").all_inner_texts()]
            E = torch.tensor(Embedder(model, pooling=pooling).encode([text, *refs]))
            want = torch.nn.functional.cosine_similarity(E[:1], E[1:]).tolist()
            assert shown == pytest.approx(want, abs=1.5e-3), (pooling, shown, want)
            js = page.evaluate("([t, p]) => gptlearn.live.sentenceEmbedding(t, p)", [text, pooling])
            torch.testing.assert_close(torch.tensor(js, dtype=torch.float32), E[0], atol=1e-4, rtol=1e-4)
        assert not errors, errors
    finally:
        page.close()
