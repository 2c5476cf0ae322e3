"""Shared fixtures: tiny random models, the data folder (GPTLEARN_DATA_DIR, default ../shared/data), the
built book and a headless Chromium."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if "GPTLEARN_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "data").is_dir():
    os.environ["GPTLEARN_DATA_DIR"] = str(REPO.parent / "shared" / "data")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def data_dir() -> Path:
    d = os.environ.get("GPTLEARN_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.skip("GPTLEARN_DATA_DIR is not set to the shared data folder")
    return Path(d)


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
    from gptlearn import GPT, GPTConfig
    from gptlearn.pretrained import hf_to_gptlearn

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=1000,
                                  bos_token_id=0, eos_token_id=0, initializer_range=0.2)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.generation_config.eos_token_id = None  # never stop early: compare every token
    hf.generation_config.pad_token_id = 0
    model = GPT(GPTConfig.from_hf_dict(cfg.to_dict())).eval()
    model.load_state_dict(hf_to_gptlearn(hf.state_dict()))
    return hf, model


@pytest.fixture(scope="session")
def built_book() -> Path:
    """_build/html after a strict executed build (``-W -n --keep-going``); ``GPTLEARN_BOOK_PREBUILT=1``
    reuses an existing build as it is. The log goes to _build/build.log."""
    index = REPO / "_build" / "html" / "index.html"
    if os.environ.get("GPTLEARN_BOOK_PREBUILT") == "1" and index.is_file():
        return index.parent
    if shutil.which("jupyter-book") is None:
        pytest.fail("jupyter-book is not installed; pip install -r requirements.txt")
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # the book builds offline (GPT-2 only if already cached)
    proc = subprocess.run(
        ["jupyter-book", "build", ".", "-W", "-n", "--keep-going"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    log = proc.stdout + proc.stderr
    (REPO / "_build").mkdir(exist_ok=True)
    (REPO / "_build" / "build.log").write_text(log)
    sys.path.insert(0, str(REPO / "scripts"))
    from book_times import execution_times, table

    (REPO / "_build" / "execution_times.txt").write_text(table(execution_times(log)) + "\n")
    assert proc.returncode == 0, "the strict book build failed (full log in _build/build.log):\n" + log[-6000:]
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
    """gptlearn.device's pool of reused memory, taking tensors from 1 KB up, at most 1 MB in all, so
    the tests stay small and fast; emptied before and after."""
    pool = importlib.import_module("gptlearn.device")  # the module (``gptlearn.device`` is also the function)
    monkeypatch.setattr(pool, "REUSE_MIN_BYTES", 1 << 10)
    monkeypatch.setattr(pool, "REUSE_MAX_BYTES", 1 << 20)
    pool.release_reused()
    yield pool
    pool.release_reused()
