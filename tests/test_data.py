"""gptlearn.data: named data sets (pinned sha256), text loading, the memory-mapped token cache."""
from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlearn import data as gdata
from gptlearn.data import DATASETS, TokenDataset, dataset_path, load_text, split_text
from gptlearn.errors import GptlearnError
from gptlearn.tokenizers import CharTokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_named_dataset_from_data_dir(data_dir, cache):
    path = dataset_path("tinyshakespeare")
    assert path == data_dir / "tinyshakespeare.txt"
    text = load_text("tinyshakespeare")
    assert len(text) == 1_115_394 and text.startswith("First Citizen:")
    stsb = dataset_path("stsb")
    assert (stsb / "sts-train.csv").is_file() and (stsb / "sts-dev.csv").is_file()


def test_sha256_mismatch_is_an_error(tmp_path, monkeypatch, cache):
    (tmp_path / "tinyshakespeare.txt").write_text("not Shakespeare\n")
    monkeypatch.setenv("GPTLEARN_DATA_DIR", str(tmp_path))
    with pytest.raises(GptlearnError, match="sha256"):
        dataset_path("tinyshakespeare")


def test_no_network_names_the_env_var(tmp_path, monkeypatch, cache):
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(gdata.urllib.request, "urlopen", offline)
    with pytest.raises(GptlearnError, match="GPTLEARN_DATA_DIR"):
        dataset_path("tinyshakespeare")
    assert not list(cache.rglob("*.txt"))  # nothing half-written


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_and_caches(monkeypatch, cache):
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    blob = b"To be, or not to be\n"
    ds = gdata.Dataset("toy", "https://example.invalid/toy.txt", {"toy.txt": hashlib.sha256(blob).hexdigest()}, "toy.txt")
    monkeypatch.setitem(DATASETS, "toy", ds)
    calls = []
    monkeypatch.setattr(gdata.urllib.request, "urlopen", lambda url, timeout=None: calls.append(url) or _Response(blob))
    path = dataset_path("toy")
    assert path == cache / "toy.txt" and path.read_bytes() == blob
    assert dataset_path("toy") == path and len(calls) == 1  # second call: from the cache
    bad = gdata.Dataset("bad", "https://example.invalid/bad.txt", {"bad.txt": "0" * 64}, "bad.txt")
    monkeypatch.setitem(DATASETS, "bad", bad)
    with pytest.raises(GptlearnError, match="sha256"):
        dataset_path("bad")
    assert not (cache / "bad.txt").exists()


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_stsb_tarball_extraction(monkeypatch, cache):
    """The real Stsbenchmark.tar.gz holds stsbenchmark/sts-{train,dev,test}.csv; only the pinned files
    are taken, matched by name, and checked against their sha256."""
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    train, dev = b"main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane.\tAn airplane.\n", b"dev row\n"
    files = {"stsb/sts-train.csv": hashlib.sha256(train).hexdigest(), "stsb/sts-dev.csv": hashlib.sha256(dev).hexdigest()}
    ds = gdata.Dataset("stsb", DATASETS["stsb"].url, files, "stsb")
    monkeypatch.setitem(DATASETS, "stsb", ds)
    blob = _tarball({"stsbenchmark/sts-train.csv": train, "stsbenchmark/sts-dev.csv": dev,
                     "stsbenchmark/sts-test.csv": b"test\n", "../../evil.csv": b"x"})
    monkeypatch.setattr(gdata.urllib.request, "urlopen", lambda url, timeout=None: _Response(blob))
    folder = dataset_path("stsb")
    assert folder == cache / "stsb"
    assert (folder / "sts-train.csv").read_bytes() == train and (folder / "sts-dev.csv").read_bytes() == dev
    assert sorted(p.name for p in folder.iterdir()) == ["sts-dev.csv", "sts-train.csv"]
    assert not (cache.parent / "evil.csv").exists()
    # a tarball whose csv differs from the pinned hash is refused
    (folder / "sts-dev.csv").unlink()
    blob2 = _tarball({"stsbenchmark/sts-train.csv": train, "stsbenchmark/sts-dev.csv": b"changed\n"})
    monkeypatch.setattr(gdata.urllib.request, "urlopen", lambda url, timeout=None: _Response(blob2))
    with pytest.raises(GptlearnError, match="sts-dev.csv"):
        dataset_path("stsb")


def test_real_stsb_pins():
    assert DATASETS["stsb"].files["stsb/sts-train.csv"].startswith("0f71910b")
    assert DATASETS["tinyshakespeare"].files["tinyshakespeare.txt"].startswith("86c4e6aa")


def test_load_text_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(GptlearnError, match="empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("héllo".encode("latin-1"))
    with pytest.raises(GptlearnError, match="byte offset 1"):
        load_text(tmp_path / "latin1.txt")
    with pytest.raises(GptlearnError, match="not a file"):
        load_text(tmp_path / "missing.txt")
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    (folder / "skip.md").write_text("not text")
    assert load_text(folder) == "first\n\nsecond"


def test_split_text_last_tenth():
    train, val = split_text("abcdefghij" * 10)
    assert len(val) == 10 and train + val == "abcdefghij" * 10


def test_token_dataset_batches_and_cache(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(2000))
    tok = CharTokenizer.from_text(text)
    ds = TokenDataset(text, tok, cache=tmp_path)
    assert not ds.cached and ds.tokens.dtype == np.uint16
    assert len(ds.splits["val"]) == 200 and len(ds.splits["train"]) == 1800
    g = torch.Generator().manual_seed(0)
    x, y = ds.get_batch("train", 4, 16, g)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal((x + 1) % 26, y)  # the alphabet: each target is the next letter
    again = TokenDataset(text, tok, cache=tmp_path)
    assert again.cached and again.path == ds.path
    assert len(list(tmp_path.glob("*.bin"))) == 1
    other = TokenDataset(text + "z", tok, cache=tmp_path)  # different text: a new cache entry
    assert not other.cached and len(list(tmp_path.glob("*.bin"))) == 2
    xv, yv = ds.get_batch("val", 2, 8, g)
    assert xv.shape == (2, 8)


def test_token_dataset_too_short(tmp_path):
    tok = CharTokenizer.from_text("abc")
    ds = TokenDataset("abcabc" * 3, tok, cache=tmp_path)
    with pytest.raises(GptlearnError, match="block"):
        ds.get_batch("train", 2, 64)
    with pytest.raises(GptlearnError, match="empty"):
        TokenDataset("", tok, cache=tmp_path)


def test_large_vocab_uses_uint32(tmp_path):
    class Big:
        vocab_size = 70_000

        def encode(self, text):
            return [69_999 if c == "b" else 1 for c in text]

        def save(self, d):
            Path(d, "big.json").write_text("{}")

    ds = TokenDataset("ab" * 50, Big(), cache=tmp_path)
    assert ds.tokens.dtype == np.uint32 and int(ds.tokens[1]) == 69_999


def test_repeat_frac_reads_a_passage_twice(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path))
    text = "".join(chr(97 + (i * 7) % 26) for i in range(3000))
    ds = TokenDataset(text, CharTokenizer.from_text(text))
    T = 11
    plain_x, plain_y = ds.get_batch("train", 64, T, torch.Generator().manual_seed(0))
    x, y = ds.get_batch("train", 64, T, torch.Generator().manual_seed(0), repeat_frac=1.0)
    half = (T + 2) // 2  # 6 tokens, then the same 6 again (cut to T + 1 = 12)
    rows = torch.cat([x, y[:, -1:]], dim=1)  # (B, T + 1)
    assert torch.equal(rows[:, half:], rows[:, :half])
    assert torch.equal(x[:, :half], plain_x[:, :half])  # same windows, second half replaced
    assert torch.equal(y[:, :-1], x[:, 1:])
    some_x, _ = ds.get_batch("train", 400, T, torch.Generator().manual_seed(1), repeat_frac=0.25)
    repeated = (some_x[:, half:] == some_x[:, : T - half]).all(dim=1).float().mean().item()
    assert 0.15 < repeated < 0.35  # about a quarter of the rows


def test_induction_frac_rows_repeat_random_tokens_and_mask_the_first_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path))
    text = "".join(chr(97 + (i * 7) % 26) for i in range(3000))
    tok = CharTokenizer.from_text(text)
    ds = TokenDataset(text, tok)
    T = 40
    x, y = ds.get_batch("train", 32, T, torch.Generator().manual_seed(0), induction_frac=1.0)
    for row_x, row_y in zip(x, y):
        n = int((row_y == -100).sum()) + 1  # the period: targets before the first repeat are ignored
        assert 8 <= n <= T // 2
        assert torch.equal(row_x[n:], row_x[:-n])  # x repeats with period n
        assert torch.equal(row_y[n - 1:-1], row_x[n:]) and row_y[-1] == row_x[T - n]  # y: x shifted, periodic
        assert (row_y[: n - 1] == -100).all()
    periods = {int((r == -100).sum()) + 1 for r in y}
    assert len(periods) > 3  # lengths vary
    plain_x, plain_y = ds.get_batch("train", 400, T, torch.Generator().manual_seed(1))
    some_x, some_y = ds.get_batch("train", 400, T, torch.Generator().manual_seed(1), induction_frac=0.3)
    changed = (some_y == -100).any(dim=1).float().mean().item()
    assert 0.2 < changed < 0.4
    untouched = ~(some_y == -100).any(dim=1)
    assert torch.equal(some_x[untouched], plain_x[untouched]) and torch.equal(some_y[untouched], plain_y[untouched])
