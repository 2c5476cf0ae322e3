"""Reading the files a user points at without hanging or filling the memory.

A path may name something that is not a file: a FIFO (reading it waits for a writer forever), ``/dev/zero``
or ``/dev/urandom`` (endless), a folder, a socket, or a symlink to any of these. Every file gptlearn reads
(JSON, tokenizer files, tensors, training text) is opened here: with ``O_NONBLOCK`` (opening a FIFO does
not wait), checked to be a regular file (``S_ISREG`` on the opened descriptor, so a symlink is judged by
what it points at), and, where the caller gives a cap, refused when it is larger than that before a byte
is read.

>>> read_regular("/dev/zero")                                          # doctest: +SKIP
Traceback (most recent call last):
InvalidFileError: /dev/zero is not a regular file but a character device; pass a file
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import InvalidFileError, MissingFileError

__all__ = ["JSON_MAX_BYTES", "read_regular", "check_regular", "read_json", "file_kind"]

JSON_MAX_BYTES = 256 << 20  # the largest JSON file gptlearn parses (GPT-2's vocab.json is 1 MB)


def file_kind(mode: int) -> str:
    """What an ``st_mode`` names, in words: "a FIFO", "a character device", ..."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _open(path: Path) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingFileError(f"{path} does not exist; check the path") from None
    except IsADirectoryError:
        raise InvalidFileError(f"{path} is not a regular file but a folder; pass a file") from None
    except OSError as e:
        raise InvalidFileError(f"{path} cannot be read ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InvalidFileError(f"{path} is not a regular file but {file_kind(st.st_mode)}; pass a file")
    return fd, st


def check_regular(path: str | os.PathLike, *, max_bytes: int | None = None) -> int:
    """Refuse ``path`` unless it is a regular file (of at most ``max_bytes``); returns its size. For files
    a library then opens itself (``torch.load``)."""
    path = Path(path)
    fd, st = _open(path)
    os.close(fd)
    if max_bytes is not None and st.st_size > max_bytes:
        raise InvalidFileError(f"{path} is {st.st_size:,} bytes, more than the {max_bytes:,} such a file may hold; "
                               "pass the right file")
    return st.st_size


def read_regular(path: str | os.PathLike, *, max_bytes: int | None = None, whole: bool = True) -> bytes:
    """The bytes of the regular file ``path``. With ``max_bytes``: a larger file is refused (``whole``) or
    only its first ``max_bytes`` are read (``whole=False``). Not a regular file: :class:`InvalidFileError`;
    missing: :class:`MissingFileError`; both name the path."""
    path = Path(path)
    fd, st = _open(path)
    try:
        if max_bytes is not None and whole and st.st_size > max_bytes:
            raise InvalidFileError(f"{path} is {st.st_size:,} bytes, more than the {max_bytes:,} such a file may "
                                   "hold; pass the right file")
        os.set_blocking(fd, True)  # a regular file: reads never wait anyway
        limit = st.st_size if max_bytes is None else min(st.st_size, max_bytes)
        chunks, got = [], 0
        while got < limit:  # the file may shrink (or grow) while it is read: read what the size promised
            chunk = os.read(fd, min(limit - got, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise InvalidFileError(f"{path} cannot be read ({e.strerror or e})") from None
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The value in the JSON file ``path``, or an :class:`InvalidFileError` "``path`` is not ``what``: why"
    (not readable, not a regular file, larger than :data:`gptlearn.safeio.JSON_MAX_BYTES`, not UTF-8, not JSON,
    nested too deeply). A UTF-8 byte-order mark is allowed.

    Callers then check the value's type and fields, with messages in the same form.
    """
    try:
        data = read_regular(path, max_bytes=JSON_MAX_BYTES)  # a FIFO or /dev/zero is refused, not read
    except MissingFileError:
        raise InvalidFileError(f"{path} is not {what}: it cannot be read (No such file or directory)") from None
    except InvalidFileError as e:
        raise InvalidFileError(f"{path} is not {what}: it {str(e).removeprefix(str(path) + ' ')}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidFileError(f"{path} is not {what}: it is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                               f"offset {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidFileError(f"{path} is not {what}: it is not valid JSON ({e.msg} at line {e.lineno}, "
                               f"column {e.colno})") from None
    except (RecursionError, ValueError) as e:  # nested thousands deep; an integer of thousands of digits
        why = "it nests too deeply" if isinstance(e, RecursionError) else f"it holds a number JSON readers refuse ({e})"
        raise InvalidFileError(f"{path} is not {what}: {why}") from None
