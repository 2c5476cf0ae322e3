"""Per-chapter notebook execution times from a Jupyter Book build log.

    jupyter-book build . -W -n --keep-going 2>&1 | tee _build/build.log
    python scripts/book_times.py _build/build.log

(tests/test_book.py saves the log of the build it runs as _build/build.log and the table as
_build/execution_times.txt.)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

_LINE = re.compile(r"(\S+?\.(?:md|ipynb)): Executed notebook in ([\d.]+) seconds")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def execution_times(log: str) -> dict[str, float]:
    """``{"book/01_text_to_numbers.md": 17.2, ...}`` in build order."""
    return {Path(m[1]).parent.name + "/" + Path(m[1]).name: float(m[2]) for m in _LINE.finditer(_ANSI.sub("", log))}


def table(times: dict[str, float]) -> str:
    rows = [f"{t:7.1f} s  {name}" for name, t in times.items()]
    return "\n".join(rows + [f"{sum(times.values()):7.1f} s  total (notebook execution only)"])


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/build.log")
    print(table(execution_times(path.read_text(errors="replace"))))
