"""Downloads against a local server that misbehaves: a truncated body, a reply that is not HTTP, a reset or
closed connection, silence, error statuses, wrong content. Every one must end in one clear line (a
GptlearnError; ``gptlearn: error: ...`` and status 2 from the command), and leave no file in the cache.

Two download paths: gptlearn.data's named data sets (urllib, pinned sha256) and pretrained models from the
Hugging Face Hub (huggingface_hub, run in a subprocess pointed at the local server by HF_ENDPOINT).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from data_kit import tarball
from gptlearn import cli
from gptlearn import data as gdata
from gptlearn.data import DATASETS, dataset_path, read_pairs
from gptlearn.errors import GptlearnError

REPO = Path(__file__).resolve().parents[1]
BODY = b"To be, or not to be, that is the question.\n" * 200


# ---- a server that answers each connection with a function of the socket and the request -----------------
class RawServer:
    """Listens on 127.0.0.1; each connection's request head is read, then ``respond(conn, head)`` runs."""

    def __init__(self, respond: Callable[[socket.socket, bytes], None]) -> None:
        self.respond = respond
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/data.txt") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            conn.settimeout(5)
            try:
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                self.requests.append(head)
                self.respond(conn, head)
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def reply(status: str = "200 OK", body: bytes = BODY, headers: dict | None = None, send: bytes | None = None):
    """An HTTP reply whose declared Content-Length is len(body) but which sends ``send`` (default: body)."""
    def respond(conn: socket.socket, head: bytes) -> None:
        h = {"Content-Length": str(len(body)), "Content-Type": "application/octet-stream", "Connection": "close",
             **(headers or {})}
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in h.items() if v is not None), "", ""]
        conn.sendall("\r\n".join(lines).encode() + (body if send is None else send))
    return respond


def raw(data: bytes):
    def respond(conn, head):
        conn.sendall(data)
    return respond


def reset(conn, head):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST


def close(conn, head):
    pass


def silent(conn, head):
    time.sleep(3)  # longer than the timeout the tests set


def reset_mid_body(conn, head):
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY[:100])
    reset(conn, head)


def chunked_cut(conn, head):
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 50 + BODY[:50] + b"\r\n")


def chunked_garbage(conn, head):
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")


def gzip_garbage(conn, head):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello")


def endless(conn, head):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
    block = b"\0" * 65536
    try:
        for _ in range(64):  # 4 MB, then hang up: more than the cap the test sets
            conn.sendall(block)
    except OSError:
        pass


def redirect_loop(conn, head):
    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /data.txt\r\nContent-Length: 0\r\n\r\n")


MODES = {
    "truncated": reply(send=BODY[: len(BODY) // 2]),
    "truncated-empty": reply(send=b""),
    "not-http": raw(b"SSH-2.0-OpenSSH_9.6\r\n"),
    "binary-garbage": raw(bytes(range(256)) * 4),
    "http-0.9": raw(BODY),
    "bad-status": raw(b"HTTP/1.1 abc Weird\r\n\r\n"),
    "bad-content-length": reply(headers={"Content-Length": "lots"}, send=BODY[:100]),  # read to the close: short
    "header-too-long": raw(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n"),
    "too-many-headers": raw(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"),
    "closed": close,
    "reset": reset,
    "reset-mid-body": reset_mid_body,
    "chunked-cut": chunked_cut,
    "chunked-garbage": chunked_garbage,
    "gzip-garbage": gzip_garbage,
    "silent": silent,
    "404": reply("404 Not Found", b"no such file"),
    "500": reply("500 Internal Server Error", b"oops"),
    "redirect-loop": redirect_loop,
    "wrong-content": reply(body=b"something else entirely\n"),
    "endless": endless,
}


@pytest.fixture
def serve():
    servers: list[RawServer] = []

    def start(respond) -> RawServer:
        servers.append(RawServer(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTLEARN_DATA_DIR", raising=False)
    monkeypatch.setattr(gdata.datasets, "DOWNLOAD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(gdata.datasets, "DOWNLOAD_MAX_BYTES", 1 << 20)
    return tmp_path / "cache"


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def toy(monkeypatch, url: str) -> None:
    monkeypatch.setitem(DATASETS, "toy", gdata.Dataset("toy", url, {"toy.txt": hashlib.sha256(BODY).hexdigest()},
                                                      "toy.txt"))


# ---- gptlearn.data: a single file ----------------------------------------------------------------------------
def test_a_good_server_works(serve, cache, monkeypatch):
    server = serve(reply())
    toy(monkeypatch, server.url())
    assert dataset_path("toy").read_bytes() == BODY
    assert files_in(cache) == ["toy.txt"]


@pytest.mark.parametrize("mode", MODES)
def test_a_broken_download_is_one_clear_line_and_leaves_nothing(serve, cache, monkeypatch, mode):
    server = serve(MODES[mode])
    toy(monkeypatch, server.url())
    with pytest.raises(GptlearnError) as info:
        dataset_path("toy")
    message = str(info.value)
    assert "\n" not in message and "'toy'" in message and "GPTLEARN_DATA_DIR" in message, message
    assert files_in(cache) == []


@pytest.mark.parametrize("mode", ["truncated", "not-http", "reset", "chunked-cut", "header-too-long"])
def test_the_command_says_it_in_one_line(serve, cache, monkeypatch, capsys, tmp_path, mode):
    server = serve(MODES[mode])
    toy(monkeypatch, server.url())
    code = cli.main(["train", "--data", "toy", "--out", str(tmp_path / "run"), "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("gptlearn: error: could not download data set 'toy'"), err
    assert files_in(cache) == []


# ---- gptlearn.data: an archive (STS-B) -------------------------------------------------------------------------
TRAIN = b"main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.\n"
DEV = b"main-captions\tMSRvid\t2012test\t0002\t3.800\tA man plays a flute.\tA man plays a bamboo flute.\n"
TARBALL = tarball({"stsbenchmark/sts-train.csv": TRAIN, "stsbenchmark/sts-dev.csv": DEV})


def stsb(monkeypatch, url: str) -> None:
    files = {"stsb/sts-train.csv": hashlib.sha256(TRAIN).hexdigest(),
             "stsb/sts-dev.csv": hashlib.sha256(DEV).hexdigest()}
    monkeypatch.setitem(DATASETS, "stsb", gdata.Dataset("stsb", url, files, "stsb"))


ARCHIVE_MODES = {
    "good": reply(body=TARBALL),
    "truncated": reply(body=TARBALL, send=TARBALL[: len(TARBALL) // 2]),
    "cut-archive": reply(body=TARBALL[: len(TARBALL) // 2]),  # a complete reply of half an archive
    "not-gzip": reply(body=b"<html>maintenance</html>"),
    "gzip-not-tar": reply(body=gzip.compress(b"just text")),
    "reset-mid-body": reset_mid_body,
    "not-http": raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),  # a TLS hello
}


@pytest.mark.parametrize("mode", ARCHIVE_MODES)
def test_an_archive_download_is_read_whole_or_refused(serve, cache, monkeypatch, mode):
    server = serve(ARCHIVE_MODES[mode])
    stsb(monkeypatch, server.url("/Stsbenchmark.tar.gz"))
    if mode == "good":
        assert len(read_pairs("stsb-dev")) == 1
        assert files_in(cache) == ["stsb/sts-dev.csv", "stsb/sts-train.csv"]
        return
    with pytest.raises(GptlearnError) as info:
        read_pairs("stsb")
    assert "\n" not in str(info.value) and "'stsb'" in str(info.value), str(info.value)
    assert files_in(cache) == []


# ---- pretrained models from the Hugging Face Hub --------------------------------------------------------------
SHA = "0123456789abcdef0123456789abcdef01234567"


def fake_hub(files: dict[str, bytes], cut: str | None = None):
    """Just enough of the Hub's API for huggingface_hub.snapshot_download; ``cut`` names a file whose body
    is sent only halfway."""
    def respond(conn, head):
        line = head.split(b"\r\n", 1)[0].decode()
        method, target = line.split(" ")[:2]
        path = target.split("?")[0]
        if path.startswith("/api/models/") and "/tree/" in path:
            body = json.dumps([{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                               for n, b in files.items()]).encode()
            return reply(body=body, headers={"Content-Type": "application/json"})(conn, head)
        if path.startswith("/api/models/"):
            body = json.dumps({"id": "gptlearn-test/tiny", "sha": SHA,
                               "siblings": [{"rfilename": n} for n in files]}).encode()
            return reply(body=body, headers={"Content-Type": "application/json"})(conn, head)
        name = path.rsplit("/", 1)[-1]
        if name not in files:
            return reply("404 Not Found", b"", headers={"X-Error-Code": "EntryNotFound"})(conn, head)
        body = files[name]
        headers = {"ETag": f'"{hashlib.sha1(body).hexdigest()}"', "X-Repo-Commit": SHA}
        if method == "HEAD":
            conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n".encode()
                         + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n")
            return
        reply(body=body, headers=headers, send=body[: len(body) // 2] if name == cut else None)(conn, head)
    return respond


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> dict[str, bytes]:
    import torch

    from gptlearn import GPT, GPTConfig

    torch.manual_seed(0)
    folder = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16)).save_pretrained(
        tmp_path_factory.mktemp("hub"), save_tokenizer=False)
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


def run_info(server: RawServer, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.port}", "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(home), "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2",
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUTF8": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "gptlearn", "info", "--model", "gptlearn-test/tiny"],
                          capture_output=True, text=True, env=env, timeout=120)


def model_files(home: Path) -> list[str]:
    """Files under the Hub cache that a later load could take for the model (not the Hub's own bookkeeping)."""
    return [f for f in files_in(home) if f.endswith(("config.json", "model.safetensors"))]


@pytest.mark.slow  # subprocesses
def test_the_fake_hub_serves_a_model(serve, tmp_path, tiny_folder):
    proc = run_info(serve(fake_hub(tiny_folder)), tmp_path / "hf")
    assert proc.returncode == 0 and "parameters:" in proc.stdout, proc.stderr


@pytest.mark.slow
# a few representatives (a subprocess each): the transport failures themselves are tried in full above
@pytest.mark.parametrize("mode", ["truncated-weights", "not-http", "500"])
def test_a_broken_hub_download_is_one_clear_line(serve, tmp_path, tiny_folder, mode):
    if mode.startswith("truncated-"):
        respond = fake_hub(tiny_folder, cut="model.safetensors" if mode == "truncated-weights" else "config.json")
    else:
        respond = MODES[mode]
    home = tmp_path / "hf"
    proc = run_info(serve(respond), home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("gptlearn: error: "), proc.stderr
    assert "gptlearn-test/tiny" in proc.stderr
    if mode.startswith("truncated-"):  # one file came whole, the other was cut short and must not be kept
        cut = "model.safetensors" if mode == "truncated-weights" else "config.json"
        assert not any(f.endswith(cut) for f in model_files(home)), files_in(home)
        # and a second try, with the Hub whole again, does not take the half folder for a model
        proc = run_info(serve(fake_hub(tiny_folder)), home)
        assert proc.returncode == 0, proc.stderr
    else:
        assert model_files(home) == [], files_in(home)
