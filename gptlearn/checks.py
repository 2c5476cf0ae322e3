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

import argparse
import dataclasses
import hashlib
import math
import numbers
import os
import stat
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from .errors import InvalidFileError, InvalidValueError

__all__ = ["is_int", "is_number", "is_path", "optional", "shown", "check_rules", "Rule", "non_finite",
           "read_regular", "sha256", "setting", "add_config_arguments"]

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



# ---- settings dataclasses (TrainConfig, EmbedTrainConfig): a field, its flag, and the flags of a parser ----
def setting(default: Any, help: str, *, flag: str | None = None, cli: bool = True, group: str | None = None,
            **options: Any) -> Any:
    """A settings-dataclass field and its command-line flag: ``flag`` replaces ``--field-name``, ``cli=False``
    keeps the field off the command line, ``group`` names a mutually exclusive group of the parser, and
    ``options`` go to ``add_argument`` (``required``, ``choices``)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "cli": cli, "group": group,
                                                        "options": options})


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, groups: Mapping[str, Any] | None = None) -> None:
    """One flag per field of the settings dataclass ``cls`` made with :func:`setting`: its name with dashes,
    its type, its help with its default. A flag left out is absent from the parsed namespace (so the
    dataclass's default, or a resumed run's own value, applies); a bool is a switch that flips its default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", False):
            continue
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        to = (groups or {}).get(f.metadata["group"], parser)
        if hints[f.name] is bool:  # --compile turns a False default on, --no-progress a True one off
            to.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                            default=argparse.SUPPRESS, help=f.metadata["help"])
            continue
        types = typing.get_args(hints[f.name]) or (hints[f.name],)  # `int | None` -> int
        help = f.metadata["help"] + (f" (default: {f.default})" if f.default is not None
                                     and "default" not in f.metadata["help"] else "")
        metavar = None if "choices" in f.metadata["options"] else flag[2:].upper().replace("-", "_")
        to.add_argument(flag, dest=f.name, type=next((t for t in (int, float, str) if t in types), str),
                        default=argparse.SUPPRESS, metavar=metavar, help=help, **f.metadata["options"])
