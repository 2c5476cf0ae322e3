"""README's first command, on a fresh machine with no network: which chapters build?

A ``git clone`` of this checkout's HEAD into a temporary folder, built with ``scripts/build_book.sh``
(README: ``bash scripts/setup.sh && bash scripts/build_book.sh``; the set-up half is replaced by the
environment this test runs in) with no ``GPTLEARN_DATA_DIR``, an empty gptlearn cache, no Hugging Face
cache, ``HF_HUB_OFFLINE=1`` and every download sent to a proxy that refuses connections. The clone has
no ``../shared/data`` beside it, as on a user's machine.

What must hold: every chapter builds from what the package ships (gptlearn-english, GPT-2's tokenizer,
TinyShakespeare, the book's sentence pairs). Chapters 8 and 10, which measure on STS-B where it can be
found, fall back to the book's pairs and say so on the page.
The per-chapter table goes to ``_build/offline_times.txt``.
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

pytestmark = [pytest.mark.slow, pytest.mark.book, pytest.mark.heavy]  # many minutes: scripts/check_book_*.sh

FALLS_BACK = {"book/10_training_embeddings": "This run uses <strong>book-pairs</strong>"}  # said on the page


def offline_env(home: Path, clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPTLEARN_DATA_DIR", "GPTLEARN_MODEL", "GPTLEARN_OFFLINE", "HF_HOME", "HF_HUB_CACHE")}
    refused = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused at once
    env.update(PYTHONPATH=str(clone), GPTLEARN_CACHE=str(home / "gptlearn-cache"), HF_HOME=str(home / "hf"),
               HF_HUB_OFFLINE="1", http_proxy=refused, https_proxy=refused, HTTP_PROXY=refused, HTTPS_PROXY=refused,
               no_proxy="", NO_PROXY="")
    return env


def test_fresh_clone_builds_offline(tmp_path):
    clone = tmp_path / "machine" / "gptlearn"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True, timeout=300)
    assert not (clone.parent / "shared" / "data").exists()
    start = time.perf_counter()
    proc = subprocess.run(["bash", "scripts/build_book.sh"], cwd=clone, env=offline_env(tmp_path, clone),
                          capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (REPO / "_build").mkdir(exist_ok=True)
    (REPO / "_build" / "offline_build.log").write_text(log)
    times = execution_times(log)
    (REPO / "_build" / "offline_times.txt").write_text(f"{table(times)}\n{seconds:7.1f} s  whole build\n")

    reports = clone / "_build" / "html" / "reports"
    failed = {}
    for doc in toc_files(clone):
        err = reports / Path(doc).parent / f"{Path(doc).name}.err.log"
        if err.is_file():
            failed[doc] = err.read_text(errors="replace")
    assert not failed, f"chapters that failed offline:\n{ {doc: text[-3000:] for doc, text in failed.items()} }"
    built = {doc for doc in toc_files(clone) if (clone / "_build" / "html" / f"{doc}.html").is_file()}
    assert built == set(toc_files(clone))
    executed = {Path(name).with_suffix("").as_posix() for name in times}
    assert executed == set(toc_files(clone))
    for doc, said in FALLS_BACK.items():
        assert said in (clone / "_build" / "html" / f"{doc}.html").read_text(), doc
    assert proc.returncode == 0, log[-3000:]
