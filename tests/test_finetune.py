"""Classifier, finetune() and the ``gptlearn finetune`` / ``gptlearn classify`` commands, on a tiny random
GPT-2 (GPT-2's tokenizer) saved to a temporary folder. Probabilities are compared to 1e-5."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from train_kit import seal_state

from gptlearn import GPT, GPTConfig, GptlearnError, cli
from gptlearn.embeddings import Embedder
from gptlearn.finetune import (CLASSIFIER_FILE, Classifier, FinetuneConfig, finetune, read_tsv,
                               trainable_parameters)
from gptlearn.lora import lora_layers

TRAIN = [("the cat purred", "animal"), ("a dog barked", "animal"), ("the horse ran", "animal"),
         ("hot soup and bread", "food"), ("cheese on toast", "food"), ("apples and pears", "food"),
         ("rain and wind today", "weather"), ("snow fell all night", "weather"), ("a sunny warm day", "weather")]
DEV = [("the dog ran", "animal"), ("bread and cheese", "food"), ("wind and snow", "weather")]


def _tsv(path: Path, rows, header: str | None = "sentence\tlabel") -> Path:
    lines = ([header] if header is not None else []) + [f"{s}\t{l}" for s, l in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64))
    return model.save_pretrained(tmp_path_factory.mktemp("ft-model"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ft-data")
    return _tsv(d / "train.tsv", TRAIN), _tsv(d / "dev.tsv", DEV)


# ---- reading the data -----------------------------------------------------------------------------------
def test_read_tsv_reads_sentences_and_labels(tmp_path):
    path = _tsv(tmp_path / "t.tsv", [("a b", "x"), ("c", "y z")])
    path.write_text(path.read_text() + "\n\n")  # blank lines are skipped
    assert read_tsv(path) == (["a b", "c"], ["x", "y z"])


@pytest.mark.parametrize("rows, header, line, match", [
    ([("a", "x")], None, 1, "header"),
    ([("a", "x"), ("b", "")], "sentence\tlabel", 3, "no label"),
    ([("a", "x"), ("  ", "y")], "sentence\tlabel", 3, "sentence is empty"),
    ([("a", "x"), ("b\tc", "y")], "sentence\tlabel", 3, "3 tab-separated fields"),
])
def test_read_tsv_names_the_file_and_line_of_a_mistake(tmp_path, rows, header, line, match):
    path = _tsv(tmp_path / "bad.tsv", rows, header)
    with pytest.raises(GptlearnError, match=match) as e:
        read_tsv(path)
    assert f"{path}, line {line}:" in str(e.value)


def test_read_tsv_refuses_labels_the_training_file_lacks(tmp_path):
    path = _tsv(tmp_path / "dev.tsv", [("a", "x"), ("b", "w")])
    with pytest.raises(GptlearnError, match=r"dev.tsv, line 3: the label 'w' is not among"):
        read_tsv(path, known_labels=["x", "y"])


# ---- the classifier -------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_scores_the_pooled_vector(model_dir, pooling):
    model = GPT.from_pretrained(model_dir)
    clf = Classifier(model, ["a", "b", "c"], pooling=pooling).eval()
    with torch.no_grad():
        clf.head.weight.normal_()
    sentences = ["one two three four", "five"]
    vectors = torch.as_tensor(Embedder(model, pooling=pooling).encode(sentences))  # (N, C)
    ids = model.tokenizer.encode(sentences[0])
    hidden = model.hidden_states(torch.tensor([ids]))[0]  # (T, C)
    by_hand = hidden[-1] if pooling == "last" else hidden.mean(0)
    torch.testing.assert_close(vectors[0], by_hand, rtol=0, atol=1e-5)
    probs = clf.probabilities(sentences)
    torch.testing.assert_close(probs, torch.softmax(clf.head(vectors), -1), rtol=0, atol=1e-5)
    out = clf.predict(sentences)
    assert [o["label"] for o in out] == [clf.labels[int(i)] for i in probs.argmax(-1)]
    assert all(abs(sum(o["scores"].values()) - 1) < 1e-5 for o in out)


@pytest.mark.parametrize("method", ["probe", "last_block", "full", "lora"])
def test_each_method_trains_exactly_its_parameters(model_dir, data, method):
    model = GPT.from_pretrained(model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = finetune(*data, model=model, method=method, lora_rank=4 if method == "lora" else None, epochs=2,
                      progress=False)
    clf, C, K = result.classifier, 32, 3
    head = C * K + K
    block = sum(p.numel() for p in model.blocks[-1].parameters()) + 2 * C
    expected = {"probe": head, "last_block": block + head, "full": model.num_parameters() + head,
                "lora": 2 * 4 * ((C + 3 * C) + (C + 4 * C)) + head}[method]  # c_attn and c_fc in 2 blocks
    assert result.trainable == expected == trainable_parameters(clf)
    changed = {n for n, p in clf.model.named_parameters() if n in before and not torch.equal(p, before[n])}
    if method in ("probe", "lora"):
        assert changed == set()  # the body itself never moves
    elif method == "last_block":
        assert changed and all(n.startswith(("blocks.1.", "ln_f.")) for n in changed)
    else:
        assert any(n.startswith("blocks.0.") for n in changed)
    assert len(result.dev_accuracy) == 2
    predicted = [p["label"] for p in clf.predict([s for s, _ in DEV])]
    assert result.dev_accuracy[-1] == sum(p == label for p, (_, label) in zip(predicted, DEV)) / len(DEV)


def test_full_finetuning_fits_the_training_set(model_dir, data):
    result = finetune(data[0], model=str(model_dir), epochs=30, lr=3e-3, progress=False)
    train = read_tsv(data[0])
    pred = [p["label"] for p in result.classifier.predict(train[0])]
    assert pred == train[1]
    assert result.train_loss[-1] < result.train_loss[0] / 5


@pytest.mark.parametrize("method", ["lora", "full"])
def test_saved_folder_loads_back_with_the_same_scores(model_dir, data, tmp_path, method):
    out = tmp_path / "clf"
    result = finetune(*data, model=str(model_dir), out_dir=out, method=method,
                      lora_rank=4 if method == "lora" else None,
                      epochs=3, progress=False)
    meta = json.loads((out / CLASSIFIER_FILE).read_text())
    assert meta["labels"] == ["animal", "food", "weather"] and meta["base_model"] == str(model_dir)
    assert (meta["lora"] is not None) == (method == "lora")
    want = result.classifier.probabilities([s for s, _ in DEV])
    for merge in (True, False):
        loaded = Classifier.from_pretrained(out, merge=merge)
        assert bool(lora_layers(loaded.model)) == (method == "lora" and not merge)
        torch.testing.assert_close(loaded.probabilities([s for s, _ in DEV]), want, rtol=0, atol=1e-5)
    assert GPT.from_pretrained(out).num_parameters() == GPT.from_pretrained(model_dir).num_parameters()


def test_resume_continues_the_run_exactly(model_dir, data, tmp_path):
    settings = dict(model=str(model_dir), lora_rank=4, progress=False)
    straight = finetune(*data, out_dir=tmp_path / "a", epochs=3, **settings)
    finetune(*data, out_dir=tmp_path / "b", epochs=1, **settings)
    resumed = finetune(*data, out_dir=tmp_path / "b", epochs=3, resume=True, progress=False)
    assert resumed.epoch == [1, 2, 3]
    torch.testing.assert_close(resumed.train_loss, straight.train_loss, rtol=0, atol=1e-5)
    sentences = [s for s, _ in DEV]
    torch.testing.assert_close(resumed.classifier.probabilities(sentences),
                               straight.classifier.probabilities(sentences), rtol=0, atol=1e-5)


def test_a_diverged_classifier_is_never_saved_over_a_good_one(model_dir, data, tmp_path):
    out = tmp_path / "clf"
    good = finetune(*data, model=str(model_dir), out_dir=out, method="probe", epochs=1, progress=False).classifier
    before = (out / "classifier.safetensors").read_bytes()
    with torch.no_grad():
        good.head.weight[0, 0] = float("nan")
    with pytest.raises(GptlearnError, match="NaN"):
        good.save_pretrained(out)
    assert (out / "classifier.safetensors").read_bytes() == before


def test_settings_are_checked_before_anything_runs():
    with pytest.raises(GptlearnError, match="--lora-rank"):
        FinetuneConfig(lora_rank=0).validate()
    with pytest.raises(GptlearnError, match="--epochs"):
        FinetuneConfig(epochs=0).validate()
    with pytest.raises(GptlearnError, match="did you mean 'epochs'"):
        FinetuneConfig().replace(epoch=3)


# ---- the commands ---------------------------------------------------------------------------------------
def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_finetune_then_classify(capsys, model_dir, data, tmp_path):
    out = tmp_path / "clf"
    code, stdout, err = run_main(capsys, "finetune", "--data", str(data[0]), "--dev", str(data[1]), "--out", str(out),
                                 "--model", str(model_dir), "--epochs", "2", "--lora-rank", "4", "--no-progress")
    assert code == 0, err
    assert "lora" in stdout and str(out) in stdout
    sentences = ["a cat", "some soup"]
    code, stdout, err = run_main(capsys, "classify", "--model", str(out), "--sentence", sentences[0],
                                 "--sentence", sentences[1])
    assert code == 0 and err == ""
    lines = [json.loads(line) for line in stdout.splitlines()]
    want = Classifier.from_pretrained(out).predict(sentences)
    assert [x["label"] for x in lines] == [x["label"] for x in want]
    for got, expected in zip(lines, want):
        assert got["scores"].keys() == expected["scores"].keys() == {"animal", "food", "weather"}
        assert all(abs(got["scores"][k] - expected["scores"][k]) < 1e-6 for k in got["scores"])
    code, _, err = run_main(capsys, "finetune", "--data", str(data[0]), "--out", str(out), "--model", str(model_dir))
    assert code == 2 and "--resume" in err and "--overwrite" in err


@pytest.mark.parametrize("case", ["no header", "missing label", "one class", "dev label", "empty sentence",
                                  "rank 0", "rank too large"])
def test_bad_finetune_input_is_one_error_line_and_writes_nothing(capsys, model_dir, tmp_path, case):
    train = _tsv(tmp_path / "train.tsv", TRAIN)
    dev = _tsv(tmp_path / "dev.tsv", DEV)
    extra: list[str] = []
    want = str(train)
    if case == "no header":
        _tsv(train, TRAIN, header=None)
        want = f"{train}, line 1:"
    elif case == "missing label":
        train.write_text(train.read_text() + "a sentence alone\n")
        want = f"{train}, line {len(TRAIN) + 2}:"
    elif case == "one class":
        _tsv(train, [(s, "animal") for s, _ in TRAIN])
        want = f"{train}: every line has the label 'animal'"
    elif case == "dev label":
        _tsv(dev, DEV + [("a pebble", "mineral")])
        want = f"{dev}, line {len(DEV) + 2}: the label 'mineral'"
    elif case == "empty sentence":
        train.write_text(train.read_text() + " \tfood\n")
        want = f"{train}, line {len(TRAIN) + 2}: the sentence is empty"
    elif case == "rank 0":
        extra, want = ["--lora-rank", "0"], "--lora-rank must be"
    else:
        extra, want = ["--lora-rank", "33"], "--lora-rank must be from 1 to 32 for blocks.0.attn.c_attn"
    out = tmp_path / "out"
    code, stdout, err = run_main(capsys, "finetune", "--data", str(train), "--dev", str(dev), "--out", str(out),
                                 "--model", str(model_dir), "--no-progress", *extra)
    assert code == 2 and stdout == ""
    assert err.startswith("gptlearn: error: ") and err.count("\n") == 1, err
    assert want in err
    assert not out.exists()


def test_generate_refuses_a_classifier_and_classify_a_language_model(capsys, model_dir, data, tmp_path):
    out = tmp_path / "clf"
    finetune(*data, model=str(model_dir), out_dir=out, method="probe", epochs=1, progress=False)
    code, stdout, err = run_main(capsys, "generate", "--model", str(out), "--prompt", "Hello")
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "is a classifier" in err
    code, stdout, err = run_main(capsys, "classify", "--model", str(model_dir), "--sentence", "Hello")
    assert code == 2 and stdout == "" and err.count("\n") == 1 and "is a language model, not a classifier" in err


def test_resume_and_overwrite_from_the_command_line(capsys, model_dir, data, tmp_path):
    out = tmp_path / "clf"
    common = ["finetune", "--data", str(data[0]), "--out", str(out), "--no-progress"]
    assert run_main(capsys, *common, "--model", str(model_dir), "--epochs", "1", "--method", "probe")[0] == 0
    code, _, err = run_main(capsys, *common, "--resume", "--epochs", "2", "--lr", "0.5")
    assert code == 2 and "--lr" in err and err.count("\n") == 1
    code, stdout, _ = run_main(capsys, *common, "--resume", "--epochs", "2")
    assert code == 0 and "probe" in stdout and "for 2 epochs" in stdout
    assert json.loads((out / "trainer_state.json").read_text())["history"]["epoch"] == [1, 2]
    code, stdout, _ = run_main(capsys, *common, "--model", str(model_dir), "--epochs", "1", "--overwrite")
    assert code == 0 and "full" in stdout
    assert json.loads((out / "trainer_state.json").read_text())["history"]["epoch"] == [1]


# ---- the trainer's kit: the shared checked trainer state, the run lock, the folder rule ---------------------
def _wrong_exp_avg_shape(tensors):
    key = next(k for k in tensors if k.startswith("optimizer.") and k.endswith(".exp_avg"))
    tensors[key] = torch.zeros(*tensors[key].shape, 2)


def _param_listed_twice(meta):
    params = meta["optimizer"]["param_groups"][0]["params"]
    params[1] = params[0]


def _step_as_text(meta):
    meta["step"] = str(meta["step"])


@pytest.mark.parametrize("tamper, want", [
    (dict(change_tensors=_wrong_exp_avg_shape), "exp_avg of parameter"),
    (dict(change_meta=_param_listed_twice), "lists other parameters"),
    (dict(change_meta=_step_as_text), "step is '1', not an integer"),
    (dict(change_meta=lambda m: m["history"]["train_loss"].__setitem__(0, "low")), "training loss"),
])
def test_a_tampered_trainer_state_is_one_error_line(capsys, model_dir, data, tmp_path, tamper, want):
    out = tmp_path / "clf"
    finetune(*data, model=str(model_dir), out_dir=out, method="lora", lora_rank=2, epochs=1, progress=False)
    assert json.loads((out / "trainer_state.json").read_text())["trainer"] == "finetune"  # the shared format
    seal_state(out, **tamper)
    with pytest.raises(GptlearnError, match="damaged"):
        finetune(*data, out_dir=out, epochs=2, resume=True, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, stdout, err = run_main(capsys, "finetune", "--data", str(data[0]), "--out", str(out), "--resume",
                                 "--epochs", "2", "--no-progress")
    assert code == 2 and stdout == "" and err.startswith("gptlearn: error: ") and err.count("\n") == 1, err
    assert "is damaged" in err and want in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written


def test_train_refuses_to_resume_a_finetuning_run(model_dir, data, tmp_path):
    from gptlearn.checkpoint import read_state_json

    out = tmp_path / "clf"
    finetune(*data, model=str(model_dir), out_dir=out, method="probe", epochs=1, progress=False)
    with pytest.raises(GptlearnError, match="holds a run of gptlearn 'finetune', not of gptlearn train"):
        read_state_json(out)


def test_two_runs_on_one_out_refuse_each_other(capsys, model_dir, data, tmp_path):
    from gptlearn.checkpoint import run_lock

    out = tmp_path / "clf"
    with run_lock(out):  # what `gptlearn train` or a first `gptlearn finetune` holds while it writes
        code, stdout, err = run_main(capsys, "finetune", "--data", str(data[0]), "--out", str(out),
                                     "--model", str(model_dir), "--method", "probe", "--epochs", "1", "--no-progress")
        assert code == 2 and err.count("\n") == 1 and "another training run" in err and str(out) in err
        assert not out.exists()
    code, _, _ = run_main(capsys, "finetune", "--data", str(data[0]), "--out", str(out), "--model", str(model_dir),
                          "--method", "probe", "--epochs", "1", "--no-progress")
    assert code == 0 and (out / CLASSIFIER_FILE).is_file()
    assert not any(p.name.endswith(".lock") for p in tmp_path.iterdir())  # the lock goes with the run


def test_out_refuses_a_folder_gptlearn_did_not_write(capsys, model_dir, data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    common = ["finetune", "--data", str(data[0]), "--out", str(out), "--model", str(model_dir), "--method", "probe",
              "--epochs", "1", "--no-progress"]
    code, stdout, err = run_main(capsys, *common)
    assert code == 2 and err.count("\n") == 1 and "gptlearn did not write it" in err and "notes.txt" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    code, _, _ = run_main(capsys, *common, "--overwrite")  # keeps them, writes beside them
    assert code == 0 and (out / "notes.txt").read_text() == "my notes" and (out / CLASSIFIER_FILE).is_file()
    manifest = json.loads((out / ".gptlearn-manifest.json").read_text())
    assert manifest["kind"] == "run" and "notes.txt" not in manifest["files"]
    assert {"classifier.json", "trainer_state.json", "model.safetensors"} <= set(manifest["files"])
