"""Checking the arguments of a public function where they enter: pure functions, one per kind of value.

Each returns the value (normalised: a NumPy integer becomes an ``int``) or raises
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
"""
from __future__ import annotations

import math
import numbers
import operator
import os
from typing import Any, Callable, Collection, Sequence

from .errors import InvalidTypeError, InvalidValueError

__all__ = ["describe", "check_int", "check_number", "check_bool", "check_choice", "check_str", "check_path",
           "check_callable", "check_generator", "check_device", "check_texts", "check_optional"]


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
