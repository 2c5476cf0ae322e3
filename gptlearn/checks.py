"""One way to check each kind of input: a setting against its rule, a tensor for NaN and infinity, a file
that must be a regular file of bounded size, a digest.

Settings are checked with rules, ``(names, test, what it must be)``; :func:`check_rules` raises the first
that fails in one line, "lr must be a positive number, got -1".

>>> RULES = ((("steps", "batch_size"), lambda x: is_int(x, 1), "a positive integer"),)
>>> check_rules({"steps": 10, "batch_size": 0}, RULES)
Traceback (most recent call last):
...
gptlearn.errors.InvalidValueError: batch_size must be a positive integer, got 0
"""
from __future__ import annotations

import hashlib
import math
import numbers
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .errors import InvalidFileError, InvalidValueError

__all__ = ["is_int", "is_number", "is_path", "optional", "shown", "check_rules", "Rule", "non_finite",
           "read_regular", "sha256"]

Rule = tuple[tuple[str, ...], Callable[[Any], bool], str]  # (the settings, the test each passes, what it must be)


def is_int(x: Any, lo: int | None = None, hi: int | None = None) -> bool:
    """An integer (not a bool) in [lo, hi]."""
    return (isinstance(x, numbers.Integral) and not isinstance(x, bool) and (lo is None or x >= lo)
            and (hi is None or x <= hi))


def is_number(x: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    """A finite real number (not a bool) in [lo, hi]."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi


def is_path(x: Any) -> bool:
    """A path or a name: a non-empty string (or ``os.PathLike``) without NUL."""
    return isinstance(x, (str, os.PathLike)) and str(os.fspath(x)).strip() != "" and "\0" not in str(os.fspath(x))


def optional(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """``ok``, or None."""
    return lambda x: x is None or ok(x)


def shown(value: Any, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters (a file can hold a megabyte where a number belongs)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= width else text[:width - 3] + "..."


def check_rules(values: Mapping[str, Any] | Any, rules: Iterable[Rule], *, prefix: str = "") -> None:
    """Raise :class:`InvalidValueError` for the first setting that fails its rule: "``prefix``name must be
    what, got value". ``values``: a mapping, or an object whose attributes are the settings."""
    get = values.get if isinstance(values, Mapping) else lambda name: getattr(values, name)
    for names, ok, rule in rules:
        for name in names:
            value = get(name)
            if not ok(value):
                raise InvalidValueError(f"{prefix}{name} must be {rule}, got {shown(value)}")


def non_finite(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str | None:
    """What is not finite in ``model``'s weights or in the optimizer's state ("the weight wte.weight is not
    finite"), or None."""
    names = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        names[t] = name
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"the weight {name} is not finite"
    for p, entry in (optimizer.state.items() if optimizer is not None else ()):
        for key, v in entry.items():
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                return f"AdamW's {key} of {names.get(p, 'a weight')} is not finite"
    return None


def read_regular(path: str | os.PathLike, *, limit: int, what: str = "the file") -> bytes:
    """The bytes of ``path``, which must be a regular file (a FIFO, a device such as ``/dev/zero`` or a
    folder is refused, also behind a symlink) of at most ``limit`` bytes. Opened without blocking, so a
    FIFO never hangs the reader. Raises :class:`InvalidFileError` (or ``FileNotFoundError``)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise InvalidFileError(f"{what} {path} cannot be read ({e.strerror or e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidFileError(f"{what} {path} is not a regular file (a device, a FIFO or a folder); "
                                   "replace it with the file gptlearn wrote")
        if info.st_size > limit:
            raise InvalidFileError(f"{what} {path} holds {info.st_size:,} bytes, more than the {limit:,} it can "
                                   "hold; it is not the file gptlearn wrote")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise InvalidFileError(f"{what} {path} grew past {limit:,} bytes while read")
        return data
    finally:
        os.close(fd)


def sha256(data: bytes | str | os.PathLike | Path) -> str:
    """The hex SHA-256 of bytes, or of the file a path names (read in chunks)."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with open(data, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

