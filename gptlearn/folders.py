"""Which folders gptlearn may write into, and which of their files it may replace.

Every folder gptlearn writes (a model, an embedder, a training run, a web page) carries a small
manifest, ``.gptlearn-manifest.json``, naming what made the folder (``kind``) and the files it wrote.
The rule, applied by :func:`gptlearn.atomic.write_folder` before anything is written:

- a missing or empty folder is written;
- a folder whose manifest says gptlearn made it for the same kind is written: the files the manifest
  lists are replaced, everything else (your notes, a ``logs/`` folder) is kept as it is;
- any other folder is refused, in one line that names what is there, unless ``overwrite`` is given; even
  then only files that gptlearn wrote are replaced, and a save that would replace a file gptlearn did
  not write is refused.

Folders written before manifests existed are recognised by what only gptlearn writes in them (a
``trainer_state.json`` with its checksum, an ``embedder.json``, the web page's data file, a GPT-2
``config.json`` beside its ``model.safetensors``); their files count as gptlearn's once ``overwrite``
asks for them to be replaced.

>>> check_folder("a-new-folder", kind="model")        # doctest: +SKIP
set()
"""
from __future__ import annotations

import errno
import importlib.metadata
import json
import os
import pwd
from pathlib import Path
from typing import Any

from .checks import describe
from .errors import GptlearnError, InvalidTypeError, InvalidValueError
from .safeio import read_regular

__all__ = ["MANIFEST", "KINDS", "FolderInUseError", "NotAFolderError", "expand_path", "check_name", "read_manifest",
           "manifest_data", "check_folder", "refuse_foreign", "kind_of"]

MANIFEST = ".gptlearn-manifest.json"
KINDS = ("model", "embedder", "run", "site", "folder")
BOOKKEEPING = frozenset({MANIFEST, ".gptlearn.lock"})  # gptlearn's own entries, never "something else"
MANIFEST_MAX_BYTES = 1 << 20
TEMP_SUFFIX_CHARS = 48  # what a temporary sibling adds to a name: ".NAME.tmp-PID.START-XXXXXXXX"

_MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "vocab.json", "merges.txt",
                "char_tokenizer.json")
_WRITES = {  # kind -> the files a save of that kind writes (and an earlier gptlearn, without manifests, wrote)
    "model": _MODEL_FILES,
    "embedder": (*_MODEL_FILES, "embedder.json", "projection.safetensors", "train_embeddings.json", "modules.json",
                 "sentence_bert_config.json", "config_sentence_transformers.json", "tokenizer_config.json",
                 "1_Pooling", "2_Dense"),
    "run": (*_MODEL_FILES, "trainer_state.json", "trainer_state.safetensors", "trainer_state.pt"),
    "site": ("gptlearn-live-data.js", "index.html", "live_model.js", "live_fast.js", "live_explorer.js",
             "live_explorer.css"),
}


_NO_LONGER_WRITTEN = frozenset({"trainer_state.pt"})  # an earlier version's pickle: recognised, never written


class FolderInUseError(GptlearnError, FileExistsError):
    """A folder that holds things gptlearn did not write, where a save was asked for."""


class NotAFolderError(GptlearnError, NotADirectoryError):
    """A file (or a link to one) where a folder to save into was asked for."""


def expand_path(path: str | os.PathLike, what: str = "the path") -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a user that does not exist is an
    :class:`InvalidValueError` naming ``what`` (``Path.expanduser`` raises a bare RuntimeError)."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise InvalidTypeError(f"{what} must be a path (a str or a pathlib.Path), got {describe(path)}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.startswith("~"):
        user = text[1:].split(os.sep, 1)[0]
        if user:
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise InvalidValueError(f"{what} {text!r} starts with ~{user}, but there is no user {user!r} on "
                                        "this machine; give the path without ~, or with your own ~") from None
        elif "HOME" not in os.environ:
            try:
                pwd.getpwuid(os.getuid())
            except KeyError:
                raise InvalidValueError(f"{what} {text!r} starts with ~, but this process has no home folder; "
                                        "give the full path") from None
    return Path(os.path.expanduser(text))


def _name_max(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_name(path: str | os.PathLike, what: str = "the folder") -> Path:
    """Refuse, before any work, a folder name too long for its file system once gptlearn's temporary
    sibling (``.NAME.tmp-...``) is formed from it; returns the expanded path."""
    path = expand_path(path, what)
    limit = _name_max(path.parent)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise InvalidValueError(f"{what} {str(path)[:80]}... has a name of {len(os.fsencode(part))} bytes, and "
                                    f"this file system allows {limit} ({os.strerror(errno.ENAMETOOLONG)}); "
                                    "choose a shorter name")
    if len(os.fsencode(path.name)) + TEMP_SUFFIX_CHARS > limit:
        raise InvalidValueError(f"{what} {str(path)[:80]}... has a name of {len(os.fsencode(path.name))} bytes; "
                                f"gptlearn needs {TEMP_SUFFIX_CHARS} more for the temporary folder it writes "
                                f"beside it, and this file system allows {limit}; choose a shorter name")
    return path


def _version() -> str:
    try:
        return importlib.metadata.version("gptlearn")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def manifest_data(kind: str, files: list[str], save: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a manifest holds: the maker, the kind, the files written (sorted) and the save that wrote them."""
    return {"made_by": f"gptlearn {_version()}", "kind": kind, "files": sorted(files), "save": save or {}}


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None where there is none or it is not one gptlearn wrote (a regular
    file, at most 1 MiB, a JSON object with a ``kind`` and a list of file names)."""
    path = Path(folder) / MANIFEST
    try:
        raw = json.loads(read_regular(path, max_bytes=MANIFEST_MAX_BYTES).decode("utf-8"))
    except (OSError, GptlearnError, ValueError, RecursionError):
        return None
    if not (isinstance(raw, dict) and str(raw.get("made_by", "")).startswith("gptlearn")
            and raw.get("kind") in KINDS and isinstance(raw.get("files"), list)
            and all(isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in raw["files"])):
        return None
    if not isinstance(raw.get("save"), dict):
        raw["save"] = {}
    return raw


def _legacy_kind(folder: Path) -> str | None:
    """The kind of a folder an earlier gptlearn wrote (before manifests), told by what only it writes."""
    def json_object(name: str) -> dict | None:
        try:
            value = json.loads(read_regular(folder / name, max_bytes=MANIFEST_MAX_BYTES).decode("utf-8-sig"))
        except (OSError, GptlearnError, ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None

    state = json_object("trainer_state.json")
    if state is not None and "step" in state and "settings" in state:
        return "run"
    if (json_object("embedder.json") or {}).get("pooling") is not None:
        return "embedder"
    try:
        head = read_regular(folder / "gptlearn-live-data.js", max_bytes=64, whole=False)
        if head.startswith(b"// Written by gptlearn.web.export"):
            return "site"
    except (OSError, GptlearnError):
        pass
    if (json_object("config.json") or {}).get("model_type") == "gpt2" and (folder / "model.safetensors").is_file():
        return "model"
    return None


def kind_of(folder: str | os.PathLike) -> str | None:
    """What gptlearn made ``folder`` for ("model", "run", ...), by its manifest or, for a folder an earlier
    gptlearn wrote, by what only gptlearn writes; None for a folder gptlearn did not make."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    manifest = read_manifest(folder)
    return manifest["kind"] if manifest is not None else _legacy_kind(folder)


def _listing(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_folder(folder: str | os.PathLike, *, kind: str, overwrite: bool = False, what: str = "the folder",
                 hint: str | None = "pass overwrite=True") -> set[str]:
    """Refuse to write ``kind`` into ``folder`` unless it is missing, empty, or made by gptlearn for ``kind``
    (or ``overwrite``); returns the names gptlearn wrote there, which a save may replace or remove.

    Raises :class:`FolderInUseError` naming what is there; also when a file a save of ``kind`` writes
    (``config.json``, ``index.html``, ...) is there and gptlearn did not write it. Hidden bookkeeping of
    gptlearn's own (the manifest, a lock) does not count. ``hint`` says how to ask for ``overwrite``
    (None: it cannot be asked for).
    """
    ours = _check_folder(Path(folder), kind, overwrite, what, hint)
    refuse_foreign(Path(folder), set(_WRITES.get(kind, ())) - _NO_LONGER_WRITTEN, ours, what)
    return ours


def _check_folder(folder: Path, kind: str, overwrite: bool, what: str, hint: str | None) -> set[str]:
    if kind not in KINDS:  # a caller's mistake
        raise InvalidValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not folder.is_dir():
        if folder.exists() or folder.is_symlink():
            raise NotAFolderError(f"{what} {folder} is a file, not a folder; choose a folder")
        return set()
    names = sorted(p.name for p in folder.iterdir() if p.name not in BOOKKEEPING)
    if not names:
        return set()
    manifest = read_manifest(folder)
    if manifest is not None:
        ours = set(manifest["files"]) & set(names)
        if manifest["kind"] == kind or overwrite:
            return ours
        raise FolderInUseError(f"{what} {folder} holds a {manifest['kind']} that gptlearn wrote, not a {kind}; "
                               "choose another folder"
                               + (f", or {hint} to replace gptlearn's files there" if hint else ""))
    legacy = _legacy_kind(folder)
    if legacy is not None and (overwrite or (legacy == kind and kind != "model")):  # a GPT-2 folder may be anyone's
        return set(_WRITES[legacy]) & set(names)
    if overwrite:
        return set()
    raise FolderInUseError(f"{what} {folder} is not empty and gptlearn did not write it: it holds {_listing(names)}; "
                           "choose a new or empty folder"
                           + (f", or {hint} (which keeps them and replaces only files gptlearn wrote)" if hint else ""))


def refuse_foreign(folder: Path, written: set[str], ours: set[str], what: str = "the folder") -> None:
    """Refuse a save that would replace an entry of ``folder`` gptlearn did not write (not in ``ours``)."""
    if not folder.is_dir():
        return
    foreign = sorted(n for n in written if n not in ours and n not in BOOKKEEPING and os.path.lexists(folder / n))
    if foreign:
        raise FolderInUseError(f"{what} {folder} holds {_listing(foreign)}, which gptlearn did not write and would "
                               "replace; move it away or choose another folder (nothing was changed)")
