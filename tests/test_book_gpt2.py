"""The book as a reader with a network gets it: built on GPT-2 124M.

GPT-2's weights cannot be downloaded here, so ``scripts/gpt2_shaped.py`` writes a folder shaped exactly
like it (random weights from ``transformers.GPT2LMHeadModel(GPT2Config())``, GPT-2's own vocab.json and
merges.txt) and ``GPTLEARN_MODEL`` points ``gptlearn.load_model()`` at it, as README documents. The
strict build (``-W -n --keep-going``: any cell error, any missing glue, any Sphinx warning fails) then
checks that every chapter runs at GPT-2's size, with its tokenizer, and that its prose has no figure
that only the bundled model produces. Random weights show no trained heads: the chapters state what
they measure, so their text stays true. The per-chapter times go to ``_build/gpt2_times.txt``
(``GPTLEARN_GPT2_SHAPED=<folder>`` reuses a folder written before).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from book_sync_ipynb import toc_files  # noqa: E402
from book_times import execution_times, table  # noqa: E402
from gpt2_shaped import write_gpt2_shaped  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.book, pytest.mark.heavy]  # many minutes: scripts/check_book_*.sh


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    given = os.environ.get("GPTLEARN_GPT2_SHAPED")
    if given and (Path(given) / "model.safetensors").is_file():
        return Path(given)
    pytest.importorskip("transformers")
    return write_gpt2_shaped(tmp_path_factory.mktemp("gpt2-shaped"))


def test_gpt2_shaped_folder_is_gpt2(gpt2_folder):
    import gptlearn
    from gptlearn.tokenizers import Tokenizer

    model = gptlearn.load_model(str(gpt2_folder), verbose=False)
    assert model.num_parameters() == 124_439_808
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.vocab_size) \
        == (12, 12, 768, 50257)
    text = "GPT-2's own tokenizer: 吾輩は猫である 🙂"
    assert model.tokenizer.encode(text) == Tokenizer.gpt2().encode(text)


def test_book_builds_on_gpt2(gpt2_folder, tmp_path):
    env = {**os.environ, "GPTLEARN_MODEL": str(gpt2_folder), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(["jupyter-book", "build", ".", "-W", "-n", "--keep-going", "--path-output", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    times = execution_times(log)
    (REPO / "_build").mkdir(exist_ok=True)
    (REPO / "_build" / "gpt2_build.log").write_text(log)
    (REPO / "_build" / "gpt2_times.txt").write_text(f"{table(times)}\n{seconds:7.1f} s  whole build\n")
    reports = sorted((tmp_path / "_build" / "html" / "reports").rglob("*.err.log"))
    failures = "\n\n".join(f"{p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in reports)
    assert proc.returncode == 0, f"the strict build on a GPT-2-shaped model failed:\n{failures}\n{log[-4000:]}"
    assert {Path(name).with_suffix("").as_posix() for name in times} == set(toc_files(REPO))
    assert "Using " + str(gpt2_folder) in (tmp_path / "_build" / "html" / "book" / "00_start_here.html").read_text()
