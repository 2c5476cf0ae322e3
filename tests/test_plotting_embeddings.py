"""2-D maps of embeddings (chapters 9-10): shapes, determinism, and the buttons' visibility masks."""
from __future__ import annotations

import numpy as np
import pytest

from gptlearn import plotting


def _blobs(n_per=6, C=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, C)) * 5
    x = np.concatenate([c + rng.normal(size=(n_per, C)) for c in centers])  # (3 n_per, C)
    groups = [g for g in "abc" for _ in range(n_per)]
    return x, groups


def test_pca_2d_matches_the_top_two_principal_directions():
    x, _ = _blobs()
    out = plotting.pca_2d(x)
    assert out.shape == (18, 2) and np.isfinite(out).all()
    xc = x - x.mean(0)
    var = xc.var(0).sum()
    # the first two components keep the variance the top two singular values say they do (tol 1e-8)
    s = np.linalg.svd(xc, compute_uv=False)
    np.testing.assert_allclose(out.var(0) * len(x), s[:2] ** 2, rtol=1e-8)
    assert out.var(0).sum() <= var + 1e-9
    np.testing.assert_array_equal(out, plotting.pca_2d(x))  # deterministic, signs fixed
    np.testing.assert_allclose(plotting.pca_2d(-x), out, atol=1e-9)  # flipping the data does not flip the map


def test_pca_2d_rejects_a_single_row():
    with pytest.raises(ValueError, match="at least two rows"):
        plotting.pca_2d(np.ones((1, 4)))


@pytest.mark.slow
def test_umap_2d_is_repeatable_and_handles_tiny_inputs():
    pytest.importorskip("umap")
    x, _ = _blobs(n_per=4)
    a, b = plotting.umap_2d(x, seed=3), plotting.umap_2d(x, seed=3)
    assert a.shape == (12, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)
    assert plotting.umap_2d(x[:4]).shape == (4, 2)  # n=4: n_neighbors capped, random init


def test_embedding_scatter_buttons_switch_whole_maps():
    x, groups = _blobs()
    texts = [f"s{i}" for i in range(len(groups))]
    maps = {"PCA": plotting.pca_2d(x), "raw": x[:, :2]}
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


def test_embedding_scatter_checks_shapes():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.embedding_scatter({"a": np.zeros((3, 3))}, ["x"] * 3, ["t"] * 3)
    with pytest.raises(ValueError, match="one entry per point"):
        plotting.embedding_scatter({"a": np.zeros((3, 2))}, ["x"] * 3, ["t"] * 2)
    fig = plotting.embedding_scatter({"only": np.zeros((2, 2))}, ["x", "y"], ["t", "u"])
    assert not fig.layout.updatemenus


def test_embedding_side_by_side_puts_each_map_in_its_own_panel():
    x, groups = _blobs()
    texts = [f"s{i}" for i in range(len(groups))]
    maps = {"left (80%)": plotting.pca_2d(x), "right": x[:, :2]}
    fig = plotting.embedding_side_by_side(maps, groups, texts, title="t")
    assert len(fig.data) == 2 * 3 and all(t.visible is not False for t in fig.data)
    assert [t.xaxis for t in fig.data] == ["x"] * 3 + ["x2"] * 3  # map m in panel m
    assert [t.showlegend for t in fig.data] == [True] * 3 + [False] * 3  # one legend entry per topic
    assert {t.legendgroup for t in fig.data[:3]} == {t.legendgroup for t in fig.data[3:]} == {"a", "b", "c"}
    for m, coords in enumerate(maps.values()):
        xs = np.concatenate([t.x for t in fig.data[3 * m:3 * m + 3]])
        np.testing.assert_allclose(np.sort(xs), np.sort(coords[:, 0]))
    assert [a.text for a in fig.layout.annotations] == list(maps)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plotting.embedding_side_by_side({"a": np.zeros((3, 3))}, ["x"] * 3, ["t"] * 3)


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
def test_embedding_scatter_buttons_work_in_a_browser(tmp_path, browser):
    """Click each button in headless Chromium (no kernel) and check which traces plotly shows."""
    x, groups = _blobs()
    maps = {"first": plotting.pca_2d(x), "second": x[:, :2], "third": x[:, 2:4]}
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
