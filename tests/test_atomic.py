"""gptlearn.atomic: files and folders replaced in one step; a save killed at any instant leaves the old or
the new folder complete, and the next save or load finishes the job and clears what was left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gptlearn.atomic import _write_manifest, recover_folder, write_file, write_folder
from gptlearn.folders import MANIFEST

REPO = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict[str, str | dict]:
    """The folder's entries and their text, without gptlearn's manifest."""
    return {p.name: _tree(p) if p.is_dir() else p.read_text() for p in sorted(folder.iterdir()) if p.name != MANIFEST}


def _killed_temp(path: Path, token: str, *, complete: bool = False, files: dict[str, str] | None = None) -> Path:
    """A temporary folder as a killed gptlearn save leaves it: its manifest names the save ``token``."""
    path.mkdir()
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    _write_manifest(path, "folder", list(files or {}), token, complete=complete)
    return path


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


def test_write_file_clears_only_what_a_killed_write_provably_left(tmp_path):
    dead = _killed_temp(tmp_path / ".tmp-999999999-0123abcd", "999999999-0123abcd")  # its process is gone
    alive = _killed_temp(tmp_path / f".tmp-{os.getppid()}-0123abcd", f"{os.getppid()}-0123abcd")  # still running
    lookalike = tmp_path / ".tmp-999999998-0123abcd"  # the same kind of name, but no manifest: not provably ours
    lookalike.mkdir()
    mine = [tmp_path / ".tmp-notes123", tmp_path / ".tmp-k2j4_x9q.pt", tmp_path / ".tmp-999999997-0123abcd.bin"]
    for p in mine:
        p.write_text("x")
    other = _killed_temp(tmp_path / ".tmp-999999996-0123abcd", "999999995-0123abcd")  # names another save
    write_file(tmp_path / "b.bin", b"1")
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["b.bin", alive.name, lookalike.name, other.name, *(p.name for p in mine)])


def test_write_file_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "secret.json"
    path.write_text("old")
    path.chmod(0o600)
    write_file(path, "new")
    assert path.read_text() == "new" and (path.stat().st_mode & 0o777) == 0o600


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
        assert sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST) == ["model"]
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
    token = f"{os.getpid()}.1-0123abcd"  # this PID, but a process that started at tick 1
    old = tmp_path / f".model.old-{token}"
    old.mkdir()
    (old / "w").write_text("old")
    _killed_temp(tmp_path / f".model.tmp-{token}", token, complete=True, files={"w": "new"})
    recover_folder(folder)
    assert _tree(folder) == {"w": "new"} and _leftovers(folder) == []


def test_names_that_only_look_like_leftovers_are_never_touched(tmp_path):
    """A backup named like a killed save's sibling, an earlier version's layout, a file named .tmp-...: none
    carries gptlearn's manifest, so neither a save nor a load renames or removes it."""
    folder = tmp_path / "model"
    write_folder(folder, _write({"w": "1"}))
    kept = [tmp_path / ".model.old-20240601", tmp_path / ".model.old-abcd1234", tmp_path / ".model.tmp-12345678",
            tmp_path / ".model.old-999999999-0123abcd", folder / ".tmp-notes123", folder / ".tmp-999999999-0123abcd"]
    for p in kept:
        p.mkdir()
        (p / "model").mkdir()
        (p / "model" / "w").write_text("mine")
    recover_folder(folder)
    write_folder(folder, _write({"w": "2"}))
    assert all((p / "model" / "w").read_text() == "mine" for p in kept)
    assert _tree(folder)["w"] == "2" and ".tmp-notes123" in _tree(folder)  # carried into the new folder
    other = tmp_path / "gone"
    (tmp_path / ".gone.old-abcd1234" / "model").mkdir(parents=True)
    recover_folder(other)
    assert not other.exists()  # an earlier version's layout is not renamed into place either


def test_a_private_folder_stays_private(tmp_path):
    folder = tmp_path / "run"
    write_folder(folder, _write({"w": "1"}))
    folder.chmod(0o700)
    (folder / "w").chmod(0o600)
    write_folder(folder, _write({"w": "2"}))
    assert (folder.stat().st_mode & 0o777) == 0o700 and ((folder / "w").stat().st_mode & 0o777) == 0o600


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
    loaded = GPT.from_pretrained(folder)  # the load finishes the save (a rename), and removes nothing
    expected = torch.load(str(folder) + ".expected.pt")
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0)
    assert loaded.tokenizer.encode("Hello world") == [15496, 995]
    assert [n.split("-")[0] for n in _leftovers(folder)] == [".model.old"]
    loaded.save_pretrained(folder)  # the next save clears what the killed one left
    assert _leftovers(folder) == []
