"""One way to check each kind of input.

**Arguments of public functions**, where they enter: ``check_int``, ``check_number``, ``check_bool``, ...
return the value (normalised: a NumPy integer becomes an ``int``) or raise
:class:`~gptlearn.errors.InvalidTypeError` (the wrong kind of value) or
:class:`~gptlearn.errors.InvalidValueError` (the right kind, out of range), with one message that names
the argument, what it got and what it takes:

>>> check_int(2.5, "batch_size", low=1)
Traceback (most recent call last):
...
gptlearn.errors.InvalidTypeError: batch_size must be an integer >= 1, got 2.5 (a float)
>>> check_number(0.5, "temperature", low=0)
0.5

``True`` is not an integer here and ``"no"`` is not a bool: Python would take both, silently.

**Settings** (a trainer's, a config's) are checked with rules, ``(names, test, what it must be)``;
:func:`check_rules` raises the first that fails in one line, "lr must be a positive number, got -1".

>>> RULES = ((("steps", "batch_size"), lambda x: is_int(x, 1), "a positive integer"),)
>>> check_rules({"steps": 10, "batch_size": 0}, RULES)
Traceback (most recent call last):
...
gptlearn.errors.InvalidValueError: batch_size must be a positive integer, got 0

Also here: a tensor check for NaN and infinity (:func:`non_finite`) and a digest (:func:`sha256`). Files are
read through :mod:`gptlearn.safeio`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import numbers
import operator
import os
import typing
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import torch

from .errors import InvalidTypeError, InvalidValueError

__all__ = ["describe", "check_int", "check_number", "check_bool", "check_choice", "check_str", "check_path",
           "check_callable", "check_generator", "check_device", "check_texts", "check_optional",
           "is_int", "is_number", "is_path", "optional", "shown", "check_rules", "Rule", "non_finite",
           "sha256", "setting", "add_config_arguments"]



def describe(value: Any, limit: int = 60) -> str:
    """``value`` as a message shows it: a short repr and, where the repr does not say it, its type."""
    try:
        text = repr(value)
    except Exception:  # a repr that raises: the type is all we can say
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    obvious = (type(value) in (str, bool, type(None))) or type(value).__name__ in text[:40]
    kind = type(value).__name__
    return text if obvious else f"{text} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"


def _range(low: Any, high: Any, low_open: bool = False) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"<= {high}")
    return " and ".join(parts)


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (Python's, NumPy's or a 0-d integer tensor; not a bool) in ``low..high``."""
    rule = "an integer" + (f" {_range(low, high)}" if low is not None or high is not None else "")
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):
        raise InvalidTypeError(f"{name} must be {rule}, got {describe(value)}")
    try:
        number = operator.index(value)
    except TypeError:
        raise InvalidTypeError(f"{name} must be {rule}, got {describe(value)}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise InvalidValueError(f"{name} must be {rule}, got {number}")
    return number


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite real number (int, float, NumPy's; not a bool, not a tensor) in ``low..high`` (``low_open``:
    strictly above ``low``)."""
    rule = "a finite number" + (f" {_range(low, high, low_open)}" if low is not None or high is not None else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be {rule}, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        raise InvalidValueError(f"{name} must be {rule}, got {describe(value)}") from None
    if (not math.isfinite(number) or (low is not None and (number <= low if low_open else number < low))
            or (high is not None and number > high)):
        raise InvalidValueError(f"{name} must be {rule}, got {describe(value)}")
    return number


def check_bool(value: Any, name: str) -> bool:
    """True or False (NumPy's bool too); a string such as ``"no"`` is refused, not read as true."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise InvalidTypeError(f"{name} must be True or False, got {describe(value)}")


def check_choice(value: Any, name: str, choices: Collection[Any]) -> Any:
    """One of ``choices`` (compared by equality; a value that cannot be hashed is refused)."""
    try:
        ok = value in choices and not isinstance(value, bool)
    except TypeError:
        ok = False
    if not ok:
        shown = ", ".join(repr(c) for c in choices)
        raise InvalidValueError(f"{name} must be one of {shown}, got {describe(value)}")
    return value


def check_str(value: Any, name: str, *, empty: bool = True) -> str:
    """A ``str`` (not bytes); with ``empty=False``, one holding something."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be text (a str), got {describe(value)}")
    if not empty and not value:
        raise InvalidValueError(f"{name} must not be empty")
    return value


def check_path(value: Any, name: str) -> str | os.PathLike:
    """A path (a str or ``os.PathLike``), not empty and without NUL bytes."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidTypeError(f"{name} must be a path (a str or a pathlib.Path), got {describe(value)}")
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text or "\0" in text:
        raise InvalidValueError(f"{name} must be a path, got {describe(value)}")
    return value


def check_callable(value: Any, name: str) -> Callable:
    if not callable(value):
        raise InvalidTypeError(f"{name} must be a function, got {describe(value)}")
    return value


def check_generator(value: Any, name: str = "generator"):
    """None or a ``torch.Generator``."""
    import torch

    if value is not None and not isinstance(value, torch.Generator):
        raise InvalidTypeError(f"{name} must be a torch.Generator (or None), got {describe(value)}")
    return value


def check_device(value: Any, name: str = "device"):
    """A device torch knows the name of ("cpu", "cuda:0", a ``torch.device``), as a ``torch.device``;
    None and "auto" come back unchanged. Whether it is present is the caller's question."""
    import torch

    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, torch.device):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidTypeError(f"{name} must be a device name such as 'cpu' or 'cuda' (or a torch.device), "
                               f"got {describe(value)}")
    try:
        return torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise InvalidValueError(f"{name} must be a device name such as 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps', "
                                f"got {describe(value)}") from None


def check_texts(value: Any, name: str) -> list[str]:
    """One text or an ordered sequence of texts (a list, a tuple), as a list; a dict, a set, bytes or a
    sequence holding anything but strings is refused."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (bytes, bytearray, dict, set, frozenset)) or not isinstance(value, Sequence):
        raise InvalidTypeError(f"{name} must be a str or a list of str, got {describe(value)}")
    texts = list(value)
    for t in texts:
        if not isinstance(t, str):
            raise InvalidTypeError(f"{name} must be a str or a list of str, but it holds {describe(t)}")
    return texts


def check_optional(check: Callable[..., Any], value: Any, name: str, **kwargs: Any) -> Any:
    """``None``, or ``check(value, name, **kwargs)``."""
    return None if value is None else check(value, name, **kwargs)


# ---- settings rules, finite checks, files and digests ---------------------------------------------

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
