"""requires-python (">=3.10") against the interpreters 3.10-3.13: every gptlearn source file compiles on each
one found here (python3.X on PATH or under pyenv; the others are skipped). The slower half, pip resolving
all extras and pins to wheels for each version, is ``bash scripts/check_pythons.sh`` (minutes, needs the index).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VERSIONS = ["3.10", "3.11", "3.12", "3.13"]
COMPILE_ALL = REPO / "scripts" / "compile_all.py"


def _interpreter(version: str) -> str | None:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which(f"python{version}"), *sorted(map(str, root.glob(f"{version}.*/bin/python")))]
    for candidate in filter(None, candidates):  # a pyenv shim on PATH may refuse to run
        if subprocess.run([candidate, "-c", "import sys"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_requires_python_is_the_oldest_version_checked():
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib is 3.11+)
    assert re.search(r'^requires-python = ">=(\d+\.\d+)"$', pyproject, re.M).group(1) == VERSIONS[0]
    assert sys.version_info >= (3, 10)


@pytest.mark.parametrize("version", VERSIONS)
def test_package_compiles(version):
    python = (sys.executable if f"{sys.version_info.major}.{sys.version_info.minor}" == version
              else _interpreter(version))
    if python is None:
        pytest.skip(f"no python{version} here")
    out = subprocess.run([python, str(COMPILE_ALL), str(REPO / "gptlearn")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr == "", out.stdout + out.stderr


def test_compile_check_names_a_file_that_does_not_compile(tmp_path):
    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.py").write_text("def f(:\n")
    out = subprocess.run([sys.executable, str(COMPILE_ALL), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "bad.py:1" in out.stderr and "good.py" not in out.stderr
