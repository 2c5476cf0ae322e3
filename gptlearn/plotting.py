"""Figures for the book: token spans, attention heatmaps, head grids, loss curves, maps of embeddings.

Every helper RETURNS a figure (a plotly ``go.Figure``, a matplotlib ``Figure`` or a small HTML object)
and never shows or saves it. ``import gptlearn`` never imports this module; plotly and matplotlib are
imported inside the functions (``pip install gptlearn[plot]``).

Legend for shape comments: L layers, H heads, T tokens.

Figures for a static web page: every (layer, head) lives in ONE plotly figure and a dropdown / slider
switches between them in the browser, with no Python kernel (chapter 4, "Many heads"). Attention
weights are stored as whole percents in ``uint8`` (``zmin=0``, ``zmax=100``): 4x smaller than float32,
which keeps a page with 144 heads under a megabyte.
"""
from __future__ import annotations

import html as _html
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .book import BOOK_RENDERER, setup_book
from .errors import InvalidTypeError, InvalidValueError

if TYPE_CHECKING:
    from .tokenizers import TokenizerLike

__all__ = [
    # a chapter's set-up (defined in gptlearn.book; chapters call gptlearn.plotting.setup_book())
    "setup_book", "BOOK_RENDERER",
    # tokens
    "TokenSpans", "token_spans", "display_token",
    # matrices and attention patterns
    "heatmap", "attention_heatmap", "attention_heads_figure", "head_grid",
    # training curves
    "loss_curve", "LiveLossCurve",
    # maps of sentence embeddings
    "embedding_scatter", "embedding_side_by_side",
]

_PALETTE = ["#fde68a", "#bfdbfe", "#fecaca", "#bbf7d0", "#ddd6fe", "#fed7aa", "#a5f3fc", "#fbcfe8"]
_ATTN_COLORSCALE = "Blues"


# ----------------------------------------------------------------------------------------------
# Tokens


def display_token(s: str) -> str:
    """A token made visible: spaces as ``␣``, newlines as ``↵``, tabs as ``⇥``."""
    return s.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def _token_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels ``"3 ␣car"``: plotly merges repeated category names, so add the position."""
    return [f"{i} {display_token(t)}" for i, t in enumerate(tokens)]


class TokenSpans:
    """Coloured token spans; shown as HTML in notebooks and the book (chapter 1).

    ``.tokens`` are the token strings, ``.ids`` their ids, ``.html`` the markup.
    """

    def __init__(self, tokens: Sequence[str], ids: Sequence[int]) -> None:
        self.tokens, self.ids = list(tokens), list(ids)
        spans = []
        for i, (tok, tid) in enumerate(zip(self.tokens, self.ids)):
            text = _html.escape(tok.replace("\n", "↵\n"))
            spans.append(
                f'<span title="id {tid}" style="background:{_PALETTE[i % len(_PALETTE)]};'
                f'border-radius:3px;padding:1px 0;margin:0 1px;color:#111">{text}</span>'
            )
        self.html = (
            '<div class="gptlearn-token-spans" style="font-family:monospace;white-space:pre-wrap;'
            f'line-height:1.9">{"".join(spans)}</div>'
            f'<div style="font-size:85%;color:#555">{len(self.ids)} tokens</div>'
        )

    def __len__(self) -> int:
        return len(self.ids)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return " | ".join(display_token(t) for t in self.tokens)


def token_spans(tokenizer: TokenizerLike, text: str, *, allowed_special: Any = ()) -> TokenSpans:
    """Split ``text`` with ``tokenizer`` and colour each token (hover a token for its id).

    A token holding only part of a character's UTF-8 bytes (common in Japanese or emoji) is shown as
    its bytes in hex, e.g. ``⟨e5 90⟩``, instead of the replacement character ``�``.
    """
    try:
        ids = tokenizer.encode(text, allowed_special=allowed_special)
    except TypeError:  # a tokenizer without special tokens
        ids = tokenizer.encode(text)
    return TokenSpans([_readable_token(tokenizer, i, s) for i, s in zip(ids, tokenizer.str_tokens(ids))], ids)


def _readable_token(tokenizer: TokenizerLike, i: int, s: str) -> str:
    """A token that is only part of a character's UTF-8 bytes is shown as its bytes, e.g. ``⟨e5 90⟩``."""
    if "\ufffd" not in s or not hasattr(tokenizer, "decode_bytes"):
        return s
    raw = tokenizer.decode_bytes([i])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "⟨" + " ".join(f"{b:02x}" for b in raw) + "⟩"


# ----------------------------------------------------------------------------------------------
# Heatmaps


def _np(x: Any) -> np.ndarray:
    """A tensor or array as a float64 numpy array on the CPU."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _percent_u8(pattern: np.ndarray) -> np.ndarray:
    """Attention weights in [0, 1] -> whole percents 0..100 as uint8."""
    return np.clip(np.rint(pattern * 100.0), 0, 100).astype(np.uint8)


def heatmap(matrix: Any, x_labels: Sequence[str] | None = None, y_labels: Sequence[str] | None = None, *,
            title: str | None = None, zmid: float | None = None, colorscale: str | None = None,
            hover: str = "%{y} · %{x}: %{z:.3f}", height: int | None = None):
    """A plain plotly heatmap of a 2-D matrix (row 0 at the top)."""
    import plotly.graph_objects as go

    z = _np(matrix)
    if z.ndim != 2:
        raise InvalidValueError(f"heatmap needs a 2-D matrix, got shape {tuple(z.shape)}")
    fig = go.Figure(go.Heatmap(
        z=z.astype(np.float32), x=list(x_labels) if x_labels is not None else None,
        y=list(y_labels) if y_labels is not None else None, zmid=zmid,
        colorscale=colorscale or ("RdBu_r" if zmid is not None else "Viridis"),
        hovertemplate=hover + "<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, height=height or 450, margin=dict(l=60, r=20, t=50, b=50))
    return fig


def attention_heatmap(pattern: Any, tokens: Sequence[str], *, title: str | None = None, height: int | None = None):
    """One head's attention pattern (T, T) as a plotly heatmap: row = query, column = key (chapter 3).

    Hover reads ``query → key: weight``.
    """
    import plotly.graph_objects as go

    p = _np(pattern)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] != len(tokens):
        raise InvalidValueError(f"pattern must be (T, T) with T = len(tokens) = {len(tokens)}, got {tuple(p.shape)}")
    labels = _token_labels(tokens)
    fig = go.Figure(go.Heatmap(
        z=p.astype(np.float32), x=labels, y=labels, zmin=0.0, zmax=1.0, colorscale=_ATTN_COLORSCALE,
        hovertemplate="%{y} → %{x}: %{z:.3f}<extra></extra>", colorbar=dict(title="weight"),
    ))
    fig.update_yaxes(autorange="reversed", title="query (attends from)")
    fig.update_xaxes(title="key (attends to)", tickangle=-45)
    side = max(360, 22 * len(tokens) + 160)
    fig.update_layout(title=title, height=height or side, margin=dict(l=60, r=20, t=50, b=60))
    return fig


def _grid_shape(n: int) -> tuple[int, int]:
    cols = int(np.ceil(np.sqrt(n)))
    if n > 6 and cols < 4:
        cols = 4
    return int(np.ceil(n / cols)), cols


def attention_heads_figure(patterns: Any, tokens: Sequence[str], *, mode: str = "grid", layer: int = 0,
                           head: int = 0, title: str = "Attention patterns", height: int | None = None):
    """Every layer x head in ONE interactive plotly figure (chapter 4).

    ``patterns`` is (L, H, T, T) (e.g. ``cache.stack("pattern")[:, 0]``). A dropdown picks the layer;
    ``mode="grid"`` shows that layer's H heads side by side, ``mode="slider"`` shows one head at a time
    with a slider over the heads. Trace ``l * H + h`` is layer l, head h. Hover reads
    ``query → key: weight%``. Weights are stored as uint8 percents (``zmin=0, zmax=100``).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    p = _np(patterns)
    if p.ndim == 3:
        p = p[None]  # (H, T, T) -> (1, H, T, T)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2] or p.shape[-1] != len(tokens):
        raise InvalidValueError(
            f"patterns must be (L, H, T, T) with T = len(tokens) = {len(tokens)}, got {tuple(p.shape)}")
    if mode not in ("grid", "slider"):
        raise InvalidValueError(f"mode must be 'grid' or 'slider', got {mode!r}")
    L, H, T, _ = p.shape
    if not (0 <= layer < L and 0 <= head < H):
        raise InvalidValueError(f"layer={layer}, head={head} is outside the model's {L} layers x {H} heads")
    z = _percent_u8(p)  # (L, H, T, T) uint8
    labels = _token_labels(tokens)
    hover = "%{y} → %{x}: %{z}%<extra>layer {l} head {h}</extra>"
    show_ticks = T <= 40

    if mode == "grid":
        rows, cols = _grid_shape(H)
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in range(H)],
                            horizontal_spacing=0.02, vertical_spacing=0.06 if rows > 1 else 0.0)
    else:
        rows, cols = 1, 1
        fig = go.Figure()

    for l in range(L):
        for h in range(H):
            trace = go.Heatmap(
                z=z[l, h], x=labels, y=labels, coloraxis="coloraxis",
                hovertemplate=hover.replace("{l}", str(l)).replace("{h}", str(h)),
                visible=(l == layer and (mode == "grid" or h == head)),
                name=f"layer {l} head {h}",
            )
            if mode == "grid":
                fig.add_trace(trace, row=h // cols + 1, col=h % cols + 1)
            else:
                fig.add_trace(trace)

    def mask(l: int, h: int | None) -> list[bool]:
        """Visibility of every trace: layer l's heads (all of them, or only head h)."""
        return [ll == l and (h is None or hh == h) for ll in range(L) for hh in range(H)]

    def head_slider(l: int, active: int = 0) -> dict:
        return dict(
            active=active, currentvalue=dict(prefix=f"layer {l}, head: "), pad=dict(t=40),
            steps=[dict(label=str(h), method="update",
                        args=[{"visible": mask(l, h)}, {"title.text": f"{title}: layer {l}, head {h}"}])
                   for h in range(H)],
        )

    if mode == "grid":
        buttons = [dict(label=f"layer {l}", method="update",
                        args=[{"visible": mask(l, None)}, {"title.text": f"{title}: layer {l}"}]) for l in range(L)]
        sliders: list[dict] = []
        fig_title = f"{title}: layer {layer}"
        side = 170 if H > 4 else 240
        fig_height = height or rows * side + 140
    else:
        buttons = [dict(label=f"layer {l}", method="update",
                        args=[{"visible": mask(l, 0)},
                              {"title.text": f"{title}: layer {l}, head 0", "sliders": [head_slider(l)]}])
                   for l in range(L)]
        sliders = [head_slider(layer, head)]
        fig_title = f"{title}: layer {layer}, head {head}"
        fig_height = height or max(420, 20 * T + 260)

    fig.update_layout(
        title=dict(text=fig_title, y=0.98), height=fig_height, margin=dict(l=40, r=20, t=90, b=40),
        coloraxis=dict(colorscale=_ATTN_COLORSCALE, cmin=0, cmax=100, colorbar=dict(title="%", thickness=12)),
        updatemenus=[dict(buttons=buttons, active=layer, direction="down", x=1.0, xanchor="right",
                          y=1.0, yanchor="bottom", pad=dict(b=25), showactive=True)],
        sliders=sliders,
    )
    fig.update_yaxes(autorange="reversed", showticklabels=show_ticks, tickfont=dict(size=9))
    fig.update_xaxes(showticklabels=show_ticks and mode == "slider", tickangle=-45, tickfont=dict(size=9))
    if mode == "grid":
        for i in range(2, rows * cols + 1):  # token labels only on the first column
            if (i - 1) % cols:
                fig.layout[f"yaxis{i}"].showticklabels = False
    return fig


def head_grid(patterns: Any, tokens: Sequence[str] | None = None, *, cmap: str = "Blues",
              row_label: str = "layer", col_label: str = "head", size: float = 1.6):
    """d2l-style grid of attention heatmaps as a static matplotlib figure (for print and overviews).

    ``patterns`` is (H, T, T) (one row) or (L, H, T, T) (a row per layer). Returns the Figure.
    """
    import matplotlib.pyplot as plt

    p = _np(patterns)
    if p.ndim == 3:
        p = p[None]  # (H, T, T) -> (1, H, T, T)
    if p.ndim != 4:
        raise InvalidValueError(f"patterns must be (H, T, T) or (L, H, T, T), got shape {tuple(p.shape)}")
    rows, cols, T, _ = p.shape
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.8, size * rows + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            im = ax.imshow(p[r, c], cmap=cmap, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{col_label} {c}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{row_label} {r}", fontsize=8)
    if tokens is not None and rows * cols == 1:
        axes[0, 0].set_xticks(range(T), [display_token(t) for t in tokens], rotation=90, fontsize=7)
        axes[0, 0].set_yticks(range(T), [display_token(t) for t in tokens], fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
    plt.close(fig)  # returned, not shown: the notebook displays it once, as the cell's value
    return fig


# ----------------------------------------------------------------------------------------------
# Loss curves (chapter 7)

_STEP_KEYS = ("step", "steps", "iter", "iters")
_SERIES = {  # series name -> keys that may hold it; x for val comes from val_step(s) when present
    "train": ("train_loss", "train_losses", "loss", "losses"),
    "val": ("val_loss", "val_losses", "eval_loss"),
}
_VAL_STEP_KEYS = ("val_step", "val_steps", "eval_step", "eval_steps")


def _get(history: Any, key: str) -> Any:
    if isinstance(history, Mapping):
        return history.get(key)
    return getattr(history, key, None)


def _loss_series(history: Any) -> dict[str, tuple[list[float], list[float]]]:
    """``{"train": (steps, losses), "val": (steps, losses)}`` from a TrainHistory, a dict of lists or
    a list of per-step dicts (``{"step": 10, "train_loss": 3.2, "val_loss": None}``)."""
    if history is None:
        return {}
    if isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        rows = [r if isinstance(r, Mapping) else vars(r) for r in history]
        out: dict[str, tuple[list[float], list[float]]] = {}
        for name, keys in _SERIES.items():
            xs, ys = [], []
            for i, r in enumerate(rows):
                step = next((r[k] for k in _STEP_KEYS if r.get(k) is not None), i)
                val = next((r[k] for k in keys if r.get(k) is not None), None)
                if val is not None:
                    xs.append(float(step))
                    ys.append(float(val))
            if ys:
                out[name] = (xs, ys)
        return out
    out = {}
    steps = next((_get(history, k) for k in _STEP_KEYS if _get(history, k) is not None), None)
    for name, keys in _SERIES.items():
        ys = next((_get(history, k) for k in keys if _get(history, k) is not None), None)
        if ys is None or len(ys) == 0:
            continue
        xs = None
        if name == "val":
            xs = next((_get(history, k) for k in _VAL_STEP_KEYS if _get(history, k) is not None), None)
        if xs is None:
            xs = steps if steps is not None and len(steps) == len(ys) else range(len(ys))
        pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if y is not None]  # None: no eval at that step
        if pairs:
            out[name] = ([x for x, _ in pairs], [y for _, y in pairs])
    return out


def loss_curve(history: Any = None, *, fig: Any = None, title: str = "Loss", log_y: bool = False):
    """Training (and validation) loss against the step, as a plotly figure.

    ``history`` is a ``gptlearn.train.TrainHistory`` (``val_loss`` is ``None`` at steps without an
    eval), a dict of lists (``step``, ``train_loss``, ``val_loss``, optional ``val_step``) or a list of
    per-step dicts. Pass ``fig=`` (a figure this function made) to update
    it in place, e.g. every few steps of a live run (see :class:`LiveLossCurve`).
    """
    import plotly.graph_objects as go

    series = _loss_series(history)
    if fig is None:
        fig = go.Figure()
        for name, dash in (("train", None), ("val", "dot")):
            fig.add_trace(go.Scatter(x=[], y=[], name=name, mode="lines+markers" if name == "val" else "lines",
                                     line=dict(dash=dash),
                                     hovertemplate="step %{x}: %{y:.4f}<extra>" + name + "</extra>"))
        fig.update_layout(title=title, xaxis_title="step", yaxis_title="cross-entropy loss (nats)", height=380,
                          margin=dict(l=60, r=20, t=50, b=50), yaxis_type="log" if log_y else None)
    for trace in fig.data:
        xs, ys = series.get(trace.name, ([], []))
        trace.x, trace.y = xs, ys
    return fig


class LiveLossCurve:
    """A loss curve that redraws itself in place while a notebook cell trains (chapter 7).

    >>> live = LiveLossCurve()                      # doctest: +SKIP
    >>> for step in ...: live.update(history)       # doctest: +SKIP

    Outside a notebook :meth:`update` only updates ``live.figure``. In the built book the final state
    is what the page shows.
    """

    def __init__(self, title: str = "Loss", log_y: bool = False) -> None:
        self.figure = loss_curve(None, title=title, log_y=log_y)
        self._handle = None

    def update(self, history: Any) -> Any:
        loss_curve(history, fig=self.figure)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # plain Python
            return self.figure
        if get_ipython() is None:
            return self.figure
        # A plotly Figure displays itself through _ipython_display_, which drops display_id (every
        # update would append a new figure); a raw mime bundle keeps it, so the figure is replaced.
        bundle = self.mimebundle()
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)
        return self.figure

    def mimebundle(self) -> dict[str, Any]:
        """The figure as the current plotly renderer(s) would display it (``pio.renderers.default``)."""
        import plotly.io as pio

        fig_dict = self.figure.to_dict()
        bundle: dict[str, Any] = {}
        for name in str(pio.renderers.default or "").split("+"):
            renderer = pio.renderers[name] if name in pio.renderers else None
            if renderer is not None and hasattr(renderer, "to_mimebundle"):
                bundle.update(renderer.to_mimebundle(fig_dict))
        return bundle or {"application/vnd.plotly.v1+json": fig_dict}


# ---- 2-D maps of sentence embeddings (chapters 9 and 10; the maps come from gptlearn.analysis) --------
_TOPIC_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d"]


def _embedding_maps(caller: str, maps: Any, groups: Any, texts: Any
                    ) -> tuple[list[str], dict[str, np.ndarray], list[str], list[str], list[str]]:
    """The checked inputs of an embedding map: (map names, name -> (N, 2) coordinates, groups, texts, groups
    in order of first appearance). Both map plots use this one check, so they refuse bad input alike."""
    if not isinstance(maps, Mapping):
        raise InvalidTypeError(f"{caller}: maps must be a mapping of name -> (N, 2) coordinates, "
                               f"got {type(maps).__name__}")
    for arg, value in (("groups", groups), ("texts", texts)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise InvalidTypeError(f"{caller}: {arg} must be a sequence with one entry per point, "
                                   f"got {type(value).__name__}")
    if not maps:
        raise InvalidValueError(f"{caller}: needs at least one map")
    groups, texts = [str(g) for g in groups], [str(t) for t in texts]
    if len(groups) != len(texts):
        raise InvalidValueError(f"{caller}: groups ({len(groups)}) and texts ({len(texts)}) must have one entry "
                                "per point")
    coords = {}
    for key in maps:
        name = str(key)
        c = _np(maps[key])
        if c.shape != (len(texts), 2):
            raise InvalidValueError(f"{caller}: map {name!r} must be (N, 2) = ({len(texts)}, 2), "
                                    f"got {tuple(c.shape)}")
        if not np.isfinite(c).all():
            raise InvalidValueError(f"{caller}: map {name!r} has non-finite coordinates")
        coords[name] = c
    return list(coords), coords, groups, texts, list(dict.fromkeys(groups))


def embedding_scatter(maps: Mapping[str, Any], groups: Sequence[str], texts: Sequence[str], *,
                      title: str = "Sentence embeddings", height: int = 520):
    """Several 2-D maps of the same N points in ONE plotly figure; buttons switch maps (chapters 9-10).

    ``maps``: name -> (N, 2) coordinates (e.g. ``{"PCA": pca_2d(E), "UMAP": umap_2d(E)}``, from
    :mod:`gptlearn.analysis`);
    ``groups``: each point's topic (its colour and legend entry); ``texts``: each point's hover text.
    Trace ``m * G + g`` is map ``m``, group ``g`` (G groups, in order of first appearance); only the
    first map's traces start visible. The buttons need no kernel, so they work in the static book.
    """
    import plotly.graph_objects as go

    names, coords, groups, texts, order = _embedding_maps("embedding_scatter", maps, groups, texts)
    fig = go.Figure()
    for m, name in enumerate(names):
        for g, group in enumerate(order):
            rows = [i for i, x in enumerate(groups) if x == group]
            fig.add_trace(go.Scatter(
                x=coords[name][rows, 0], y=coords[name][rows, 1], mode="markers", name=group,
                legendgroup=group, showlegend=True, visible=(m == 0),
                marker=dict(size=10, color=_TOPIC_COLORS[g % len(_TOPIC_COLORS)], line=dict(width=0.5, color="white")),
                text=[texts[i] for i in rows], hovertemplate="%{text}<extra>" + _html.escape(group) + "</extra>",
            ))
    G = len(order)
    buttons = [dict(label=name, method="update",
                    args=[{"visible": [k // G == m for k in range(len(names) * G)]},
                          {"title.text": f"{title}: {name}"}])
               for m, name in enumerate(names)]
    fig.update_layout(
        title=dict(text=f"{title}: {names[0]}", x=0.01, xanchor="left", y=0.98, yanchor="top"), height=height,
        margin=dict(l=40, r=20, t=100, b=40),
        xaxis=dict(showticklabels=False, zeroline=False), yaxis=dict(showticklabels=False, zeroline=False),
        updatemenus=[dict(type="buttons", direction="right", x=1.0, y=1.02, xanchor="right", yanchor="bottom",
                          buttons=buttons, showactive=True)] if len(names) > 1 else [],
    )
    return fig


def embedding_side_by_side(maps: Mapping[str, Any], groups: Sequence[str], texts: Sequence[str], *,
                           title: str = "Sentence embeddings", height: int = 460):
    """Several 2-D maps of the same N points next to each other, one panel per map (chapter 9).

    Same arguments as :func:`embedding_scatter`; the panels share one legend, so clicking a topic
    hides it in every panel. Trace ``m * G + g`` is map ``m``, group ``g``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names, coords, groups, texts, order = _embedding_maps("embedding_side_by_side", maps, groups, texts)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.04)
    for m, name in enumerate(names):
        c = coords[name]
        for g, group in enumerate(order):
            rows = [i for i, x in enumerate(groups) if x == group]
            fig.add_trace(go.Scatter(
                x=c[rows, 0], y=c[rows, 1], mode="markers", name=group, legendgroup=group, showlegend=(m == 0),
                marker=dict(size=9, color=_TOPIC_COLORS[g % len(_TOPIC_COLORS)], line=dict(width=0.5, color="white")),
                text=[texts[i] for i in rows], hovertemplate="%{text}<extra>" + _html.escape(group) + "</extra>",
            ), row=1, col=m + 1)
    fig.update_xaxes(showticklabels=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, zeroline=False)
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), height=height,
                      margin=dict(l=20, r=20, t=90, b=30))
    return fig
