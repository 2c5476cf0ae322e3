"""Every setting of a run checked in one place, before any work; a resumed run keeps its
settings (or names the ones that differ); and sizes that cannot fit are refused before allocating."""
from __future__ import annotations

import math
import os
import re
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from train_kit import CLI_MODEL, _quiet_and_single_threaded, text_file  # noqa: F401 (fixtures)
from train_kit import one_line as _one_line
from train_kit import run_cli as _cli

import gptlearn.train as gtrain
from gptlearn import GPT, GPTConfig
from gptlearn.config import PRESETS
from gptlearn.errors import GptlearnError
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import RESUME_MAY_CHANGE, TrainConfig, read_trainer_state, train


# ---- every field has a rule, and the rules hold whatever the value -------------------------------------------
def test_every_field_has_one_rule():
    ruled = [name for names, _, _ in gtrain._RULES for name in names]
    assert sorted(ruled) == sorted(f.name for f in fields(TrainConfig))  # each once, none missing
    TrainConfig().validate()  # the defaults pass


def _allowed(name: str, v) -> bool:
    """The contract of each field, stated again independently of train.py's table."""
    def number(x, lo=-math.inf, hi=math.inf):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi

    def integer(x, lo, hi=10**8):  # the upper bounds keep a run from asking for a loop that never ends
        return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi

    path = isinstance(v, (str, os.PathLike)) and str(v).strip() != "" and "\0" not in str(v)
    return {
        "steps": integer(v, 1), "batch_size": integer(v, 1, math.inf), "grad_accum": integer(v, 1, 4096),
        "eval_every": integer(v, 1), "eval_iters": integer(v, 1, 10_000),
        "block_size": v is None or integer(v, 1, math.inf),
        "save_every": v is None or integer(v, 1), "warmup": integer(v, 0), "sample_tokens": integer(v, 0, 100_000),
        "seed": integer(v, 0, 2**32 - 1),
        "lr": number(v) and v > 0, "min_lr": v is None or (number(v, 0) and v <= 1e-3),  # at most lr (1e-3)
        "weight_decay": number(v, 0), "grad_clip": number(v, 0), "max_days": number(v) and v > 0,
        "betas": isinstance(v, (tuple, list)) and len(v) == 2 and all(number(b, 0) and b < 1 for b in v),
        "repeat_frac": number(v, 0, 1), "induction_frac": number(v, 0, 1), "val_fraction": number(v, 0) and v < 1,
        "pos_init": v in ("normal", "sinusoidal"), "compile": isinstance(v, bool), "progress": isinstance(v, bool),
        "resume": v is False, "overwrite": v is False,  # True needs out_dir, which is None here
        "sample_prompt": isinstance(v, str), "init": v is None or path, "out_dir": v is None or path,
        "tokenizer": v is None or v in ("gpt2", "char") or (isinstance(v, str) and re.fullmatch(r"bpe:[0-9]+", v)
                                                             is not None and int(v[4:]) >= 257),
        "device": v is None or v == "auto" or (isinstance(v, str) and re.fullmatch(r"(cpu|cuda|mps)(:(0|[1-9][0-9]*))?",
                                                                                 v) is not None),
    }[name]


VALUES = st.one_of(
    st.integers(-3, 3), st.integers(2**31, 2**70), st.sampled_from([4096, 4097, 10_000, 10_001, 100_000, 100_001,
                                                                     2**20, 2**20 + 1, 10**8, 10**8 + 1]),
    st.integers(max_value=-(2**40)), st.floats(allow_nan=True),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.0, float("inf"), float("-inf"), float("nan"), 1e-3, 2e-3]),
    st.booleans(), st.none(), st.text(max_size=6),
    st.sampled_from(["gpt2", "char", "bpe:300", "bpe:12", "bpe:x", "bpe:", "cpu", "cuda:0", "meta", "auto", "mps",
                     "normal", "sinusoidal", "sine", "", " ", "a\0b", "runs/x", "cuda:", "bpe:999999999"]),
    st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True)), st.lists(st.integers(), max_size=3),
    st.builds(object), st.binary(max_size=3),
)


@settings(max_examples=600, deadline=None)
@given(name=st.sampled_from([f.name for f in fields(TrainConfig)]), value=VALUES)
def test_any_value_of_any_field_is_accepted_only_if_allowed_else_one_line(name, value):
    """Whatever the value (a huge seed, NaN, a string, an object), validate() accepts exactly what the field
    allows, and refuses the rest with a GptlearnError of one line that names the field, never another error."""
    try:
        TrainConfig(**{name: value}).validate()
        accepted = True
    except GptlearnError as e:
        accepted = False
        assert str(e).startswith(name) and "\n" not in str(e), str(e)
    folder = isinstance(value, str) and "\0" not in value and os.path.isdir(os.path.expanduser(value))
    if name == "tokenizer" and folder:
        return  # a folder holding tokenizer files is a tokenizer too
    assert accepted == _allowed(name, value), (name, value)


# ---- the command line: one line, exit 2, nothing read or written ----------------------------------------------
BAD_FLAGS = [  # (flags, what the line must say)
    (["--lr=-1e-3"], "lr must be a positive number"),  # argparse reads a bare -1e-3 as a flag
    (["--lr", "nan"], "lr must be a positive number"),
    (["--lr", "inf"], "lr must be a positive number"),
    (["--lr", "0"], "lr must be a positive number"),
    (["--min-lr", "-1"], "min_lr must be a number, 0 or more"),
    (["--min-lr", "nan"], "min_lr must be a number, 0 or more"),
    (["--min-lr", "0.5", "--lr", "0.1"], "min_lr must be at most lr"),
    (["--warmup", "-5"], "warmup must be an integer, 0 or more"),
    (["--weight-decay", "-0.1"], "weight_decay must be a number, 0 or more"),
    (["--weight-decay", "nan"], "weight_decay must be a number, 0 or more"),
    (["--repeat-frac", "1.5"], "repeat_frac must be a fraction from 0 to 1"),
    (["--repeat-frac", "nan"], "repeat_frac must be a fraction from 0 to 1"),
    (["--induction-frac", "-0.1"], "induction_frac must be a fraction from 0 to 1"),
    (["--seed", "-1"], "seed must be an integer from 0 to 2**32 - 1"),
    (["--seed", str(2**64)], "seed must be an integer from 0 to 2**32 - 1"),
    (["--seed", "9" * 40], "seed must be an integer from 0 to 2**32 - 1"),
    (["--steps", "0"], "steps must be a positive integer"),
    (["--batch-size", "0"], "batch_size must be a positive integer"),
    (["--eval-every", "-2"], "eval_every must be a positive integer"),
    (["--eval-iters", "0"], "eval_iters must be a positive integer"),
    (["--grad-accum", "0"], "grad_accum must be a positive integer"),
    (["--block-size", "0"], "block_size must be a positive integer or None"),
    (["--block-size", "500"], "block_size 500 is longer than the model's context (128 tokens)"),
    (["--device", "toaster"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["--device", "meta"], "device must be auto, cpu, cuda, cuda:N or mps"),
    (["--tokenizer", "bpe:12"], "tokenizer must be gpt2, bpe:N"),
    (["--tokenizer", "bpe:lots"], "tokenizer must be gpt2, bpe:N"),
    (["--tokenizer", "/no/such/folder"], "tokenizer must be gpt2, bpe:N"),
    (["--resume", "--overwrite"], "resume continues the run in out_dir and overwrite replaces it"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_before_any_work(text_file, tmp_path, capsys, monkeypatch, flags, message):
    def no_work(*a, **k):
        raise AssertionError("work began before the settings were checked")

    monkeypatch.setattr(GPT, "__init__", no_work)  # no model is built
    monkeypatch.setattr(gtrain.TokenDataset, "__init__", no_work)  # no text is tokenized
    model = CLI_MODEL
    if "--block-size" in flags:  # drop the model's own --block-size 16
        i = model.index("--block-size")
        model = model[:i] + model[i + 2:]
    code, err = _cli(capsys, "--data", text_file, "--out", tmp_path / "run", *model, "--steps", "3", *flags)
    assert code == 2 and message in _one_line(err)
    assert not (tmp_path / "run").exists() or "--block-size" in flags  # checked before the folder is made


def test_a_block_longer_than_the_context_is_refused_not_stretched(text_file, tmp_path):
    tok = CharTokenizer.from_text(text_file.read_text())
    config = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)
    for model in (config, GPT(config)):
        with pytest.raises(GptlearnError, match=r"block_size 32 is longer than the model's context \(16 tokens\)"):
            train(model, text_file, tokenizer=tok, block_size=32, steps=1, progress=False)


# ---- --resume: the run's settings, or a line naming what differs -----------------------------------------
@pytest.fixture
def finished(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "4", "--eval-every", "2",
                     "--lr", "3e-3", "--warmup", "2", "--seed", "7")
    assert code == 0, err
    return out


DIFFERENT = [  # flags that change which steps a resumed run takes -> what the line names
    (["--lr", "0.01"], "lr 0.01 (the run's: 0.003)"),
    (["--batch-size", "4"], "batch_size 4 (the run's: 2)"),
    (["--seed", "8"], "seed 8 (the run's: 7)"),
    (["--block-size", "8"], "block_size 8 (the run's: 16)"),
    (["--warmup", "3"], "warmup 3 (the run's: 2)"),
    (["--weight-decay", "0"], "weight_decay 0.0 (the run's: 0.1)"),
    (["--min-lr", "0"], "min_lr 0.0 (the run's: 0.00030000000000000003)"),
    (["--grad-accum", "2"], "grad_accum 2 (the run's: 1)"),
    (["--repeat-frac", "0.5"], "repeat_frac 0.5 (the run's: 0.0)"),
    (["--pos-init", "sinusoidal"], "pos_init 'sinusoidal' (the run's: 'normal')"),
    (["--tokenizer", "gpt2"], "tokenizer 'gpt2' (the run's: 'char')"),
    (["--preset", "small"], "n_embd 384 (the run's: 16)"),
    (["--config", '{"n_layer": 3}'], "n_layer 3 (the run's: 1)"),
]


@pytest.mark.parametrize("flags, message", DIFFERENT, ids=[" ".join(f) for f, _ in DIFFERENT])
def test_resume_names_a_setting_that_differs(finished, text_file, capsys, flags, message):
    before = read_trainer_state(finished)["step"]
    code, err = _cli(capsys, "--data", text_file, "--out", finished, "--resume", "--steps", "6", *flags)
    line = _one_line(err)
    assert code == 2 and message in line and "may change only steps, eval_every" in line, line
    assert read_trainer_state(finished)["step"] == before


def test_resume_refuses_other_data(finished, tmp_path, capsys):
    other = tmp_path / "other.txt"
    other.write_text("To be, or not to be, that is the question. " * 400)
    code, err = _cli(capsys, "--data", other, "--out", finished, "--resume", "--steps", "6")
    assert code == 2 and "its training tokens differ from the run's" in _one_line(err)


def test_resume_keeps_the_run_settings_and_may_change_the_length_and_reports(finished, text_file, capsys):
    """The flags left out keep the run's values (README: `--resume --steps 600`), and the ones in
    RESUME_MAY_CHANGE may differ."""
    assert {"steps", "eval_every", "eval_iters", "device", "progress"} <= set(RESUME_MAY_CHANGE)
    code, err = _cli(capsys, "--data", text_file, "--out", finished, "--resume", "--steps", "6", "--eval-every",
                     "3", "--eval-iters", "2", "--device", "cpu", "--lr", "3e-3")  # the run's own lr may be said
    assert code == 0, err
    state = read_trainer_state(finished)
    assert state["step"] == 6 and state["settings"]["lr"] == 3e-3 and state["settings"]["seed"] == 7
    assert state["settings"]["steps"] == 6 and state["settings"]["eval_every"] == 3
    run = TrainConfig.from_run(finished)
    assert run.resume and run.lr == 3e-3 and run.batch_size == 2 and run.betas == (0.9, 0.95)
    with pytest.raises(GptlearnError, match=r"warmup 100 \(the run's: 2\)"):  # the API compares every setting
        train(None, text_file, out_dir=finished, resume=True, steps=8, lr=3e-3, seed=7, batch_size=2, block_size=16)
    history = train(None, text_file, run.replace(steps=8, progress=False))
    assert history.step[-1] == 8


# ---- class 6: sizes that cannot fit are refused before allocating ---------------------------------------
@settings(max_examples=30, deadline=None)
@given(n_layer=st.integers(1, 3), n_head=st.sampled_from([1, 2, 4]), head=st.integers(1, 8),
       vocab=st.integers(1, 300), positions=st.integers(1, 40), inner=st.one_of(st.none(), st.integers(1, 50)))
def test_num_parameters_counts_what_gpt_builds(n_layer, n_head, head, vocab, positions, inner):
    config = GPTConfig(vocab_size=vocab, n_positions=positions, n_embd=n_head * head, n_layer=n_layer,
                       n_head=n_head, n_inner=inner)
    assert config.num_parameters() == GPT(config).num_parameters()


def test_estimate_bytes_adds_up():
    gpt2 = PRESETS["gpt2"]
    assert gpt2.num_parameters() == 124_439_808 and gpt2.estimate_bytes() == 4 * 124_439_808
    assert gpt2.estimate_bytes(bytes_per_value=2) == 2 * 124_439_808
    train_weights = gpt2.estimate_bytes(training=True, batch_size=0)
    assert train_weights == 16 * 124_439_808  # weights, gradients, two AdamW moments
    one = gpt2.estimate_bytes(training=True, batch_size=1) - train_weights
    assert one == 4 * 1024 * (12 * (8 * 768 + 2 * 3072) + 2 * 768)  # a row of 1,024 tokens
    assert gpt2.estimate_bytes(training=True, batch_size=8) - train_weights == 8 * one
    assert gpt2.estimate_bytes(training=True, batch_size=8, activation_bytes=2) - train_weights == 4 * one
    huge = GPTConfig(n_layer=1024, n_embd=65536, n_head=16).estimate_bytes(training=True, batch_size=10**8)
    assert isinstance(huge, int) and huge > 10**18  # Python integers: no overflow


ABSURD = [
    (["--batch-size", "100000000"], "the activations of 100,000,000 × 128 tokens"),
    (["--config", '{"n_layer": 1000, "n_embd": 4096, "n_head": 16}'], "needs at least"),  # within GPTConfig's LIMITS
    (["--config", '{"n_embd": 65536, "n_head": 1}'], "needs at least"),
    (["--config", '{"n_positions": 131072}', "--block-size", "131072", "--batch-size", "4096"], "× 131,072 tokens"),
]
BEYOND_LIMITS = [('{"n_layer": 200000}', "n_layer must be a positive integer, at most 1,024"),
                 ('{"n_embd": 1048576, "n_head": 1}', "n_embd must be a positive integer, at most 65,536"),
                 ('{"n_positions": 100000000}', "n_positions must be a positive integer, at most 131,072"),
                 ('{"n_inner": 10000000000}', "n_inner must be None or a positive integer, at most 262,144")]


@pytest.mark.parametrize("config, message", BEYOND_LIMITS)
def test_a_shape_beyond_the_limits_is_one_line_naming_it(text_file, tmp_path, capsys, monkeypatch, config, message):
    def no_model(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(GPT, "__init__", no_model)
    code, err = _cli(capsys, "--data", text_file, "--out", tmp_path / "run", "--preset", "tiny", "--tokenizer", "char",
                     "--steps", "2", "--no-progress", "--config", config)
    line = _one_line(err)
    assert code == 2 and message in line, line


@pytest.mark.parametrize("flags, message", ABSURD, ids=[" ".join(f) for f, _ in ABSURD])
def test_an_absurd_size_is_refused_before_allocating(text_file, tmp_path, capsys, monkeypatch, flags, message):
    def no_model(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(GPT, "__init__", no_model)
    code, err = _cli(capsys, "--data", text_file, "--out", tmp_path / "run", "--preset", "tiny", "--tokenizer", "char",
                     "--steps", "2", "--no-progress", *flags)
    line = _one_line(err)
    assert code == 2 and "GiB free; lower --batch-size" in line and message in line, line


@pytest.mark.parametrize("how", ["--init", "--resume"])
def test_an_absurd_config_json_is_refused_before_the_model_is_built(finished, text_file, tmp_path, capsys, monkeypatch,
                                                                   how):
    """The issue's case: a model folder (to fine-tune, or a run to resume) whose config.json says
    n_layer 1000 at width 4096 (2e11 parameters, within GPTConfig's LIMITS) is refused from its numbers
    alone, without building a single layer."""
    import json

    config = json.loads((finished / "config.json").read_text())
    (finished / "config.json").write_text(json.dumps({**config, "n_layer": 1000, "n_embd": 4096, "n_head": 16}))

    def no_model(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(GPT, "__init__", no_model)
    where = ["--init", finished, "--out", tmp_path / "tuned"] if how == "--init" else ["--out", finished, "--resume"]
    code, err = _cli(capsys, "--data", text_file, *where, "--steps", "6", "--no-progress")
    line = _one_line(err)
    assert code == 2 and "needs at least" in line and "GiB free; lower --batch-size" in line, line


def test_a_given_model_with_an_absurd_batch_is_refused_before_the_optimizer(text_file, monkeypatch):
    tok = CharTokenizer.from_text(text_file.read_text())
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16))
    model.tokenizer = tok
    monkeypatch.setattr(gtrain, "make_optimizer", lambda *a, **k: pytest.fail("an optimizer was made"))
    with pytest.raises(GptlearnError, match=r"needs at least .* GiB .* 10,000,000,000 × 16 tokens"):
        train(model, text_file, batch_size=10**10, steps=1, progress=False)
