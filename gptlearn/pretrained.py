"""Loading and saving weights in Hugging Face's GPT-2 format (book chapter 6).

The conversions are pure functions on state dicts. Hugging Face's GPT-2 stores its linear layers as
``Conv1D`` with weights shaped (in, out); ours are ``nn.Linear`` with (out, in), so four kinds of
matrix are transposed, and ``transformer.h.{i}`` becomes ``blocks.{i}``. Files are read with
safetensors or ``torch.load(weights_only=True)``: nothing is ever unpickled.

:class:`PretrainedMixin` gives the model ``GPT.from_pretrained`` and ``model.save_pretrained``
(Hugging Face's pattern: the class method builds ``cls(config)``, so this module never imports the
model).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, TypeVar

import torch

from .config import GPTConfig, physical_memory
from .devices import resolve_device
from .errors import (GptlearnError, InvalidFileError, InvalidValueError, MissingFileError, NoTokenizerError,
                     UnavailableError)
from .checks import check_bool, check_path
from .names import OFFLINE_EMBEDDER, OFFLINE_MODEL
from .safeio import check_regular, read_json, read_regular
from .tokenizers import (CHAR_FILE, GPT2_ASSET_SHA256, MERGES_FILE, TOKENIZER_FILES, Tokenizer, VOCAB_FILE,
                         load_tokenizer)
from .atomic import recover_folder, write_folder
from .folders import expand_path

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "HUB_MODELS",
    "hf_to_gptlearn",
    "gptlearn_to_hf",
    "load_weights_file",
    "save_pretrained",
    "PretrainedMixin",
    "PretrainedNotAvailableError",
]

Model = TypeVar("Model", bound="PretrainedMixin")

HUB_MODELS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
BUNDLED = {name: Path(__file__).parent / "assets" / name for name in (OFFLINE_MODEL, "gptlearn-mini", OFFLINE_EMBEDDER)}
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in old checkpoints


class PretrainedNotAvailableError(UnavailableError):
    """Weights could not be found locally nor downloaded."""


def hf_to_gptlearn(hf_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 state dict -> gptlearn state dict (renames and Conv1D transposes)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith(_HF_BUFFERS):
            continue
        if key.startswith("h."):
            key = "blocks." + key[2:]
        out[key] = tensor.t().contiguous() if key.endswith(_TRANSPOSED) else tensor
    if "lm_head.weight" not in out and "wte.weight" in out:
        out["lm_head.weight"] = out["wte.weight"]  # tied
    return out


def gptlearn_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """gptlearn state dict -> Hugging Face ``GPT2LMHeadModel`` state dict (tied lm_head left out)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key == "lm_head.weight":
            continue
        t = tensor.t() if key.endswith(_TRANSPOSED) else tensor
        key = "h." + key[len("blocks."):] if key.startswith("blocks.") else key
        out["transformer." + key] = t.contiguous()
    return out


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``*.safetensors`` or a PyTorch ``*.bin`` (tensors only, ``weights_only=True``)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load

            # read into memory: load_file would memory-map the file, and a process whose weights are
            # mapped dies (SIGBUS) when someone overwrites that file, e.g. by retraining in place
            return load(read_regular(path))
        check_regular(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except GptlearnError:
        raise  # not a regular file: say so, not "corrupt"
    except Exception as e:  # corrupt, truncated, or not a weights file
        why = " ".join(str(e).split())[:200]
        raise InvalidFileError(f"cannot read weights from {path}: the file is corrupt or not a weights file ({why}); "
                               "download or save it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidFileError(f"{path} holds no tensors by name (a state dict); download or save it again")
    return state


def _find_weights(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists() or (folder / name).is_symlink():  # a FIFO or a device: refused when read
            return folder / name
    raise MissingFileError(f"{folder} has no model.safetensors or pytorch_model.bin; pass a folder written by "
                           "save_pretrained, or put the weights file beside its config.json")


def _read_folder(folder: Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """config.json and the weights of a model folder, converted to gptlearn's names; every field of the
    config is checked, and its size against the weights file's, before anything is read or built."""
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise MissingFileError(f"{folder} is not a model folder: config.json is missing; pass a folder written "
                               "by save_pretrained (config.json + model.safetensors)")
    try:
        config = GPTConfig.from_hf_dict(read_json(cfg_path, "a valid GPT-2 config"))
    except InvalidValueError as e:  # a field of the wrong type or out of range
        raise InvalidFileError(f"{cfg_path} is not a valid GPT-2 config: {e}") from None
    weights = _find_weights(folder)
    check_regular(weights)  # a FIFO, a device or a folder in its place: said so, never read
    _check_size(config, cfg_path, weights)
    state = hf_to_gptlearn(load_weights_file(weights))
    bad = next((k for k, v in state.items() if not v.is_floating_point()), None)
    if bad is not None:
        raise InvalidFileError(f"{weights} holds {bad} as {state[bad].dtype}, not floating-point numbers; "
                               "download or save the model again")
    return config, state


def _check_size(config: GPTConfig, cfg_path: Path, weights: Path) -> None:
    """Refuse a config that describes more parameters than its weights file can hold (at least a byte each),
    or a model larger than this machine's memory, before reading or building anything."""
    n, size = config.num_parameters(), weights.stat().st_size
    if n > size:
        c = config
        count = f"{n:.3g}" if n < 1e300 else f"about 10^{int(n.bit_length() * 0.30103)}"
        raise InvalidFileError(
            f"{cfg_path} describes a model of {count} parameters (n_layer={c.n_layer}, n_embd={c.n_embd}, "
            f"n_inner={c.n_inner}, vocab_size={c.vocab_size}, n_positions={c.n_positions}) but {weights.name} holds "
            f"only {size:,} bytes: the weights file is truncated or corrupt, or the two do not belong together; "
            "save them together with model.save_pretrained")
    memory = physical_memory()
    if memory is not None and size > memory:
        raise InvalidFileError(f"{weights} needs {size / 2**30:.1f} GiB of memory and this machine has "
                               f"{memory / 2**30:.1f} GiB; load a smaller model")


def _folder_tokenizer(folder: Path, config: GPTConfig):
    """The tokenizer a model folder carries, or None (meaning GPT-2's BPE); refused if its ids do not fit
    the model's vocabulary."""
    import hashlib

    vocab, merges = folder / VOCAB_FILE, folder / MERGES_FILE
    if vocab.is_file() != merges.is_file():
        have, lack = (vocab, merges) if vocab.is_file() else (merges, vocab)
        raise MissingFileError(f"{folder} has {have.name} but not {lack.name}; a BPE tokenizer needs both "
                               "(save it again with tokenizer.save(folder))")
    if vocab.is_file():
        file = vocab
        # GPT-2's own files (byte-identical to the shipped ones): share the cached fast tokenizer
        if (hashlib.sha256(vocab.read_bytes()).hexdigest() == GPT2_ASSET_SHA256["encoder.json"]
                and hashlib.sha256(merges.read_bytes()).hexdigest() == GPT2_ASSET_SHA256["vocab.bpe"]):
            tok = Tokenizer.gpt2()
        else:
            tok = load_tokenizer(folder)
    elif (folder / CHAR_FILE).is_file():
        file, tok = folder / CHAR_FILE, load_tokenizer(folder)
    else:
        return None
    if tok.vocab_size > config.vocab_size:
        raise InvalidFileError(f"{file} holds {tok.vocab_size} tokens but config.json's vocab_size is "
                               f"{config.vocab_size}: the tokenizer does not belong to this model (its ids would not "
                               "fit); save the model with the tokenizer it was trained with")
    return tok


def _download(name: str) -> Path:
    repo = HUB_MODELS.get(name, name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PretrainedNotAvailableError(
            f"loading {name!r} from the Hugging Face Hub needs huggingface_hub (pip install huggingface_hub); "
            f"or pass a local folder, or use the offline model '{OFFLINE_MODEL}'") from None
    patterns = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]
    try:  # the local cache first: works offline once downloaded (a download cut short is not a model)
        path = Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
        if _is_model_folder(path):
            return path
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise PretrainedNotAvailableError(
            f"{name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"pass a local model folder or use the offline model '{OFFLINE_MODEL}'")
    try:
        with _quiet_hub():
            path = Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:  # any transport failure: refused, reset, cut short, not HTTP, an error status
        why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise PretrainedNotAvailableError(
            f"could not download {name!r} from the Hugging Face Hub ({why}); with no network, pass a local model "
            f"folder or use the offline model: GPT.from_pretrained('{OFFLINE_MODEL}')") from None
    if not _is_model_folder(path):
        raise PretrainedNotAvailableError(f"the Hugging Face Hub's {repo!r} has no config.json and model.safetensors "
                                          "for gptlearn to load; pass a local model folder")
    return path


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / w).is_file() for w in (
        "model.safetensors", "pytorch_model.bin"))


@contextlib.contextmanager
def _quiet_hub():
    """huggingface_hub's retry warnings off (the one error line says what happened), and its progress bars
    too when nobody watches (stderr is not a terminal)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    log = logging.getLogger("huggingface_hub")
    level, bars_were_off = log.level, are_progress_bars_disabled()
    log.setLevel(logging.ERROR)
    if not sys.stderr.isatty():
        disable_progress_bars()
    try:
        yield
    finally:
        log.setLevel(level)
        if not bars_were_off:
            enable_progress_bars()


def _resolve(name_or_path: str | Path) -> Path:
    """A local folder, a bundled model (:data:`BUNDLED`) or a Hub name -> the folder holding the model."""

    key = str(name_or_path)
    path = recover_folder(expand_path(name_or_path, "name_or_path (the model)"),
                          remove=False)  # a save killed half-way: finish it
    if path.is_dir():
        return path
    if key in BUNDLED:
        if not (BUNDLED[key] / "config.json").is_file():
            raise PretrainedNotAvailableError(f"the bundled model {key!r} is missing from this installation "
                                              f"({BUNDLED[key]})")
        return BUNDLED[key]
    if key in HUB_MODELS or (key.count("/") == 1 and not path.exists() and not key.startswith((".", "/", "~"))):
        return _download(key)
    if path.exists():
        raise InvalidValueError(f"{path} is a file; pass the model folder that contains it")
    raise InvalidValueError(f"unknown model {key!r}: not a folder, not one of {sorted([*HUB_MODELS, *BUNDLED])}")


def save_pretrained(model: "nn.Module", directory: str | Path, *, save_tokenizer: bool = True,
                    overwrite: bool = False) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ the tokenizer's ``vocab.json``/``merges.txt``)
    in Hugging Face's layout; ``transformers.GPT2LMHeadModel.from_pretrained(directory)`` loads it.
    The folder is replaced as a whole (:func:`gptlearn.atomic.write_folder`): a crash leaves the old
    folder or the new one, never a mixture. A folder that holds anything gptlearn did not write there
    for a model is refused unless ``overwrite``, which still replaces only gptlearn's files
    (:mod:`gptlearn.folders`)."""
    from safetensors.torch import save_file

    check_path(directory, "directory")
    check_bool(save_tokenizer, "save_tokenizer")
    check_bool(overwrite, "overwrite")
    directory = Path(directory)
    state = gptlearn_to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()})

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.config.to_hf_dict(), indent=2) + "\n")
        if save_tokenizer:
            try:
                tok = model.tokenizer
            except NoTokenizerError:
                tok = None
            if tok is not None:
                tok.save(tmp)

    owns = ("model.safetensors", "config.json", *(TOKENIZER_FILES if save_tokenizer else ()))
    write_folder(directory, write, owns=owns, kind="model", overwrite=overwrite)
    return directory


class PretrainedMixin:
    """``GPT.from_pretrained(...)`` and ``model.save_pretrained(...)`` (the model class inherits them)."""

    @classmethod
    def from_pretrained(cls: type[Model], name_or_path: str | Path = "gpt2", *,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Model:
        """Load a GPT-2: a local folder (config.json + model.safetensors or pytorch_model.bin),
        ``"gptlearn-english"`` or ``"gptlearn-mini"`` (bundled, offline), or a Hub name (``gpt2``,
        ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``, ``distilgpt2`` or ``owner/repo``) through huggingface_hub's cache.

        The model comes back in eval mode, on ``device`` (default: the CPU) and with its tokenizer.
        """
        folder = _resolve(name_or_path)
        config, state = _read_folder(folder)
        if dtype is None:  # half-precision files (e.g. the bundled gptlearn-embed) compute in float32
            state = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in state.items()}
        with torch.device("meta"):  # shapes only: the weights below replace every tensor
            model = cls(config)
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as e:
            detail = " ".join(str(e).split()).replace(f"Error(s) in loading state_dict for {cls.__name__}: ", "")
            raise InvalidFileError(f"the weights in {folder} do not match its config.json ({detail[:300]}); save the "
                                   "config and the weights together, e.g. with model.save_pretrained(folder)") from None
        model.lm_head.weight = model.wte.weight  # re-tie after assign
        model.name_or_path = str(name_or_path)
        model.tokenizer = _folder_tokenizer(folder, config)
        if device is not None or dtype is not None:
            model.to(device=resolve_device(device) if device is not None else None, dtype=dtype)
        return model.eval()

    def save_pretrained(self, directory: str | Path, *, save_tokenizer: bool = True, overwrite: bool = False) -> Path:
        """Write a folder ``transformers.GPT2LMHeadModel.from_pretrained`` loads unchanged (see
        :func:`save_pretrained` for the folders it writes into)."""
        return save_pretrained(self, directory, save_tokenizer=save_tokenizer, overwrite=overwrite)
