"""How alike are two embeddings? Four measures and how to read them (book chapter 8).

Legend: N, M numbers of vectors, C embedding width.

Every measure takes ``(a, b)``:

- two 1-D vectors (C,) -> one number (a float for numpy, a 0-d tensor for torch);
- (N, C) and (M, C) -> the (N, M) matrix of every row of ``a`` against every row of ``b``
  (a 1-D input counts as one row, as in sentence-transformers' ``cos_sim``).

:func:`pairwise` compares row ``i`` of ``a`` with row ``i`` of ``b`` only -> (N,).
numpy in gives numpy out; a torch tensor in gives a torch tensor out. The numbers equal
sentence-transformers' ``cos_sim``/``pairwise_cos_sim``/``dot_score`` and scipy's ``cdist``.
:func:`euclidean` and :func:`manhattan` are distances (smaller is more similar), as ``gptlearn similarity``
prints them; sentence-transformers' ``euclidean_sim``/``manhattan_sim`` and ``Embedder.similarity`` give
their negatives (larger is more similar), see :data:`SIMILARITY_FNS`.

>>> import numpy as np
>>> cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0]))     # doctest: +ELLIPSIS
0.7071...
>>> METRICS["cosine"][1]
'1 = same direction, 0 = unrelated, -1 = opposite'
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F

from .checks import describe
from .errors import InvalidTypeError, InvalidValueError

__all__ = ["cosine", "euclidean", "manhattan", "dot", "pairwise", "METRICS", "SIMILARITY_FNS"]

Array = Union[np.ndarray, torch.Tensor]
_EPS = 1e-12  # zero vectors get cosine 0 instead of 0/0 (as torch.nn.functional.normalize does)


def _as_tensor(x, name: str) -> torch.Tensor:
    """An embedding argument as a tensor: a tensor, an array or a (nested) list of real numbers."""
    if not isinstance(x, (torch.Tensor, np.ndarray, list, tuple)):
        raise InvalidTypeError(f"{name} must be embeddings (a tensor, an array or a list of numbers), got "
                               f"{describe(x)}")
    if not isinstance(x, torch.Tensor):
        try:
            arr = np.ascontiguousarray(x)
        except ValueError:  # ragged lists
            raise InvalidValueError(f"{name} must be embeddings of one width, got rows of different lengths") from None
        if arr.dtype.kind not in "iuf":
            raise InvalidTypeError(f"{name} must hold real numbers, got an array of {arr.dtype}")
        x = torch.as_tensor(arr)
    elif x.dtype == torch.bool or x.dtype.is_complex:
        raise InvalidTypeError(f"{name} must hold real numbers, got a {x.dtype} tensor")
    return x


def _as_torch(a, b) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both inputs as float tensors on one device, and whether to hand back numpy."""
    to_numpy = not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor)
    like = a if isinstance(a, torch.Tensor) else b if isinstance(b, torch.Tensor) else None
    ta, tb = (_as_tensor(x, name) for x, name in ((a, "a"), (b, "b")))
    if like is not None:
        ta, tb = ta.to(like.device), tb.to(like.device)
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64 if to_numpy else torch.get_default_dtype()
    ta, tb = ta.to(dtype), tb.to(dtype)
    for x in (ta, tb):
        if x.dim() not in (1, 2):
            raise InvalidValueError(f"expected 1-D (C,) or 2-D (N, C) embeddings, got shape {tuple(x.shape)}")
    if ta.size(-1) != tb.size(-1):
        raise InvalidValueError(f"embeddings have different widths ({ta.size(-1)} and {tb.size(-1)}); "
                         "compare vectors from the same model")
    return ta, tb, to_numpy


def _out(t: torch.Tensor, to_numpy: bool):
    if not to_numpy:
        return t
    return t.item() if t.dim() == 0 else t.cpu().numpy()


def _all_pairs(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """Wrap ``fn((N, C), (M, C)) -> (N, M)`` with the 1-D, numpy and torch handling above."""

    def measure(a: Array, b: Array):
        ta, tb, to_numpy = _as_torch(a, b)
        scalar = ta.dim() == 1 and tb.dim() == 1
        out = fn(ta.reshape(-1, ta.size(-1)), tb.reshape(-1, tb.size(-1)))  # (N, C), (M, C) -> (N, M)
        return _out(out[0, 0] if scalar else out, to_numpy)

    measure.__name__, measure.__qualname__, measure.__doc__ = fn.__name__, fn.__name__, fn.__doc__
    return measure


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Each row scaled to length 1 (zero rows stay zero). Rows are first divided by their largest |entry|,
    so the squares inside the norm neither overflow (1e30² in float32) nor vanish (1e-30²)."""
    top = x.abs().amax(dim=-1, keepdim=True)  # (N, 1)
    return F.normalize(x / torch.where(top > 0, top, 1.0), dim=-1, eps=_EPS)


def _length(x: torch.Tensor) -> torch.Tensor:
    """Each row's length |x|, (N, C) -> (N,), computed on the row's own scale as in :func:`_unit`."""
    top = x.abs().amax(dim=-1, keepdim=True)  # (N, 1)
    top = torch.where(top > 0, top, 1.0)
    return (x / top).norm(dim=-1) * top.squeeze(-1)


@_all_pairs
def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity a·b / (|a| |b|): 1 = same direction, 0 = unrelated, -1 = opposite."""
    return _unit(a) @ _unit(b).T  # (N, C) @ (C, M) -> (N, M)


@_all_pairs
def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean (L2) distance |a - b|: 0 = identical; smaller is more similar."""
    # the exact (a - b) form, not |a|² + |b|² - 2a·b, which rounds identical vectors to ~1e-4; computed
    # on a common scale s (the largest |entry|) so the squares stay in range: |a - b| = s |a/s - b/s|
    s = torch.maximum(a.abs().max(), b.abs().max()) if a.numel() and b.numel() else a.new_tensor(1.0)
    s = torch.where(s > 0, s, 1.0)
    return torch.cdist(a / s, b / s, p=2.0, compute_mode="donot_use_mm_for_euclid_dist") * s  # (N, M)


@_all_pairs
def manhattan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Manhattan (L1) distance sum |a_i - b_i|: 0 = identical; smaller is more similar."""
    return torch.cdist(a, b, p=1.0)  # (N, M)


@_all_pairs
def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product a·b: larger is more similar; grows with the vectors' lengths."""
    return a @ b.T  # (N, C) @ (C, M) -> (N, M)


_PAIRWISE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": lambda a, b: (_unit(a) * _unit(b)).sum(-1),
    "euclidean": lambda a, b: _length(a - b),
    "manhattan": lambda a, b: (a - b).abs().sum(-1),
    "dot": lambda a, b: (a * b).sum(-1),
}

SIMILARITY_FNS: dict[str, Callable] = {
    "cosine": cosine,
    "dot": dot,
    "euclidean": lambda a, b: -euclidean(a, b),  # sentence-transformers' euclidean_sim: larger = more similar
    "manhattan": lambda a, b: -manhattan(a, b),  # manhattan_sim
}
"""sentence-transformers' ``similarity_fn_name`` -> its all-pairs similarity: the same numbers as ``cos_sim``,
``dot_score``, ``euclidean_sim`` and ``manhattan_sim``. The last two are *negative* distances (larger is
more similar), unlike :func:`euclidean` and :func:`manhattan` here, which are distances."""

METRICS: dict[str, tuple[Callable, str]] = {
    "cosine": (cosine, "1 = same direction, 0 = unrelated, -1 = opposite"),
    "euclidean": (euclidean, "0 = identical; smaller is more similar; depends on vector length"),
    "manhattan": (manhattan, "0 = identical; smaller is more similar; depends on vector length"),
    "dot": (dot, "larger is more similar; grows with vector length"),
}
"""name -> (all-pairs function, how to read its numbers)."""


def pairwise(a: Array, b: Array, metric: str = "cosine"):
    """Row ``i`` of ``a`` against row ``i`` of ``b``: (N, C), (N, C) -> (N,); two (C,) -> a number.

    ``metric`` is one of ``METRICS``: "cosine", "euclidean", "manhattan" or "dot".
    """
    if not isinstance(metric, str) or metric not in _PAIRWISE:
        raise InvalidValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    ta, tb, to_numpy = _as_torch(a, b)
    if ta.shape != tb.shape:
        raise InvalidValueError(f"pairwise needs equal shapes, got {tuple(ta.shape)} and {tuple(tb.shape)}; "
                         "use the all-pairs functions (cosine, ...) for every row against every row")
    return _out(_PAIRWISE[metric](ta, tb), to_numpy)  # (N, C) -> (N,)
