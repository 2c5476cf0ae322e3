"""A second model in a page, as chapter 12 ("Following instructions") ships its tuned model: the page's model
(gptlearn.web.export) and an instruction-tuned copy (gptlearn.web.model_script, stored as its change to the page's
model), with one
explorer that draws both models' next-token bars for the same prompt (gptlearn.web.explorer_div). Opened from
file:// in Chromium with every other request aborted: both bar sets show, each model's ids are PyTorch's
exactly, its logits within 1e-3, its top token in the page PyTorch's, and typing redraws both. The tuned
reference is rebuilt from the page's own data (what the page received). The built chapter is tested in
tests/test_web_browser.py."""
from __future__ import annotations

import copy

import pytest
import torch
from browser_kit import open_page

from gptlearn import GPT, GPTConfig
from gptlearn.errors import InvalidValueError
from gptlearn.instruct import instruction_tune, single_token_words, synthetic_instructions
from gptlearn.plotting import display_token
from gptlearn.web import explorer_div, export, model_script, read_model_script

WORDS = "king queen lord love night day heart crown death life time man good fair sweet world hand head".split()
LABELS = ("before tuning", "after tuning")


@pytest.fixture(scope="module")
def models():
    """(the base model, a copy instruction-tuned for a few steps, a held-out prompt)."""
    torch.set_num_threads(1)
    base = GPT.from_pretrained("gptlearn-mini").eval()
    words = single_token_words(base.tokenizer, WORDS)
    tuned = copy.deepcopy(base)
    instruction_tune(tuned, base.tokenizer, synthetic_instructions(words, 200, seed=0), steps=30, lr=2e-3,
                     batch_size=16)
    seen = set(synthetic_instructions(words, 200, seed=0))
    probe = next(e for e in synthetic_instructions(words, 50, seed=1) if e not in seen)
    return base, tuned.eval(), probe.prompt


@pytest.fixture(scope="module")
def page_path(models, tmp_path_factory):
    base, tuned, prompt = models
    folder = tmp_path_factory.mktemp("compare")
    export(base, folder)
    scripts = "".join(f'<script src="{f}" defer></script>' for f in ("gptlearn-live-data.js", "live_model.js",
                                                                     "live_fast.js", "live_explorer.js"))
    body = model_script(tuned, "tuned", name="tuned", check_text=prompt, base=base) + explorer_div(
        text=prompt, compare="tuned", labels=LABELS)
    (folder / "chapter.html").write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="stylesheet" href="live_explorer.css">{scripts}'
        f"</head><body>{body}</body></html>", encoding="utf-8")
    return folder / "chapter.html"


def _rebuilt(data) -> GPT:
    model = GPT(GPTConfig.from_hf_dict(data["config"])).eval()
    model.load_state_dict(data["state_dict"])
    return model


def _top(model, ids) -> int:
    with torch.no_grad():
        return int(model(torch.tensor([ids]))[0, -1].argmax())


def _tops(box) -> list[str]:
    return [box.locator(".gl-column").nth(i).locator(".gl-top li code").first.inner_text() for i in range(2)]


def _both_match_pytorch(page, box, tokenizer, models, text) -> list[str]:
    """Each of the page's models (None: the page's own, else its key) gives PyTorch's ids exactly and its
    logits within 1e-3 on ``text``, and the explorer's two columns show PyTorch's top tokens; returns them."""
    ids = tokenizer.encode_ordinary(text)
    tops = []
    for key, model in models:
        out = page.evaluate("([k, t]) => gptlearn.live.model(k).forward(t)", [key, text])
        assert out["ids"] == ids
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, -1]
        torch.testing.assert_close(torch.tensor(out["logits"]), logits, atol=1e-3, rtol=0)
        tops.append(display_token(tokenizer.decode([int(logits.argmax())])))
    assert _tops(box) == tops
    return tops


def test_before_and_after_bars_run_pytorchs_numbers(browser, models, page_path):
    base, tuned, prompt = models
    data = read_model_script(page_path.read_text(encoding="utf-8"), "tuned", base=base)
    shipped = _rebuilt(data)
    with torch.no_grad():  # the steps the change is stored in move the logits a little
        ids = torch.tensor([base.tokenizer.encode_ordinary(prompt)])
        assert 0 < (shipped(ids) - tuned(ids)).abs().max() < 1.0
    page, errors, external = open_page(browser, page_path)
    try:
        page.wait_for_function("() => document.querySelector('.gptlearn-live').dataset.rendered "
                               "&& document.querySelector('.gl-check').textContent", timeout=60_000)
        box = page.locator(".gptlearn-live").first
        assert box.locator(".gl-check").inner_text().startswith("✓ Same numbers as PyTorch for both models")
        assert page.evaluate("() => gptlearn.live.checkedModels.tuned") < 1e-3
        assert box.locator(".gl-column h5").all_inner_texts() == list(LABELS)
        assert [box.locator(".gl-column").nth(i).locator(".gl-top li").count() for i in range(2)] == [10, 10]
        assert "in a worker" in box.locator(".gl-status").inner_text()
        assert box.locator(".gl-input").input_value() == prompt
        # the page rebuilt the tuned weights from its own model and the change bit for bit as PyTorch did
        flat = torch.cat([v.flatten() for k, v in data["state_dict"].items() if k != "lm_head.weight"])
        picks = torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[:3000].tolist()
        got = page.evaluate("(ix) => { const w = gptlearn.live.data('tuned').weights; return ix.map((i) => w[i]); }",
                            picks)
        assert torch.equal(torch.tensor(got, dtype=torch.float32), flat[picks])

        def check(text):
            return _both_match_pytorch(page, box, base.tokenizer, ((None, base), ("tuned", shipped)), text)

        tops = check(prompt)
        # the stored change leaves the tuned model's top token on the prompt as it was
        prompt_ids = base.tokenizer.encode_ordinary(prompt)
        assert _top(tuned, prompt_ids) == _top(shipped, prompt_ids)
        # typing a new prompt redraws both bar sets
        other = prompt.replace(prompt.split(":")[0], "repeat" if not prompt.startswith("repeat") else "reverse", 1)
        n = int(box.get_attribute("data-rendered"))
        box.locator(".gl-input").fill(other)
        page.wait_for_function("([el, n]) => Number(el.dataset.rendered || 0) > n", arg=[box.element_handle(), n],
                               timeout=30_000)
        check(other)
        # the temperature reshapes both
        n = int(box.get_attribute("data-rendered"))
        box.locator("input[type=range]").fill("0.2")
        page.wait_for_function("([el, n]) => Number(el.dataset.rendered || 0) > n", arg=[box.element_handle(), n],
                               timeout=30_000)
        sharp = [float(box.locator(".gl-column").nth(i).locator(".gl-prob").first.inner_text().rstrip("%"))
                 for i in range(2)]
        with torch.no_grad():
            ids = torch.tensor([base.tokenizer.encode_ordinary(other)])
            want = [100 * float((m(ids)[0, -1] / 0.2).softmax(-1).max()) for m in (base, shipped)]
        assert sharp == pytest.approx(want, abs=0.06)
        assert tops and not errors, errors
        assert not external, external
    finally:
        page.close()


def test_a_page_without_the_compared_model_says_so(browser, models, tmp_path):
    base, _, prompt = models
    export(base, tmp_path)
    scripts = "".join(f'<script src="{f}"></script>' for f in ("gptlearn-live-data.js", "live_model.js",
                                                               "live_explorer.js"))
    (tmp_path / "p.html").write_text(f"<!DOCTYPE html><html><head>{scripts}</head><body>"
                                     f"{explorer_div(text=prompt, compare='tuned')}</body></html>", encoding="utf-8")
    page, errors, external = open_page(browser, tmp_path / "p.html")
    try:
        page.wait_for_function("() => document.querySelector('.gl-check') "
                               "&& document.querySelector('.gl-check').textContent", timeout=60_000)
        box = page.locator(".gptlearn-live").first
        assert 'does not carry the model "tuned"' in box.inner_text()
        assert box.locator(".gl-column").count() == 0 and box.locator(".gl-top li").count() == 10
        assert "no model \"tuned\" in this page" in page.evaluate(
            "() => { try { gptlearn.live.model('tuned'); } catch (e) { return e.message; } }")
        assert not errors and not external, errors + external
    finally:
        page.close()


def test_a_change_to_another_model_than_the_pages_is_refused_in_the_page(browser, models, tmp_path):
    """A tuned model stored as its change to gptlearn-mini, in a page that runs another model: the explorer
    says why it cannot start, and gptlearn.live.model says the same; nothing is drawn from wrong weights."""
    base, tuned, prompt = models
    other = GPT(GPTConfig(vocab_size=base.config.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=64))
    other.tokenizer = base.tokenizer
    export(other, tmp_path, name="other")
    scripts = "".join(f'<script src="{f}"></script>' for f in ("gptlearn-live-data.js", "live_model.js",
                                                               "live_explorer.js"))
    body = model_script(tuned, "tuned", check_text=prompt, base=base) + explorer_div(text=prompt, compare="tuned")
    (tmp_path / "p.html").write_text(f"<!DOCTYPE html><html><head>{scripts}</head><body>{body}</body></html>",
                                     encoding="utf-8")
    page, errors, external = open_page(browser, tmp_path / "p.html")
    try:
        page.wait_for_function("() => document.querySelector('.gptlearn-live').textContent.includes('could not start')",
                               timeout=60_000)
        text = page.locator(".gptlearn-live").first.inner_text()
        assert "is stored as a change to gptlearn-mini, but this page runs other" in text, text
        assert page.locator(".gl-top li").count() == 0
        assert "stored as a change" in page.evaluate(
            "() => { try { gptlearn.live.model('tuned'); } catch (e) { return e.message; } }")
        assert not external, external
    finally:
        page.close()


def test_model_script_checks_its_arguments_and_reads_back(models):
    base, tuned, prompt = models
    text = model_script(tuned, "tuned-1", check_text=prompt)
    data = read_model_script(text, "tuned-1")
    assert data["weights_dtype"] == "float32" and data["check"]["text"] == prompt
    for name, value in data["state_dict"].items():
        assert torch.equal(value, tuned.state_dict()[name]), name
    torch.testing.assert_close(data["check_logits"], tuned(torch.tensor([base.tokenizer.encode(prompt)]))[0, -1],
                               atol=0, rtol=0)
    assert "</" not in text[len("<script>"):-len("</script>")]
    for bad in ("", "a b", "x" * 41, 3, "</script>"):
        with pytest.raises(InvalidValueError, match="letters, digits"):
            model_script(tuned, bad)
    with pytest.raises(InvalidValueError, match="no model 'other'"):
        read_model_script(text, "other")
    with pytest.raises(InvalidValueError, match="labels"):
        explorer_div(compare="tuned", labels=("a|b", "c"))
    assert 'data-text="a &lt;/b&gt;&#10;&quot;c&quot;"' in explorer_div(text='a </b>\n"c"')


def test_a_model_stored_as_its_change_reads_back_and_refuses_a_wrong_base(models):
    """model_script(..., base=): each weight is the base's plus whole steps of its row's scale, within half a
    step of the tuned weight; the check logits are the rebuilt model's; the wrong base, or none, is refused."""
    base, tuned, prompt = models
    text = model_script(tuned, "tuned", check_text=prompt, base=base)
    assert len(text) < 0.5 * len(model_script(tuned, "tuned", check_text=prompt, half=True))  # 8 bits, not 16
    data = read_model_script(text, "tuned", base=base)
    assert data["weights_dtype"] == "delta" and data["tokenizer_object"].encode(prompt) == base.tokenizer.encode(prompt)
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    for name, value in data["state_dict"].items():
        change = tuned_state[name] - base_state[name]
        rows = change.reshape(-1, change.shape[-1])
        step = rows.abs().amax(1, keepdim=True) / (7 if name in ("wte.weight", "lm_head.weight") else 127)
        err = (value - tuned_state[name]).reshape(rows.shape).abs()
        assert (err <= step / 2 * (1 + 1e-4) + 1e-7).all(), name
    rebuilt = _rebuilt(data)
    with torch.no_grad():
        logits = rebuilt(torch.tensor([base.tokenizer.encode(prompt)]))[0, -1]
    assert torch.equal(logits, data["check_logits"])
    with pytest.raises(InvalidValueError, match="give that model as base"):
        read_model_script(text, "tuned")
    other = GPT(GPTConfig(vocab_size=base.config.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=32))
    other.tokenizer = base.tokenizer
    with pytest.raises(InvalidValueError, match="parameters"):
        read_model_script(text, "tuned", base=other)
    with pytest.raises(InvalidValueError, match="same configuration"):
        model_script(tuned, "tuned", base=other)
    with pytest.raises(InvalidValueError, match="half or base"):
        model_script(tuned, "tuned", base=base, half=True)


@pytest.mark.book
def test_chapter_12_draws_the_bars_before_and_after_tuning(browser, built_book):
    """The built chapter "Following instructions": its explorer runs the page's model and the tuned model the
    chapter carries, on the chapter's prompt, with PyTorch's ids, logits (<= 1e-3) and top tokens."""
    from gptlearn.web import read_export

    path = built_book / "book" / "12_following_instructions.html"
    exported = read_export(built_book / "_static" / "gptlearn-live")
    base = _rebuilt(exported)
    tokenizer = exported["tokenizer_object"]
    tuned = _rebuilt(read_model_script(path.read_text(encoding="utf-8"), "tuned", base=exported))
    page, errors, external = open_page(browser, path)
    try:
        page.wait_for_function("() => { const e = document.querySelector('.gptlearn-live[data-compare=tuned]'); "
                               "return e && e.dataset.rendered && e.querySelector('.gl-check').textContent; }",
                               timeout=60_000)
        box = page.locator(".gptlearn-live[data-compare=tuned]")
        assert box.count() == 1
        assert box.locator(".gl-check").inner_text().startswith("✓ Same numbers as PyTorch for both models")
        assert box.locator(".gl-column h5").all_inner_texts() == ["before tuning", "after tuning (masked loss)"]
        assert [box.locator(".gl-column").nth(i).locator(".gl-top li").count() for i in range(2)] == [10, 10]
        prompt = box.locator(".gl-input").input_value()
        assert prompt.endswith("\nAnswer:")
        _both_match_pytorch(page, box, tokenizer, ((None, base), ("tuned", tuned)), prompt)
        assert not errors, errors
        assert not external, external
    finally:
        page.close()
