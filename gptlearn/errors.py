"""The error family for mistakes a user can fix: a bad argument, a malformed file, a model that cannot be reached.

Everything a user can cause raises a :class:`GptlearnError`; anything else is a bug and keeps its traceback.
The subclasses also inherit the built-in exception that was raised before (``ValueError``, ``TypeError``,
``FileNotFoundError``, ...), so ``except ValueError`` in older code still catches them.

>>> issubclass(InvalidFileError, GptlearnError) and issubclass(InvalidFileError, ValueError)
True
"""
from __future__ import annotations

__all__ = ["GptlearnError", "InvalidValueError", "InvalidTypeError", "InvalidFileError", "MissingFileError",
           "TokenIdError", "UnknownNameError", "NoTokenizerError", "UnavailableError"]


class GptlearnError(Exception):
    """A user-facing error: its message says, in one sentence, what went wrong and what to do next.

    The ``gptlearn`` command prints it as one line, ``gptlearn: error: ...``, and exits with status 2.
    """


class InvalidValueError(GptlearnError, ValueError):
    """An argument or setting outside what it may be (a negative temperature, an unknown pooling, ...)."""


class InvalidTypeError(GptlearnError, TypeError):
    """An argument of the wrong kind (``None`` where token ids belong, ...)."""


class InvalidFileError(GptlearnError, ValueError):
    """A file that does not hold what it must; the message names the file and the field."""


class MissingFileError(GptlearnError, FileNotFoundError):
    """A file or folder that should be there is not."""


class TokenIdError(InvalidValueError, IndexError):
    """A token id outside ``0 .. vocab_size - 1`` (an IndexError before, from the embedding lookup)."""


class UnknownNameError(GptlearnError, KeyError):
    """A name that is not there (a hook point, a cached activation); a KeyError, as a dict lookup's."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


class NoTokenizerError(GptlearnError):
    """A model whose vocabulary is not GPT-2's and that carries no tokenizer (``model.tokenizer``). Not an
    AttributeError: raised from a property of an ``nn.Module``, that would be swallowed by its ``__getattr__``."""


class UnavailableError(GptlearnError, RuntimeError):
    """Something this machine lacks: a device, a compiler, a download."""
