"""The book's claims about what a model printed are checked by the build (read from the sources, no build).

A sentence about a model's output is either *glued* (its number or phrase comes from the run through
myst-nb's ``glue``, written ``{glue:text}`name``` in the prose) or *asserted* in a cell hidden from the page
(tags ``remove-cell`` or ``remove-input``), so a different model or a changed package makes the build
fail instead of the page silently saying something false. These tests count both kinds per chapter,
print the count (``pytest -s tests/test_book_claims.py``), and check that every glued name the prose
uses is one a cell glues.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from book_sync_ipynb import is_notebook, toc_files  # noqa: E402

GLUE_REF = re.compile(r"\{glue(?::text|:)?\}`([^`:]+)(?::[^`]*)?`")           # {glue:text}`name:.2f`
GLUE_CALL = re.compile(r"\bglue\(\s*(f?)([\"'])(.+?)\2")  # glue("name", ...) / glue(f"x_{k}", ...)
HIDDEN = {"remove-cell", "remove-input"}
ASSERTION = re.compile(r"^\s*(assert\b|torch\.testing\.assert_close\(|np\.testing\.assert_\w+\()", re.M)
COMPUTED_PROSE = re.compile(r"^\s*Markdown\(", re.M)                           # a hidden cell that writes prose
MIN_CLAIMS = 3


def _chapters() -> list[Path]:
    out = []
    for doc in toc_files(REPO):
        path = REPO / f"{doc}.md"
        if path.is_file() and is_notebook(path):
            out.append(path)
    return out


def count_claims(path: Path) -> dict:
    """Glued names used in the prose, assertions in hidden cells, hidden cells that write prose, and the
    glued names the prose uses that no cell glues."""
    nb = jupytext.read(path)
    refs: set[str] = set()
    defined: list[re.Pattern] = []
    hidden_asserts = computed = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            refs.update(GLUE_REF.findall(cell.source))
            continue
        if cell.cell_type != "code":
            continue
        for is_f, _, name in GLUE_CALL.findall(cell.source):
            pattern = re.escape(name)
            if is_f:  # glue(f"bpt_{key}") names a family: match any text where the braces are
                pattern = re.sub(r"\\\{.*?\\\}", ".+", pattern)
            defined.append(re.compile(pattern + r"\Z"))
        if HIDDEN & set(cell.metadata.get("tags", [])):
            hidden_asserts += len(ASSERTION.findall(cell.source))
            computed += len(COMPUTED_PROSE.findall(cell.source))
    undefined = sorted(r for r in refs if not any(p.match(r) for p in defined))
    return {"glued": len(refs), "hidden asserts": hidden_asserts, "computed prose": computed,
            "total": len(refs) + hidden_asserts + computed, "undefined": undefined}


def test_the_counter_counts_glue_and_hidden_assertions(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n    format_version: 0.13\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "The loss fell to {glue:text}`loss:.2f`, and {glue:text}`other` too; {glue:text}`bpt_GPT_cor`.\n\n"
        "```{code-cell} ipython3\nglue(\"loss\", 1.0)\nglue(f\"bpt_{k}\", 2)\nassert True   # visible: not "
        "counted\n```\n\n"
        "```{code-cell} ipython3\n:tags: [remove-cell]\nassert 1 < 2\ntorch.testing.assert_close(a, b)\n```\n\n"
        "```{code-cell} ipython3\n:tags: [remove-input]\nMarkdown(f\"the best layer is {l}\")\n```\n",
        encoding="utf-8")
    got = count_claims(page)
    assert got == {"glued": 3, "hidden asserts": 2, "computed prose": 1, "total": 6, "undefined": ["other"]}


def test_every_chapter_checks_its_claims_about_the_model():
    rows = {path.stem: count_claims(path) for path in _chapters()}
    assert len(rows) >= 12, f"expected the book's chapters, found {sorted(rows)}"
    print("\nchecked claims per chapter (glued in the prose + assertions in hidden cells + hidden cells "
          "that write prose):")
    for name, row in rows.items():
        print(f"  {name:32} {row['total']:4d}  ({row['glued']} glued, {row['hidden asserts']} hidden asserts, "
              f"{row['computed prose']} computed prose)")
    print(f"  {'all chapters':32} {sum(r['total'] for r in rows.values()):4d}")
    undefined = {name: row["undefined"] for name, row in rows.items() if row["undefined"]}
    assert not undefined, f"the prose uses glued names that no cell glues: {undefined}"
    few = {name: row["total"] for name, row in rows.items() if row["total"] < MIN_CLAIMS}
    assert not few, f"chapters with fewer than {MIN_CLAIMS} checked claims: {few}"


PLACEHOLDER_REPOSITORY = "https://github.com/gptlearn/gptlearn"


def test_no_button_points_at_the_placeholder_repository():
    """_config.yml: while repository.url is the placeholder (no such repository yet), the launch buttons
    (Binder, JupyterHub, Colab) and the repository/issues buttons stay off, so no button leads nowhere."""
    import yaml

    config = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))
    if config["repository"]["url"].rstrip("/") != PLACEHOLDER_REPOSITORY:
        pytest.skip("the repository URL has been set: the buttons may point at it")
    on = [key for key in ("binderhub_url", "jupyterhub_url", "colab_url") if config["launch_buttons"].get(key)]
    on += [key for key in ("use_repository_button", "use_issues_button") if config["html"].get(key)]
    assert not on, f"these buttons point at the placeholder repository {PLACEHOLDER_REPOSITORY}: {on}"


DEF = re.compile(r"^def (\w+)\(", re.M)


def solution_rebinds(path: Path) -> list[str]:
    """Functions a solution cell defines under a name that a cell outside the solutions defines too (the
    learner's attempt, or the chapter's own): running the solution would overwrite it."""
    nb = jupytext.read(path)
    inside, outside, in_solution = set(), set(), False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for marker in re.findall(r"\{solution-(start|end)\}", cell.source):
                in_solution = marker == "start"
        elif cell.cell_type == "code":
            (inside if in_solution else outside).update(DEF.findall(cell.source))
    return sorted(inside & outside)


def test_solutions_never_overwrite_the_learners_functions(tmp_path):
    """'Run all' in Jupyter runs the hidden solutions too: a solution must define its own names
    (solution_xxx), so the learner's my_xxx survives and its checker still judges the learner's code."""
    page = tmp_path / "page.md"
    page.write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n    format_version: 0.13\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "```{code-cell} ipython3\ndef my_f(x):\n    raise NotImplementedError\n```\n\n"
        "```{solution-start} ex\n:class: dropdown\n```\n\n"
        "```{code-cell} ipython3\ndef my_f(x):\n    return x\n\ndef solution_g(x):\n    return x\n```\n\n"
        "```{solution-end}\n```\n", encoding="utf-8")
    assert solution_rebinds(page) == ["my_f"]
    found = {path.stem: solution_rebinds(path) for path in _chapters()}
    assert not {k: v for k,
                v in found.items() if v}, f"solutions that overwrite functions defined outside them: {found}"
