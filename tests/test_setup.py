"""scripts/setup.sh and PEP 668: where it installs, decided by scripts/env.sh.

setup.sh runs here against a stand-in ``python`` that logs each call and plays the part of an externally
managed Python (or not), so the shell logic is tested in well under a second, without pip or a network.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_PYTHON = r"""#!/usr/bin/env bash
# stand-in for python: logs "<which python> <args>", answers setup.sh's questions
echo "$0 $*" >> "$FAKE_LOG"
case "$*" in
  *EXTERNALLY-MANAGED*) [ "${FAKE_MANAGED:-0}" = 1 ] ;;
  *base_prefix*) [[ "$0" == */.venv/bin/python ]] ;;   # only the venv's python is in an environment
  *version_info*) [ "${FAKE_OLD:-0}" != 1 ] ;;
  "-m venv .venv") [ "${FAKE_NO_VENV:-0}" != 1 ] && mkdir -p .venv/bin && cp "$0" .venv/bin/python ;;
  *) true ;;
esac
"""


@pytest.fixture
def repo(tmp_path):
    """A copy of the scripts and a stand-in python; returns a function that runs setup.sh there."""
    shutil.copytree(REPO / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.log"

    def run(**env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
        proc = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={**base, "PYTHON": str(fake), "FAKE_LOG": str(log), **env})
        calls = log.read_text().splitlines() if log.exists() else []
        return proc, [c.replace(str(tmp_path) + "/", "") for c in calls if " -m " in c]

    return run


def test_externally_managed_python_gets_a_venv(repo, tmp_path):
    proc, calls = repo(FAKE_MANAGED="1")
    assert proc.returncode == 0, proc.stderr
    assert "externally managed (PEP 668)" in proc.stderr and "installed into .venv" in proc.stderr
    assert calls[0] == "bin/python -m venv .venv"
    pip = calls[1:]
    assert len(pip) == 3 and all(c.startswith(".venv/bin/python -m pip install") for c in pip)
    assert pip[-1].endswith("--no-deps -e .")
    # build_book.sh and test.sh source env.sh: it picks the .venv from then on
    out = subprocess.run(["bash", "-c", "source scripts/env.sh; echo $VIRTUAL_ENV; command -v python"], cwd=tmp_path,
                         capture_output=True, text=True,
                         env={**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
                              "PYTHON": str(tmp_path / "bin/python"),
                              "FAKE_LOG": str(tmp_path / "calls.log")})
    assert out.stdout.split() == [str(tmp_path / ".venv"), str(tmp_path / ".venv" / "bin" / "python")]


def test_other_pythons_and_active_environments_are_used_as_they_are(repo, tmp_path):
    proc, calls = repo(FAKE_MANAGED="0")  # pyenv, python.org, Docker's python images (and CI)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / ".venv").exists() and len(calls) == 3
    assert all(c.startswith("bin/python -m pip install") for c in calls)
    (tmp_path / "calls.log").unlink()
    proc, calls = repo(FAKE_MANAGED="1", VIRTUAL_ENV="/somewhere/active")  # an active venv wins
    assert proc.returncode == 0 and not (tmp_path / ".venv").exists()
    assert len(calls) == 3 and all(c.startswith("bin/python -m pip install") for c in calls)


def test_no_venv_module_is_one_clear_error(repo, tmp_path):
    proc, calls = repo(FAKE_MANAGED="1", FAKE_NO_VENV="1")
    assert proc.returncode == 1 and not (tmp_path / ".venv").exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("setup: could not create .venv; install python3-venv")
    assert not any("pip" in c for c in calls)


def test_a_python_too_old_for_the_pins_is_one_clear_error(repo, tmp_path):
    proc, calls = repo(FAKE_MANAGED="1", FAKE_OLD="1")
    assert proc.returncode == 1 and not (tmp_path / ".venv").exists() and calls == []
    assert proc.stderr.strip().startswith("setup: the course's pinned packages (requirements.txt) need Python 3.11")
