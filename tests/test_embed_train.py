"""The training objectives against hand computations, training, saving, the CLI (pair files: test_data.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlearn.data import read_pairs
from gptlearn.embed_train import (
    cosent_loss,
    embedding_distill_loss,
    evaluate_sts,
    mnrl_loss,
    similarity_distill_loss,
    train_embeddings,
)
from gptlearn.errors import GptlearnError

SEED_HEADER = "id\tsentence1\tsentence2\tlabel\n"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared CPU run several times faster on one thread than fighting for two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write(tmp_path, name, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ---- objectives vs hand computations -------------------------------------------------------------
def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_cosent_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    scores = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.0])
    cos = [_cos(e1[i].numpy(), e2[i].numpy()) for i in range(5)]
    total = 1.0 + sum(math.exp(20 * (cos[j] - cos[i])) for i in range(5) for j in range(5) if scores[i] > scores[j])
    assert cosent_loss(e1, e2, scores).item() == pytest.approx(math.log(total), rel=1e-5)
    assert cosent_loss(e1, e2, torch.full((5,), 0.3)).item() == 0.0  # no ordered pairs: log(1)


def test_mnrl_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    a, p = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    sim = np.array([[20 * _cos(a[i].numpy(), p[j].numpy()) for j in range(4)] for i in range(4)])
    rows = [-sim[i, i] + math.log(np.exp(sim[i]).sum()) for i in range(4)]
    cols = [-sim[i, i] + math.log(np.exp(sim[:, i]).sum()) for i in range(4)]
    assert mnrl_loss(a, p).item() == pytest.approx(np.mean(rows), rel=1e-5)
    assert mnrl_loss(a, p, symmetric=True).item() == pytest.approx((np.mean(rows) + np.mean(cols)) / 2, rel=1e-5)


def test_distill_losses_match_hand_computation():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(3, 4, generator=g), torch.randn(3, 6, generator=g)  # widths differ
    diff = [(_cos(s[i].numpy(), s[j].numpy()) - _cos(t[i].numpy(), t[j].numpy())) ** 2
            for i in range(3) for j in range(3)]
    assert similarity_distill_loss(s, t).item() == pytest.approx(np.mean(diff), rel=1e-5, abs=1e-7)
    p = torch.randn(3, 6, generator=g)
    assert embedding_distill_loss(p, t).item() == pytest.approx(
        np.mean([1 - _cos(p[i].numpy(), t[i].numpy()) for i in range(3)]), rel=1e-5)
    assert similarity_distill_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


# ---- training ------------------------------------------------------------------------------------
@pytest.fixture
def small_pairs(data_dir):
    return read_pairs(data_dir / "stsb" / "sts-train.csv").head(64)


def _embedder(tiny_model):
    from gptlearn.embeddings import Embedder

    return Embedder(tiny_model, pooling="mean")


@pytest.mark.slow  # ~3 s on an idle CPU, more on a busy one
def test_training_lowers_loss_and_raises_train_spearman(tiny_model, small_pairs):
    embedder = _embedder(tiny_model)
    before = evaluate_sts(embedder, small_pairs)
    hist = train_embeddings(embedder, small_pairs, dev_pairs=small_pairs, objective="cosent", epochs=4,
                            batch_size=16, lr=3e-3, seed=0, device="cpu", warmup=0.0)
    assert hist.dev_spearman_before == pytest.approx(before)
    # measured: -0.34 -> 0.80; the random start has little signal, training must add a lot
    assert hist.dev_spearman_after > before + 0.5, (before, hist.epoch_dev_spearman)
    per_epoch = np.array(hist.losses).reshape(4, 4).mean(axis=1)  # measured: 5.28 -> 4.64
    assert per_epoch[-1] < 0.93 * per_epoch[0], per_epoch
    assert len(hist.epoch_dev_spearman) == 4 and hist.steps[-1] == 16


def test_mnrl_trains_on_positives_only(tiny_model, small_pairs):
    hist = train_embeddings(tiny_model, small_pairs, objective="mnrl", epochs=1, batch_size=8, seed=0, device="cpu")
    assert hist.train_pairs == 64 and len(hist.losses) == math.ceil(len(small_pairs.positives(0.8)) / 8)
    assert all(math.isfinite(x) for x in hist.losses)


def test_saved_embedder_loads_with_same_embeddings(tiny_model, small_pairs, tmp_path):
    from gptlearn import Embedder

    seen = []
    hist = train_embeddings(_embedder(tiny_model), small_pairs.head(32), objective="cosent", epochs=1,
                            batch_size=16, pooling="weighted_mean", device="cpu", out_dir=tmp_path / "emb",
                            callback=lambda h: seen.append(h.losses[-1]))
    assert seen == hist.losses
    loaded = Embedder.from_pretrained(tmp_path / "emb")
    assert loaded.pooling == "weighted_mean"
    sentences = small_pairs.sentences1[:8]
    np.testing.assert_allclose(loaded.encode(sentences), hist.embedder.encode(sentences), atol=1e-5, rtol=1e-5)
    assert (tmp_path / "emb" / "train_embeddings.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["emb"]  # no temporary folders left behind
    # training again into the same folder replaces the model
    train_embeddings(loaded, small_pairs.head(16), epochs=1, batch_size=8, device="cpu", out_dir=tmp_path / "emb")
    assert [p.name for p in tmp_path.iterdir()] == ["emb"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(GptlearnError, match="gptlearn did not write it"):
        train_embeddings(loaded, small_pairs.head(16), epochs=1, batch_size=8, device="cpu",
                         out_dir=tmp_path / "notes")


def test_bad_arguments_raise(tiny_model, small_pairs):
    with pytest.raises(GptlearnError, match="unknown objective"):
        train_embeddings(tiny_model, small_pairs, objective="triplet")
    with pytest.raises(GptlearnError, match="positive pairs"):
        train_embeddings(tiny_model, small_pairs.select([i for i, s in enumerate(small_pairs.scores) if s < 0.5]),
                         objective="mnrl", device="cpu")


# ---- the command line ----------------------------------------------------------------------------
@pytest.fixture
def model_dir(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_cli_happy_path(model_dir, tmp_path, capsys):
    from gptlearn.cli import main

    rows = "".join(f"p{i}\t{a}\t{b}\t{int(i % 2 == 0)}\n" for i, (a, b) in enumerate(
        [("A cat sits.", "A cat is sitting."), ("A dog runs.", "Stocks fell."), ("Two men talk.", "Two men chat."),
         ("It rains.", "The car is red."), ("She sings.", "She is singing."), ("He reads.", "Birds fly.")]))
    pairs = write(tmp_path, "pairs.tsv", SEED_HEADER + rows)
    code = main(["train-embeddings", "--pairs", str(pairs), "--dev", str(pairs), "--model", str(model_dir),
                 "--out", str(tmp_path / "out"), "--epochs", "2", "--batch-size", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "dev Spearman:" in out and "wall time" in out
    assert (tmp_path / "out" / "embedder.json").is_file()


@pytest.mark.parametrize("content", [None, SEED_HEADER + "x\tA.\tB.\tmaybe\n"])
def test_cli_bad_input_is_one_line_exit_2(model_dir, tmp_path, capsys, content):
    from gptlearn.cli import main

    pairs = tmp_path / "pairs.tsv"
    if content is not None:
        pairs.write_text(content)
    code = main(["train-embeddings", "--pairs", str(pairs), "--model", str(model_dir), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gptlearn: error: ")
    assert not (tmp_path / "o").exists()


# ---- distillation (needs the optional teacher package) ---------------------------------------------
@pytest.fixture
def teacher():
    from gptlearn.embed_train import load_teacher

    try:
        return load_teacher("cpu")
    except Exception as e:  # package missing or its weights unloadable
        pytest.skip(f"the all-MiniLM-L6-v2 teacher cannot load: {e}")


@pytest.mark.slow
def test_distillation_with_projection(tiny_model, small_pairs, teacher, tmp_path, monkeypatch):
    from gptlearn import Embedder
    from gptlearn.embed_train import teacher_embeddings

    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    t = teacher_embeddings(["A man is playing a guitar.", "A man plays the guitar.", "Stocks fell sharply."], teacher)
    assert t.shape == (3, 384)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3), atol=1e-3, rtol=0)  # unit, rounded to float16
    assert float(t[0] @ t[1]) > float(t[0] @ t[2]) + 0.3  # a paraphrase is far closer than an unrelated sentence

    class NoTeacher:
        def encode(self, *args, **kwargs):
            raise AssertionError("cached sentences must not go through the teacher again")

    cached = teacher_embeddings(["Stocks fell sharply.", "A man plays the guitar."], NoTeacher())
    # the cache keeps float16, and fresh vectors are rounded the same: a resumed run gets the same targets
    torch.testing.assert_close(cached, t[[2, 1]], atol=0, rtol=0)
    assert torch.equal(t, t.half().float())

    pairs = small_pairs.head(32)
    hist = train_embeddings(_embedder(tiny_model), pairs, objective="distill", epochs=3, batch_size=16, lr=3e-3,
                            device="cpu", teacher=teacher, out_dir=tmp_path / "emb", warmup=0.0)
    assert hist.losses[-1] < hist.losses[0]
    assert (tmp_path / "cache" / "teacher" / "all-MiniLM-L6-v2.npz").is_file()  # cached for the next run
    loaded = Embedder.from_pretrained(tmp_path / "emb")
    assert loaded.dimensions == 384
    np.testing.assert_allclose(loaded.encode(pairs.sentences1[:4]), hist.embedder.encode(pairs.sentences1[:4]),
                               atol=1e-5, rtol=1e-5)


# ---- bad settings and outputs: refused before any work, and a diverged run never replaces a good embedder ----
@pytest.mark.parametrize("setting, value", [
    ("lr", float("nan")), ("lr", -1e-3), ("lr", float("inf")), ("lr", 0.0), ("warmup", -0.1), ("warmup", 1.5),
    ("weight_decay", -0.01), ("weight_decay", float("nan")), ("max_pairs", 0), ("max_pairs", 1), ("seed", 2 ** 64),
    ("seed", -1), ("epochs", 0), ("batch_size", 1), ("scale", 0.0), ("positive_threshold", float("nan")),
    ("checkpoint_every", 0), ("checkpoint_every", -1), ("similarity_weight", -1.0), ("max_sentences", 0),
    ("max_sentences", -1), ("epochs", 2**63), ("batch_size", 2.5), ("lr", True)])
def test_bad_settings_are_named_before_any_work(tiny_model, setting, value):
    # the pairs do not exist: the setting must be refused first
    with pytest.raises(GptlearnError, match=rf"^{setting} must be"):
        train_embeddings(tiny_model, "no-such-pairs.tsv", **{setting: value})


def _pairs_file(tmp_path):
    rows = "".join(f"p{i}\t{a}\t{b}\t{int(i % 2 == 0)}\n" for i, (a, b) in enumerate(
        [("A cat sits.", "A cat is sitting."), ("A dog runs.", "Stocks fell."), ("Two men talk.", "Two men chat."),
         ("It rains.", "The car is red.")]))
    return write(tmp_path, "pairs.tsv", SEED_HEADER + rows)


@pytest.mark.parametrize("out", ["file", "full-folder", "under-a-file"])
def test_an_unusable_out_is_refused_before_training(model_dir, tmp_path, capsys, out):
    from gptlearn.cli import main

    (tmp_path / "file").write_text("x")
    (tmp_path / "full-folder").mkdir()
    (tmp_path / "full-folder" / "notes.txt").write_text("mine")
    target = tmp_path / ("file/sub" if out == "under-a-file" else out)
    code = main(["train-embeddings", "--pairs", str(_pairs_file(tmp_path)), "--model", str(model_dir),
                 "--out", str(target), "--batch-size", "2", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and captured.err.startswith("gptlearn: error: "), captured.err
    assert "epoch" not in captured.out  # refused before the first step
    assert (tmp_path / "full-folder" / "notes.txt").read_text() == "mine"


def test_a_diverged_run_keeps_the_good_embedder(model_dir, tmp_path, capsys):
    from gptlearn import Embedder
    from gptlearn.cli import main

    pairs, out = _pairs_file(tmp_path), tmp_path / "out"
    args = ["train-embeddings", "--pairs", str(pairs), "--model", str(model_dir), "--out", str(out),
            "--batch-size", "2", "--device", "cpu"]
    assert main(args) == 0
    good = Embedder.from_pretrained(out).encode(["A cat sits."])
    code = main([*args, "--lr", "1e30", "--epochs", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "diverged" in err, err
    np.testing.assert_array_equal(Embedder.from_pretrained(out).encode(["A cat sits."]), good)


# ---- distillation on unlabelled sentences, checkpoints, and bad input ----------------------------
class HashTeacher:
    """A stand-in teacher: a fixed random unit vector per word, averaged (so shared words mean nearness)."""

    def __init__(self, width: int = 32):
        self.width = width
        self.calls = 0

    def encode(self, sentences, **kwargs):
        self.calls += 1
        out = []
        for s in sentences:
            v = sum(np.random.default_rng(abs(hash(w.lower())) % 2**32).standard_normal(self.width)
                    for w in s.split())
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


def _still_config(tiny_config):
    return tiny_config.replace(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # deterministic steps


@pytest.fixture
def unlabelled(small_pairs):
    return small_pairs.unique_sentences()[:96]


def test_distill_on_unlabelled_sentences_copies_the_teacher(tiny_config, unlabelled, tmp_path, monkeypatch):
    from gptlearn import GPT, Embedder

    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    embedder = Embedder(GPT(_still_config(tiny_config)), pooling="mean")
    teacher = HashTeacher(width=32)  # the model's width: no projection head
    hist = train_embeddings(embedder, None, sentences=unlabelled, objective="distill", epochs=4, batch_size=16,
                            lr=3e-3, device="cpu", teacher=teacher, out_dir=tmp_path / "emb", warmup=0.0,
                            similarity_weight=1.0)
    assert embedder.projection is None and hist.train_pairs == 0 and hist.steps[-1] == 4 * 6
    per_epoch = np.array(hist.losses).reshape(4, 6).mean(axis=1)
    assert per_epoch[-1] < 0.7 * per_epoch[0], per_epoch
    target = torch.from_numpy(teacher.encode(unlabelled[:8]))
    got = torch.from_numpy(Embedder.from_pretrained(tmp_path / "emb").encode(unlabelled[:8]))
    cos = F.cosine_similarity(got, target, dim=-1)
    assert float(cos.mean()) > 0.5, cos  # measured 0.8; an untrained model is near 0


def test_resumed_run_equals_an_uninterrupted_one(tiny_config, small_pairs, tmp_path):
    from gptlearn import GPT, Embedder

    def fresh():
        torch.manual_seed(0)
        return Embedder(GPT(_still_config(tiny_config)), pooling="mean")

    pairs = small_pairs.head(48)
    whole = train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=tmp_path / "a")

    def stop_at_7(h):
        if h.steps[-1] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=tmp_path / "b",
                         checkpoint_every=3, callback=stop_at_7)
    saved = sorted(f.name for f in (tmp_path / "b.checkpoint").iterdir())
    assert not (tmp_path / "b").exists() and {"trainer_state.json", "trainer_state.safetensors"} <= set(saved)
    assert not any(name.endswith((".pt", ".pkl", ".bin")) for name in saved), saved  # nothing to unpickle
    resumed = train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=tmp_path / "b",
                               checkpoint_every=3, resume=True)
    assert resumed.steps == whole.steps and resumed.losses[:6] == whole.losses[:6]
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-4)
    a, b = Embedder.from_pretrained(tmp_path / "a"), Embedder.from_pretrained(tmp_path / "b")
    np.testing.assert_allclose(a.encode(pairs.sentences1[:4]), b.encode(pairs.sentences1[:4]), atol=1e-5)
    assert not (tmp_path / "b.checkpoint").exists()  # a finished run removes its checkpoint


@pytest.mark.parametrize("when", ["mid-run", "last step"])
def test_nan_never_overwrites_a_good_embedder(tiny_model, small_pairs, tmp_path, when):
    pairs = small_pairs.head(32)
    train_embeddings(_embedder(tiny_model), pairs, epochs=1, batch_size=8, device="cpu", out_dir=tmp_path / "emb")
    good = (tmp_path / "emb" / "model.safetensors").read_bytes()

    def poison(h):
        if h.steps[-1] == (2 if when == "mid-run" else 4):
            with torch.no_grad():
                h.embedder.model.wte.weight[0, 0] = float("nan") if when == "last step" else 0.0
                if when == "mid-run":
                    h.embedder.model.ln_f.weight.fill_(float("nan"))

    with pytest.raises(GptlearnError, match="NaN|nan"):
        train_embeddings(_embedder(tiny_model), pairs, epochs=1, batch_size=8, device="cpu",
                         out_dir=tmp_path / "emb", callback=poison)
    assert (tmp_path / "emb" / "model.safetensors").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]


def test_out_is_checked_before_any_work(tiny_model, small_pairs, tmp_path):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    steps = []
    for out, message in [(tmp_path / "a-file", "is a file"), (tmp_path / "mine", "gptlearn did not write it"),
                         (tmp_path / "a-file" / "emb", "cannot write")]:
        with pytest.raises(GptlearnError, match=message):
            train_embeddings(_embedder(tiny_model), small_pairs.head(16), epochs=1, batch_size=8, device="cpu",
                             out_dir=out, callback=steps.append)
    assert steps == [] and (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_empty_or_missing_training_data_raise(tiny_model, small_pairs):
    with pytest.raises(GptlearnError, match="empty"):
        train_embeddings(tiny_model, None, sentences=[], objective="distill", teacher=HashTeacher())
    with pytest.raises(GptlearnError, match="empty"):
        train_embeddings(tiny_model, None, sentences=["A cat.", "  "], objective="distill", teacher=HashTeacher())
    with pytest.raises(GptlearnError, match="needs training pairs"):
        train_embeddings(tiny_model, None, sentences=["A cat.", "A dog."], objective="distill+cosent")
    with pytest.raises(GptlearnError, match="for distillation"):
        train_embeddings(tiny_model, small_pairs, sentences=["A cat.", "A dog."], objective="cosent")


def test_long_sentences_are_truncated_with_a_warning(tiny_model, small_pairs, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    long = " ".join(["word"] * 200)  # 200 tokens; the tiny model's context is 64
    with pytest.warns(UserWarning, match="longer than 64 tokens and were truncated"):
        train_embeddings(_embedder(tiny_model), None, sentences=[long, "A short one.", "Another one."] * 4,
                         objective="distill", epochs=1, batch_size=4, device="cpu", teacher=HashTeacher())


@pytest.mark.parametrize("case", ["out-is-file", "sentences-not-utf8", "empty-sentences"])
def test_cli_training_bad_input_is_one_line_exit_2(model_dir, tmp_path, capsys, case):
    from gptlearn.cli import main

    sentences = write(tmp_path, "s.txt", {"sentences-not-utf8": b"ok\n\xff\xfe bad\n",
                                          "empty-sentences": b"\n\n"}.get(case, b"A cat.\nA dog.\n"))
    out = tmp_path / "o"
    if case == "out-is-file":
        out.write_text("not a folder")
    code = main(["train-embeddings", "--sentences", str(sentences), "--objective", "distill", "--pairs",
                 str(tmp_path / "missing.tsv") if case == "out-is-file" else "stsb",
                 "--model", str(model_dir), "--out", str(out)] if case == "out-is-file" else
                ["train-embeddings", "--sentences", str(sentences), "--objective", "distill",
                 "--model", str(model_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("gptlearn: error: "), err
    expected = {"out-is-file": "is a file", "sentences-not-utf8": "not UTF-8", "empty-sentences": "no sentences"}
    assert expected[case] in err


# ---- the checkpoint: the trainer's format and checks, Ctrl-C, the lock ---------------------------------------
def _stopped_run(tiny_config, pairs, out, *, still=True, at=7, **kw):
    """Train, stopped by a KeyboardInterrupt after step ``at`` (what Ctrl-C does); returns a fresh-model maker."""
    from gptlearn import GPT, Embedder

    def fresh():
        torch.manual_seed(0)
        return Embedder(GPT(_still_config(tiny_config) if still else tiny_config), pooling="mean")

    def stop(h):
        if h.steps[-1] == at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=out, callback=stop, **kw)
    return fresh


def test_a_resumed_run_with_dropout_equals_an_uninterrupted_one(tiny_config, small_pairs, tmp_path, capsys):
    """Ctrl-C saves the last finished step even without checkpoint_every, and says so; the resumed run restores
    AdamW's moments and the random streams (dropout here), so its weights equal the uninterrupted run's."""
    from gptlearn import Embedder

    pairs = small_pairs.head(48)
    fresh = _stopped_run(tiny_config, pairs, tmp_path / "b", still=False)
    assert "interrupted at step 7; a checkpoint is in" in capsys.readouterr().err
    whole = train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=tmp_path / "a")
    resumed = train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=tmp_path / "b",
                               resume=True)
    assert resumed.losses == whole.losses and resumed.step == whole.step
    a, b = Embedder.from_pretrained(tmp_path / "a"), Embedder.from_pretrained(tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_a_checkpoint_without_its_optimizer_state_is_refused(tiny_config, small_pairs, tmp_path):
    """AdamW's moments missing from a checkpoint: resuming refuses in one line instead of continuing with fresh
    moments (which silently changes the run)."""
    pairs = small_pairs.head(48)
    fresh = _stopped_run(tiny_config, pairs, tmp_path / "b", checkpoint_every=3)
    ckpt = tmp_path / "b.checkpoint"
    moments = [p for p in ckpt.iterdir() if p.suffix == ".safetensors" and p.name != "model.safetensors"]
    assert moments
    for p in moments:
        p.unlink()
    with pytest.raises(GptlearnError) as e:
        train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=tmp_path / "b",
                         checkpoint_every=3, resume=True)
    assert "\n" not in str(e.value)


def test_a_tampered_embedding_checkpoint_is_refused(tiny_config, small_pairs, tmp_path):
    """The trainer's checks hold for this trainer's checkpoints too: AdamW moments of the wrong size, sealed again."""
    from test_checkpoint import TAMPERS
    from train_kit import seal_state

    pairs = small_pairs.head(48)
    fresh = _stopped_run(tiny_config, pairs, tmp_path / "b")
    for name in ("exp_avg of the wrong size", "NumPy position 1e8", "a step as a string"):
        ckpt = tmp_path / "b.checkpoint"
        original = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.name.startswith("trainer_state")}
        seal_state(ckpt, *TAMPERS[name])
        with pytest.raises(GptlearnError, match="damaged") as e:
            train_embeddings(fresh(), pairs, epochs=2, batch_size=8, device="cpu", seed=3, out_dir=tmp_path / "b",
                             resume=True)
        assert "\n" not in str(e.value)
        for n, data in original.items():
            (ckpt / n).write_bytes(data)


@pytest.mark.parametrize("case", ["no checkpoint", "another model", "another seed"])
def test_resume_refusals_are_one_line(model_dir, tmp_path, capsys, case):
    import shutil

    from gptlearn.cli import main

    pairs = _pairs_file(tmp_path)
    out = tmp_path / "emb"
    base = ["train-embeddings", "--pairs", str(pairs), "--out", str(out), "--batch-size", "2", "--device", "cpu",
            "--checkpoint-every", "1", "--epochs", "3"]
    if case != "no checkpoint":
        from gptlearn import embed_train

        real = embed_train._EmbedRun.evaluate_epoch

        def stop(self, step):
            raise KeyboardInterrupt

        embed_train._EmbedRun.evaluate_epoch = stop
        try:
            assert main([*base, "--model", str(model_dir)]) == 130
        finally:
            embed_train._EmbedRun.evaluate_epoch = real
        assert (tmp_path / "emb.checkpoint" / "trainer_state.json").is_file()
    other = tmp_path / "other-model"
    shutil.copytree(model_dir, other)
    capsys.readouterr()
    model = str(other) if case == "another model" else str(model_dir)
    code = main([*base, "--model", model, "--resume", *(["--seed", "9"] if case == "another seed" else [])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("gptlearn: error: "), err
    assert {"no checkpoint": "nothing to resume", "another model": "model", "another seed": "seed 9"}[case] in err


def test_one_lock_for_both_trainers(tiny_model, small_pairs, tmp_path):
    """While a run (of either trainer) writes a folder, train-embeddings into it is refused before any work."""
    from gptlearn.checkpoint import run_lock

    steps = []
    with run_lock(tmp_path / "emb"):
        with pytest.raises(GptlearnError, match="another training run"):
            train_embeddings(_embedder(tiny_model), small_pairs.head(16), epochs=1, batch_size=8, device="cpu",
                             out_dir=tmp_path / "emb", callback=steps.append)
    assert steps == []


def test_an_unrelated_checkpoint_folder_is_never_removed(tiny_model, small_pairs, tmp_path):
    (tmp_path / "emb.checkpoint").mkdir()
    (tmp_path / "emb.checkpoint" / "notes.txt").write_text("mine")
    train_embeddings(_embedder(tiny_model), small_pairs.head(16), epochs=1, batch_size=8, device="cpu",
                     out_dir=tmp_path / "emb")
    assert (tmp_path / "emb.checkpoint" / "notes.txt").read_text() == "mine"


def test_the_history_is_the_shape_loss_curve_reads(tiny_model, small_pairs):
    from gptlearn.plotting import loss_curve

    hist = train_embeddings(_embedder(tiny_model), small_pairs.head(16), epochs=1, batch_size=8, device="cpu")
    fig = loss_curve(hist)
    train = next(t for t in fig.data if t.name == "train")
    assert list(train.x) == [float(s) for s in hist.step] and list(train.y) == pytest.approx(hist.train_loss)
    assert hist.steps is hist.step and hist.losses is hist.train_loss  # the earlier names


def test_an_embedder_keeps_its_own_pooling_and_a_plain_model_gets_the_default(tiny_model, tmp_path):
    """Training the bundled embedder by name (``--model gptlearn-embed``) keeps its mean pooling; a plain
    language model's folder gets DEFAULT_POOLING; an embedder folder keeps what it saved."""
    from gptlearn import Embedder
    from gptlearn.embed_train import DEFAULT_POOLING, _make_embedder

    assert Embedder.from_pretrained("gptlearn-embed").pooling == "mean" != DEFAULT_POOLING
    assert _make_embedder("gptlearn-embed", None).pooling == "mean"
    assert _make_embedder("gptlearn-embed", "max").pooling == "max"  # asked for: honoured
    tiny_model.save_pretrained(tmp_path / "plain")
    assert _make_embedder(tmp_path / "plain", None).pooling == DEFAULT_POOLING
    Embedder(tiny_model, pooling="last").save_pretrained(tmp_path / "embedder")
    assert _make_embedder(str(tmp_path / "embedder"), None).pooling == "last"


def test_a_resumed_distillation_equals_an_uninterrupted_one(tiny_config, unlabelled, tmp_path, monkeypatch):
    """The teacher's targets are the same float16-rounded vectors whether a run labels them or reads them
    from the cache, so resuming a distillation changes nothing."""
    from gptlearn import Embedder

    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    kw = dict(sentences=unlabelled, objective="distill", lr=3e-3, teacher=HashTeacher(width=32), warmup=0.0)
    # the stopped run labels every sentence (fresh vectors); the two runs below read them from the cache
    fresh = _stopped_run(tiny_config, None, tmp_path / "b", checkpoint_every=3, **kw)
    settings = dict(epochs=2, batch_size=8, device="cpu", seed=3, **kw)  # _stopped_run's
    whole = train_embeddings(fresh(), None, out_dir=tmp_path / "a", **settings)
    resumed = train_embeddings(fresh(), None, out_dir=tmp_path / "b", checkpoint_every=3, resume=True, **settings)
    assert resumed.steps == whole.steps
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5)
    a, b = Embedder.from_pretrained(tmp_path / "a"), Embedder.from_pretrained(tmp_path / "b")
    np.testing.assert_allclose(a.encode(unlabelled[:4]), b.encode(unlabelled[:4]), atol=1e-5)
