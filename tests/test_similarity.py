"""gptlearn.similarity against scipy, plain numpy, and sentence-transformers' util (tolerance 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from gptlearn import similarity as sim

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 16)).astype(np.float32)
    b = rng.normal(size=(3, 16)).astype(np.float32) * 5  # different lengths: cosine ignores them
    return a, b


def _reference(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return {"cosine": 1 - cdist(a64, b64, "cosine"), "euclidean": cdist(a64, b64, "euclidean"),
            "manhattan": cdist(a64, b64, "cityblock"), "dot": a64 @ b64.T}


@pytest.mark.parametrize("name", list(sim.METRICS))
def test_all_pairs_match_scipy_for_numpy_and_torch(vectors, name):
    a, b = vectors
    fn, guide = sim.METRICS[name]
    want = _reference(a, b)[name]  # (N, M)
    got = fn(a, b)
    assert isinstance(got, np.ndarray) and got.shape == (4, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, **TOL)
    got_t = fn(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(got_t, torch.Tensor) and got_t.shape == (4, 3)
    np.testing.assert_allclose(got_t.numpy(), want, **TOL)
    assert isinstance(guide, str) and guide


@pytest.mark.parametrize("name", list(sim.METRICS))
def test_one_dimensional_pair_gives_a_number(vectors, name):
    a, b = vectors
    fn = sim.METRICS[name][0]
    want = _reference(a[:1], b[:1])[name][0, 0]
    got = fn(a[0], b[0])
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    got_t = fn(torch.from_numpy(a[0]), torch.from_numpy(b[0]))
    assert isinstance(got_t, torch.Tensor) and got_t.dim() == 0
    assert float(got_t) == pytest.approx(want, rel=1e-5, abs=1e-5)
    # a 1-D vector against a matrix is one row: (1, M)
    assert fn(a[0], b).shape == (1, 3)


@pytest.mark.parametrize("name", list(sim.METRICS))
def test_pairwise_is_the_diagonal(vectors, name):
    a, _ = vectors
    b = a[::-1] * 2.0  # a non-contiguous view works too
    full = sim.METRICS[name][0](a, b)
    got = sim.pairwise(a, b, name)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, np.diagonal(full), **TOL)
    got_t = sim.pairwise(torch.from_numpy(a), torch.from_numpy(b.copy()), name)
    np.testing.assert_allclose(got_t.numpy(), np.diagonal(full), **TOL)
    assert sim.pairwise(a[0], b[0], name) == pytest.approx(float(full[0, 0]), rel=1e-5, abs=1e-5)


def test_known_values_and_reading_guides():
    x, y = np.array([3.0, 4.0]), np.array([4.0, -3.0])
    assert sim.cosine(x, x) == pytest.approx(1.0)
    assert sim.cosine(x, y) == pytest.approx(0.0)
    assert sim.cosine(x, -x) == pytest.approx(-1.0)
    assert sim.euclidean(x, y) == pytest.approx(np.sqrt(1 + 49))
    assert sim.manhattan(x, y) == pytest.approx(1 + 7)
    assert sim.dot(x, x) == pytest.approx(25.0)
    assert sim.euclidean(x, x) == 0.0  # exact, not sqrt(rounding error)
    assert sim.cosine(np.zeros(2), x) == 0.0  # a zero vector is unrelated to everything, not NaN
    assert sim.METRICS["cosine"][1] == "1 = same direction, 0 = unrelated, -1 = opposite"
    assert "smaller is more similar" in sim.METRICS["euclidean"][1]
    assert "smaller is more similar" in sim.METRICS["manhattan"][1]
    assert "larger is more similar" in sim.METRICS["dot"][1]


def test_integer_lists_and_mixed_inputs():
    assert sim.dot([1, 2], [3, 4]) == 11.0
    t = sim.cosine(torch.tensor([[1.0, 0.0]]), np.array([[0.0, 1.0]]))  # torch wins
    assert isinstance(t, torch.Tensor) and t.shape == (1, 1)


def test_bad_inputs_say_what_to_do():
    with pytest.raises(ValueError, match="different widths"):
        sim.cosine(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="equal shapes"):
        sim.pairwise(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="unknown metric"):
        sim.pairwise(np.ones(3), np.ones(3), "cosin")
    with pytest.raises(ValueError, match="1-D"):
        sim.dot(np.ones((1, 2, 3)), np.ones(3))


@pytest.mark.slow  # importing sentence_transformers takes several seconds
def test_parity_with_sentence_transformers_util(vectors):
    util = pytest.importorskip("sentence_transformers.util")
    a, b = (torch.from_numpy(v) for v in vectors)
    torch.testing.assert_close(sim.cosine(a, b), util.cos_sim(a, b), **TOL)
    torch.testing.assert_close(sim.dot(a, b), util.dot_score(a, b), **TOL)
    torch.testing.assert_close(sim.euclidean(a, b), -util.euclidean_sim(a, b), **TOL)  # ST negates distances
    torch.testing.assert_close(sim.manhattan(a, b), -util.manhattan_sim(a, b), **TOL)
    c = b[:1].expand(4, -1) + a  # (4, C) rows aligned with a
    torch.testing.assert_close(sim.pairwise(a, c, "cosine"), util.pairwise_cos_sim(a, c), **TOL)
    torch.testing.assert_close(sim.pairwise(a, c, "dot"), util.pairwise_dot_score(a, c), **TOL)
    torch.testing.assert_close(sim.pairwise(a, c, "euclidean"), -util.pairwise_euclidean_sim(a, c), **TOL)
    torch.testing.assert_close(sim.pairwise(a, c, "manhattan"), -util.pairwise_manhattan_sim(a, c), **TOL)
    # numpy in, same numbers (ST turns numpy into tensors)
    np.testing.assert_allclose(sim.cosine(*vectors), util.cos_sim(*vectors).numpy(), **TOL)
    # 1-D: ST gives a (1, 1) matrix, we give the number inside it
    assert sim.cosine(a[0], b[0]).item() == pytest.approx(util.cos_sim(a[0], b[0]).item(), abs=1e-6)
