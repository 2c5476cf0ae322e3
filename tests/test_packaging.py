"""The wheel: it carries GPT-2's tokenizer files, and its ``gptlearn`` command runs once installed.

Builds from a copy of the sources (nothing is written into the repository), installs the wheel with
``--no-deps`` into a venv that sees the system packages (so torch is not reinstalled), and runs the
installed command from another folder with ``HF_HUB_OFFLINE=1``. Needs no network.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds a wheel and a venv: tens of seconds


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "gptlearn", src / "gptlearn", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(tmp / "dist"), str(src)])
    (whl,) = (tmp / "dist").glob("gptlearn-*.whl")
    return whl


def test_wheel_contains_the_package_assets_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        embed_bytes = sum(i.file_size for i in zf.infolist()
                          if i.filename.startswith("gptlearn/assets/gptlearn-embed/"))
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for required in ("gptlearn/__init__.py", "gptlearn/__main__.py", "gptlearn/cli.py", "gptlearn/errors.py",
                     "gptlearn/embeddings.py", "gptlearn/similarity.py", "gptlearn/atomic.py",
                     "gptlearn/tokenizers/__init__.py", "gptlearn/tokenizers/bpe.py",
                     "gptlearn/assets/gpt2/encoder.json", "gptlearn/assets/gpt2/vocab.bpe",
                     "gptlearn/fast/fused.py", "gptlearn/fast/csrc/decode_cpu.cpp",
                     "gptlearn/assets/gptlearn-embed/model.safetensors",
                     "gptlearn/assets/gptlearn-embed/embedder.json",
                     "gptlearn/assets/data/tinyshakespeare.txt.gz", "gptlearn/assets/data/book-pairs-dev.tsv",
                     "gptlearn/assets/data/topics-dev.tsv", "gptlearn/assets/data/topics-test.tsv"):
        assert required in names, f"{required} is missing from the wheel"
    assert "gptlearn = gptlearn.cli:main" in entry_points
    assert 0 < embed_bytes <= 25e6, f"the bundled embedder adds {embed_bytes / 1e6:.1f} MB; the budget is 25 MB"
    assert not any(n.startswith(("tests/", "book/")) for n in names)


def test_installed_command_runs_offline_from_another_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    if sys.prefix != sys.base_prefix:  # run from a venv (scripts/setup.sh makes one): see its packages too
        import sysconfig

        inner = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
        # a path added by a .pth line is not scanned for .pth files, so the editable checkout stays hidden
        Path(inner, "outer-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the system pip installs into the venv; --ignore-installed because the editable checkout is visible too
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)])

    # a model folder WITHOUT tokenizer files: the installed package must supply GPT-2's from its assets
    import torch

    from gptlearn import GPT, GPTConfig
    from gptlearn.pretrained import save_pretrained

    torch.manual_seed(0)
    model_dir = save_pretrained(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=32)),
                                tmp_path / "model", save_tokenizer=False)
    assert not (model_dir / "vocab.json").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUTF8="1", PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}")
    where = _run([str(python), "-c", "import gptlearn; print(gptlearn.__file__)"], cwd=elsewhere, env=env).stdout
    assert Path(where.strip()).is_relative_to(venv), f"imported {where.strip()}, not the installed wheel"

    gptlearn = shutil.which("gptlearn", path=str(bindir))
    assert gptlearn is not None
    info = _run([gptlearn, "info", "--model", str(model_dir), "--device", "cpu"], cwd=elsewhere, env=env).stdout
    assert "  n_embd: 16" in info and "device:     cpu" in info and "vocab_size=50257" in info
    out = _run([gptlearn, "embed", "--sentence", "Hello world", "--sentence", "こんにちは", "--model", str(model_dir),
                "--device", "cpu"], cwd=elsewhere, env=env).stdout
    items = json.loads(out)
    assert [i["sentence"] for i in items] == ["Hello world", "こんにちは"]
    assert [i["dimensions"] for i in items] == [16, 16] and all(len(i["embedding"]) == 16 for i in items)
