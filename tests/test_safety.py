"""What docs/safety.md promises: gptlearn never changes or removes what it did not write, reads only regular
files, takes inputs at the edges without hanging, and checks every public argument where it enters.

Legend: a folder "of yours" holds files gptlearn did not write; a "snapshot" is every path under a folder
with its bytes and mode, so a test sees any file changed, removed, added or made less private.
"""
from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlearn import GPT, Embedder, GPTConfig, cli
from gptlearn.atomic import _write_manifest
from gptlearn.data import TokenDataset
from gptlearn.errors import InvalidFileError, InvalidTypeError, InvalidValueError, MissingFileError
from gptlearn.folders import FolderInUseError, read_manifest
from gptlearn.generate import MAX_NEW_TOKENS, sample_next
from gptlearn.safeio import read_regular
from gptlearn.tokenizers import BPETokenizer, Tokenizer
from gptlearn.tokenizers.bpe import _SPLIT_RE, MAX_TRAIN_WORD_BYTES
from gptlearn.web import export

TEXT = "the cat sat on the mat. a dog ran in the park! " * 8
SHAPE = dict(n_layer=1, n_head=2, n_embd=16, n_positions=32)
BAD_ARGUMENT = (InvalidTypeError, InvalidValueError)


# ---- shared pieces -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny byte-level BPE model saved as an embedder folder (config, weights, vocab, merges, embedder.json)."""
    torch.manual_seed(0)
    tok = Tokenizer.from_bpe(BPETokenizer.train(TEXT, 280))
    model = GPT(GPTConfig(vocab_size=280, **SHAPE))
    model.tokenizer = tok
    folder = tmp_path_factory.mktemp("base") / "model"
    Embedder(model, pooling="mean").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(base) -> GPT:
    return GPT.from_pretrained(base)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "text.txt").write_text(TEXT * 4)
    (root / "pairs.tsv").write_text("id\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\tthe cat sat\t{'a cat sat' if i % 2 else 'the dog ran'}\t{i % 2}\n" for i in range(6)))
    return root


@pytest.fixture(autouse=True)
def _cache_and_deadline(tmp_path_factory, monkeypatch):
    """A private token cache, and a 60-second alarm: a read that blocks (a FIFO) fails the test, not the suite."""
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path_factory.getbasetemp() / "safety-cache"))

    def expired(signum, frame):
        raise TimeoutError("the call did not return within 60 s: something blocked or hung")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path under ``root`` (``root`` itself too): its mode and its bytes (a link: its target)."""
    found = {".": (stat.S_IMODE(root.lstat().st_mode), b"")}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            content = (os.readlink(p) if stat.S_ISLNK(st_.st_mode)
                       else p.read_bytes() if stat.S_ISREG(st_.st_mode) else b"")
            found[str(p.relative_to(root))] = (stat.S_IMODE(st_.st_mode), content)
    return found


def one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("gptlearn: warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gptlearn: error: ") and "Traceback" not in err, err
    return lines[0]


def writer_argv(command: str, out: Path, base: Path, inputs: Path) -> list[str]:
    return {
        "train": ["train", "--data", str(inputs / "text.txt"), "--out", str(out), "--steps", "1", "--batch-size", "2",
                  "--block-size", "8", "--eval-iters", "1", "--no-progress", "--init", str(base)],
        "train-embeddings": ["train-embeddings", "--pairs", str(inputs / "pairs.tsv"), "--out", str(out),
                             "--batch-size", "2", "--model", str(base)],
        "export-web": ["export-web", "--out", str(out), "--model", str(base)],
    }[command]


# ---- 1. folders: nothing of yours is changed or removed -----------------------------------------------------
YOURS = [{"notes.txt": b"mine"}, {"config.json": b'{"project": "mine"}', "main.py": b"print(1)"},
         {"index.html": b"<p>my page</p>"}, {".git/HEAD": b"ref: refs/heads/main"}, {"model.safetensors": b"not ours"}]


def _yours(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    folder.chmod(0o700)
    return folder


@pytest.mark.parametrize("files", YOURS, ids=lambda f: "+".join(f))
@pytest.mark.parametrize("command", ["train", "train-embeddings", "export-web"])
def test_every_writing_command_refuses_a_folder_of_yours(capsys, base, inputs, tmp_path, command, files):
    out = _yours(tmp_path / "out", files)
    before = snapshot(tmp_path)
    line = one_line(capsys, cli.main(writer_argv(command, out, base, inputs)))
    assert "gptlearn did not write" in line or "holds no training run" in line or "already holds a model" in line
    assert any(repr(Path(name).parts[0]) in line for name in files), line  # names what is there
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("files", YOURS, ids=lambda f: "+".join(f))
@pytest.mark.parametrize("save", ["save_pretrained", "Embedder.save_pretrained", "web.export"])
def test_every_save_of_the_api_refuses_a_folder_of_yours(model, tmp_path, save, files):
    out = _yours(tmp_path / "out", files)
    before = snapshot(tmp_path)
    do = {"save_pretrained": lambda **k: model.save_pretrained(out, **k),
          "Embedder.save_pretrained": lambda **k: Embedder(model).save_pretrained(out, **k),
          "web.export": lambda **k: export(model, out, **k)}[save]
    with pytest.raises(FolderInUseError, match="gptlearn did not write"):
        do()
    assert snapshot(tmp_path) == before
    collides = {"model": {"config.json", "model.safetensors"}, "site": {"index.html"}}
    kind = "site" if save == "web.export" else "model"
    if set(files) & (collides[kind] | ({"config.json", "model.safetensors"} if kind == "model" else set())):
        with pytest.raises(FolderInUseError, match="which gptlearn did not write and would replace"):
            do(overwrite=True)  # overwrite never replaces a file of yours
        assert snapshot(tmp_path) == before
    else:
        do(overwrite=True)  # written beside your files, which stay as they were
        after = snapshot(tmp_path)
        assert {k: v for k, v in before.items() if k != "out" and k != "."} .items() <= after.items()
        assert after["out"][0] == 0o700  # a private folder stays private
        assert set(read_manifest(out)["files"]).isdisjoint(files)


def test_a_folder_gptlearn_made_for_another_purpose_is_not_taken_over(capsys, base, model, inputs, tmp_path):
    """train-embeddings into a language model's folder would replace its weights: refused, like every mix."""
    lm = tmp_path / "lm"
    model.save_pretrained(lm)
    before = snapshot(lm)
    one_line(capsys, cli.main(writer_argv("train-embeddings", lm, base, inputs)))
    with pytest.raises(FolderInUseError, match="holds a model that gptlearn wrote, not a embedder|not a embedder"):
        Embedder(model).save_pretrained(lm)
    with pytest.raises(FolderInUseError, match="not a site"):
        export(model, lm)
    assert snapshot(lm) == before
    Embedder(model).save_pretrained(lm, overwrite=True)  # asked for: gptlearn's files are replaced
    assert read_manifest(lm)["kind"] == "embedder" and (lm / "embedder.json").is_file()


def test_a_gptlearn_folder_is_saved_again_keeping_your_files_mode_and_the_manifest_honest(model, tmp_path):
    out = tmp_path / "m"
    model.save_pretrained(out)
    (out / "notes.txt").write_text("mine")
    out.chmod(0o700)
    (out / "config.json").chmod(0o600)
    model.save_pretrained(out, save_tokenizer=False)  # the tokenizer gptlearn wrote is kept, and still listed
    assert (out / "notes.txt").read_text() == "mine" and (out / "vocab.json").is_file()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700 and stat.S_IMODE((out / "config.json").stat().st_mode) == 0o600
    assert read_manifest(out)["files"] == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    model.save_pretrained(out, overwrite=True, save_tokenizer=False)  # overwrite: none of gptlearn's old files stay
    assert read_manifest(out)["files"] == ["config.json", "model.safetensors"] and not (out / "vocab.json").exists()
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["info", "embed", "similarity", "generate"])
def test_commands_that_only_read_never_remove_or_rename_anything(capsys, base, tmp_path, command):
    """Not even what a killed save provably left: removing is the next save's job."""
    folder = tmp_path / "M"
    import shutil

    shutil.copytree(base, folder)
    backup = tmp_path / ".M.old-20240601"
    backup.mkdir()
    (backup / "config.json").write_text("my backup")
    (folder / ".tmp-notes123").write_text("mine")
    dead = "999999999-0123abcd"  # no such process
    for leftover in (tmp_path / f".M.tmp-{dead}", folder / f".tmp-{dead}"):
        leftover.mkdir()
        _write_manifest(leftover, "folder", [], dead, complete=False)
    before = snapshot(tmp_path)
    args = {"info": ["info"], "embed": ["embed", "--sentence", "the cat"],
            "similarity": ["similarity", "--sentence1", "the cat", "--sentence2", "a dog"],
            "generate": ["generate", "--prompt", "the cat", "--max-new-tokens", "2", "--seed", "0"]}[command]
    assert cli.main([*args, "--model", str(folder)]) == 0, capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_train_embeddings_leaves_a_checkpoint_folder_of_yours_alone(capsys, base, inputs, tmp_path):
    mine = _yours(tmp_path / "emb.checkpoint", {"notes.txt": b"mine"})
    before = snapshot(mine)
    assert cli.main(writer_argv("train-embeddings", tmp_path / "emb", base, inputs)) == 0, capsys.readouterr().err
    assert snapshot(mine) == before and read_manifest(tmp_path / "emb")["kind"] == "embedder"


def test_a_save_removes_only_what_a_killed_save_provably_left(model, tmp_path):
    folder = tmp_path / "M"
    model.save_pretrained(folder)
    dead = "999999999-0123abcd"
    proven = tmp_path / f".M.tmp-{dead}"
    proven.mkdir()
    _write_manifest(proven, "model", [], dead, complete=False)
    lookalikes = [tmp_path / ".M.old-20240601", tmp_path / ".M.tmp-999999998-0123abcd", folder / ".tmp-notes123"]
    for p in lookalikes:
        p.mkdir()
    model.save_pretrained(folder)
    assert not proven.exists() and all(p.is_dir() for p in lookalikes)


def test_names_too_long_for_the_file_system_are_refused_before_any_work(capsys, base, model, inputs, tmp_path,
                                                                         monkeypatch):
    import gptlearn.train as gtrain

    long = tmp_path / ("x" * 240)  # fits the file system, but not with the temporary suffix beside it
    monkeypatch.setattr(gtrain, "load_text", lambda *a, **k: pytest.fail("the data were read before --out was checked"))
    for command in ("train", "export-web"):
        assert "choose a shorter name" in one_line(capsys, cli.main(writer_argv(command, long, base, inputs)))
    with pytest.raises(InvalidValueError, match="choose a shorter name"):
        model.save_pretrained(long)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["--out", "--data", "--model", "GPTLEARN_CACHE"])
def test_an_unknown_user_in_a_path_is_one_line(capsys, base, inputs, tmp_path, monkeypatch, where):
    nobody = "~gptlearn-no-such-user-x/run"
    args = writer_argv("train", tmp_path / "out", base, inputs)
    if where == "GPTLEARN_CACHE":
        monkeypatch.setenv("GPTLEARN_CACHE", nobody)
    elif where == "--model":
        args = ["info", "--model", nobody]
    else:
        args[args.index(where) + 1] = nobody
    assert "gptlearn-no-such-user-x" in one_line(capsys, cli.main(args)) or where != "--model"


# ---- 4. special files ---------------------------------------------------------------------------------------
def _make_special(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(kind)


SPECIALS = ["fifo", "/dev/zero", "/dev/urandom", "folder"]


@pytest.mark.parametrize("kind", SPECIALS)
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.json", "merges.txt", "embedder.json"])
def test_a_special_file_in_a_model_folder_is_one_line_and_no_hang(capsys, base, tmp_path, name, kind):
    import shutil

    folder = tmp_path / "M"
    shutil.copytree(base, folder)
    _make_special(folder / name, kind)
    args = ["embed", "--sentence", "a cat"] if name == "embedder.json" else ["info"]
    line = one_line(capsys, cli.main([*args, "--model", str(folder)]))
    assert name in line, line


@pytest.mark.parametrize("kind", SPECIALS)
def test_special_files_as_inputs_are_refused(capsys, base, inputs, tmp_path, kind):
    data = tmp_path / "data.txt"
    _make_special(data, kind)
    args = writer_argv("train", tmp_path / "out", base, inputs)
    args[args.index("--data") + 1] = str(data)
    one_line(capsys, cli.main(args))
    assert cli.main(["embed", "--file", str(data), "--model", str(base)]) == 2


@pytest.mark.parametrize("kind", SPECIALS)
def test_read_regular_refuses_what_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "x.json"
    _make_special(path, kind)
    with pytest.raises(InvalidFileError, match="not a regular file"):
        read_regular(path)


def test_read_regular_caps_the_size_and_says_missing(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"[" + b"1," * 1000 + b"1]")
    assert read_regular(path) == path.read_bytes()
    assert read_regular(path, max_bytes=5, whole=False) == b"[1,1,"
    with pytest.raises(InvalidFileError, match="more than the 100"):
        read_regular(path, max_bytes=100)
    with pytest.raises(MissingFileError):
        read_regular(tmp_path / "absent.json")


# ---- 5. inputs at the edges ------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-300, 1e-7])
def test_a_tiny_temperature_is_greedy(model, temperature):
    ids = model.to_tokens("the cat")
    greedy = model.generate(ids, 6, do_sample=False)
    assert torch.equal(model.generate(ids, 6, temperature=temperature, seed=0), greedy)
    logits = torch.tensor([[0.0, 1e-3, -5.0], [3.0, 2.0, 1.0]])
    assert sample_next(logits, temperature=temperature).tolist() == [1, 0]


def test_generate_on_the_command_line_with_a_tiny_temperature(capsys, base):
    assert cli.main(["generate", "--prompt", "the cat", "--max-new-tokens", "3", "--temperature", "1e-320",
                     "--model", str(base)]) == 0
    assert capsys.readouterr().out.startswith("the cat")


def _naive_bpe(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    """BPE training as the definition reads: count every pair, merge the most frequent (ties: the smaller
    pair of ids; a pair spelling a token that exists is skipped), repeat. Pre-tokens are GPT-2's, cut into
    pieces of MAX_TRAIN_WORD_BYTES bytes."""
    words = []
    for w in _SPLIT_RE.findall(text):
        b = w.encode("utf-8")
        words += [list(b[i:i + MAX_TRAIN_WORD_BYTES]) for i in range(0, len(b), MAX_TRAIN_WORD_BYTES)]
    tokens = [bytes([i]) for i in range(256)]
    merges = []
    while len(merges) < n_merges:
        counts: dict[tuple[int, int], int] = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        best = min((p for p in counts if tokens[p[0]] + tokens[p[1]] not in tokens), default=None,
                   key=lambda p: (-counts[p], p))
        if best is None:
            break
        new = len(tokens)
        tokens.append(tokens[best[0]] + tokens[best[1]])
        merges.append((tokens[best[0]], tokens[best[1]]))
        for k, w in enumerate(words):
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[k] = out
    return merges


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="ab c\nxé", min_size=1, max_size=300), st.integers(1, 20))
def test_the_bpe_trainer_learns_what_the_definition_says(text, n_merges):
    expected = _naive_bpe(text, n_merges)
    try:
        tok = BPETokenizer.train(text, 256 + n_merges, special_tokens=())
    except InvalidValueError as e:
        assert len(expected) < n_merges and "text too small" in str(e)
        return
    b2u = {c: b for b, c in __import__("gptlearn.tokenizers.bpe", fromlist=["x"]).bytes_to_unicode().items()}
    learned = [(bytes(b2u[c] for c in a), bytes(b2u[c] for c in b)) for a, b in tok.merges]
    assert learned == expected


def test_a_long_line_without_spaces_learns_tokens_of_at_most_the_piece_size():
    with pytest.raises(InvalidValueError, match="only 6 merges possible"):
        BPETokenizer.train("a" * 100_000, 256 + 7, special_tokens=())  # aa, a4, a8 ... a64, then nothing
    rng = np.random.default_rng(0)
    line = "".join(rng.choice(list("abcdefgh"), 20_000))
    tok = BPETokenizer.train(line, 256 + 12, special_tokens=())
    assert [tuple(m) for m in tok.merge_history] == [
        ((a.decode(), b.decode()), (a + b).decode(), c) for (a, b), (_, _, c) in
        zip(_naive_bpe(line, 12), tok.merge_history)]


def test_embed_takes_many_sentences_from_a_file_and_refuses_too_many_arguments(capsys, base, tmp_path):
    sentences = [f"sentence {i} about a cat" for i in range(40)]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n")
    assert cli.main(["embed", "--file", str(tmp_path / "s.txt"), "--model", str(base)]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert [row["sentence"] for row in from_file] == sentences
    assert cli.main(["embed", *[x for s in sentences[:3] for x in ("--sentence", s)], "--model", str(base)]) == 0
    three = json.loads(capsys.readouterr().out)
    assert [row["sentence"] for row in three] == sentences[:3]
    np.testing.assert_allclose([row["embedding"] for row in three], [row["embedding"] for row in from_file[:3]],
                               rtol=1e-5, atol=1e-6)  # other batches: float rounding only
    many = [x for i in range(cli.MAX_SENTENCE_ARGS + 1) for x in ("--sentence", "a")]
    assert "--file" in one_line(capsys, cli.main(["embed", *many]))


# ---- 6. the API's boundary ----------------------------------------------------------------------------------
NOT_BOOL = st.one_of(st.text(max_size=5), st.integers(), st.floats(), st.none(), st.just([True]),
                     st.just(torch.tensor(True)))
NOT_INT = st.one_of(st.floats(), st.text(max_size=5), st.booleans(), st.just([1]), st.just(b"1"),
                    st.just(torch.tensor(1.0)))
NOT_NUMBER = st.one_of(st.text(max_size=5), st.booleans(), st.just([0.5]), st.just(torch.tensor(0.5)), st.none(),
                       st.just(float("nan")), st.just(float("inf")), st.just(b"1"))


def _refused(call, name: str) -> None:
    with pytest.raises(BAD_ARGUMENT) as info:
        call()
    assert name in str(info.value), f"{name!r} is not named in: {info.value}"


def _api_settings(n: int = 25):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_api_settings()
@given(name=st.sampled_from(["do_sample", "use_cache", "fused"]), value=NOT_BOOL)
def test_generate_flags_must_be_bools(model, name, value):
    _refused(lambda: model.generate(model.to_tokens("the"), 2, **{name: value}), name)


@_api_settings()
@given(value=st.one_of(NOT_INT, st.integers(max_value=-1), st.integers(min_value=MAX_NEW_TOKENS + 1)))
def test_max_new_tokens_is_checked(model, value):
    _refused(lambda: model.generate(model.to_tokens("the"), value, use_cache=False), "max_new_tokens")


@_api_settings()
@given(value=st.one_of(NOT_NUMBER, st.floats(max_value=-1e-300)))
def test_temperature_is_a_plain_number(model, value):
    _refused(lambda: model.generate(model.to_tokens("the"), 2, temperature=value), "temperature")


@_api_settings()
@given(name=st.sampled_from(["top_k", "top_p", "seed", "eos_token_id"]),
       value=st.one_of(NOT_INT, st.integers(-10**20, -1), st.integers(min_value=2 ** 64)))
def test_sampling_integers_are_checked(model, name, value):
    if name == "top_k" and type(value) is int and value >= 1:
        return  # any top_k from 1 up is valid
    if name == "top_p" and type(value) is float and 0 < value <= 1:
        return  # top_p is a share in (0, 1], not an integer
    _refused(lambda: model.generate(model.to_tokens("the"), 2, **{name: value}), name)


@_api_settings()
@given(value=st.one_of(st.text(max_size=5), st.integers(), st.just(object())))
def test_generator_must_be_a_torch_generator(model, value):
    _refused(lambda: model.generate(model.to_tokens("the"), 2, generator=value), "generator")


@_api_settings()
@given(value=st.one_of(st.binary(min_size=1, max_size=8), st.just({1: 2}), st.just({1, 2}), st.just([True, 1]),
                       st.just([1.5]), st.just([[1, 2], [3]]), st.integers(), st.none()))
def test_generate_takes_text_ids_or_a_tensor(model, value):
    _refused(lambda: model.generate(value, 2), "idx")


@_api_settings()
@given(value=st.one_of(st.just([]), st.just({}), st.just({"a"}), st.binary(max_size=4), st.integers(),
                       st.just([1]), st.just(["a", 2])))
def test_to_tokens_takes_text(model, value):
    _refused(lambda: model.to_tokens(value), "text")


@_api_settings()
@given(value=st.one_of(st.integers(), st.floats(), st.binary(max_size=4), st.just({"hook_embed": 1}), st.just([1])))
def test_names_filter_takes_names_or_a_predicate(model, value):
    _refused(lambda: model.run_with_cache(model.to_tokens("the"), names_filter=value), "names_filter")


@_api_settings()
@given(layer=st.one_of(NOT_INT, st.integers(max_value=-2), st.integers(min_value=1)))
def test_hidden_states_layer_is_checked(model, layer):
    _refused(lambda: model.hidden_states(model.to_tokens("the"), layer=layer), "layer")


@_api_settings()
@given(value=st.one_of(st.text(max_size=3), st.integers(), st.just({}), st.just([1])))
def test_kv_cache_must_be_a_kv_cache(model, value):
    _refused(lambda: model(model.to_tokens("the"), value), "kv_cache")


@_api_settings()
@given(bad=st.one_of(st.integers(-10**6, -101), st.integers(-99, -1), st.integers(280, 10**6)))
def test_loss_targets_are_ids_or_the_ignore_index(model, bad):
    ids = model.to_tokens("the cat sat")
    targets = ids.clone()
    targets[0, -1] = bad
    _refused(lambda: model.loss(ids, targets), "targets")


def test_token_ids_of_the_wrong_kind_are_refused(model):
    for ids in (torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3), torch.ones(1, 3, dtype=torch.complex64)):
        _refused(lambda: model(ids), "idx")


@_api_settings()
@given(value=st.one_of(st.text(min_size=1, max_size=8).filter(lambda s: s not in ("cpu", "auto")), st.floats()))
def test_a_bogus_device_is_one_clear_error(value):
    from gptlearn.devices import resolve_device

    try:
        resolve_device(value)
    except BAD_ARGUMENT as e:
        assert "device" in str(e)
    except Exception as e:  # a real device this machine lacks ("cuda", "mps")
        assert type(e).__name__ == "UnavailableError", e


@_api_settings()
@given(value=st.one_of(st.none(), st.text(max_size=3), st.integers(), st.just({}), st.just(torch.nn.Linear(2, 2))))
def test_embedder_takes_a_gptlearn_model(value):
    _refused(lambda: Embedder(value), "model")


@_api_settings()
@given(name=st.sampled_from(["sentences", "batch_size", "normalize_embeddings", "convert_to_numpy"]),
       value=st.one_of(st.just({"a": 1}), st.just({"a"}), st.just(b"a"), st.just(2.5), st.just(True), st.just("no"),
                       st.just(0), st.just([1]), st.none()))
def test_encode_checks_each_argument(model, name, value):
    if (name == "sentences" and value == "no") or (name == "batch_size" and value is None):
        return  # a one-sentence str is valid; None is caught as "not an integer" below
    if name in ("normalize_embeddings", "convert_to_numpy") and value is True:
        return
    if name == "batch_size" and value is True:
        pass
    kwargs = {"sentences": ["a cat"], name: value}
    _refused(lambda: Embedder(model).encode(**kwargs), name)


def test_get_batch_refuses_absurd_sizes(model):
    ds = TokenDataset(TEXT * 4, model.tokenizer, cache=Path(os.environ["GPTLEARN_CACHE"]))
    for kwargs, name in [(dict(batch_size=10**9), "batch_size"), (dict(batch_size=1e9), "batch_size"),
                         (dict(batch_size=True), "batch_size"), (dict(block_size=2.5), "block_size"),
                         (dict(repeat_frac=2), "repeat_frac"), (dict(generator="x"), "generator")]:
        args = {"batch_size": 2, "block_size": 4, **kwargs}
        _refused(lambda: ds.get_batch("train", args.pop("batch_size"), args.pop("block_size"), **args), name)


class Mine(Exception):
    """An exception of the user's own."""


def test_exceptions_of_your_callbacks_propagate_unchanged(model):
    ids = model.to_tokens("the cat")
    mine = Mine("from your filter")

    def names_filter(name: str) -> bool:
        raise mine

    with pytest.raises(Mine) as info:
        model.run_with_cache(ids, names_filter=names_filter)
    assert info.value is mine

    def hook(t, hook):
        raise mine

    with pytest.raises(Mine) as info:
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed", hook)])
    assert info.value is mine
    assert not any(p.fwd_hooks for p in model.hook_points())  # and the hooks were removed


@_api_settings()
@given(value=st.one_of(st.just("hook_embed"), st.just([("hook_embed",)]), st.just([("hook_embed", 3)]), st.integers(),
                       st.just({"hook_embed": print}), st.just([("hook_embed", print, 1)])))
def test_hook_pairs_are_checked(model, value):
    _refused(lambda: model.run_with_hooks(model.to_tokens("the"), fwd_hooks=value), "fwd_hooks")
    assert not any(p.fwd_hooks for p in model.hook_points())


@_api_settings()
@given(hook=st.one_of(st.none(), st.integers(), st.text(max_size=3)), direction=st.sampled_from(["fwd", "sideways", 1]))
def test_add_hook_checks_the_hook_and_its_direction(model, hook, direction):
    _refused(lambda: model.add_hook("hook_embed", hook, direction), "hook")
    if direction != "fwd":
        _refused(lambda: model.add_hook("hook_embed", print, direction), "dir")
    assert not any(p.fwd_hooks for p in model.hook_points())


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
@pytest.mark.parametrize("name", ["trainer_state.json", "trainer_state.safetensors"])
def test_a_special_file_in_a_run_folder_is_one_line_on_resume(capsys, base, inputs, tmp_path, name, kind):
    out = tmp_path / "run"
    args = writer_argv("train", out, base, inputs)
    assert cli.main(args) == 0, capsys.readouterr().err
    capsys.readouterr()
    _make_special(out / name, kind)
    resume = ["train", "--data", str(inputs / "text.txt"), "--out", str(out), "--resume", "--steps", "2"]
    assert "not a regular file" in one_line(capsys, cli.main(resume))


# ---- a tokenizer's save obeys the folder rule --------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: Tokenizer.from_bpe(BPETokenizer.train(TEXT, 270)),
                                  lambda: BPETokenizer.train(TEXT, 270)])
def test_a_tokenizer_save_never_replaces_files_it_did_not_write(tmp_path, make):
    tok = make()
    fresh = tok.save(tmp_path / "new")  # a new folder: written, with a manifest, read back the same
    assert type(tok).from_directory(fresh).encode(TEXT) == tok.encode(TEXT)
    assert set(read_manifest(fresh)["files"]) == {"vocab.json", "merges.txt"}
    tok.save(fresh)  # its own files: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "vocab.json").write_text("my notes")
    (mine / "other.txt").write_text("keep")
    with pytest.raises(FolderInUseError, match="did not write"):
        tok.save(mine)
    with pytest.raises(FolderInUseError, match="vocab.json"):
        tok.save(mine, overwrite=True)  # even overwrite never replaces a vocab.json gptlearn did not write
    assert (mine / "vocab.json").read_text() == "my notes" and not (mine / "merges.txt").exists()


def test_a_tokenizer_saved_into_a_gptlearn_model_folder_keeps_the_model(tmp_path, model):
    folder = tmp_path / "m"
    model.save_pretrained(folder, save_tokenizer=False)
    (folder / "notes.txt").write_text("keep")
    model.tokenizer.save(folder)
    again = GPT.from_pretrained(folder)
    assert again.tokenizer.encode(TEXT) == model.tokenizer.encode(TEXT)
    assert (folder / "notes.txt").read_text() == "keep"
    assert {"vocab.json", "merges.txt", "config.json", "model.safetensors"} <= set(read_manifest(folder)["files"])


# ---- the token cache's metadata is read like any input -----------------------------------------------------
@pytest.mark.parametrize("damage", ["not json", '{"n_train": "x"}', '{"n_train": 5, "n_val": 0, "dtype": "uint16", '
                                    '"vocab_size": 280}', "fifo", "folder"])
def test_a_damaged_token_cache_entry_is_tokenized_again(tmp_path, model, damage):
    tok = model.tokenizer
    first = TokenDataset(TEXT, tok, cache=tmp_path)
    meta = first.path.with_suffix(".json")
    good = json.loads(meta.read_text())
    meta.unlink()
    if damage in ("fifo", "folder"):
        _make_special(meta, damage)
    else:
        meta.write_text(damage)
    if damage == "folder":  # a folder is not replaced: one clear error naming it
        with pytest.raises(InvalidFileError, match="holds a folder at .*json"):
            TokenDataset(TEXT, tok, cache=tmp_path)
        return
    again = TokenDataset(TEXT, tok, cache=tmp_path)  # no hang, no KeyError: the entry is rebuilt
    assert not again.cached and np.array_equal(again.tokens, first.tokens)
    assert json.loads(meta.read_text()) == good
    assert TokenDataset(TEXT, tok, cache=tmp_path).cached


# ---- absurd shapes are refused before anything is built ----------------------------------------------------
@pytest.mark.parametrize("field,value", [("n_positions", 10**7), ("n_layer", 10_000), ("vocab_size", 10**9),
                                         ("n_embd", 2**20), ("n_head", 4096), ("n_inner", 10**9)])
def test_a_config_json_with_an_absurd_shape_is_one_line_naming_the_figure(capsys, base, tmp_path, field, value):
    import shutil

    folder = tmp_path / "M"
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    if field == "n_head":
        config["n_embd"] = 4096 * 2  # divisible, so only the head count is absurd
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidFileError, match=f"config.json is not a valid GPT-2 config: .*{field} must be .*at most "
                                               f".*got {value}"):
        GPT.from_pretrained(folder)
    line = one_line(capsys, cli.main(["info", "--model", str(folder)]))
    assert field in line and str(value) in line, line


@pytest.mark.parametrize("preset", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_every_released_gpt2_shape_is_within_the_limits(preset):
    from gptlearn.config import LIMITS

    cfg = GPTConfig.from_preset(preset)
    assert GPTConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    assert all(getattr(cfg, k) <= hi for k, (hi, _) in LIMITS.items() if getattr(cfg, k) is not None)
