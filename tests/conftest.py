"""Shared fixtures: builders of tiny random models (gptlearn and transformers), the data folder
(``gptlearn.data.data_folder``: GPTLEARN_DATA_DIR, default ../shared/data), the built book, a headless
Chromium, the reused-memory pool."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network (read when huggingface_hub loads)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from data_kit import DATA_DIR_ENV, data_folder, shared_data  # noqa: E402 (imports gptlearn: after the settings above)

REPO = Path(__file__).resolve().parents[1]
if data_folder() is not None:  # the CLI and scripts the tests start find the same folder
    os.environ.setdefault(DATA_DIR_ENV, str(data_folder()))
HEAVY_ENV = "GPTLEARN_HEAVY_CHECKS"  # "1": run the tests marked heavy (scripts/check_*.sh set it)


def pytest_runtest_setup(item):
    """Tests marked ``heavy`` take many minutes each (a second book build, a fresh venv): CI's time
    limit has no room for them, so they run only when asked for (README, "The book on GPT-2...")."""
    if "heavy" in item.keywords and os.environ.get(HEAVY_ENV) != "1":
        pytest.skip(f"heavy check of many minutes: set {HEAVY_ENV}=1 or run scripts/check_*.sh")

try:  # in CI, property-based tests draw the same cases every run (locally they keep exploring)
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:
    pass


@pytest.fixture
def data_dir() -> Path:
    return shared_data()


# ---- model builders ---------------------------------------------------------------------------
def _random_hf(n_layer: int, n_head: int, n_embd: int, n_positions: int, vocab_size: int, seed: int = 0,
               noise: float = 0.05, **extra):
    """A random transformers GPT2LMHeadModel whose every parameter (biases and LayerNorms too) is
    moved off its initial value by ``noise``, so that every one of them matters."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                                  vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, **extra)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * noise)
    return hf


def _to_gptlearn(hf, *, fast: bool = True):
    """The same weights in gptlearn (eval mode); ``fast=False`` keeps model.py's plain layers."""
    from gptlearn import GPT, GPTConfig
    from gptlearn.pretrained import hf_to_gptlearn

    model = GPT(GPTConfig.from_hf_dict(hf.config.to_dict()), fast=fast).eval()
    model.load_state_dict(hf_to_gptlearn(hf.state_dict()), strict=True)
    return model


def _random_gpt(seed: int = 0, noise: float = 0.05, *, fast: bool = True, **config):
    """A gptlearn GPT (eval mode) with random weights moved off their init by ``noise`` (biases and
    LayerNorms included). ``config`` overrides a 2-layer, 4-head, 32-wide model with a 32-token context
    and a vocabulary of 1,000."""
    from gptlearn import GPT, GPTConfig

    torch.manual_seed(seed)
    cfg = GPTConfig(**{**dict(n_layer=2, n_head=4, n_embd=32, n_positions=32, vocab_size=1000), **config})
    model = GPT(cfg, fast=fast).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model


@pytest.fixture
def random_hf():
    """Builder: ``random_hf(n_layer, n_head, n_embd, n_positions, vocab_size, seed=0, noise=0.05, **extra)``."""
    return _random_hf


@pytest.fixture
def to_gptlearn():
    """Builder: ``to_gptlearn(hf, fast=True)``, a transformers model's weights in a gptlearn GPT."""
    return _to_gptlearn


@pytest.fixture(scope="session")  # a builder, so module-scoped fixtures can use it too
def random_gpt():
    """Builder: ``random_gpt(seed=0, noise=0.05, fast=True, **config)``."""
    return _random_gpt


@pytest.fixture
def tiny_config():
    from gptlearn import GPTConfig

    return GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=50257)


@pytest.fixture
def tiny_model(tiny_config):
    from gptlearn import GPT

    torch.manual_seed(0)
    return GPT(tiny_config).eval()


@pytest.fixture(scope="module")
def hf_and_model():
    """A random GPT2LMHeadModel (vocabulary 1,000) with large weights, so greedy text varies, and the same
    weights in gptlearn."""
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=1000,
                                  bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.generation_config.eos_token_id = None  # never stop early: compare every token
    hf.generation_config.pad_token_id = 0
    return hf, _to_gptlearn(hf)


# ---- the book: one strict build, started in the background as soon as collection shows it is needed ----
# The build (a few minutes of mostly single-threaded notebook execution) overlaps the unit tests, and the
# tests that read the built HTML run last.
_BOOK: dict = {}


def _book_wanted(item) -> bool:
    return "built_book" in getattr(item, "fixturenames", ())


def _start_book_build() -> None:
    if _BOOK:
        return
    (REPO / "_build").mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # the book builds offline (GPT-2 only if already cached)
    log = open(REPO / "_build" / "build.log", "w")
    _BOOK["log"] = log
    _BOOK["proc"] = subprocess.Popen(["jupyter-book", "build", ".", "-W", "-n", "--keep-going"],
                                     cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def _prebuilt() -> bool:
    return os.environ.get("GPTLEARN_BOOK_PREBUILT") == "1" and (REPO / "_build" / "html" / "index.html").is_file()


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(config, items):
    book = [it for it in items if _book_wanted(it)]
    if not book or config.option.collectonly:
        return
    items[:] = [it for it in items if not _book_wanted(it)] + book
    if not _prebuilt() and shutil.which("jupyter-book") is not None:
        _start_book_build()


def pytest_unconfigure(config):
    proc = _BOOK.get("proc")
    if proc is not None and proc.poll() is None:  # the session stopped early (-x, Ctrl-C)
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def built_book() -> Path:
    """_build/html after a strict executed build (``-W -n --keep-going``); ``GPTLEARN_BOOK_PREBUILT=1``
    reuses an existing build as it is. The log goes to _build/build.log."""
    index = REPO / "_build" / "html" / "index.html"
    if _prebuilt():
        return index.parent
    if shutil.which("jupyter-book") is None:
        pytest.fail("jupyter-book is not installed; pip install -r requirements.txt")
    _start_book_build()  # no-op when collection already started it
    try:
        returncode = _BOOK["proc"].wait(timeout=1800)
    except subprocess.TimeoutExpired:
        _BOOK["proc"].kill()
        returncode = _BOOK["proc"].wait()
    _BOOK["log"].close()
    log = (REPO / "_build" / "build.log").read_text(errors="replace")
    sys.path.insert(0, str(REPO / "scripts"))
    from book_times import execution_times, table

    (REPO / "_build" / "execution_times.txt").write_text(table(execution_times(log)) + "\n")
    assert returncode == 0, "the strict book build failed (full log in _build/build.log):\n" + log[-6000:]
    assert index.is_file()
    return index.parent


@pytest.fixture(scope="session")
def browser():
    """One headless Debian chromium for every browser test (Playwright's sync API allows one at a time)."""
    chromium = shutil.which("chromium")
    if chromium is None or importlib.util.find_spec("playwright") is None:
        what = "Debian's chromium (apt-get install -y chromium)" if chromium is None else "playwright (pip)"
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing; CI must run the browser tests")
        pytest.skip(f"{what} is missing")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def small_pool(monkeypatch):
    """gptlearn.fast.memory's pool of reused memory, taking tensors from 1 KB up, at most 1 MB in all, so
    the tests stay small and fast; emptied before and after."""
    from gptlearn.fast import memory

    monkeypatch.setattr(memory, "REUSE_MIN_BYTES", 1 << 10)
    monkeypatch.setattr(memory, "REUSE_MAX_BYTES", 1 << 20)
    memory.release_reused()
    yield memory
    memory.release_reused()


# ---- tokenizers: the reference and GPT-2's two tokenizers, shared by tests/test_tokenizers*.py ------------
@pytest.fixture(scope="session")
def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding, built here, independently, from the shipped files with tiktoken's own
    loader and regex (offline: tiktoken.get_encoding would download)."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext import openai_public

    from gptlearn.tokenizers import GPT2_ASSETS_DIR

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache files written anywhere
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(GPT2_ASSETS_DIR / "vocab.bpe"),
            encoder_json_file=str(GPT2_ASSETS_DIR / "encoder.json"),
            vocab_bpe_hash="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            encoder_json_hash="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        )
    return tiktoken.Encoding(name="gpt2-reference", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


@pytest.fixture(scope="session")
def gpt2_bpe():
    """GPT-2's readable BPETokenizer (cached by the package)."""
    from gptlearn.tokenizers import BPETokenizer

    return BPETokenizer.gpt2()


@pytest.fixture(scope="session")
def gpt2_fast():
    """GPT-2's tiktoken-backed Tokenizer (cached by the package)."""
    from gptlearn.tokenizers import Tokenizer

    return Tokenizer.gpt2()


@pytest.fixture
def shakespeare_20k(data_dir) -> str:
    """The first 20,000 characters of TinyShakespeare."""
    return (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]


@pytest.fixture
def blobs():
    """18 points in 16 dimensions, six around each of three centres, and each point's group ("a", "b", "c")."""
    import numpy as np

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 5
    x = np.concatenate([c + rng.normal(size=(6, 16)) for c in centers])  # (18, 16)
    return x, [g for g in "abc" for _ in range(6)]
