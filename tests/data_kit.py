"""Helpers shared by the data tests (test_data.py, test_downloads.py), and the shared data folder every test
that reads TinyShakespeare or STS-B finds through :func:`shared_data`."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from gptlearn.data import DATA_DIR_ENV, data_folder

__all__ = ["DATA_DIR_ENV", "data_folder", "shared_data", "tarball"]


def shared_data(name: str = "") -> Path:
    """The shared data folder (``gptlearn.data.data_folder``), or the file ``name`` in it; the test is
    skipped, saying what is missing, when it is not there."""
    folder = data_folder()
    if folder is None or not folder.is_dir():
        pytest.skip(f"no shared data folder: set {DATA_DIR_ENV} to it (TinyShakespeare, STS-B)")
    if not (folder / name).exists():
        pytest.skip(f"{folder / name} is missing: set {DATA_DIR_ENV} to the shared data folder")
    return folder / name


def tarball(files: dict[str, bytes]) -> bytes:
    """A .tar.gz in memory holding ``files`` (archive name -> bytes), like the data sets' downloads."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
