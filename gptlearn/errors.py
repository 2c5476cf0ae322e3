"""The error type for mistakes a user can fix (a bad argument, a missing file, an empty sentence)."""
from __future__ import annotations

__all__ = ["GptlearnError"]


class GptlearnError(Exception):
    """A user-facing error: its message says, in one sentence, what went wrong and what to do next.

    The ``gptlearn`` command prints it as one line, ``gptlearn: error: ...``, and exits with status 2.
    """
