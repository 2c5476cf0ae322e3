"""The book as Binder and Colab run it.

* Colab opens a bare notebook: every chapter's hidden set-up cell must be the same
  (``scripts/book_sync_ipynb.py`` writes it), install gptlearn from the repository named in
  ``_config.yml`` while gptlearn is not on PyPI, and stop with one clear message when that fails.
* Binder builds its environment from ``binder/requirements.txt`` alone. Its CPU-torch index is not
  reachable from CI, so the slow tests install a copy of the file in which the torch lines are replaced
  by the torch this interpreter runs (here ``2.13.0+cpu``, found by pip's ``find-links``), into a fresh
  venv, plus what repo2docker's base image brings (ipykernel, nbclient); then they run every chapter's
  ``.ipynb`` twin (what Binder's launch button opens) in it with nbclient, with no cell error allowed.

The venv is kept between runs in ``$GPTLEARN_BINDER_VENV`` (default: a folder under the system's temp
directory named after this checkout and the requirements' hash), so only the first run pays the install.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from book_sync_ipynb import PIP_SPEC, is_notebook, repository_url, setup_cell, toc_files  # noqa: E402

REQUIREMENTS = REPO / "binder" / "requirements.txt"
REPO2DOCKER_BASE = ["ipykernel<7", "nbclient"]  # in repo2docker's base environment, not in binder/


def _chapters() -> list[Path]:
    return [REPO / f"{doc}.md" for doc in toc_files(REPO)
            if (REPO / f"{doc}.md").is_file() and is_notebook(REPO / f"{doc}.md")]


# ---- Colab: the set-up cell -------------------------------------------------------------------------


@pytest.mark.parametrize("md", _chapters(), ids=lambda p: p.stem)
def test_every_chapter_starts_with_the_same_setup_cell(md):
    import jupytext

    nb = jupytext.read(md)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source.strip() == setup_cell().strip(), (
        f"{md.name}: the first code cell is not the book's set-up cell; run python scripts/book_sync_ipynb.py")
    assert "remove-cell" in first.metadata.get("tags", []), f"{md.name}: the set-up cell must be hidden (remove-cell)"


def test_setup_cell_installs_from_the_repository_in_config():
    url = repository_url()
    assert url.startswith("https://github.com/") and url.count("/") == 4, url
    assert f'"{PIP_SPEC.format(repository=url)}"' in setup_cell()
    assert f"@ git+{url}" in setup_cell()  # until gptlearn is on PyPI (README: "The book on Colab")
    extras = re.search(r"gptlearn\[([\w,]+)\]", PIP_SPEC)[1].split(",")
    pyproject = (REPO / "pyproject.toml").read_text()
    for extra in extras:
        assert re.search(rf"^{extra} = \[", pyproject,
                         re.M), f"the set-up cell asks for gptlearn[{extra}], not in pyproject"



def _requirement_closure(extra: str) -> set[str]:
    """Normalised names of every distribution ``pip install gptlearn[extra]`` brings: gptlearn's own
    requirements read from this checkout's pyproject.toml (its extras may name each other), then what those
    declare, read from the installed packages' metadata."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]] + [Requirement(f"gptlearn[{extra}]")]
    seen, done = {"gptlearn"}, set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        for x in sorted(req.extras) or [""]:
            if (name, x) in done:
                continue
            done.add((name, x))
            if name == "gptlearn":
                todo += [Requirement(r) for r in project["optional-dependencies"].get(x, [])]
                continue
            seen.add(name)
            try:
                declared = metadata.requires(req.name) or []
            except metadata.PackageNotFoundError:
                continue  # not installed here: its own requirements cannot be read, the name itself counts
            for r in map(Requirement, declared):
                if r.marker is None or r.marker.evaluate({"extra": x}):
                    todo.append(r)
    return seen


def test_setup_cell_installs_what_the_chapters_import():
    """Every module a chapter's code cells import is in the standard library, gptlearn, or a distribution
    that the set-up cell's pip line brings (myst_nb for glue, pandas, ipywidgets, scipy through umap-learn...)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    import jupytext

    extra = re.search(r"gptlearn\[(\w+)\]", PIP_SPEC)[1]
    closure = _requirement_closure(extra)
    providers = metadata.packages_distributions()
    imported: dict[str, set[str]] = {}
    for path in _chapters():
        for cell in jupytext.read(path).cells:
            if cell.cell_type == "code":
                for name in re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", cell.source, re.M):
                    imported.setdefault(name, set()).add(path.name)
    assert {"myst_nb", "pandas", "gptlearn"} <= set(imported)
    missing = {}
    for module, where in sorted(imported.items()):
        if module in sys.stdlib_module_names or module == "gptlearn":
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {sorted(where)}) is not installed here"
        if not dists & closure:
            missing[module] = sorted(where)
    assert not missing, f"gptlearn[{extra}] does not bring what these chapters import: {missing}"

_RUN_CELL = r"""
import importlib.util, json, shlex, sys
from IPython.core.interactiveshell import InteractiveShell

real_find_spec = importlib.util.find_spec
state = {"installed": False, "pip": []}

def find_spec(name, *args, **kwargs):       # gptlearn is missing until the fake pip "installs" it
    if name == "gptlearn" and not state["installed"]:
        return None
    return real_find_spec(name, *args, **kwargs)

importlib.util.find_spec = find_spec

def fake_pip(line):
    state["pip"].append(shlex.split(line))
    state["installed"] = sys.argv[2] == "works"

shell = InteractiveShell.instance()
shell.register_magic_function(fake_pip, "line", "pip")
result = shell.run_cell(open(sys.argv[1]).read())
err = result.error_in_exec
print(json.dumps({"pip": state["pip"], "error": f"{type(err).__name__}: {err}" if err else None}))
"""


@pytest.mark.parametrize("pip_result", ["works", "fails"])
def test_setup_cell_runs_its_install_branch(tmp_path, pip_result):
    """The set-up cell where gptlearn is missing, as on Colab, with %pip replaced by a stand-in that
    records its arguments (nothing is installed): it asks pip for PIP_SPEC; when pip fails it stops
    with one clear message that names what it tried to install."""
    (tmp_path / "cell.py").write_text(setup_cell())
    (tmp_path / "run.py").write_text(_RUN_CELL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("GPTLEARN_BOOK_BUILD", None)
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "cell.py"), pip_result],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    spec = PIP_SPEC.format(repository=repository_url())
    assert out["pip"] == [["install", "--quiet", spec]]
    if pip_result == "works":
        assert out["error"] is None
    else:
        assert out["error"].startswith(f"ModuleNotFoundError: could not install {spec} (pip said why, above)")
        assert "\n" not in out["error"]


@pytest.mark.slow
@pytest.mark.heavy
def test_pip_installs_gptlearn_from_a_git_url(tmp_path):
    """``pip install "gptlearn[notebooks] @ git+URL"`` (the set-up cell's line) resolves to this project
    with that extra, from a git clone of this checkout's HEAD (dry run, no index: nothing is installed)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True, timeout=300)
    url = f"file://localhost{clone}"  # pip 23's URL check wants a host, even for file URLs
    spec = PIP_SPEC.format(repository=url)
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                           "--no-build-isolation", "--no-index", "--report", str(report), spec],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (item,) = json.loads(report.read_text())["install"]
    assert item["metadata"]["name"] == "gptlearn"
    assert item["download_info"]["url"] == url and item["download_info"]["vcs_info"]["vcs"] == "git"
    assert set(item["requested_extras"]) == {"notebooks"}


# ---- Binder: binder/requirements.txt in a fresh venv, every chapter run in it ------------------------


def test_binder_requirements_pin_cpu_torch_and_install_the_repo():
    req = REQUIREMENTS.read_text()
    assert re.search(r"^--extra-index-url https://download\.pytorch\.org/whl/cpu$", req, re.M)
    assert re.search(r"^torch==[\d.]+\+cpu$", req, re.M)
    assert re.search(r"^jupytext", req, re.M)  # Binder opens MyST .md chapters as notebooks only with jupytext
    assert re.search(r"^-e \.\[[\w,]*hf[\w,]*\]$", req, re.M)  # hf: GPT-2 from the Hub where Binder has a network
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def local_requirements() -> str:
    """binder/requirements.txt with its torch lines replaced by the torch this interpreter runs."""
    import torch

    lines = [line for line in REQUIREMENTS.read_text().splitlines()
             if not line.startswith("--extra-index-url") and not re.match(r"torch\s*==", line)]
    return "\n".join([f"torch=={torch.__version__}", *lines]) + "\n"


@pytest.fixture(scope="session")
def binder_python() -> Path:
    """The python of a fresh venv with binder/requirements.txt (local torch) and repo2docker's base."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("binder/runtime.txt asks for Python 3.11")
    req = local_requirements()
    key = hashlib.sha256(f"{REPO}\n{req}\n{REPO2DOCKER_BASE}".encode()).hexdigest()[:12]
    venv = Path(os.environ.get("GPTLEARN_BINDER_VENV") or Path(tempfile.gettempdir()) / f"gptlearn-binder-{key}")
    python, done = venv / "bin" / "python", venv / "installed.txt"
    if done.is_file() and done.read_text() == req:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    (venv / "requirements.txt").write_text(req)
    start = time.perf_counter()
    for args in (["-r", str(venv / "requirements.txt")], REPO2DOCKER_BASE):
        proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args], cwd=REPO,  # -e . is the repo
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, (f"pip install {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n"
                                      f"{proc.stderr[-3000:]}")
    done.write_text(req)
    print(f"binder venv installed in {time.perf_counter() - start:.0f} s: {venv}")
    return python


_RUN_NOTEBOOK = r"""
import json, resource, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, sys.argv[3])                     # the repository's scripts/
from book_zmq_wakeup import wait_in_slices          # the book build's guard against a missed wake-up
wait_in_slices()

path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
start = time.perf_counter()
error = None
try:
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
except CellExecutionError as e:
    error = str(e)[-4000:]
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024    # the kernel's peak memory, MiB
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": peak, "error": error}))
"""


@pytest.mark.slow
@pytest.mark.book
@pytest.mark.heavy
def test_every_chapter_runs_as_binder_opens_it(binder_python, tmp_path):
    """Each chapter's .ipynb twin, run top to bottom by nbclient in the Binder venv, from the book's
    folder (where JupyterLab starts the kernel), with no cell error. Binder has a network: here the
    data sets come from GPTLEARN_DATA_DIR instead, and GPT-2's weights are not reachable (HF_HUB_OFFLINE),
    so the chapters run on the bundled model. The times and peak memory (mybinder.org gives 1-2 GB) go
    to _build/binder_times.txt."""
    (tmp_path / "run.py").write_text(_RUN_NOTEBOOK)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "GPTLEARN_MODEL", "GPTLEARN_BOOK_BUILD")}
    env.update(HF_HUB_OFFLINE="1", GPTLEARN_CACHE=str(tmp_path / "cache"), PATH=f"{binder_python.parent}:{env['PATH']}")
    rows, failures = [], []
    for md in _chapters():
        ipynb = md.with_suffix(".ipynb")
        proc = subprocess.run([str(binder_python), str(tmp_path / "run.py"), str(ipynb), str(ipynb.parent),
                               str(REPO / "scripts")],
                              capture_output=True, text=True, env=env, timeout=1800)
        assert proc.returncode == 0, f"{ipynb.name}: the runner failed\n{proc.stderr[-3000:]}"
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(f"{result['seconds']:7.1f} s  {result['peak_mib']:7.0f} MiB  {ipynb.relative_to(REPO)}"
                    + ("  FAILED" if result["error"] else ""))
        if result["error"]:
            failures.append(f"{ipynb.name}:\n{result['error']}")
    table = "\n".join(rows)
    (REPO / "_build").mkdir(exist_ok=True)
    (REPO / "_build" / "binder_times.txt").write_text(table + "\n")
    print(table)
    assert not failures, "chapters with a cell error in the Binder environment:\n\n" + "\n\n".join(failures)
