"""Writing files and folders so that a crash never leaves half of one where a good one was.

A file is written under a temporary name beside it, then renamed over it: one rename, so a reader sees
the old file or the new one, never a mixture. A folder (a model, an embedder, a training checkpoint) is
written the same way as a whole:

1. the new contents go into a temporary sibling, ``.NAME.tmp-PID.START-XXXXXXXX``;
2. the old folder steps aside to ``.NAME.old-PID.START-XXXXXXXX``;
3. the new one is renamed to ``NAME``;
4. the old one is removed.

Killed at any instant, this leaves the old or the new folder complete: under ``NAME``, or (between
steps 2 and 3) as the ``.tmp-`` sibling, which :func:`recover_folder` renames into place.

What a killed save leaves behind is removed only when gptlearn can prove it wrote it: every temporary
folder holds gptlearn's manifest (:mod:`gptlearn.folders`) naming the save (its process, when that
process started, and a random token) that the folder's name repeats, and an ``.old-`` sibling goes only
when the folder that replaced it names the same save. A name that merely looks like one of these (your
``.NAME.old-20240601`` backup, a ``.tmp-notes`` file) is never touched. Saves clean up; loads never remove
anything (:func:`recover_folder` with ``remove=False``).

Which folders may be written at all, and which of their files replaced, is :mod:`gptlearn.folders`'
rule: an empty folder, or one whose manifest says gptlearn made it for the same purpose. Files in the old
folder that gptlearn did not write (your notes) are carried into the new one as hard links; the mode
and owner of the folder and of each replaced file are kept. Files that another process writes into the
folder *during* a save may be lost.

>>> def write(tmp):                                                      # doctest: +SKIP
...     (tmp / "config.json").write_text("{}")
...     torch.save(state, tmp / "weights.pt")
>>> write_folder("runs/model", write, kind="model")                      # doctest: +SKIP
"""
from __future__ import annotations

import contextvars
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterable

from .folders import MANIFEST, check_folder, check_name, expand_path, manifest_data, read_manifest, refuse_foreign

__all__ = ["write_file", "write_folder", "recover_folder", "remove_folder"]

# The temporary folders of the saves running in this thread -> the names each save owns (see write_folder).
_ACTIVE: contextvars.ContextVar[dict[Path, set[str]]] = contextvars.ContextVar("gptlearn_atomic_saves", default={})
# What a temporary name ends with: "PID.START-8 hex digits" (START: when that process started, where /proc
# tells; a PID alone can be reused, e.g. by the next container's first process).
_TOKEN = re.compile(r"(?P<pid>\d+)(?:\.(?P<start>\d+))?-[0-9a-f]{8}")


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None where that is unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]  # field 22; the command name before it may hold spaces


def _token() -> str:
    start = _start_time(os.getpid())
    return f"{os.getpid()}{'.' + start if start else ''}-{secrets.token_hex(4)}"


def _is_stale(token: str) -> bool:
    """Whether the save that made a temporary name with this ``token`` is over: its process is gone,
    or its PID now belongs to a process that started later (this process included)."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        return False  # not one of ours: leave it alone
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


def _save_of(folder: Path) -> dict:
    """The save recorded in ``folder``'s manifest (token, process, complete), or {} where there is none."""
    if folder.is_symlink() or not folder.is_dir():
        return {}
    manifest = read_manifest(folder)
    return manifest["save"] if manifest is not None else {}


def _ours(entry: Path, token: str) -> bool:
    """Whether ``entry`` is a temporary folder gptlearn made for the save ``token``: its manifest says so."""
    return _TOKEN.fullmatch(token) is not None and _save_of(entry).get("token") == token


def _make_temp(tmp: Path, kind: str, token: str) -> None:
    """Create the temporary folder ``tmp`` with the manifest that proves it is this save's."""
    tmp.mkdir(parents=True)
    _write_manifest(tmp, kind, [], token, complete=False)


def _write_manifest(folder: Path, kind: str, files: Iterable[str], token: str, *, complete: bool) -> None:
    save = {"token": token, "pid": os.getpid(), "complete": complete}
    (folder / MANIFEST).write_text(json.dumps(manifest_data(kind, sorted(set(files)), save), indent=1) + "\n")


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's list of names, to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
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


def _keep_mode(old: Path, new: Path) -> None:
    """Give ``new`` the permission bits and (where allowed) the owner of ``old``, which it replaces."""
    try:
        st = os.stat(old, follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    try:
        os.chmod(new, stat.S_IMODE(st.st_mode))
        mine = os.stat(new)
        if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
            os.chown(new, st.st_uid, st.st_gid)
    except OSError:
        pass  # another user's file: it stays ours


def _clear_stale(folder: Path) -> None:
    """Remove the ``.tmp-TOKEN`` folders that killed writes left in ``folder``, where gptlearn's manifest
    inside proves the write was gptlearn's and its process is gone."""
    try:
        entries = list(folder.glob(".tmp-*"))
    except OSError:
        return
    for p in entries:
        token = p.name[len(".tmp-"):]
        if _ours(p, token) and _is_stale(token):
            _remove(p)


def write_file(path: str | os.PathLike, data: bytes | str | Callable[[Path], object]) -> Path:
    """Replace the file ``path`` in one step: ``data`` (bytes, or text written as UTF-8), or whatever
    ``data(tmp)`` writes to the temporary path it is given (e.g. ``lambda p: torch.save(obj, p)``).

    The temporary file sits in a ``.tmp-TOKEN`` folder beside ``path`` that holds gptlearn's manifest;
    such folders of earlier, killed writes are removed first. The mode of a replaced file is kept.
    """
    path = expand_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path.parent)
    token = _token()
    folder = path.parent / f".tmp-{token}"
    _make_temp(folder, "folder", token)
    tmp = folder / path.name
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        _fsync(tmp)
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def recover_folder(directory: str | os.PathLike, *, remove: bool = True) -> Path:
    """Finish a folder save that was killed, and (with ``remove``) remove what killed saves left behind.

    If ``directory`` is missing but a killed save had moved it aside after its new folder was complete,
    the new folder is renamed into place. With ``remove``, the ``.NAME.tmp-TOKEN`` / ``.NAME.old-TOKEN``
    siblings and ``.tmp-TOKEN`` entries inside the folder that gptlearn's manifests prove were written by a
    save whose process is gone are removed; nothing else is touched. Loads pass ``remove=False``: a command
    that only reads never removes anything. Errors (a read-only folder) are ignored. Returns ``directory``.
    """
    directory = expand_path(directory)
    parent, prefix = directory.parent, f".{directory.name}."
    try:
        tmps: dict[str, Path] = {}
        olds: dict[str, Path] = {}
        if parent.is_dir():
            for p in parent.iterdir():
                for kind, found in (("tmp", tmps), ("old", olds)):
                    if p.name.startswith(prefix + kind + "-"):
                        token = p.name[len(prefix + kind + "-"):]
                        if _TOKEN.fullmatch(token) and _is_stale(token):
                            found[token] = p
        tmps = {token: p for token, p in tmps.items() if _ours(p, token)}
        if not os.path.lexists(directory):
            for token, new in tmps.items():  # killed between steps 2 and 3: the new folder was complete
                if token in olds and _save_of(new).get("complete"):
                    os.rename(new, directory)
                    del tmps[token]
                    break
        if not remove:
            return directory
        if directory.is_dir():
            current = _save_of(directory).get("token")
            for token, old in olds.items():
                if token == current:  # the save that moved it aside put `directory` in its place
                    _remove(old)
            for p in tmps.values():
                _remove(p)
            _clear_stale(directory)
        elif not os.path.lexists(directory):
            for token, p in tmps.items():
                if token not in olds:  # a first save, killed while writing: nothing complete
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


def _is_temp(p: Path) -> bool:
    """A temporary folder of a gptlearn write, finished or not (never carried into a new folder)."""
    return p.name.startswith(".tmp-") and _ours(p, p.name[len(".tmp-"):])


def _carry_over(old: Path, new: Path, skip: set[str]) -> None:
    """Hard-link (or copy) into ``new`` every entry of ``old`` that is not in ``skip`` and not written."""
    for p in old.iterdir():
        if p.name in skip or p.name == MANIFEST or _is_temp(p) or os.path.lexists(new / p.name):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, new / p.name, symlinks=True, copy_function=_link_or_copy)
            shutil.copystat(p, new / p.name)
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
                 owns: Iterable[str] = (), kind: str = "folder", overwrite: bool = False) -> Path:
    """Write a folder as a whole: ``write(tmp)`` fills an empty temporary folder, which then replaces
    ``directory`` (created if missing) in one rename; see the module's docstring.

    ``kind`` says what the folder holds ("model", "embedder", "run", "site"; :mod:`gptlearn.folders`): a
    folder that is not empty and was not made by gptlearn for that kind is refused before ``write`` runs
    (:class:`gptlearn.folders.FolderInUseError`), unless ``overwrite``; and a save that would replace a
    file gptlearn did not write is refused before anything changes.
    ``owns``: names this save is responsible for: an old file of that name that gptlearn wrote does not
    survive the save even when ``write`` does not write it (e.g. an embedder saved without its
    projection); with ``overwrite``, none of gptlearn's old files survive. Other entries are carried
    over. A save made inside ``write`` (a model saved into an embedder's folder) writes straight into the
    outer save's temporary folder, and the outer swap makes the whole atomic. When the folder cannot be
    swapped (this process's working directory is inside it, it is a mount point, or its parent is
    read-only) its files are replaced one by one instead, each in one step. Returns ``directory``.
    """
    given = Path(directory)
    directory = Path(os.path.realpath(expand_path(given, "the folder")))  # a symlink: swap the folder it names
    active = _ACTIVE.get()
    if directory in active:  # nested inside another save: that save's swap covers this one
        write(directory)
        active[directory].update(owns)
        return given
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file, not a folder; pass a folder to save into")
    check_name(directory)  # a name the file system cannot take with a temporary suffix: before any work
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(directory)
    ours = check_folder(directory, kind=kind, overwrite=overwrite)  # before `write` runs
    swap = _can_swap(directory)
    token = _token()
    tmp = directory.parent / f".{directory.name}.tmp-{token}" if swap else directory / f".tmp-{token}"
    _make_temp(tmp, kind, token)
    owned = set(owns)
    try:
        reset = _ACTIVE.set({**active, tmp: owned})
        try:
            write(tmp)
        finally:
            _ACTIVE.reset(reset)
        written = {p.name for p in tmp.iterdir()} - {MANIFEST}
        refuse_foreign(directory, written, ours)
        drop = (ours if overwrite else ours & owned) - written  # gptlearn's old files that go
        kept = ours - drop - written  # gptlearn's old files carried into the new folder
        for p in tmp.rglob("*"):
            if p.is_file():
                _fsync(p)
        for name in written:
            _keep_mode(directory / name, tmp / name)
        if not swap:  # one file at a time, each replaced in one rename
            for name in written:
                if (directory / name).is_dir() and not (directory / name).is_symlink():
                    shutil.rmtree(directory / name)
                os.replace(tmp / name, directory / name)
            for name in drop:
                _remove(directory / name)
            _write_manifest(tmp, kind, written | kept, token, complete=True)
            os.replace(tmp / MANIFEST, directory / MANIFEST)
            _fsync(directory)
            return given
        if directory.is_dir():
            _carry_over(directory, tmp, drop)
            _keep_mode(directory, tmp)
            _write_manifest(tmp, kind, written | kept, token, complete=True)
            _fsync(tmp / MANIFEST)
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
            _write_manifest(tmp, kind, written, token, complete=True)
            _fsync(tmp / MANIFEST)
            os.rename(tmp, directory)
            _fsync(directory.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return given


def remove_folder(directory: str | os.PathLike) -> bool:
    """Remove what gptlearn wrote in ``directory`` (the files its manifest lists, then the manifest) and the
    folder itself if nothing else is left; a folder without gptlearn's manifest is not touched. Returns
    whether the folder is gone."""
    directory = expand_path(directory)
    manifest = read_manifest(directory) if directory.is_dir() and not directory.is_symlink() else None
    if manifest is None:
        return False
    for name in manifest["files"]:
        _remove(directory / name)
    _clear_stale(directory)
    (directory / MANIFEST).unlink(missing_ok=True)
    try:
        directory.rmdir()  # only when empty: your files keep it
    except OSError:
        return False
    return True
