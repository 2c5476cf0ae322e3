"""Helpers shared by the data tests (test_data.py, test_downloads.py)."""
from __future__ import annotations

import io
import tarfile


def tarball(files: dict[str, bytes]) -> bytes:
    """A .tar.gz in memory holding ``files`` (archive name -> bytes), like the data sets' downloads."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
