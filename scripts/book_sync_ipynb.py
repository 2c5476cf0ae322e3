"""Write an output-free .ipynb twin beside every MyST-markdown chapter listed in _toc.yml, after
giving every chapter the same hidden set-up cell.

Why: Colab opens only .ipynb files (from GitHub), and sphinx-book-theme points a page's launch
buttons at ``book/NN.ipynb`` only when that file exists beside ``book/NN.md`` (see _config.yml).
The .md stays the file people edit and review; run this after editing a chapter:

    python scripts/book_sync_ipynb.py            # write the set-up cells and the twins
    python scripts/book_sync_ipynb.py --check    # exit 1 if any twin is missing or stale

The set-up cell (:func:`setup_cell`) is the first code cell of every chapter, hidden in the web book.
Where gptlearn is missing (Colab opens a bare notebook) it installs ``PIP_SPEC``: before gptlearn is on
PyPI, from the repository named in _config.yml (``repository.url``); if that fails it stops with one
clear message. tests/test_book.py runs the check; tests/test_binder.py checks that every chapter's
set-up cell is this one and runs its install branch. Pages that are not notebooks (no jupytext
header) are skipped.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]

# What the set-up cell installs where gptlearn is missing: gptlearn with the `notebooks` extra, which holds
# everything the chapters import (myst_nb among it). THE line to change when gptlearn is published on PyPI:
# PIP_SPEC = "gptlearn[notebooks]"; then run this script (README, "The book on Colab").
PIP_SPEC = "gptlearn[notebooks] @ git+{repository}"
SETUP_MARK = "# Set-up, hidden in the web book."
_SETUP_BLOCK = re.compile(r"```\{code-cell\} ipython3\n:tags: \[remove-cell\]\n\n# Set-up, hidden in the web "
                          r"book\..*?\n```\n",
                          re.S)


def repository_url(repo: Path = REPO) -> str:
    """``repository.url`` of _config.yml, e.g. ``https://github.com/gptlearn/gptlearn``."""
    return yaml.safe_load((repo / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def setup_cell(repo: Path = REPO) -> str:
    """The source of the hidden first code cell of every chapter."""
    spec = PIP_SPEC.format(repository=repository_url(repo))
    return f"""{SETUP_MARK} Where gptlearn is missing (Colab), this installs it first.
import importlib
import importlib.util
if importlib.util.find_spec("gptlearn") is None:
    GPTLEARN = "{spec}"
    %pip install --quiet "{{GPTLEARN}}"
    importlib.invalidate_caches()
    if importlib.util.find_spec("gptlearn") is None:
        raise ModuleNotFoundError(f"could not install {{GPTLEARN}} (pip said why, above): install gptlearn by hand, "
                                  "e.g. pip install from a clone of the repository, then run this cell again")
import gptlearn.plotting
gptlearn.plotting.setup_book();"""


def with_setup_cell(text: str, cell: str) -> str:
    """A chapter's MyST text with its set-up cell (the first ``# Set-up`` remove-cell) replaced by ``cell``."""
    block = f"```{{code-cell}} ipython3\n:tags: [remove-cell]\n\n{cell}\n```\n"
    new, n = _SETUP_BLOCK.subn(lambda _: block, text, count=1)
    if n == 0:
        raise ValueError(f"no set-up cell (a remove-cell code cell starting with {SETUP_MARK!r}) found")
    return new


def toc_files(repo: Path = REPO) -> list[str]:
    """Every document of _toc.yml (root first), without suffix, e.g. ``book/01_text_to_numbers``."""
    toc = yaml.safe_load((repo / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)

    walk(toc)
    return files


def is_notebook(md: Path) -> bool:
    head = md.read_text(encoding="utf-8")[:600]
    return head.startswith("---") and "jupytext:" in head and "kernelspec:" in head


def twin(md: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(md)
    for i, cell in enumerate(nb.cells):
        cell.id = hashlib.sha1(f"{i}:{cell.source}".encode()).hexdigest()[:8]  # stable: no churn in git
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("jupytext", None)  # a plain notebook: Colab/Jupyter need no jupytext to open it
    return nb


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 if a twin is missing or stale")
    args = ap.parse_args(argv)
    bad = []
    cell = setup_cell()
    for doc in toc_files():
        md = REPO / f"{doc}.md"
        if not md.is_file() or not is_notebook(md):
            continue
        if not args.check:
            text = md.read_text(encoding="utf-8")
            synced = with_setup_cell(text, cell)
            if synced != text:
                md.write_text(synced, encoding="utf-8")
                print(f"wrote the set-up cell of {md.relative_to(REPO)}")
        ipynb = md.with_suffix(".ipynb")
        nb = twin(md)
        if args.check:
            if not ipynb.is_file() or cells(nbformat.read(ipynb, as_version=4)) != cells(nb):
                bad.append(str(ipynb.relative_to(REPO)))
        else:
            nbformat.write(nb, ipynb)
            print(f"wrote {ipynb.relative_to(REPO)}")
    if bad:
        print("missing or stale (run: python scripts/book_sync_ipynb.py): " + ", ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
