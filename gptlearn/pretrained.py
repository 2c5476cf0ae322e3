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

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, TypeVar

import torch

from .config import GPTConfig
from .devices import resolve_device

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
BUNDLED = {"gptlearn-mini": Path(__file__).parent / "assets" / "gptlearn-mini",
           "gptlearn-embed": Path(__file__).parent / "assets" / "gptlearn-embed"}
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in old checkpoints


class PretrainedNotAvailableError(RuntimeError):
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
            return load(path.read_bytes())
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or not a weights file
        raise ValueError(f"cannot read weights from {path}: the file is corrupt or not a weights file ({e}); "
                         "download or save it again") from None


def _find_weights(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} has no model.safetensors or pytorch_model.bin; pass a folder written by "
                            "save_pretrained, or put the weights file beside its config.json")


def _read_folder(folder: Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """config.json and the weights of a model folder, converted to gptlearn's names."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: config.json is missing; pass a folder written "
                                "by save_pretrained (config.json + model.safetensors)")
    try:
        config = GPTConfig.from_hf_dict(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path} is not a valid GPT-2 config: {e}") from None
    return config, hf_to_gptlearn(load_weights_file(_find_weights(folder)))


def _folder_tokenizer(folder: Path):
    """The tokenizer a model folder carries, or None (meaning GPT-2's BPE)."""
    import hashlib

    from .tokenizers import GPT2_ASSET_SHA256, Tokenizer, load_tokenizer

    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if vocab.is_file() and merges.is_file():
        # GPT-2's own files (byte-identical to the shipped ones): share the cached fast tokenizer
        if (hashlib.sha256(vocab.read_bytes()).hexdigest() == GPT2_ASSET_SHA256["encoder.json"]
                and hashlib.sha256(merges.read_bytes()).hexdigest() == GPT2_ASSET_SHA256["vocab.bpe"]):
            return Tokenizer.gpt2()
        return load_tokenizer(folder)
    if any(folder.glob("*tokenizer*.json")):
        try:
            return load_tokenizer(folder)
        except (FileNotFoundError, ValueError):
            return None
    return None


def _download(name: str) -> Path:
    repo = HUB_MODELS.get(name, name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PretrainedNotAvailableError(
            f"loading {name!r} from the Hugging Face Hub needs huggingface_hub (pip install huggingface_hub); "
            "or pass a local folder, or use the offline model 'gptlearn-mini'") from None
    patterns = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]
    try:  # the local cache first: works offline once downloaded
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise PretrainedNotAvailableError(
            f"{name!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            "pass a local model folder or use the offline model 'gptlearn-mini'")
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:
        raise PretrainedNotAvailableError(
            f"could not download {name!r} from the Hugging Face Hub ({type(e).__name__}); with no network, "
            "pass a local model folder or use the offline model: GPT.from_pretrained('gptlearn-mini')") from None


def _resolve(name_or_path: str | Path) -> Path:
    """A local folder, the bundled ``gptlearn-mini`` or a Hub name -> the folder holding the model."""
    from .atomic import recover_folder

    key = str(name_or_path)
    path = recover_folder(Path(name_or_path).expanduser())  # a save killed half-way: finish or undo it
    if path.is_dir():
        return path
    if key in BUNDLED:
        if not (BUNDLED[key] / "config.json").is_file():
            raise PretrainedNotAvailableError(f"the bundled model {key!r} is missing from this installation ({BUNDLED[key]})")
        return BUNDLED[key]
    if key in HUB_MODELS or (key.count("/") == 1 and not path.exists() and not key.startswith((".", "/", "~"))):
        return _download(key)
    if path.exists():
        raise ValueError(f"{path} is a file; pass the model folder that contains it")
    raise ValueError(f"unknown model {key!r}: not a folder, not one of {sorted([*HUB_MODELS, *BUNDLED])}")


def save_pretrained(model: "nn.Module", directory: str | Path, *, save_tokenizer: bool = True) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ the tokenizer's ``vocab.json``/``merges.txt``)
    in Hugging Face's layout; ``transformers.GPT2LMHeadModel.from_pretrained(directory)`` loads it.
    The folder is replaced as a whole (:func:`gptlearn.atomic.write_folder`): a crash leaves the old
    folder or the new one, never a mixture."""
    from safetensors.torch import save_file

    from .atomic import write_folder
    from .tokenizers import TOKENIZER_FILES

    directory = Path(directory)
    state = gptlearn_to_hf({k: v.detach().cpu() for k, v in model.state_dict().items()})

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(model.config.to_hf_dict(), indent=2) + "\n")
        if save_tokenizer:
            try:
                tok = model.tokenizer
            except AttributeError:
                tok = None
            if tok is not None:
                tok.save(tmp)

    owns = ("model.safetensors", "config.json", *(TOKENIZER_FILES if save_tokenizer else ()))
    write_folder(directory, write, owns=owns)
    return directory


class PretrainedMixin:
    """``GPT.from_pretrained(...)`` and ``model.save_pretrained(...)`` (the model class inherits them)."""

    @classmethod
    def from_pretrained(cls: type[Model], name_or_path: str | Path = "gpt2", *,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Model:
        """Load a GPT-2: a local folder (config.json + model.safetensors or pytorch_model.bin),
        ``"gptlearn-mini"`` (bundled, offline), or a Hub name (``gpt2``, ``gpt2-medium``, ``gpt2-large``,
        ``gpt2-xl``, ``distilgpt2`` or ``owner/repo``) through huggingface_hub's cache.

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
            raise ValueError(f"the weights in {folder} do not match its config.json ({detail[:300]}); save the "
                             "config and the weights together, e.g. with model.save_pretrained(folder)") from None
        model.lm_head.weight = model.wte.weight  # re-tie after assign
        model.name_or_path = str(name_or_path)
        model.tokenizer = _folder_tokenizer(folder)
        if device is not None or dtype is not None:
            model.to(device=resolve_device(device) if device is not None else None, dtype=dtype)
        return model.eval()

    def save_pretrained(self, directory: str | Path, *, save_tokenizer: bool = True) -> Path:
        """Write a folder ``transformers.GPT2LMHeadModel.from_pretrained`` loads unchanged."""
        return save_pretrained(self, directory, save_tokenizer=save_tokenizer)
