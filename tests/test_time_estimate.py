"""A run that cannot finish is refused before any work: the FLOPs estimate counts the model's matrix
products (checked against torch's own count), the device's speed is an upper bound, and every trainer
(``train``, ``train_embeddings``, ``finetune``, and their commands) refuses a run estimated to take
longer than ``max_days`` in one line, writing nothing, while realistic runs go ahead."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from train_kit import FAST, _quiet_and_single_threaded, text_file  # noqa: F401 (fixtures)
from train_kit import one_line, run_cli, seal_state

import gptlearn.devices as devices
import gptlearn.train as gtrain
from gptlearn import GPT, GPTConfig, GptlearnError, cli
from gptlearn.config import PRESETS
from gptlearn.embeddings import Embedder
from gptlearn.errors import InvalidValueError
from gptlearn.train import TrainConfig, run_flops, train


def _counted(fn) -> int:
    """The floating-point operations torch's FlopCounterMode counts while ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _listing(folder: Path) -> dict[str, bytes]:
    """Every entry under ``folder`` (hidden ones too) with its bytes: what 'nothing written' compares."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


# ---- the estimate counts what the model computes -------------------------------------------------------------
SHAPES = [dict(n_layer=1, n_head=1, n_embd=8, n_positions=8, vocab_size=11),
          dict(n_layer=3, n_head=4, n_embd=48, n_positions=32, vocab_size=97),
          dict(n_layer=2, n_head=2, n_embd=24, n_positions=20, vocab_size=50, n_inner=40)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"L{s['n_layer']}C{s['n_embd']}")
@pytest.mark.parametrize("batch, seq", [(1, None), (3, 5)])
def test_estimate_flops_equals_torchs_count_of_the_matrix_products(shape, batch, seq):
    """Forward with the loss, forward and backward, and hidden states alone: GPTConfig.estimate_flops
    against FlopCounterMode's independent count on the plain model (every product a torch op)."""
    config = GPTConfig(**shape)
    model = GPT(config, implementation="plain")
    T = seq or config.n_positions
    x = torch.randint(0, config.vocab_size, (batch, T))

    def train_step():
        model(x, targets=x).backward()

    forward = _counted(lambda: model(x, targets=x))
    assert forward == config.estimate_flops(batch_size=batch, seq_len=seq)
    assert _counted(train_step) == config.estimate_flops(batch_size=batch, seq_len=seq, training=True)
    with torch.no_grad():
        hidden = _counted(lambda: model.hidden_states(x))
    assert hidden == config.estimate_flops(batch_size=batch, seq_len=seq, logits=False)
    assert forward - hidden == 2 * batch * T * config.n_embd * config.vocab_size  # the unembedding


def test_the_estimate_is_nanogpts_6n_plus_attention_for_gpt2():
    """nanoGPT's estimate_mfu (PaLM's appendix B): 6 N + 12 L T C a token, N the matrices' parameters."""
    gpt2 = PRESETS["gpt2"]
    L, C, T, V = gpt2.n_layer, gpt2.n_embd, gpt2.n_positions, gpt2.vocab_size
    matrices = L * (4 * C * C + 2 * C * gpt2.d_mlp) + V * C  # attention, MLP and the (tied) unembedding
    assert gpt2.estimate_flops(training=True) == T * (6 * matrices + 12 * L * T * C)
    assert isinstance(GPTConfig(n_layer=1024, n_embd=65536, n_head=16).estimate_flops(batch_size=10**9), int)


def test_an_embedders_estimate_bounds_what_it_computes(tiny_config):
    """Rows of one length: exactly the count; rows of mixed lengths (padded into one batch): at most it."""
    tiny_model = GPT(tiny_config, implementation="plain")  # every product a torch op FlopCounterMode sees
    embedder = Embedder(tiny_model, pooling="mean")
    same = [[5, 6, 7, 8]] * 3
    with torch.no_grad():
        assert _counted(lambda: embedder.embed_tokens(same)) == embedder.estimate_flops(same)
        mixed = [[1], [2, 3, 4, 5, 6, 7], [8, 9, 10]]
        assert 0 < embedder.estimate_flops(mixed) <= _counted(lambda: embedder.embed_tokens(mixed))
    early = Embedder(tiny_model, pooling="mean", layer=0)  # one block of two
    assert early.estimate_flops(same) == tiny_model.config.replace(n_layer=1).estimate_flops(
        batch_size=3, seq_len=4, logits=False)


# ---- the device's speed ----------------------------------------------------------------------------------------
def test_achievable_flops_is_measured_once_on_the_cpu_and_a_bound_elsewhere(monkeypatch):
    monkeypatch.setattr(devices, "_measured", {})
    cpu = devices.achievable_flops("cpu")
    assert math.isfinite(cpu) and cpu > 0
    monkeypatch.setattr(torch, "mm", lambda *a, **k: pytest.fail("measured twice"))
    assert devices.achievable_flops(torch.device("cpu")) == cpu  # cached for the process
    threads = torch.get_num_threads()
    try:  # measured on one thread, scaled by the threads torch uses (perfect sharing: an upper bound)
        torch.set_num_threads(threads + 1)
        assert devices.achievable_flops("cpu") == pytest.approx(cpu * (threads + 1) / threads)
    finally:
        torch.set_num_threads(threads)
    assert devices.achievable_flops("cuda:0") == devices.FLOPS_UPPER_BOUND["cuda"]  # no GPU touched
    assert devices.achievable_flops("mps") == devices.FLOPS_UPPER_BOUND["mps"]


def test_check_duration_refuses_only_past_the_limit(monkeypatch):
    monkeypatch.setattr(devices, "achievable_flops", lambda dev: 1e12)
    day = 1e12 * 86400
    devices.check_duration(30 * day, "cpu", max_days=30, what="w", advice="a")  # just within
    with pytest.raises(InvalidValueError, match=r"^w would take at least 31 days on cpu \(2\.68e\+18 floating-point "
                                                r"operations at 1\.0e\+12 a second.*longer than --max-days 30; a, or "
                                                r"raise --max-days"):
        devices.check_duration(31 * day, "cpu", max_days=30, what="w", advice="a")
    devices.check_duration(31 * day, "cpu", max_days=31.5, what="w", advice="a")
    with pytest.raises(InvalidValueError, match=r"at least 1\.0e\+20 days"):
        devices.check_duration(1e20 * day, "cpu", max_days=30, what="w", advice="a")
    with pytest.raises(InvalidValueError, match=r"at least about 10\^38[0-9] days on cpu \(about 10\^400 floating"):
        devices.check_duration(10**400, "cpu", max_days=30, what="w", advice="a")  # past a float's range


# ---- gptlearn train ---------------------------------------------------------------------------------------------
ABSURD = [  # each at least 100 times the 30-day limit even at 10 times this CPU's probed speed
    ["--preset", "tiny", "--tokenizer", "char", "--steps", "100000000", "--grad-accum", "4096"],
    ["--preset", "tiny", "--tokenizer", "char", "--steps", "100000000", "--eval-every", "1", "--eval-iters", "10000"],
    ["--preset", "gpt2", "--steps", "100000000"],  # GPT-2 124M on batches of 32 x 1024 tokens, on the CPU
]


@pytest.mark.parametrize("flags", ABSURD, ids=lambda f: " ".join(f[1:2] + f[4:]))
def test_a_run_that_cannot_finish_is_one_line_and_writes_nothing(text_file, tmp_path, capsys, monkeypatch, flags):
    monkeypatch.setattr(GPT, "__init__", lambda *a, **k: pytest.fail("a model was built"))
    monkeypatch.setattr(gtrain, "load_text", lambda *a, **k: pytest.fail("the text was read"))
    before = _listing(tmp_path)
    code, err = run_cli(capsys, "--data", text_file, "--out", tmp_path / "run", "--device", "cpu", "--no-progress",
                        *flags)
    line = one_line(err)
    assert code == 2 and "would take at least" in line and "days on cpu" in line and "raise --max-days" in line, line
    assert re.search(r"at least [0-9,]{4,} days|at least [0-9.]+e\+[0-9]+ days", line), line  # >= 1,000 days
    assert _listing(tmp_path) == before  # no folder, no lock, nothing


def test_the_api_refuses_a_given_model_before_the_optimizer(text_file, tmp_path, monkeypatch):
    model = GPT(GPTConfig(vocab_size=100, n_layer=2, n_head=4, n_embd=64, n_positions=128))
    monkeypatch.setattr(gtrain, "make_optimizer", lambda *a, **k: pytest.fail("an optimizer was made"))
    with pytest.raises(GptlearnError, match=r"this run \(100,000,000 steps of 4,096 × 32 × 128 tokens .* "
                                            r"vocab_size=100\) would take at least"):
        train(model, text_file, out_dir=tmp_path / "run", steps=10**8, grad_accum=4096, device="cpu", progress=False)
    assert not (tmp_path / "run").exists()


def test_max_days_lets_a_long_run_through_and_refuses_a_short_one(text_file, tmp_path):
    """max_days is the limit: a 3-step run passes at the default and is refused at a limit of a nanosecond
    (any positive estimate at any speed this CPU can have is longer)."""
    history = train(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16), text_file, tokenizer="char", steps=3,
                    device="cpu", **FAST)
    assert history.step == [1, 2, 3]
    with pytest.raises(GptlearnError, match=r"longer than --max-days 1e-14;"):
        train(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16), text_file, tokenizer="char", steps=3,
              device="cpu", out_dir=tmp_path / "run", max_days=1e-14, **FAST)
    assert not (tmp_path / "run").exists()
    with pytest.raises(GptlearnError, match=r"max_days must be a positive number of days"):
        train(None, text_file, max_days=0)


def test_a_resumed_run_is_estimated_from_its_own_step_and_left_as_it_was(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    train(GPTConfig(n_layer=2, n_head=4, n_embd=64, n_positions=64), text_file, tokenizer="char", steps=2,
          eval_every=2, out_dir=out, device="cpu", **{**FAST, "batch_size": 32, "block_size": 64})
    before = _listing(out)
    code, err = run_cli(capsys, "--data", text_file, "--out", out, "--resume", "--steps", "100000000",
                        "--eval-every", "1", "--eval-iters", "10000", "--no-progress")
    line = one_line(err)
    assert code == 2 and "99,999,998 steps of 1 × 32 × 64 tokens and 99,999,998 evaluations of 10,000 batches" in line
    assert _listing(out) == before


def test_a_checkpoint_cannot_lift_the_limit(text_file, tmp_path, capsys):
    """max_days written into a trainer state (sha256 recomputed, as a forger would) is not taken on --resume."""
    out = tmp_path / "run"
    train(GPTConfig(n_layer=2, n_head=4, n_embd=64, n_positions=64), text_file, tokenizer="char", steps=2,
          eval_every=2, out_dir=out, device="cpu", max_days=100.0, **{**FAST, "batch_size": 32, "block_size": 64})
    seal_state(out, change_meta=lambda meta: meta["settings"].__setitem__("max_days", 1e300))
    assert TrainConfig.from_run(out).max_days == TrainConfig().max_days
    code, err = run_cli(capsys, "--data", text_file, "--out", out, "--resume", "--steps", "100000000",
                        "--eval-every", "1", "--eval-iters", "10000", "--no-progress")
    assert code == 2 and "longer than --max-days 30;" in one_line(err)


def test_run_flops_counts_steps_evaluations_checkpoints_and_samples():
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=100)
    args = TrainConfig(steps=10, eval_every=4, eval_iters=3, grad_accum=2, batch_size=5, sample_tokens=7)
    step = config.estimate_flops(batch_size=5, seq_len=64, training=True)
    batch = config.estimate_flops(batch_size=5, seq_len=64)
    token = config.estimate_flops(batch_size=1, seq_len=1)
    evals = 3  # at steps 4, 8 and 10 (the last); each also checkpoints
    assert run_flops(config, args, 64) == 10 * 2 * step + evals * (3 * batch + batch + 7 * token)
    assert run_flops(config, args, 64, start=8) == 2 * 2 * step + 1 * (3 * batch + batch + 7 * token)
    assert run_flops(config, args, 64, start=10) == 0
    saves = args.replace(save_every=1)
    assert run_flops(config, saves, 64) - run_flops(config, args, 64) == (10 - 3) * batch


REALISTIC = [  # (model, settings, device): runs people make, none refused
    # nanoGPT's GPT-2 124M reproduction: 600k steps of 12 x 1024 tokens x 40 micro-batches, on one GPU
    (PRESETS["gpt2"], dict(steps=600_000, batch_size=12, grad_accum=40, eval_every=2000, eval_iters=200), "cuda"),
    # the book's chapters and scripts/train_english.py-sized runs on a laptop CPU
    (PRESETS["mini"].replace(vocab_size=8192), dict(steps=3000, batch_size=32, eval_every=250, eval_iters=20), "cpu"),
    (PRESETS["tiny"].replace(vocab_size=65), dict(steps=2000, batch_size=32, eval_every=100), "cpu"),
    # scripts/train_english.py's longest phase
    (GPTConfig(n_layer=4, n_head=6, n_embd=192, n_positions=256, vocab_size=8192),
     dict(steps=2500, batch_size=8, block_size=256, eval_every=100, eval_iters=10), "cpu"),
]


@pytest.mark.parametrize("config, settings, dev", REALISTIC, ids=["gpt2-600k-cuda", "mini-3k-cpu", "tiny-2k-cpu",
                                                                      "train-english-cpu"])
def test_realistic_runs_are_not_refused(config, settings, dev):
    args = TrainConfig(**settings)
    gtrain._check_time(config, args, config.n_positions, torch.device(dev))
    days = run_flops(config, args, config.n_positions) / devices.achievable_flops(dev) / 86400
    if dev == "cuda":  # the bound, not a measurement: GPT-2's reproduction takes at least about half a day
        assert 0.3 < days < 1


# ---- gptlearn finetune ----------------------------------------------------------------------------------------
TRAIN = "".join(f"{s}\t{label}\n" for s, label in [("the cat purred", "animal"), ("a dog barked", "animal"),
                                                     ("hot soup", "food"), ("cheese on toast", "food")])


@pytest.fixture
def classifier_data(tmp_path):
    path = tmp_path / "data" / "train.tsv"
    path.parent.mkdir()
    path.write_text("sentence\tlabel\n" + TRAIN, encoding="utf-8")
    return path


@pytest.fixture
def small_model(tmp_path):
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64))


def test_finetuning_that_cannot_finish_is_refused_before_the_model_changes(classifier_data, small_model, tmp_path):
    from gptlearn.finetune import finetune
    from gptlearn.lora import lora_layers

    before = {n: p.detach().clone() for n, p in small_model.named_parameters()}
    with pytest.raises(GptlearnError, match=r"this fine-tuning \(1,000,000,000,000,000 epochs of 4 sentences, "
                                            r".* method lora.*would take at least"):
        finetune(classifier_data, model=small_model, lora_rank=4, epochs=10**15, out_dir=tmp_path / "clf",
                 device="cpu", progress=False)
    with pytest.raises(GptlearnError, match=r"this fine-tuning \(10\^400 or more epochs .* at least about 10\^"):
        finetune(classifier_data, model=small_model, epochs=10**400, device="cpu", progress=False)  # no overflow
    assert not lora_layers(small_model) and not (tmp_path / "clf").exists()
    assert all(torch.equal(p, before[n]) for n, p in small_model.named_parameters())
    result = finetune(classifier_data, model=small_model, method="probe", epochs=2, device="cpu", progress=False)
    assert result.epoch == [1, 2]  # a realistic run goes ahead


def test_gptlearn_finetune_refuses_absurd_epochs_in_one_line(classifier_data, small_model, tmp_path, capsys):
    folder = small_model.save_pretrained(tmp_path / "model")
    before = _listing(tmp_path)
    code = cli.main(["finetune", "--data", str(classifier_data), "--model", str(folder), "--out",
                     str(tmp_path / "clf"), "--epochs", str(10**15), "--device", "cpu", "--no-progress"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "method full" in line and "raise --max-days" in line, line
    assert _listing(tmp_path) == before
    code = cli.main(["finetune", "--data", str(classifier_data), "--model", str(folder), "--out",
                     str(tmp_path / "clf"), "--epochs", "1", "--max-days", "0", "--no-progress"])
    assert code == 2 and "--max-days must be a positive number of days" in one_line(capsys.readouterr().err)


# ---- gptlearn train-embeddings ------------------------------------------------------------------------------
def test_embedding_training_past_max_days_is_refused_before_any_work(small_model, tmp_path, capsys):
    """At a limit of a nanosecond every run is too long: refused once the sentences are tokenized, before
    the first evaluation or step, in the API and on the command line, writing nothing."""
    from gptlearn.embed_train import train_embeddings

    pairs = tmp_path / "data" / "pairs.tsv"
    pairs.parent.mkdir()
    rows = [("A cat sits.", "A cat is sitting."), ("A dog runs.", "Stocks fell."), ("It rains.", "Red car.")]
    pairs.write_text("id\tsentence1\tsentence2\tlabel\n" + "".join(
        f"p{i}\t{a}\t{b}\t{i % 2}\n" for i, (a, b) in enumerate(rows)))
    folder = small_model.save_pretrained(tmp_path / "model")
    before = _listing(tmp_path)
    with pytest.raises(GptlearnError, match=r"this run \(2 epochs of 6 sentences, .* tokens, through a GPT with "
                                            r"n_layer=2, n_embd=32\) would take at least .* longer than --max-days "
                                            r"1e-14; lower --epochs"):
        train_embeddings(small_model, pairs, dev_pairs=pairs, out_dir=tmp_path / "emb", batch_size=2,
                         device="cpu", max_days=1e-14)
    code = cli.main(["train-embeddings", "--pairs", str(pairs), "--model", str(folder), "--out", str(tmp_path / "emb"),
                     "--batch-size", "2", "--device", "cpu", "--max-days", "1e-14"])
    assert code == 2 and "raise --max-days" in one_line(capsys.readouterr().err)
    assert _listing(tmp_path) == before
    history = train_embeddings(small_model, pairs, batch_size=2, epochs=1, device="cpu")  # the default limit
    assert history.step == [1, 2]
