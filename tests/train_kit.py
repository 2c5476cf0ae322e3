"""What the trainer's test files share (test_train_folder, test_train_settings, test_train_state): a tiny
character model's settings, a short text file, one-threaded quiet runs, and the CLI's one-line errors.
Import the fixtures into a test module to use them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptlearn import cli

REPO = Path(__file__).resolve().parents[1]
FAST = dict(batch_size=2, block_size=16, eval_iters=1, sample_tokens=0, progress=False, lr=3e-3, warmup=2, seed=3)
CLI_MODEL = ["--preset", "tiny", "--config", '{"n_embd": 16, "n_layer": 1, "n_head": 2}', "--tokenizer", "char",
             "--batch-size", "2", "--block-size", "16", "--eval-iters", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _quiet_and_single_threaded(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path_factory.getbasetemp() / "gptlearn-cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def text_file(data_dir, tmp_path) -> Path:
    path = tmp_path / "shakespeare.txt"
    path.write_text((data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    return path


def run_cli(capsys, *args) -> tuple[int, str]:
    """``gptlearn train ARGS`` in-process: (exit code, stderr)."""
    code = cli.main(["train", *map(str, args)])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    """The CLI's single ``gptlearn: error: ...`` line (asserted to be the only one, with no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptlearn: error: ") and "Traceback" not in err, err
    return lines[0]


def seal_state(out: Path, change_meta=None, change_tensors=None) -> None:
    """Edit a trainer state (JSON and/or tensors) and recompute both sha256s, as a forger would (the
    checksums catch accidents, not edits)."""
    from safetensors.torch import load_file, save_file

    from gptlearn.checkpoint import STATE_FILE, STATE_TENSORS, _checksum
    from gptlearn.checks import sha256

    tensors = load_file(out / STATE_TENSORS)
    if change_tensors is not None:
        change_tensors(tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / STATE_TENSORS))
    meta = json.loads((out / STATE_FILE).read_text())
    meta["tensors_sha256"] = sha256(out / STATE_TENSORS)
    if change_meta is not None:
        change_meta(meta)
    meta["sha256"] = _checksum(meta)
    (out / STATE_FILE).write_text(json.dumps(meta))
