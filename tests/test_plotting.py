"""gptlearn.plotting: figure structure (traces, visible masks, slider steps), shapes and finiteness.
Never pixel comparisons."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("plotly")
pytest.importorskip("matplotlib")

from gptlearn import plotting  # noqa: E402
from gptlearn.errors import GptlearnError, InvalidTypeError, InvalidValueError  # noqa: E402


def _patterns(L=3, H=4, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(L, H, T, T, generator=g)
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return scores.softmax(-1)  # (L, H, T, T), rows sum to 1


TOKENS = ["The", " big", " big", " car", "\n", " ok"]  # a repeated token and a newline on purpose


def test_import_gptlearn_does_not_import_plotting_libraries():
    code = "import sys, gptlearn; print(any(m in sys.modules for m in ('plotly', 'matplotlib', 'gptlearn.plotting')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("mode", ["grid", "slider"])
def test_heads_figure_has_one_trace_per_layer_and_head(mode):
    L, H, T = 3, 4, 6
    fig = plotting.attention_heads_figure(_patterns(L, H, T), TOKENS, mode=mode)
    assert len(fig.data) == L * H
    for l in range(L):
        for h in range(H):
            tr = fig.data[l * H + h]
            assert tr.name == f"layer {l} head {h}"
            z = np.asarray(tr.z)
            assert z.shape == (T, T) and z.dtype == np.uint8
            assert z.min() >= 0 and z.max() <= 100
            assert "→" in tr.hovertemplate
            assert len(set(tr.x)) == T  # repeated tokens keep separate columns
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 100


def test_heads_figure_quantises_to_percent():
    p = _patterns(1, 2, 6)
    fig = plotting.attention_heads_figure(p, TOKENS)
    z = np.asarray(fig.data[1].z).astype(float)
    np.testing.assert_allclose(z / 100, p[0, 1].numpy(), atol=0.005 + 1e-6)
    assert (z[np.triu_indices(6, 1)] == 0).all()  # masked future stays 0


def test_grid_dropdown_buttons_show_exactly_that_layers_heads():
    L, H = 3, 4
    fig = plotting.attention_heads_figure(_patterns(L, H), TOKENS, mode="grid", layer=1)
    buttons = fig.layout.updatemenus[0].buttons
    assert len(buttons) == L
    for l, button in enumerate(buttons):
        visible = button.args[0]["visible"]
        assert len(visible) == L * H
        assert [i for i, v in enumerate(visible) if v] == [l * H + h for h in range(H)]
    initially = [i for i, tr in enumerate(fig.data) if tr.visible]
    assert initially == [H + h for h in range(H)]  # layer=1
    assert fig.layout.updatemenus[0].active == 1


def test_slider_mode_steps_select_one_head_and_buttons_swap_the_slider():
    L, H = 3, 4
    fig = plotting.attention_heads_figure(_patterns(L, H), TOKENS, mode="slider", layer=2, head=3)
    assert [i for i, tr in enumerate(fig.data) if tr.visible] == [2 * H + 3]
    (slider,) = fig.layout.sliders
    assert slider.active == 3 and len(slider.steps) == H
    for h, step in enumerate(slider.steps):
        assert [i for i, v in enumerate(step.args[0]["visible"]) if v] == [2 * H + h]
    for l, button in enumerate(fig.layout.updatemenus[0].buttons):
        assert [i for i, v in enumerate(button.args[0]["visible"]) if v] == [l * H]
        (new_slider,) = button.args[1]["sliders"]
        assert len(new_slider["steps"]) == H
        for h, step in enumerate(new_slider["steps"]):
            assert [i for i, v in enumerate(step["args"][0]["visible"]) if v] == [l * H + h]


def test_heads_figure_accepts_one_layer_and_rejects_bad_shapes():
    fig = plotting.attention_heads_figure(_patterns(1, 2)[0], TOKENS)  # (H, T, T)
    assert len(fig.data) == 2
    with pytest.raises(ValueError, match="len\\(tokens\\)"):
        plotting.attention_heads_figure(_patterns(1, 2), TOKENS[:3])
    with pytest.raises(ValueError, match="mode"):
        plotting.attention_heads_figure(_patterns(1, 2), TOKENS, mode="table")
    with pytest.raises(ValueError, match="outside"):
        plotting.attention_heads_figure(_patterns(1, 2), TOKENS, layer=5)


def test_heads_figure_on_a_real_model_is_small(tiny_model):
    text = "The big red car drove quickly down the road"
    _, cache = tiny_model.run_with_cache(text)
    patterns = cache.stack("pattern")[:, 0]  # (L, H, T, T)
    fig = plotting.attention_heads_figure(patterns, tiny_model.to_str_tokens(text))
    assert len(fig.data) == tiny_model.config.n_layer * tiny_model.config.n_head
    js = fig.to_json()
    assert '"bdata"' in js  # uint8 arrays travel as base64, not as lists of floats
    assert len(js) < 60_000


def test_attention_heatmap_structure():
    p = _patterns(1, 1)[0, 0]
    fig = plotting.attention_heatmap(p, TOKENS, title="t")
    (tr,) = fig.data
    assert np.asarray(tr.z).shape == (6, 6) and np.isfinite(np.asarray(tr.z, dtype=float)).all()
    assert tr.zmin == 0 and tr.zmax == 1
    assert tr.hovertemplate.startswith("%{y} → %{x}")
    with pytest.raises(ValueError):
        plotting.attention_heatmap(p[:3], TOKENS)


def test_head_grid_is_a_matplotlib_figure_with_one_axis_per_head():
    from matplotlib.figure import Figure

    fig = plotting.head_grid(_patterns(2, 3))
    assert isinstance(fig, Figure)
    assert len([ax for ax in fig.axes if ax.images]) == 6
    fig = plotting.head_grid(_patterns(1, 3)[0])
    assert len([ax for ax in fig.axes if ax.images]) == 3


def test_token_spans_escape_html_and_count_tokens():
    from gptlearn import Tokenizer

    tok = Tokenizer.gpt2()
    spans = plotting.token_spans(tok, "a <b> & 吾輩")
    html = spans._repr_html_()
    assert "<b>" not in html and "&lt;" in html and "&amp;" in html
    assert "⟨" in html and "\ufffd" not in html  # partial UTF-8 tokens shown as bytes
    assert len(spans) == len(tok.encode("a <b> & 吾輩"))
    assert html.count("<span") == len(spans)
    eot = plotting.token_spans(tok, "<|endoftext|>", allowed_special="all")
    assert eot.ids == [50256]


def test_heatmap_rejects_non_2d():
    fig = plotting.heatmap(np.eye(3), ["a", "b", "c"], ["x", "y", "z"], zmid=0)
    assert np.asarray(fig.data[0].z).shape == (3, 3)
    with pytest.raises(ValueError):
        plotting.heatmap(np.zeros(3))


def test_loss_curve_from_train_history_and_in_place_update():
    from gptlearn.train import TrainHistory

    h = TrainHistory(step=[1, 2, 3, 4], train_loss=[4.0, 3.0, 2.5, 2.0], val_loss=[None, 3.2, None, 2.4])
    fig = plotting.loss_curve(h)
    train, val = fig.data
    assert list(train.x) == [1, 2, 3, 4] and list(train.y) == [4.0, 3.0, 2.5, 2.0]
    assert list(val.x) == [2, 4] and list(val.y) == [3.2, 2.4]  # None = no eval at that step
    h.step.append(5), h.train_loss.append(1.5), h.val_loss.append(None)
    same = plotting.loss_curve(h, fig=fig)
    assert same is fig and list(fig.data[0].y)[-1] == 1.5
    records = [{"step": 10, "train_loss": 1.0}, {"step": 20, "train_loss": 0.5, "val_loss": 0.7}]
    fig = plotting.loss_curve(records)
    assert list(fig.data[0].x) == [10, 20] and list(fig.data[1].y) == [0.7]


def test_live_loss_curve_updates_its_figure_outside_notebooks():
    live = plotting.LiveLossCurve()
    live.update({"step": [0, 1], "train_loss": [2.0, 1.0]})
    assert list(live.figure.data[0].y) == [2.0, 1.0]


def test_setup_book_renderer_emits_html_without_plotly_js(monkeypatch):
    import plotly.io as pio

    old = pio.renderers.default
    try:
        assert plotting.setup_book(book_build=True, seed=None) == plotting.BOOK_RENDERER
        fig = plotting.attention_heatmap(_patterns(1, 1)[0, 0], TOKENS)
        bundle = pio.renderers[plotting.BOOK_RENDERER].to_mimebundle(fig.to_dict())
        assert set(bundle) == {"text/html"}  # myst-nb would warn about the plotly JSON mime type
        html = bundle["text/html"]
        assert "plotly-graph-div" in html and "Plotly.newPlot" in html
        assert len(html) < 100_000  # plotly.js (~5 MB) is NOT inlined
        pio.renderers.default = old
        monkeypatch.delenv("GPTLEARN_BOOK_BUILD", raising=False)
        assert plotting.setup_book(seed=None) == old  # outside the book build: plotly's default stays
    finally:
        pio.renderers.default = old


# ---- 2-D maps of embeddings (chapters 9-10) and the live loss curve in a notebook -------------------------
def test_embedding_scatter_buttons_switch_whole_maps(blobs):
    x, groups = blobs
    texts = [f"s{i}" for i in range(len(groups))]
    maps = {"PCA": x[:, 2:4], "raw": x[:, :2]}
    fig = plotting.embedding_scatter(maps, groups, texts, title="t")
    assert len(fig.data) == 2 * 3
    assert [t.visible for t in fig.data] == [True] * 3 + [False] * 3
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["PCA", "raw"]
    for m, b in enumerate(buttons):
        visible = b.args[0]["visible"]
        shown = [fig.data[k] for k, v in enumerate(visible) if v]
        assert len(shown) == 3 and all(t.name in "abc" for t in shown)
        # the shown traces hold exactly map m's coordinates
        xs = np.concatenate([t.x for t in shown])
        np.testing.assert_allclose(np.sort(xs), np.sort(list(maps.values())[m][:, 0]))
    # hover text follows the points
    assert list(fig.data[1].text) == texts[6:12]


_BAD_MAPS = [  # (maps, groups, texts), the error class, what the message says
    ({"a": np.zeros((3, 3))}, ["x"] * 3, ["t"] * 3, InvalidValueError,
     r"map 'a' must be \(N, 2\) = \(3, 2\), got \(3, 3\)"),
    ({"a": np.zeros((2, 2))}, ["x"] * 3, ["t"] * 3, InvalidValueError, r"must be \(N, 2\) = \(3, 2\), got \(2, 2\)"),
    ({"a": np.zeros((3, 2))}, ["x"] * 3, ["t"] * 2, InvalidValueError,
     r"groups \(3\) and texts \(2\) must have one entry"),
    ({}, ["x"] * 3, ["t"] * 3, InvalidValueError, "needs at least one map"),
    ({"a": np.array([[0.0, 1.0], [np.nan, 0.0]])}, ["x"] * 2, ["t"] * 2, InvalidValueError, "non-finite"),
    ([np.zeros((3, 2))], ["x"] * 3, ["t"] * 3, InvalidTypeError, "maps must be a mapping"),
    ({"a": np.zeros((3, 2))}, "xyz", ["t"] * 3, InvalidTypeError, "groups must be a sequence"),
    ({"a": np.zeros((3, 2))}, ["x"] * 3, 3, InvalidTypeError, "texts must be a sequence"),
]


@pytest.mark.parametrize("plot", ["embedding_scatter", "embedding_side_by_side"])
@pytest.mark.parametrize("maps, groups, texts, error, message", _BAD_MAPS)
def test_embedding_maps_refuse_bad_input_alike(plot, maps, groups, texts, error, message):
    """Both map plots check their input with one check: same error class, same message, named by the plot."""
    with pytest.raises(error, match=f"^{plot}: .*{message}") as caught:
        getattr(plotting, plot)(maps, groups, texts)
    assert isinstance(caught.value, GptlearnError)


def test_embedding_scatter_with_one_map_has_no_buttons():
    fig = plotting.embedding_scatter({"only": np.zeros((2, 2))}, ["x", "y"], ["t", "u"])
    assert not fig.layout.updatemenus


def test_embedding_side_by_side_puts_each_map_in_its_own_panel(blobs):
    x, groups = blobs
    texts = [f"s{i}" for i in range(len(groups))]
    maps = {"left (80%)": x[:, 2:4], "right": x[:, :2]}
    fig = plotting.embedding_side_by_side(maps, groups, texts, title="t")
    assert len(fig.data) == 2 * 3 and all(t.visible is not False for t in fig.data)
    assert [t.xaxis for t in fig.data] == ["x"] * 3 + ["x2"] * 3  # map m in panel m
    assert [t.showlegend for t in fig.data] == [True] * 3 + [False] * 3  # one legend entry per topic
    assert {t.legendgroup for t in fig.data[:3]} == {t.legendgroup for t in fig.data[3:]} == {"a", "b", "c"}
    for m, coords in enumerate(maps.values()):
        xs = np.concatenate([t.x for t in fig.data[3 * m:3 * m + 3]])
        np.testing.assert_allclose(np.sort(xs), np.sort(coords[:, 0]))
    assert [a.text for a in fig.layout.annotations] == list(maps)


def test_live_loss_curve_updates_one_display_in_place(monkeypatch):
    """LiveLossCurve must send ONE display and then updates with the same display_id (a plotly
    Figure passed to display() would drop the id and append a new figure each time)."""
    import IPython
    import IPython.display
    import plotly.io as pio

    calls = []

    class Handle:
        def update(self, obj, **kw):
            calls.append(("update", obj, kw))

    def fake_display(obj, **kw):
        calls.append(("display", obj, kw))
        return Handle()

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(pio.renderers, "default", plotting.setup_book(book_build=True, seed=None))
    live = plotting.LiveLossCurve()
    for n in (2, 4, 6):
        live.update({"step": list(range(1, n + 1)), "train_loss": [5.0 - 0.1 * i for i in range(n)]})
    assert [c[0] for c in calls] == ["display", "update", "update"]
    assert calls[0][2] == {"raw": True, "display_id": True}
    for _, obj, kw in calls:
        assert kw.get("raw") is True and set(obj) == {"text/html"}  # the book renderer: HTML only
    assert list(live.figure.data[0].x) == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_embedding_scatter_buttons_work_in_a_browser(tmp_path, browser, blobs):
    """Click each button in headless Chromium (no kernel) and check which traces plotly shows."""
    x, groups = blobs
    maps = {"first": x[:, 4:6], "second": x[:, :2], "third": x[:, 2:4]}
    fig = plotting.embedding_scatter(maps, groups, [f"s{i}" for i in range(len(groups))])
    page_file = tmp_path / "scatter.html"
    fig.write_html(page_file, include_plotlyjs=True, div_id="fig")
    page = browser.new_page()
    try:
        page.goto(page_file.as_uri())
        page.wait_for_selector(".plotly-graph-div .main-svg")
        for m, name in enumerate(maps):
            page.locator(".updatemenu-button", has_text=name).click()
            page.wait_for_timeout(300)
            visible = page.evaluate("() => document.getElementById('fig').data.map(t => t.visible !== false)")
            assert visible == [k // 3 == m for k in range(9)], name
            title = page.evaluate("() => document.getElementById('fig').layout.title.text")
            assert title.endswith(name)
    finally:
        page.close()
