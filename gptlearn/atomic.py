"""Writing files and folders so that a crash never leaves half of one where a good one was.

A file is written under a temporary name beside it, then renamed over it: one rename, so a reader sees
the old file or the new one, never a mixture. A folder (a model, an embedder, a training checkpoint) is
written the same way as a whole:

1. the new contents go into a temporary sibling, ``.NAME.tmp-PID.START-XXXXXXXX``;
2. the old folder steps aside to ``.NAME.old-PID.START-XXXXXXXX``;
3. the new one is renamed to ``NAME``;
4. the old one is removed.

Killed at any instant, this leaves the old or the new folder complete: under ``NAME``, or (between
steps 2 and 3) as the ``.tmp-`` sibling, which :func:`recover_folder` renames into place. Every save
and every load of a folder calls it first, and it also removes what killed saves left behind
(siblings whose process ``PID``, started at ``START``, is gone).

Files in the old folder that the new save does not write (a ``trainer_state.pt``, your notes) are
carried into the new one as hard links, unless the save names them in ``owns``. Files that another
process writes into the folder *during* a save may be lost.

>>> def write(tmp):                                                      # doctest: +SKIP
...     (tmp / "config.json").write_text("{}")
...     torch.save(state, tmp / "weights.pt")
>>> write_folder("runs/model", write)                                    # doctest: +SKIP
"""
from __future__ import annotations

import contextvars
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["write_file", "write_folder", "recover_folder"]

# The temporary folders of the saves running in this thread -> the names each save owns (see write_folder).
_ACTIVE: contextvars.ContextVar[dict[Path, set[str]]] = contextvars.ContextVar("gptlearn_atomic_saves", default={})
# What a temporary name ends with: this package's "PID.START-8 hex digits" (START: when that process
# started, where /proc tells; a PID alone can be reused, e.g. by the next container's first process), or
# the random suffix of tempfile.mkdtemp/mkstemp (8 characters) that earlier versions used.
_TOKEN = re.compile(r"(?:(?P<pid>\d+)(?:\.(?P<start>\d+))?-[0-9a-f]{8}|[a-z0-9_]{8})(?:\.[A-Za-z0-9]+)?")


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None where that is unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before it may hold spaces


def _token() -> str:
    start = _start_time(os.getpid())
    return f"{os.getpid()}{'.' + start if start else ''}-{secrets.token_hex(4)}"


def _is_stale(token: str) -> bool:
    """Whether the save that made a temporary name with this ``token`` is over: its process is gone,
    or its PID now belongs to a process that started later (this process included)."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        return False  # not one of ours: leave it alone
    if m["pid"] is None:
        return True  # an earlier version's name: its save is long over
    pid = int(m["pid"])
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # PermissionError: a live process of another user
            pass
    start = _start_time(pid)
    return m["start"] is not None and start is not None and start != m["start"]  # the PID was reused


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's list of names, to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_file(path: str | os.PathLike, data: bytes | str | Callable[[Path], object]) -> Path:
    """Replace the file ``path`` in one step: ``data`` (bytes, or text written as UTF-8), or whatever
    ``data(tmp)`` writes to the temporary path it is given (e.g. ``lambda p: torch.save(obj, p)``).

    Stale temporary files of earlier, killed writes in the same folder are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in path.parent.glob(".tmp-*"):
        if p.is_file() and _is_stale(p.name[len(".tmp-"):]):
            p.unlink(missing_ok=True)
    tmp = path.parent / f".tmp-{_token()}{path.suffix}"
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def recover_folder(directory: str | os.PathLike) -> Path:
    """Finish or undo a folder save that was killed, and remove what killed saves left behind.

    If ``directory`` is missing but a killed save had moved it aside, the new folder (complete by then)
    is renamed into place, or else the old one is put back. Stale ``.NAME.tmp-*`` / ``.NAME.old-*``
    siblings and ``.tmp-*`` entries inside the folder are then removed. Nothing else is touched;
    errors (a read-only folder) are ignored. Returns ``directory``.
    """
    directory = Path(directory).expanduser()
    parent, prefix = directory.parent, f".{directory.name}."
    try:
        stale = {kind: {} for kind in ("tmp", "old")}  # kind -> token -> path
        if parent.is_dir():
            for p in parent.iterdir():
                for kind in stale:
                    if p.name.startswith(prefix + kind + "-"):
                        token = p.name[len(prefix + kind + "-"):]
                        if _is_stale(token):
                            stale[kind][token] = p
        if not directory.exists():
            for token, old in stale["old"].items():  # killed between steps 2 and 3
                new = stale["tmp"].pop(token, None)
                if new is not None and new.is_dir():
                    os.rename(new, directory)  # roll forward: the new folder was complete
                elif (old / "model").is_dir():  # an earlier version's layout: .NAME.old-XXXXXXXX/model
                    os.rename(old / "model", directory)
                else:
                    os.rename(old, directory)  # roll back
                break
        if directory.is_dir():  # only then may an old copy go
            for p in [*stale["tmp"].values(), *stale["old"].values()]:
                if p.exists():
                    _remove(p)
            for p in directory.glob(".tmp-*"):
                if _is_stale(p.name[len(".tmp-"):]):
                    _remove(p)
        else:
            for p in stale["tmp"].values():  # a first save, killed while writing: nothing complete
                _remove(p)
    except OSError:
        pass
    return directory


def _can_swap(directory: Path) -> bool:
    """A folder can be swapped unless this process works inside it, it is a mount point, or its
    parent folder cannot be written."""
    cwd = Path(os.path.realpath(os.getcwd()))
    return not (cwd == directory or directory in cwd.parents or os.path.ismount(directory)
                or not os.access(directory.parent, os.W_OK))


def _carry_over(old: Path, new: Path, owned: set[str]) -> None:
    """Hard-link (or copy) into ``new`` every entry of ``old`` that the save neither wrote nor owns."""
    for p in old.iterdir():
        if p.name in owned or p.name.startswith(".tmp-") or (new / p.name).exists():
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, new / p.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(p, new / p.name)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_folder(directory: str | os.PathLike, write: Callable[[Path], object], *,
                 owns: Iterable[str] = ()) -> Path:
    """Write a folder as a whole: ``write(tmp)`` fills an empty temporary folder, which then replaces
    ``directory`` (created if missing) in one rename; see the module's docstring.

    ``owns``: names this save is responsible for: an old file of that name does not survive the save
    even when ``write`` does not write it (e.g. an embedder saved without its projection). Other old
    entries are carried over. A save made inside ``write`` (a model saved into an embedder's folder)
    writes straight into the outer save's temporary folder, and the outer swap makes the whole atomic.
    When the folder cannot be swapped (this process's working directory is inside it, it is a mount
    point, or its parent is read-only) its files are replaced one by one instead, each in one step.
    Returns ``directory``.
    """
    given = Path(directory)
    directory = Path(os.path.realpath(given.expanduser()))  # a symlink: swap the folder it names
    active = _ACTIVE.get()
    if directory in active:  # nested inside another save: that save's swap covers this one
        write(directory)
        active[directory].update(owns)
        return given
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file, not a folder; pass a folder to save into")
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(directory)
    swap = _can_swap(directory)
    token = _token()
    tmp = directory.parent / f".{directory.name}.tmp-{token}" if swap else directory / f".tmp-{token}"
    tmp.mkdir(parents=True)
    owned = set(owns)
    try:
        reset = _ACTIVE.set({**active, tmp: owned})
        try:
            write(tmp)
        finally:
            _ACTIVE.reset(reset)
        written = {p.name for p in tmp.iterdir()}
        for p in tmp.rglob("*"):
            if p.is_file():
                _fsync(p)
        if not swap:  # one file at a time, each replaced in one rename
            for name in written:
                if (directory / name).is_dir() and not (directory / name).is_symlink():
                    shutil.rmtree(directory / name)
                os.replace(tmp / name, directory / name)
            for name in owned - written:
                _remove(directory / name)
            _fsync(directory)
            return given
        if directory.is_dir():
            _carry_over(directory, tmp, owned)
            old = directory.parent / f".{directory.name}.old-{token}"
            os.rename(directory, old)  # 2. the old folder steps aside
            try:
                os.rename(tmp, directory)  # 3. the new one takes its place
            except BaseException:
                os.rename(old, directory)
                raise
            _fsync(directory.parent)
            shutil.rmtree(old, ignore_errors=True)  # 4.
        else:
            os.rename(tmp, directory)
            _fsync(directory.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return given
