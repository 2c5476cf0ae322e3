"""gptlearn.data: named data sets (pinned sha256), text loading, the memory-mapped token cache, pair files."""
from __future__ import annotations

import gzip
import hashlib
import io
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from data_kit import tarball
from gptlearn import data as gdata
from gptlearn.data import (DATASETS, PAIRS_HEADER, PairData, TokenDataset, dataset_path, load_text, read_pairs,
                           read_sentences, split_text)
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


def _no_network(monkeypatch) -> list[str]:
    """Make every download fail as with no network; returns the URLs that were tried."""
    tried: list[str] = []

    def offline(url, *args, **kwargs):
        tried.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(gdata.datasets.urllib.request, "urlopen", offline)
    return tried


def test_no_network_names_the_data_set_and_the_fix(tmp_path, monkeypatch, cache):
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    monkeypatch.delenv("GPTLEARN_OFFLINE", raising=False)
    tried = _no_network(monkeypatch)
    with pytest.raises(GptlearnError) as err:
        dataset_path("stsb")
    message = str(err.value)
    assert "\n" not in message and "'stsb'" in message and "no route to host" in message
    assert "GPTLEARN_DATA_DIR" in message and DATASETS["stsb"].url in message
    assert tried == [DATASETS["stsb"].url]
    assert not list(cache.rglob("*.csv"))  # nothing half-written


def test_offline_env_never_downloads(monkeypatch, cache):
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    monkeypatch.setenv("GPTLEARN_OFFLINE", "1")
    tried = _no_network(monkeypatch)
    with pytest.raises(GptlearnError, match="'stsb' is not on this machine and GPTLEARN_OFFLINE forbids"):
        read_pairs("stsb-dev")
    assert tried == []


def test_tinyshakespeare_ships_with_the_package(monkeypatch, cache):
    """No GPTLEARN_DATA_DIR, no network: the gzip copy in gptlearn/assets/data is checked and unpacked."""
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    tried = _no_network(monkeypatch)
    path = dataset_path("tinyshakespeare")
    assert path == cache / "tinyshakespeare.txt" and tried == []
    assert hashlib.sha256(path.read_bytes()).hexdigest() == DATASETS["tinyshakespeare"].files["tinyshakespeare.txt"]
    text = load_text("tinyshakespeare")
    assert len(text) == 1_115_394 and text.startswith("First Citizen:") and tried == []


def test_a_damaged_shipped_copy_is_refused(tmp_path, monkeypatch, cache):
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "tinyshakespeare.txt.gz").write_bytes(gzip.compress(b"First Citizen: not the real text\n"))
    monkeypatch.setattr(gdata.datasets, "ASSETS", assets)
    with pytest.raises(GptlearnError, match="shipped in the package has sha256 .*reinstall gptlearn"):
        dataset_path("tinyshakespeare")
    (assets / "tinyshakespeare.txt.gz").write_bytes(b"not gzip")
    with pytest.raises(GptlearnError, match="cannot be read .*reinstall gptlearn"):
        dataset_path("tinyshakespeare")
    assert not (cache / "tinyshakespeare.txt").exists()


def test_book_pairs_ship_with_the_package(monkeypatch):
    """The pairs written for the book: clean, 0/1 labels, every sentence has a paraphrase and a
    same-topic sentence that means something else, and dev shares no sentence with train."""
    monkeypatch.setenv("GPTLEARN_DATA_DIR", "/nonexistent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no malformed rows
        train, dev = read_pairs("book-pairs"), read_pairs("book-pairs-dev")
    assert read_pairs("book-pairs-train").scores == train.scores
    assert (len(train), len(dev)) == (288, 112)
    for pairs in (train, dev):
        assert pairs.format == "pairs" and set(pairs.scores) == {0.0, 1.0}
        assert len(set(zip(pairs.sentences1, pairs.sentences2))) == len(pairs)  # no duplicate pair
        labels_by_anchor: dict[str, list[float]] = {}
        for a, y in zip(pairs.sentences1, pairs.scores):
            labels_by_anchor.setdefault(a, []).append(y)
        assert all(sorted(ys)[-1] == 1.0 and ys.count(1.0) == 1 and 0.0 in ys for ys in labels_by_anchor.values())
    assert (len(set(train.sentences1)), len(set(dev.sentences1))) == (112, 48)
    assert not set(train.unique_sentences()) & set(dev.unique_sentences())


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_and_caches(monkeypatch, cache):
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    blob = b"To be, or not to be\n"
    ds = gdata.Dataset("toy", "https://example.invalid/toy.txt", {"toy.txt": hashlib.sha256(blob).hexdigest()},
                       "toy.txt")
    monkeypatch.setitem(DATASETS, "toy", ds)
    calls = []
    monkeypatch.setattr(gdata.datasets.urllib.request, "urlopen",
                        lambda url, timeout=None: calls.append(url) or _Response(blob))
    path = dataset_path("toy")
    assert path == cache / "toy.txt" and path.read_bytes() == blob
    assert dataset_path("toy") == path and len(calls) == 1  # second call: from the cache
    bad = gdata.Dataset("bad", "https://example.invalid/bad.txt", {"bad.txt": "0" * 64}, "bad.txt")
    monkeypatch.setitem(DATASETS, "bad", bad)
    with pytest.raises(GptlearnError, match="sha256"):
        dataset_path("bad")
    assert not (cache / "bad.txt").exists()


def test_stsb_tarball_extraction(monkeypatch, cache):
    """The real Stsbenchmark.tar.gz holds stsbenchmark/sts-{train,dev,test}.csv; only the pinned files
    are taken, matched by name, and checked against their sha256."""
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    train, dev = b"main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane.\tAn airplane.\n", b"dev row\n"
    files = {"stsb/sts-train.csv": hashlib.sha256(train).hexdigest(),
             "stsb/sts-dev.csv": hashlib.sha256(dev).hexdigest()}
    ds = gdata.Dataset("stsb", DATASETS["stsb"].url, files, "stsb")
    monkeypatch.setitem(DATASETS, "stsb", ds)
    blob = tarball({"stsbenchmark/sts-train.csv": train, "stsbenchmark/sts-dev.csv": dev,
                     "stsbenchmark/sts-test.csv": b"test\n", "../../evil.csv": b"x"})
    monkeypatch.setattr(gdata.datasets.urllib.request, "urlopen", lambda url, timeout=None: _Response(blob))
    folder = dataset_path("stsb")
    assert folder == cache / "stsb"
    assert (folder / "sts-train.csv").read_bytes() == train and (folder / "sts-dev.csv").read_bytes() == dev
    assert sorted(p.name for p in folder.iterdir()) == ["sts-dev.csv", "sts-train.csv"]
    assert not (cache.parent / "evil.csv").exists()
    # a tarball whose csv differs from the pinned hash is refused
    (folder / "sts-dev.csv").unlink()
    blob2 = tarball({"stsbenchmark/sts-train.csv": train, "stsbenchmark/sts-dev.csv": b"changed\n"})
    monkeypatch.setattr(gdata.datasets.urllib.request, "urlopen", lambda url, timeout=None: _Response(blob2))
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


def test_token_dataset_from_documents_starts_each_after_endoftext(tmp_path):
    """GPT-2's format: every document follows an <|endoftext|>, which is how a model learns it as "a new
    text begins" (its BOS); the <|endoftext|> *text* inside a document stays plain text."""
    from gptlearn.tokenizers import BPETokenizer, Tokenizer

    tok = Tokenizer.from_bpe(BPETokenizer.train("the cat sat on the mat and the dog ran far away. ", 280))
    eot = tok.eot_token
    train = ["the cat sat", "the dog ran <|endoftext|> far"]
    ds = TokenDataset.from_documents(train, ["on the mat"], tok, cache=tmp_path)
    expected = [eot, *tok.encode("the cat sat"), eot, *tok.encode_ordinary("the dog ran <|endoftext|> far")]
    assert ds.splits["train"].tolist() == expected
    assert ds.splits["val"].tolist() == [eot, *tok.encode("on the mat")]
    assert expected.count(eot) == 2  # the text "<|endoftext|>" in a document is not the token
    again = TokenDataset.from_documents(train, ["on the mat"], tok, cache=tmp_path)
    assert again.cached and again.path == ds.path
    moved = TokenDataset.from_documents(train[:1], [train[1], "on the mat"], tok, cache=tmp_path)
    assert not moved.cached  # another split of the same documents is another data set
    with pytest.raises(GptlearnError, match="empty"):
        TokenDataset.from_documents([], ["x"], tok, cache=tmp_path)
    with pytest.raises(GptlearnError, match="endoftext"):
        TokenDataset.from_documents(["abc"], [], CharTokenizer.from_text("abc"), cache=tmp_path)


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


# ---- sentence-pair files ------------------------------------------------------------------------
SEED_HEADER = "\t".join(PAIRS_HEADER) + "\n"


def write(tmp_path, name, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_seed_format(tmp_path):
    path = write(tmp_path, "pairs.tsv", SEED_HEADER + "a1\tA cat sits.\tA cat is sitting.\t1\n"
                 "a2\tA cat sits.\tStocks fell.\t0\r\n\n" "a3\t\"Quoted\tStill one field.\t1\n")
    pairs = read_pairs(path)
    assert pairs.format == "pairs"
    assert pairs.sentences1 == ["A cat sits.", "A cat sits.", '"Quoted']
    assert pairs.sentences2 == ["A cat is sitting.", "Stocks fell.", "Still one field."]
    assert pairs.scores == [1.0, 0.0, 1.0]
    assert pairs.line_numbers == [2, 3, 5]  # the blank line 4 is ignored, not reported
    assert pairs.skipped == []


def test_stsb_format_extra_columns_and_quotes(tmp_path):
    rows = [
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA man is \"dancing.\tA man dances.",
        "main-news\theadlines\t2016\t0012\t4\tDriver backs \"into stroller\tDriver backs into mom\tEMM (http://x)\tEMM",
        'main-forums\tdeft-forum\t2014\t0003\t0.000\tShe said "no.\tHe left "early".',
        "main-captions\timages\t2015\t0004\t2.5\tTwo dogs run.\tA dog runs.",
    ]
    pairs = read_pairs(write(tmp_path, "sts.csv", "\n".join(rows) + "\n"))
    assert pairs.format == "stsb" and len(pairs) == 4 and pairs.skipped == []
    assert pairs.sentences1 == ['A man is "dancing.', 'Driver backs "into stroller', 'She said "no.', "Two dogs run."]
    assert pairs.sentences2 == ["A man dances.", "Driver backs into mom", 'He left "early".', "A dog runs."]
    assert pairs.scores == pytest.approx([1.0, 0.8, 0.0, 0.5])
    assert pairs.line_numbers == [1, 2, 3, 4]


SEED_BAD = [
    ("x1\tA cat.\tA dog.\n", "3 columns"),
    ("x1\tA cat.\tA dog.\t1\textra\n", "5 columns"),
    ("x1\tA cat.\tA dog.\tyes\n", "label 'yes'"),
    ("x1\tA cat.\tA dog.\t2\n", "label '2'"),
    ("x1\tA cat.\tA dog.\t0.5\n", "label '0.5'"),
    ("x1\t  \tA dog.\t1\n", "empty sentence"),
    (b"x1\tA caf\xe9.\tA dog.\t1\n", "not valid UTF-8"),
]


@pytest.mark.parametrize("bad, reason", SEED_BAD)
def test_seed_malformed_rows_are_skipped_with_line_numbers(tmp_path, bad, reason):
    good = "g1\tA cat sits.\tA cat is sitting.\t1\n"
    bad = bad if isinstance(bad, bytes) else bad.encode()
    path = write(tmp_path, "pairs.tsv", SEED_HEADER.encode() + good.encode() + bad + good.encode())
    with pytest.warns(UserWarning, match=rf"skipped 1 malformed row\(s\): line 3 \({reason}"):
        pairs = read_pairs(path)
    assert len(pairs) == 2 and pairs.line_numbers == [2, 4]
    assert [n for n, _ in pairs.skipped] == [3] and reason in pairs.skipped[0][1]


STSB_BAD = [
    ("g\tf\t2012\t1\t3.0\tA cat.\n", "6 columns"),
    ("g\tf\t2012\t1\thigh\tA cat.\tA dog.\n", "score 'high'"),
    ("g\tf\t2012\t1\t5.5\tA cat.\tA dog.\n", "score '5.5'"),
    ("g\tf\t2012\t1\t-1\tA cat.\tA dog.\n", "score '-1'"),
    ("g\tf\t2012\t1\tnan\tA cat.\tA dog.\n", "score 'nan'"),
    ("g\tf\t2012\t1\t3.0\tA cat.\t\n", "empty sentence"),
    (b"g\tf\t2012\t1\t3.0\t\xff\xfe\tA dog.\n", "not valid UTF-8"),
]


@pytest.mark.parametrize("bad, reason", STSB_BAD)
def test_stsb_malformed_rows_are_skipped_with_line_numbers(tmp_path, bad, reason):
    good = b"g\tf\t2012\t0\t4.0\tA cat sits.\tA cat is sitting.\n"
    bad = bad if isinstance(bad, bytes) else bad.encode()
    path = write(tmp_path, "sts.csv", good + good + bad + good)
    with pytest.warns(UserWarning, match=rf"line 3 \({reason}"):
        pairs = read_pairs(path)
    assert pairs.format == "stsb" and pairs.line_numbers == [1, 2, 4]
    assert pairs.scores == pytest.approx([0.8] * 3)
    assert [n for n, _ in pairs.skipped] == [3]


def test_many_malformed_rows_are_all_listed(tmp_path):
    rows = [SEED_HEADER] + [f"x{i}\tA.\tB.\t{i % 3}\n" for i in range(1, 10)]  # labels 1,2,0,1,2,0,...
    with pytest.warns(UserWarning) as record:
        pairs = read_pairs(write(tmp_path, "p.tsv", "".join(rows)))
    assert [n for n, _ in pairs.skipped] == [3, 6, 9]  # label 2 on file lines 3, 6, 9
    assert "skipped 3 malformed" in str(record[0].message) and "line 9" in str(record[0].message)


def test_bad_files_raise_one_clear_error(tmp_path):
    with pytest.raises(GptlearnError, match="not found"):
        read_pairs(tmp_path / "missing.tsv")
    with pytest.raises(GptlearnError, match="no valid pairs"):
        read_pairs(write(tmp_path, "bad.tsv", SEED_HEADER + "x\tA.\tB.\t7\n"))
    with pytest.raises(GptlearnError, match="not a pair file"):
        read_pairs(write(tmp_path, "other.txt", "hello world\nsecond line\n"))
    with pytest.raises(GptlearnError, match="not a pair file"):
        read_pairs(write(tmp_path, "empty.tsv", ""))


def test_real_stsb(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real files are clean: no warning at all
        train = read_pairs(data_dir / "stsb" / "sts-train.csv")
        dev = read_pairs("stsb-dev")  # by name, through gptlearn.data
    assert (len(train), len(dev)) == (5749, 1500)
    assert train.skipped == dev.skipped == []
    assert min(train.scores) == 0.0 and max(train.scores) == 1.0
    raw = (data_dir / "stsb" / "sts-train.csv").read_text(encoding="utf-8").split("\n")
    quoted = [i for i, line in enumerate(raw) if '"' in line]
    assert len(quoted) > 100  # the file really does have quote characters
    for i in quoted[:50] + [i for i, line in enumerate(raw) if line.count("\t") > 6][:20]:
        fields = raw[i].split("\t")
        assert train.line_numbers[i] == i + 1
        assert (train.sentences1[i], train.sentences2[i]) == (fields[5].strip(), fields[6].strip())
        assert train.scores[i] == pytest.approx(float(fields[4]) / 5)


def test_pairdata_helpers():
    pairs = PairData(["a", "b", "c"], ["b", "x", "y"], [1.0, 0.2, 0.9], line_numbers=[2, 3, 4])
    assert pairs.unique_sentences() == ["a", "b", "c", "x", "y"]
    assert pairs.positives(0.8).line_numbers == [2, 4]
    assert pairs.head(1).sentences2 == ["b"]


def test_read_sentences_and_its_errors(tmp_path):
    assert read_sentences(write(tmp_path, "ok.txt", "  A cat sat.\n\nA dog ran.  \r\n")) == ["A cat sat.", "A dog ran."]
    with pytest.raises(GptlearnError, match="line 2.*UTF-8"):
        read_sentences(write(tmp_path, "latin1.txt", "fine\ncaf\xe9\n".encode("latin-1")))
    with pytest.raises(GptlearnError, match="no sentences"):
        read_sentences(write(tmp_path, "blank.txt", "\n  \n"))
    with pytest.raises(GptlearnError, match="not found"):
        read_sentences(tmp_path / "missing.txt")
