"""Named data sets with pinned hashes, found, unpacked or downloaded; text loading and the train/val cut.

Named data sets are looked up in ``GPTLEARN_DATA_DIR`` first, then in a cache folder
(``GPTLEARN_CACHE`` or ``~/.cache/gptlearn``); if missing, a copy shipped in the package
(TinyShakespeare, public domain, gzip-compressed in ``gptlearn/assets/data/``) is unpacked there, and
anything else is downloaded there (never with ``GPTLEARN_OFFLINE=1``). Every file is checked against
its SHA-256 before use.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_file
from ..checks import sha256
from ..errors import GptlearnError, InvalidValueError
from ..folders import expand_path
from ..safeio import read_regular


DATA_DIR_ENV = "GPTLEARN_DATA_DIR"
CACHE_ENV = "GPTLEARN_CACHE"
DOWNLOAD_TIMEOUT_S = 60.0  # a server silent this long has failed
DOWNLOAD_MAX_BYTES = 1 << 30  # every named data set is far smaller: a longer reply is not the file
OFFLINE_ENV = "GPTLEARN_OFFLINE"  # "1": never download a data set (fail at once, with the fix)
ASSETS = Path(__file__).parents[1] / "assets" / "data"
CHECKOUT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # beside a source checkout of gptlearn


@dataclass(frozen=True)
class Dataset:
    """A named data set: ``files`` maps a path relative to the data folder to its SHA-256.

    ``url`` is a single file (when there is one file) or a ``.tar.gz`` holding the files under any
    folder (matched by file name). ``path`` is what :func:`dataset_path` returns, relative to the folder.
    ``bundled`` names a gzip copy of the single file in ``gptlearn/assets/data/`` (only for data sets
    whose licence allows shipping them), used instead of a download.
    """

    name: str
    url: str
    files: dict[str, str]
    path: str
    description: str = ""
    bundled: str = ""


DATASETS: dict[str, Dataset] = {
    "tinyshakespeare": Dataset(
        name="tinyshakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        files={"tinyshakespeare.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
        path="tinyshakespeare.txt",
        description="1,115,394 characters of Shakespeare, the corpus of char-rnn and nanoGPT",
        bundled="tinyshakespeare.txt.gz",  # public domain: shipped, so chapter 7 needs no network
    ),
    "stsb": Dataset(
        name="stsb",
        # the STS Benchmark page is http://ixa2.si.ehu.eus/stswiki; this is its Stsbenchmark.tar.gz
        url="http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
        files={
            "stsb/sts-train.csv": "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82",
            "stsb/sts-dev.csv": "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234",
        },
        path="stsb",
        description="STS Benchmark train (5,749 pairs) and dev (1,500 pairs), tab-separated",
    ),
}


def cache_dir() -> Path:
    """``GPTLEARN_CACHE`` or ``~/.cache/gptlearn``."""
    return expand_path(os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "gptlearn"), CACHE_ENV)


def _check_sha(path: Path, expected: str, name: str) -> None:
    got = sha256(path)
    if got != expected:
        raise GptlearnError(
            f"{path} (data set {name!r}) has sha256 {got}, expected {expected}; the file is corrupt or a "
            "different version: delete it so it is downloaded again, or fix the copy in $GPTLEARN_DATA_DIR"
        )


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "0") not in ("0", "", "false", "False")


def _fetch(url: str, name: str, dest_hint: str) -> bytes:
    """The whole body at ``url``. Every way a transfer fails (refused, reset, silent, cut short, a reply
    that is not HTTP, an error status, too long) is one :class:`GptlearnError` saying what to do instead;
    nothing is written until the body is complete and its hash checked."""
    def failed(why: str) -> GptlearnError:
        why = " ".join(why.split())
        return GptlearnError(
            f"could not download data set {name!r} from {url} ({why[:160]}); with no network, put {dest_hint} in a "
            f"folder and set {DATA_DIR_ENV} to that folder")

    if _offline():
        raise GptlearnError(f"data set {name!r} is not on this machine and {OFFLINE_ENV} forbids downloading it; "
                            f"put {dest_hint} in a folder and set {DATA_DIR_ENV} to that folder")
    chunks, total = [], 0
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 16):
                total += len(chunk)
                if total > DOWNLOAD_MAX_BYTES:
                    raise failed(f"the reply is longer than {DOWNLOAD_MAX_BYTES:,} bytes")
                chunks.append(chunk)
            expected = response.headers.get("Content-Length", "") if hasattr(response, "headers") else ""
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise failed(f"{type(e).__name__}: {e}") from None
    if expected.isdigit() and total != int(expected):  # a body cut short (some servers close early)
        raise failed(f"the connection closed after {total:,} of {int(expected):,} bytes")
    return b"".join(chunks)


def _unpack_bundled(ds: Dataset, root: Path) -> None:
    """Write the package's gzip copy of ``ds`` into ``root``, after checking its SHA-256."""
    ((rel, sha),) = ds.files.items()
    try:
        data = gzip.decompress((ASSETS / ds.bundled).read_bytes())
    except (OSError, EOFError) as e:  # missing or damaged installation
        raise GptlearnError(f"the copy of data set {ds.name!r} shipped in the package ({ASSETS / ds.bundled}) cannot "
                            f"be read ({e}); reinstall gptlearn") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise GptlearnError(f"the copy of data set {ds.name!r} shipped in the package has sha256 {got}, expected "
                            f"{sha}; "
                            "reinstall gptlearn")
    write_file(root / rel, data)


def _extract_from_tar(blob: bytes, wanted: dict[str, str], name: str) -> dict[str, bytes]:
    """Pull the files named in ``wanted`` (relative path -> sha256) out of a .tar.gz, matching by file
    name wherever they sit in the archive. Nothing else is extracted, so no path in the archive is
    ever written to disk."""
    by_name = {Path(rel).name: rel for rel in wanted}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar:
                base = Path(member.name).name
                if member.isfile() and base in by_name and by_name[base] not in found:
                    f = tar.extractfile(member)
                    if f is not None:
                        found[by_name[base]] = f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        why = " ".join(str(e).split())[:160]
        raise GptlearnError(f"the download of data set {name!r} is not a readable .tar.gz ({why}); try again later, or "
                            f"put {' and '.join(wanted)} in a folder and set {DATA_DIR_ENV}") from None
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise GptlearnError(f"the archive of data set {name!r} lacks {missing}; the source may have changed")
    for rel, data in found.items():
        got = hashlib.sha256(data).hexdigest()
        if got != wanted[rel]:
            raise GptlearnError(
                f"{rel} in the download of data set {name!r} has sha256 {got}, expected {wanted[rel]}; "
                "the source changed: put the expected files in a folder and set " + DATA_DIR_ENV
            )
    return found


def _download(ds: Dataset, root: Path) -> None:
    hint = " and ".join(ds.files)
    blob = _fetch(ds.url, ds.name, hint)
    if len(ds.files) == 1 and not ds.url.endswith((".tar.gz", ".tgz")):
        ((rel, sha),) = ds.files.items()
        got = hashlib.sha256(blob).hexdigest()
        if got != sha:
            raise GptlearnError(
                f"the download of data set {ds.name!r} from {ds.url} has sha256 {got}, expected {sha}; "
                f"the source changed: put the expected {rel} in a folder and set {DATA_DIR_ENV}"
            )
        contents = {rel: blob}
    else:
        contents = _extract_from_tar(blob, ds.files, ds.name)
    for rel, data in contents.items():
        write_file(root / rel, data)


def data_folder(*, beside_checkout: bool = True) -> Path | None:
    """The folder that holds local copies of the data sets, or None: ``$GPTLEARN_DATA_DIR`` when it is set;
    else, with ``beside_checkout``, the folder ``shared/data`` beside a source checkout of gptlearn, when it
    exists. :func:`dataset_path` asks without ``beside_checkout`` (a user's installed package has no
    checkout beside it); the checkout's tests, benchmarks and scripts find their data with the default."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return expand_path(env, "the data folder")
    if beside_checkout and CHECKOUT_DATA.is_dir():
        return CHECKOUT_DATA
    return None


def dataset_path(name: str, *, download: bool = True) -> Path:
    """Local path of a named data set (see ``DATASETS``), unpacked from the package or downloaded into
    the cache if needed.

    Looks in ``$GPTLEARN_DATA_DIR`` first, then in :func:`cache_dir`; files are checked against their
    pinned SHA-256 either way.
    """
    try:
        ds = DATASETS[name]
    except KeyError:
        raise GptlearnError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)} or pass a file") from None
    local = data_folder(beside_checkout=False)
    roots = ([local] if local is not None else []) + [cache_dir()]
    for root in roots:
        if all((root / rel).is_file() for rel in ds.files):
            for rel, sha in ds.files.items():
                _check_sha(root / rel, sha, name)
            return root / ds.path
    root = cache_dir()
    if ds.bundled:
        _unpack_bundled(ds, root)
        return root / ds.path
    if not download:
        raise GptlearnError(f"data set {name!r} is not in {' or '.join(map(str, roots))}; set {DATA_DIR_ENV}")
    _download(ds, root)
    return root / ds.path


def _read_utf8(path: Path) -> str:
    data = read_regular(path)  # a FIFO or a device is refused, not read
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GptlearnError(
            f"{path} is not UTF-8 text: byte offset {e.start} (0x{data[e.start]:02x}) cannot be decoded; "
            "convert it with e.g. iconv -t UTF-8"
        ) from None


def load_text(path_or_name: str | os.PathLike) -> str:
    """A UTF-8 text file, a folder of ``.txt`` files (sorted, joined by a blank line), or a named
    data set such as ``"tinyshakespeare"``."""
    path = expand_path(path_or_name, "the data")
    if not path.exists() and str(path_or_name) in DATASETS:
        path = dataset_path(str(path_or_name))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise GptlearnError(f"{path} holds no .txt files; pass a text file or a folder of .txt files")
        text = "\n\n".join(_read_utf8(p) for p in files)
    elif path.is_file():
        text = _read_utf8(path)
    else:
        raise GptlearnError(
            f"{str(path_or_name)!r} is not a file, a folder, or a named data set ({', '.join(sorted(DATASETS))})")
    if not text.strip():
        raise GptlearnError(f"{path} is empty; training needs some text")
    return text


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val): the last ``val_fraction`` of the characters is held out."""
    if not 0 <= val_fraction < 1:
        raise InvalidValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = len(text) - int(len(text) * val_fraction)
    return text[:cut], text[cut:]
