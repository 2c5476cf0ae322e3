"""The "neighbours" objective: its loss against a row-by-row computation, the teacher's nearest neighbours
against a full sort, their cache, and a run that trains with neighbour batches and resumes exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlearn.embed_train import neighbour_distill_loss, train_embeddings
from gptlearn.errors import GptlearnError
from gptlearn.teacher import cached_neighbours, teacher_neighbours
from test_embed_train import HashTeacher, _still_config, model_dir, small_pairs  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _by_rows(student, teacher, tau):
    """KL(teacher || student) of each row's softmax over the *other* rows, by a loop."""
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    total = 0.0
    for i in range(len(s)):
        others = [j for j in range(len(s)) if j != i]
        log_s = (s[i] @ s[others].T / tau).log_softmax(-1)
        p_t = (t[i] @ t[others].T / tau).softmax(-1)
        total += float((p_t * (p_t.log() - log_s)).sum())
    return total / len(s)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_neighbour_loss_matches_a_row_by_row_computation(tau):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(7, 8, generator=g), torch.randn(7, 5, generator=g)  # widths may differ
    got = float(neighbour_distill_loss(student, teacher, temperature=tau))
    assert got == pytest.approx(_by_rows(student, teacher, tau), rel=1e-5)
    assert got > 0.01
    assert abs(float(neighbour_distill_loss(teacher * 3.0, teacher, temperature=tau))) < 1e-5  # only directions count
    perm = torch.randperm(7, generator=g)  # the same sentences in another order: the same loss
    assert float(neighbour_distill_loss(student[perm], teacher[perm], temperature=tau)) == pytest.approx(got, rel=1e-5)


def test_teacher_neighbours_equal_a_full_sort():
    g = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(60, 6, generator=g), dim=1)
    v[59] = F.normalize(v[0] + 0.01 * torch.randn(6, generator=g), dim=0)  # a near-copy of row 0
    got = teacher_neighbours(v, 3, chunk=7)  # several chunks, the last one short
    cos = v @ v.T
    cos[cos > 0.95] = -2.0
    np.testing.assert_array_equal(got.numpy(), cos.argsort(dim=1, descending=True)[:, :3].numpy())
    assert 59 not in got[0].tolist() and 0 not in got[59].tolist()
    with pytest.raises(GptlearnError, match="k must be"):
        teacher_neighbours(v, 60)


def test_cached_neighbours_are_reused_and_a_damaged_cache_is_recomputed(tmp_path, monkeypatch):
    import gptlearn.teacher as teacher_module

    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path))
    sentences = [f"sentence {i}" for i in range(20)]
    v = F.normalize(torch.randn(20, 4, generator=torch.Generator().manual_seed(2)), dim=1)
    first = cached_neighbours(sentences, v, 2)
    (path,) = (tmp_path / "teacher").glob("neighbours-*.npy")
    calls = []
    real = teacher_module.teacher_neighbours
    monkeypatch.setattr(teacher_module, "teacher_neighbours", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert torch.equal(cached_neighbours(sentences, v, 2), first) and calls == []  # read back, not recomputed
    cached_neighbours(sentences[:-1], v[:-1], 2)  # other sentences: another file
    assert calls == [1] and len(list((tmp_path / "teacher").glob("neighbours-*.npy"))) == 2
    np.save(path, np.zeros((3, 2), dtype=np.int64))  # the wrong shape
    assert torch.equal(cached_neighbours(sentences, v, 2), first) and calls == [1, 1]
    path.write_bytes(b"not numpy")
    assert torch.equal(cached_neighbours(sentences, v, 2), first) and calls == [1, 1, 1]


class StableTeacher(HashTeacher):
    """HashTeacher with a word hash that is the same in every process (Python's ``hash`` of a str is not)."""

    def encode(self, sentences, **kwargs):
        import zlib

        out = []
        for s in sentences:
            v = sum(np.random.default_rng(zlib.crc32(w.lower().encode())).standard_normal(self.width)
                    for w in s.split())
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


@pytest.fixture
def unlabelled(small_pairs):
    return small_pairs.unique_sentences()[:96]


def _fresh(tiny_config, seed=0):
    from gptlearn import GPT, Embedder

    torch.manual_seed(seed)
    return Embedder(GPT(_still_config(tiny_config)), pooling="mean")


def test_neighbour_batches_hold_each_sentence_and_a_teacher_neighbour(tiny_config, unlabelled, tmp_path,
                                                                      monkeypatch):
    import gptlearn.embed_train as et

    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    teacher = StableTeacher(width=32)
    seen = []
    real = et._neighbour_objective
    spy = {"neighbours": lambda b, c, h: seen.append(b.teacher) or real(b, c, h)}
    monkeypatch.setattr(et, "LOSSES", {**et.LOSSES, **spy})
    hist = train_embeddings(_fresh(tiny_config), None, sentences=unlabelled, objective="distill+neighbours", epochs=2,
                            batch_size=16, lr=3e-3, device="cpu", teacher=teacher, warmup=0.0, similarity_weight=1.0)
    assert hist.steps[-1] == 2 * 96 // 8  # 8 sentences a step, each with a neighbour
    t = torch.from_numpy(teacher.encode(unlabelled).astype(np.float16)).float()  # (96, 32), as the run keeps them
    nearest = teacher_neighbours(t, 4)
    for vecs in seen[:12]:  # one epoch: every sentence once as the first half
        assert len(vecs) == 16
        first = [int((t @ v).argmax()) for v in vecs[:8]]
        second = [int((t @ v).argmax()) for v in vecs[8:]]
        assert all(b in nearest[a].tolist() for a, b in zip(first, second))
    covered = sorted(int((t @ v).argmax()) for vecs in seen[:12] for v in vecs[:8])
    assert covered == list(range(96))


def test_neighbours_keep_the_teachers_nearest_neighbours(tiny_config, unlabelled, tmp_path, monkeypatch):
    """The share of sentences whose nearest other sentence is the teacher's nearest, after 6 epochs of each
    objective from the same three random models: the neighbours term adds to it every time (measured
    0.43 -> 0.56, 0.49 -> 0.53, 0.46 -> 0.51)."""
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    teacher = StableTeacher(width=32)
    t_nearest = teacher_neighbours(torch.from_numpy(teacher.encode(unlabelled)), 1)[:, 0]  # (96,)

    def agreement(embedder):
        e = F.normalize(torch.from_numpy(embedder.encode(unlabelled)), dim=1)
        cos = e @ e.T
        cos.fill_diagonal_(-2.0)
        return float((cos.argmax(dim=1) == t_nearest).float().mean())

    gains = []
    for seed in range(3):
        scores = {}
        for objective in ("distill", "distill+neighbours"):
            embedder = _fresh(tiny_config, seed)
            train_embeddings(embedder, None, sentences=unlabelled, objective=objective, epochs=6, batch_size=16,
                             lr=3e-3, device="cpu", teacher=teacher, warmup=0.0, similarity_weight=1.0)
            scores[objective] = agreement(embedder)
        gains.append(scores["distill+neighbours"] - scores["distill"])
    assert min(gains) > 0 and np.mean(gains) > 0.04, gains


def test_a_resumed_neighbour_run_equals_an_uninterrupted_one(tiny_config, unlabelled, tmp_path, monkeypatch):
    from gptlearn import Embedder

    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    kw = dict(sentences=unlabelled, objective="distill+neighbours", epochs=2, batch_size=16, lr=3e-3, device="cpu",
              teacher=StableTeacher(width=32), warmup=0.0, seed=5)
    whole = train_embeddings(_fresh(tiny_config), None, out_dir=tmp_path / "a", **kw)

    def stop(h):
        if h.steps[-1] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_embeddings(_fresh(tiny_config), None, out_dir=tmp_path / "b", checkpoint_every=3, callback=stop, **kw)
    resumed = train_embeddings(_fresh(tiny_config), None, out_dir=tmp_path / "b", checkpoint_every=3, resume=True, **kw)
    assert resumed.steps == whole.steps
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-4)
    a, b = Embedder.from_pretrained(tmp_path / "a"), Embedder.from_pretrained(tmp_path / "b")
    np.testing.assert_allclose(a.encode(unlabelled[:4]), b.encode(unlabelled[:4]), atol=1e-5)


def test_neighbours_need_distillation_and_sentences(tiny_model, small_pairs, unlabelled):
    with pytest.raises(GptlearnError, match="distill\\+neighbours"):
        train_embeddings(tiny_model, None, sentences=unlabelled, objective="neighbours", teacher=HashTeacher())
    with pytest.raises(GptlearnError, match="distill\\+neighbours"):
        train_embeddings(tiny_model, small_pairs, objective="distill+neighbours", teacher=HashTeacher())
    with pytest.raises(GptlearnError, match="neighbour_temperature"):
        train_embeddings(tiny_model, None, sentences=unlabelled, objective="distill+neighbours",
                         neighbour_temperature=0.0, teacher=HashTeacher())


def test_cli_neighbours_without_sentences_is_one_line_exit_2(model_dir, tmp_path, capsys):
    from gptlearn.cli import main

    code = main(["train-embeddings", "--pairs", "stsb", "--objective", "distill+neighbours", "--model",
                 str(model_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "distill+neighbours" in err, err
    assert not (tmp_path / "o").exists()
