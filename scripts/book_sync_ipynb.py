"""Write an output-free .ipynb twin beside every MyST-markdown chapter listed in _toc.yml.

Why: Colab opens only .ipynb files (from GitHub), and sphinx-book-theme points a page's launch
buttons at ``book/NN.ipynb`` only when that file exists beside ``book/NN.md`` (see _config.yml).
The .md stays the file people edit and review; run this after editing a chapter:

    python scripts/book_sync_ipynb.py            # write the twins
    python scripts/book_sync_ipynb.py --check    # exit 1 if any twin is missing or stale

tests/test_book.py runs the check. Pages that are not notebooks (no jupytext header) are skipped.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]


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
    for doc in toc_files():
        md = REPO / f"{doc}.md"
        if not md.is_file() or not is_notebook(md):
            continue
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
