"""gptlearn.atomic: files and folders replaced in one step; a save killed at any instant leaves the old or
the new folder complete, and the next save or load finishes the job and clears what was left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gptlearn.atomic import recover_folder, write_file, write_folder

REPO = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict[str, str | dict]:
    return {p.name: _tree(p) if p.is_dir() else p.read_text() for p in sorted(folder.iterdir())}


def _leftovers(folder: Path) -> list[str]:
    """Temporary names beside or inside ``folder``."""
    beside = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    inside = [p.name for p in folder.glob(".tmp-*")] if folder.is_dir() else []
    return sorted(beside + inside)


def _write(files: dict[str, str]):
    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)
    return write


# ---- files --------------------------------------------------------------------------------------------
def test_write_file_replaces_in_one_step(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_file(path, "first")
    write_file(path, b"second")
    assert path.read_text() == "second"
    write_file(path, lambda p: Path(p).write_text("third"))
    assert path.read_text() == "third"

    def dies(p):
        Path(p).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file(path, dies)
    assert path.read_text() == "third" and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_write_file_clears_stale_temporary_files_only(tmp_path):
    dead = tmp_path / ".tmp-999999999-0123abcd.bin"  # no such process
    legacy = tmp_path / ".tmp-k2j4_x9q.pt"  # an earlier version's mkstemp name
    alive = tmp_path / f".tmp-{os.getppid()}-0123abcd.bin"  # a running process's write: left alone
    mine = tmp_path / ".tmp-notes.txt"  # not one of ours
    for p in (dead, legacy, alive, mine):
        p.write_text("x")
    write_file(tmp_path / "b.bin", b"1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.bin", alive.name, mine.name])


# ---- folders ------------------------------------------------------------------------------------------
def test_write_folder_creates_replaces_and_carries_other_files(tmp_path):
    folder = tmp_path / "model"
    assert write_folder(folder, _write({"config.json": "1", "weights": "1", "extra": "1"})) == folder
    assert _tree(folder) == {"config.json": "1", "extra": "1", "weights": "1"}
    (folder / "notes.txt").write_text("mine")
    (folder / "logs").mkdir()
    (folder / "logs" / "run.log").write_text("log")
    inode = (folder / "notes.txt").stat().st_ino
    write_folder(folder, _write({"config.json": "2", "weights": "2"}), owns=("extra",))
    assert _tree(folder) == {"config.json": "2", "logs": {"run.log": "log"}, "notes.txt": "mine", "weights": "2"}
    assert (folder / "notes.txt").stat().st_ino == inode  # carried over as a hard link, not copied
    assert _leftovers(folder) == []


def test_a_failing_write_leaves_the_old_folder(tmp_path):
    folder = tmp_path / "model"
    write_folder(folder, _write({"weights": "good"}))

    def dies(tmp):
        (tmp / "weights").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder(folder, dies)
    assert _tree(folder) == {"weights": "good"} and _leftovers(folder) == []
    with pytest.raises(NotADirectoryError, match="is a file"):
        write_folder(folder / "weights", dies)


def test_a_save_inside_a_save_writes_into_the_outer_folder(tmp_path):
    folder = tmp_path / "embedder"
    write_folder(folder, _write({"projection": "old", "model": "old"}))
    seen = []

    def outer(tmp):
        seen.append(tmp)
        assert write_folder(tmp, _write({"model": "new"}), owns=("projection",)) == tmp  # no swap of its own
        assert sorted(p.name for p in tmp.iterdir()) == ["model"]
        (tmp / "embedder.json").write_text("new")

    write_folder(folder, outer)
    assert seen[0].name.startswith(".embedder.tmp-")
    assert _tree(folder) == {"embedder.json": "new", "model": "new"}  # the inner save's `owns` counted
    assert _leftovers(folder) == []


def test_working_inside_the_folder_replaces_files_one_by_one(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    write_folder(folder, _write({"a": "1", "b": "1"}))
    monkeypatch.chdir(folder)
    write_folder(".", _write({"a": "2"}), owns=("b",))
    assert os.getcwd() == str(folder.resolve())  # still a real folder: it was not swapped away
    assert _tree(folder) == {"a": "2"} and _leftovers(folder) == []


def test_a_symlinked_folder_keeps_its_link(tmp_path):
    target = tmp_path / "step100"
    write_folder(target, _write({"w": "1"}))
    link = tmp_path / "latest"
    link.symlink_to(target, target_is_directory=True)
    write_folder(link, _write({"w": "2"}))
    assert link.is_symlink() and _tree(target) == {"w": "2"}


# ---- killed saves -------------------------------------------------------------------------------------
KILL = """
import os, signal, sys
from pathlib import Path
import gptlearn.atomic as atomic
folder, when = Path(sys.argv[1]), sys.argv[2]
renames, real_rename = [], os.rename

def rename(src, dst):
    real_rename(src, dst)
    renames.append(dst)
    if (when == "aside" and len(renames) == 1) or (when == "swapped" and len(renames) == 2):
        os.kill(os.getpid(), signal.SIGKILL)

atomic.os.rename = rename

def write(tmp):
    (tmp / "config.json").write_text("new")
    if when == "writing":
        os.kill(os.getpid(), signal.SIGKILL)
    (tmp / "weights").write_text("new")

atomic.write_folder(folder, write)
"""


def _killed_save(folder: Path, when: str, tmp_path: Path) -> None:
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    r = subprocess.run([sys.executable, str(script), str(folder), when], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]


@pytest.mark.parametrize("when, expect", [("writing", "old"), ("aside", "new"), ("swapped", "new")])
def test_a_save_killed_at_each_step_leaves_a_complete_folder(tmp_path, when, expect):
    folder = tmp_path / "model"
    write_folder(folder, _write({"config.json": "old", "weights": "old"}))
    _killed_save(folder, when, tmp_path)
    siblings = sorted(p.name.split("-")[0] for p in tmp_path.iterdir() if p.name.startswith(".model."))
    assert siblings == {"writing": [".model.tmp"], "aside": [".model.old", ".model.tmp"],
                        "swapped": [".model.old"]}[when]
    assert folder.is_dir() == (when != "aside")  # between the renames, only the siblings hold it
    recover_folder(folder)  # what every load and save calls first
    assert _tree(folder) == {"config.json": expect, "weights": expect}
    assert _leftovers(folder) == []


def test_a_first_save_killed_while_writing_leaves_nothing(tmp_path):
    folder = tmp_path / "model"
    _killed_save(folder, "writing", tmp_path)
    recover_folder(folder)
    assert not folder.exists() and _leftovers(folder) == []


def test_recovery_leaves_running_saves_and_other_names_alone(tmp_path):
    folder = tmp_path / "model"
    write_folder(folder, _write({"w": "1"}))
    running = tmp_path / f".model.tmp-{os.getppid()}-0123abcd"  # a live process is writing it
    other = tmp_path / ".model.backup"
    running.mkdir(), other.mkdir()
    recover_folder(folder)
    assert running.is_dir() and other.is_dir()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="process start times come from /proc")
def test_a_reused_pid_does_not_keep_a_dead_save_alive(tmp_path):
    """A restarted container's first process gets the PID the killed one had: the start time tells them apart."""
    folder = tmp_path / "model"
    old = tmp_path / f".model.old-{os.getpid()}.1-0123abcd"  # this PID, but a process that started at tick 1
    new = tmp_path / f".model.tmp-{os.getpid()}.1-0123abcd"
    for d, text in ((old, "old"), (new, "new")):
        d.mkdir()
        (d / "w").write_text(text)
    recover_folder(folder)
    assert _tree(folder) == {"w": "new"} and _leftovers(folder) == []


def test_recovery_of_an_earlier_versions_layout(tmp_path):
    """Earlier versions moved the old folder to .NAME.old-XXXXXXXX/model before renaming the new one in."""
    folder = tmp_path / "model"
    old = tmp_path / ".model.old-abcd1234" / "model"
    old.mkdir(parents=True)
    (old / "w").write_text("old")
    recover_folder(folder)
    assert _tree(folder) == {"w": "old"} and _leftovers(folder) == []


MODEL_KILL = """
import os, signal, sys, torch
import gptlearn.atomic as atomic
from gptlearn import GPT, GPTConfig
folder = sys.argv[1]
real_rename = os.rename
def rename(src, dst):
    real_rename(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)  # right after the old folder steps aside
torch.manual_seed(2)
model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50257))
torch.save(model.state_dict(), folder + ".expected.pt")
atomic.os.rename = rename
model.save_pretrained(folder)
"""


@pytest.mark.slow
def test_a_model_save_killed_between_the_renames_loads_the_new_weights(tmp_path):
    import torch

    from gptlearn import GPT, GPTConfig

    folder = tmp_path / "model"
    torch.manual_seed(1)
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50257)).save_pretrained(folder)
    script = tmp_path / "kill.py"
    script.write_text(MODEL_KILL)
    r = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert r.returncode == -signal.SIGKILL and not folder.exists(), r.stderr[-2000:]
    loaded = GPT.from_pretrained(folder)  # the load finishes the save
    expected = torch.load(str(folder) + ".expected.pt")
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
    assert loaded.tokenizer.encode("Hello world") == [15496, 995] and _leftovers(folder) == []
