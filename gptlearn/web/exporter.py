"""Write what a web page needs to run a gptlearn model with no kernel, server or network.

The model travels as one classic ``<script>``, ``gptlearn-live-data.js``, that sets
``window.gptlearnLiveData``: the configuration, the tokenizer (vocab + merges, or the characters),
the state dict as float32 bytes in base64, and a check (a text, its ids and its last-position logits
from PyTorch) that the page can compare its own numbers with. A script, not a file to fetch: browsers
block ``fetch()`` of local files, so a page opened from ``file://`` can only load scripts.
Beside it go the JavaScript model (``live_model.js``), its speed wing (``live_fast.js``: the Linear
layers in WebAssembly SIMD), the explorer (``live_explorer.js`` + ``.css``) and ``index.html``, a page
with the whole explorer that works from a USB stick.

A page may carry further models beside its own: :func:`model_script` writes one as an inline ``<script>``
that adds it to ``window.gptlearnLiveModels`` under a key (a fine-tuned copy of the page's model as its
change only), and :func:`explorer_div` writes an explorer that runs it, or draws its next-token bars beside
the page model's (a chapter's model before and after fine-tuning).
"""
from __future__ import annotations

import base64
import copy
import json
import html
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError
from ..names import OFFLINE_MODEL
from ..model import load_model
from ..tokenizers import BPETokenizer, CharTokenizer
from ..atomic import write_folder
from ..checks import check_bool, check_path, check_str
from ..folders import check_folder, check_name

__all__ = ["FORMAT", "DATA_FILE", "STATIC_FILES", "MAX_PARAMETERS", "BOOK_MAX_PARAMETERS", "CHECK_TEXT", "payload",
           "export", "read_export", "static_dir", "page_model", "model_script", "read_model_script", "explorer_div"]

FORMAT = "gptlearn-live/1"
DATA_FILE = "gptlearn-live-data.js"
STATIC_FILES = ("live_model.js", "live_fast.js", "live_explorer.js", "live_explorer.css")
MAX_PARAMETERS = 20_000_000  # 80 MB of float32, 107 MB of base64: more than a page should carry
BOOK_MAX_PARAMETERS = 4_500_000  # the book's pages: ~12 MB of base64 for float16 weights (GPT-2's 124M: ~330 MB)
CHECK_TEXT = "The big red car drove quickly"
_PREFIX = "// Written by gptlearn.web.export; read by live_model.js.\nwindow.gptlearnLiveData = "
_SUFFIX = ";\n"


def static_dir() -> Path:
    """The folder holding live_model.js, live_explorer.js and live_explorer.css."""
    return Path(__file__).resolve().parent / "static"


def page_model(max_parameters: int = BOOK_MAX_PARAMETERS):
    """The model the book's pages run: ``gptlearn.load_model()`` (the chapters' model) when it has at most
    ``max_parameters``, else the bundled gptlearn-english. Returns ``(model, book_model)``, where
    ``book_model`` names the chapters' model when the pages run a smaller one, else None."""
    model = load_model(verbose=False)
    if model.num_parameters() <= max_parameters:
        return model, None
    return load_model(OFFLINE_MODEL, verbose=False), model.name_or_path


def _tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    bpe = getattr(tokenizer, "bpe", tokenizer)  # Tokenizer wraps its readable BPETokenizer twin
    if isinstance(bpe, BPETokenizer):
        return {"kind": "bpe", "vocab": bpe.vocab(), "merges": [list(m) for m in bpe.merges],
                "special": list(bpe.special_tokens)}
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "chars": list(tokenizer.chars)}
    raise InvalidValueError(f"cannot export a {type(tokenizer).__name__}: the page knows byte-level BPE and "
                     "CharTokenizer; attach one with model.tokenizer = ...")


def _float_state(model) -> dict[str, torch.Tensor]:
    """The model's state dict as float32 CPU tensors."""
    return {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}


def _f32_base64(t: torch.Tensor) -> str:
    return base64.b64encode(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode()


def _weights_base64(weights: torch.Tensor) -> tuple[str, str]:
    """(dtype, base64): float16 when every weight is exactly a float16 (a model stored in half precision,
    as the bundled ones are), which halves the page and changes no number; float32 otherwise."""
    half = weights.to(torch.float16)
    if torch.equal(half.to(torch.float32), weights):
        return "float16", base64.b64encode(half.contiguous().numpy().astype("<f2").tobytes()).decode()
    return "float32", _f32_base64(weights)


def payload(model, *, name: str | None = None, book_model: str | None = None,
            check_text: str = CHECK_TEXT) -> dict[str, Any]:
    """The data the page needs (``window.gptlearnLiveData``), checked; see :func:`export`."""
    config = model.config
    if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
        raise InvalidValueError(f"the page cannot compute activation_function={config.activation_function!r}")
    n = model.num_parameters()
    if n > MAX_PARAMETERS:
        raise InvalidValueError(f"{name or model.name_or_path or 'this model'} has {n:,} parameters; a page carries at "
                         f"most {MAX_PARAMETERS:,} (export a bundled model or a smaller model of your own)")
    state = _float_state(model)
    if not torch.equal(state.pop("lm_head.weight"), state["wte.weight"]):
        raise InvalidValueError("the page unembeds with wte (GPT-2's tied weights), but this model's lm_head differs")
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise InvalidValueError(f"weights {bad[:3]} hold NaN or infinity; export a model that trained without "
                                "diverging")
    spec = _tokenizer_spec(model.tokenizer)
    tensors, offset = [], 0
    for key, value in state.items():
        tensors.append({"name": key, "shape": list(value.shape), "offset": offset})
        offset += value.numel()
    weights = torch.cat([v.flatten() for v in state.values()])  # (n,) every tensor, in state-dict order
    try:
        ids = model.tokenizer.encode(check_text)
    except ValueError:  # e.g. a CharTokenizer without these letters: check on the first few tokens instead
        check_text = model.tokenizer.decode(list(range(min(config.vocab_size, 8))))
        ids = model.tokenizer.encode(check_text)
    if not 0 < len(ids) <= config.n_positions:
        raise InvalidValueError(f"the check text {check_text!r} is {len(ids)} tokens; give one of "
                                f"1..{config.n_positions}")
    with torch.no_grad():
        was_training = model.training
        model.eval()
        logits = model(torch.tensor([ids], device=model.device))[0, -1]  # (V,)
        model.train(was_training)
    name = name or model.name_or_path or "your model"
    weights_dtype, weights_b64 = _weights_base64(weights)
    return {
        "format": FORMAT, "name": str(name), "book_model": book_model, "num_parameters": n,
        "label": f"{name} ({n:,} parameters)",
        "config": config.to_hf_dict(), "tokenizer": spec, "tensors": tensors,
        "check": {"text": check_text, "ids": ids, "logits": _f32_base64(logits)},
        "weights_dtype": weights_dtype, "weights": weights_b64,
    }


def _index_html(label: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>gptlearn live: {html.escape(label)}</title>
<link rel="stylesheet" href="live_explorer.css">
<script src="{DATA_FILE}"></script><script src="live_model.js"></script><script src="live_fast.js"></script>
<script src="live_explorer.js"></script>
</head><body style="max-width: 60rem; margin: 2rem auto; font-family: sans-serif">
<h1>gptlearn live</h1>
<div class="gptlearn-live" data-parts="tokens next attention grid heads lens ablate embedding" data-sentences="The cat is sleeping|A feline is resting|The stock market fell sharply today"></div>
</body></html>
"""  # noqa: E501 (the page exactly as written: one long attribute line)


def export(model, folder: str | Path, *, name: str | None = None, book_model: str | None = None,
           overwrite: bool = False) -> Path:
    """Write ``gptlearn-live-data.js``, the explorer's scripts and ``index.html`` into ``folder``.

    ``name`` labels the model on the page (default ``model.name_or_path``); ``book_model`` names the
    model the book was built with when the page runs a smaller one. Everything is checked before
    anything is written, and each file is replaced whole. A folder holding anything gptlearn did not
    write there for a page (your own ``index.html``) is refused unless ``overwrite``, which still replaces
    only gptlearn's files (:mod:`gptlearn.folders`). Returns the data file's path.

    >>> gptlearn.web.export(gptlearn.load_model("gptlearn-mini"), "site")   # doctest: +SKIP
    PosixPath('site/gptlearn-live-data.js')
    """

    check_path(folder, "folder")
    check_bool(overwrite, "overwrite")
    check_folder(check_name(folder, "folder"), kind="site", overwrite=overwrite)  # before the work
    data = payload(model, name=name, book_model=book_model)
    text = _PREFIX + json.dumps(data, ensure_ascii=False, separators=(",", ":")) + _SUFFIX
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; give export a folder to write into")

    def write(tmp: Path) -> None:
        (tmp / DATA_FILE).write_text(text, encoding="utf-8")
        for f in STATIC_FILES:
            shutil.copyfile(static_dir() / f, tmp / f)
        (tmp / "index.html").write_text(_index_html(data["label"]), encoding="utf-8")

    write_folder(folder, write, owns=(DATA_FILE, *STATIC_FILES, "index.html"), kind="site", overwrite=overwrite)
    return folder / DATA_FILE


def read_export(folder_or_file: str | Path) -> dict[str, Any]:
    """Read ``gptlearn-live-data.js`` back: its JSON, with ``state_dict`` (name -> float32 tensor, the
    tied ``lm_head.weight`` restored), ``check_logits`` (V,) and ``tokenizer_object`` (a gptlearn
    tokenizer with the same ids) added."""
    path = Path(folder_or_file)
    path = path / DATA_FILE if path.is_dir() else path
    text = path.read_text(encoding="utf-8")
    if not (text.startswith(_PREFIX) and text.endswith(_SUFFIX)):
        raise InvalidValueError(f"{path} was not written by gptlearn.web.export")
    return _decode(json.loads(text[len(_PREFIX):-len(_SUFFIX)]), path)


def _decode(data: dict[str, Any], path: Any, base=None) -> dict[str, Any]:
    """Add ``state_dict``, ``check_logits`` and ``tokenizer_object`` to a payload read back from ``path`` (a model
    stored as its change needs its ``base``: :func:`read_model_script`)."""
    if data.get("format") != FORMAT:
        raise InvalidValueError(f"{path} has format {data.get('format')!r}; this gptlearn reads {FORMAT!r}")
    if data.get("weights_dtype") == "delta":
        data = _with_base(data, path, base)
    else:
        dtype = {"float32": "<f4", "float16": "<f2"}.get(data.get("weights_dtype", "float32"))
        if dtype is None:
            raise InvalidValueError(f"{path} has weights of dtype {data.get('weights_dtype')!r}; expected float32 or "
                                    "float16")
        flat = torch.from_numpy(np.frombuffer(base64.b64decode(data["weights"]), dtype=dtype).astype("<f4"))
        state = {}
        for t in data["tensors"]:
            size = int(np.prod(t["shape"], dtype=np.int64))
            state[t["name"]] = flat[t["offset"]:t["offset"] + size].view(t["shape"])
        state["lm_head.weight"] = state["wte.weight"]
        data["state_dict"] = state
    data["check_logits"] = torch.from_numpy(np.frombuffer(base64.b64decode(data["check"]["logits"]),
                                                          dtype="<f4").copy())
    spec = data["tokenizer"]
    if spec["kind"] == "bpe":
        data["tokenizer_object"] = BPETokenizer(spec["vocab"], [tuple(m) for m in spec["merges"]])
    else:
        data["tokenizer_object"] = CharTokenizer(spec["chars"])
    return data


def _with_base(data: dict[str, Any], path: Any, base) -> dict[str, Any]:
    """A model stored as its change from ``base`` (:func:`model_script`) -> the same data with ``state_dict``
    (the base's weights plus the change, as the page rebuilds them) and the base's ``tokenizer``."""
    if base is None:
        raise InvalidValueError(f"{path} is stored as a change to {data['base']['name']}; give that model as base")
    if isinstance(base, dict):  # read_export's
        base_state, base_n, spec = base["state_dict"], base["num_parameters"], base["tokenizer"]
    else:
        base_state, base_n, spec = _float_state(base), base.num_parameters(), _tokenizer_spec(base.tokenizer)
    if base_n != data["base"]["num_parameters"]:
        raise InvalidValueError(f"{path} is a change to a model of {data['base']['num_parameters']:,} parameters; "
                                f"the base given has {base_n:,}")
    raw = np.frombuffer(base64.b64decode(data["weights"]), dtype=np.uint8)
    scales = torch.from_numpy(np.frombuffer(base64.b64decode(data["scales"]), dtype="<f4").copy())
    state, row = {}, 0
    for t in data["tensors"]:
        size = int(np.prod(t["shape"], dtype=np.int64))
        if t["bits"] == 8:
            steps = raw[t["start"]:t["start"] + size].view(np.int8)
        else:  # two steps a byte, the first in the low four bits, stored as step + 8
            packed = raw[t["start"]:t["start"] + (size + 1) // 2]
            steps = np.stack([packed & 15, packed >> 4], 1).reshape(-1)[:size].astype(np.int8) - 8
        rows = size // t["shape"][-1]
        steps = torch.from_numpy(steps.copy()).view(rows, -1)
        state[t["name"]] = _rebuild(base_state[t["name"]], steps, scales[row:row + rows])
        row += rows
    state["lm_head.weight"] = state["wte.weight"]
    return dict(data, tokenizer=spec, state_dict=state)


# ---- further models in a page (inline scripts) --------------------------------------------------------------

_MODELS_MARK = "/* gptlearn.web.model_script */"
_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _check_key(key: Any, what: str = "key") -> str:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidValueError(f"{what} must be 1-40 letters, digits, '_' or '-', got {key!r}")
    return key


# A fine-tuned copy of the page's model travels as its change: each tensor's rows as integer steps of the
# row's largest change. 8 bits, but 4 for the token table, whose change points nearly the same way in every
# row (chapter 12's sizes and what the steps cost: docs/gptlearn-english.md, "The page").
DELTA_BITS = {"wte.weight": 4}


def _steps(change: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A tensor's change -> (steps (R, n) int8, scales (R,) float32): its rows (the last dimension) as integers
    in [-(2**(bits-1) - 1), 2**(bits-1) - 1] times the row's scale, its largest |change| over that top step."""
    rows = change.reshape(-1, change.shape[-1])  # (R, n)
    top = 2 ** (bits - 1) - 1
    scale = rows.abs().amax(1) / top  # (R,)
    steps = (rows / scale.clamp_min(torch.finfo(torch.float32).tiny)[:, None]).round().clamp(-top, top)
    return steps.to(torch.int8), scale


def _rebuild(base: torch.Tensor, steps: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """base + steps x scale, as the page computes it: a float32 product, then a float32 sum."""
    change = steps.to(torch.float32) * scale[:, None]  # (R, n)
    return base + change.reshape(base.shape)


def _delta_payload(model, base, *, name: str | None, check_text: str) -> dict[str, Any]:
    """:func:`payload` of ``model`` stored as its change from ``base`` (see :func:`model_script`)."""
    config, base_config = model.config.to_hf_dict(), base.config.to_hf_dict()
    if config != base_config:
        raise InvalidValueError("model and base must have the same configuration (a fine-tuned copy of the base); "
                                f"they differ in {sorted(k for k in config if config[k] != base_config.get(k))[:4]}")
    if _tokenizer_spec(model.tokenizer) != _tokenizer_spec(base.tokenizer):
        raise InvalidValueError("model and base must have the same tokenizer")
    state, base_state = _float_state(model), _float_state(base)
    rebuilt, tensors, chunks, scales, start = {}, [], [], [], 0
    for key, value in state.items():
        if key == "lm_head.weight":
            continue  # tied to wte (payload checks it)
        bits = DELTA_BITS.get(key, 8)
        steps, scale = _steps(value - base_state[key], bits)
        rebuilt[key] = _rebuild(base_state[key], steps, scale)
        flat = steps.flatten().numpy()
        if bits == 4:  # two steps a byte, the first in the low four bits; stored as step + 8 (1..15)
            flat = np.append(flat + 8, 8 if flat.size % 2 else []).astype(np.uint8)
            flat = flat[0::2] | (flat[1::2] << 4)
        chunks.append(flat.astype(np.uint8).tobytes())
        tensors.append({"bits": bits, "start": start})
        start += len(chunks[-1])
        scales.append(scale)
    rebuilt["lm_head.weight"] = rebuilt["wte.weight"]
    copy_model = copy.deepcopy(model)
    copy_model.load_state_dict(rebuilt)
    data = payload(copy_model, name=name, check_text=check_text)  # checks, config, and the check logits
    for t, extra in zip(data["tensors"], tensors):
        t.update(extra)
    data.update({"weights_dtype": "delta", "weights": base64.b64encode(b"".join(chunks)).decode(),
                 "scales": _f32_base64(torch.cat(scales)), "tokenizer": "base",
                 "base": {"name": str(base.name_or_path or "the page's model"),
                          "num_parameters": base.num_parameters()}})
    return data


def model_script(model, key: str, *, name: str | None = None, check_text: str = CHECK_TEXT, half: bool = False,
                 base=None) -> str:
    """An inline ``<script>`` that adds ``model`` to a page as ``window.gptlearnLiveModels[key]``, beside
    the page's own model (:func:`export`); explorers run it when they name it (:func:`explorer_div`).

    The data is :func:`payload`'s, checked on ``check_text`` (give the text the page shows, so the page's
    self-check compares the numbers it draws). ``half`` first rounds every weight to float16, which halves
    the bytes the page carries (a fine-tuned model's weights are float32); the page then runs the rounded
    model, and its check logits are the rounded model's, computed in PyTorch.

    ``base``, the page's own model when ``model`` is a fine-tuned copy of it, stores only the change: each
    row of each tensor as integer steps of its largest change (8 bits, 4 for the token table:
    ``DELTA_BITS``), which the page adds to its own model's weights. The page then runs that sum, and the
    check logits are the sum's; :func:`read_model_script` needs the same ``base`` to read it back.

    >>> HTML(gptlearn.web.model_script(tuned, "tuned", name="tuned", base=model))   # doctest: +SKIP
    """
    _check_key(key)
    check_str(check_text, "check_text", empty=False)
    if check_bool(half, "half") and base is not None:
        raise InvalidValueError("give half or base, not both: with base the change is stored in steps, not float16")
    if base is not None:
        data = _delta_payload(model, base, name=name or model.name_or_path, check_text=check_text)
    else:
        if half:
            model = copy.deepcopy(model)
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.float16).to(p.dtype))
        data = payload(model, name=name, check_text=check_text)
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")  # no </script> inside
    return (f"<script>{_MODELS_MARK}\n(window.gptlearnLiveModels = window.gptlearnLiveModels || {{}})"
            f"[{json.dumps(key)}] = {body};</script>")


def read_model_script(text: str, key: str, *, base=None) -> dict[str, Any]:
    """Read the model ``key`` back from a page (or :func:`model_script`'s text) as :func:`read_export` reads
    an export: its JSON with ``state_dict``, ``check_logits`` and ``tokenizer_object``. A model stored as a
    change needs the ``base`` it was written with (a model, or :func:`read_export`'s dict of the page's)."""
    _check_key(key)
    head = f"(window.gptlearnLiveModels = window.gptlearnLiveModels || {{}})[{json.dumps(key)}] = "
    start = text.find(_MODELS_MARK + "\n" + head)
    if start < 0:
        raise InvalidValueError(f"no model {key!r} written by gptlearn.web.model_script in this text")
    start += len(_MODELS_MARK) + 1 + len(head)
    end = text.find(";</script>", start)
    return _decode(json.loads(text[start:end]), f"the model {key!r}", base=base)


def explorer_div(*, parts: str = "tokens next", text: str | None = None, model: str | None = None,
                 compare: str | None = None, labels: tuple[str, str] | None = None) -> str:
    """The HTML of an explorer (``live_explorer.js`` fills it in the page): its ``parts``, first ``text``,
    the ``model`` it runs (a :func:`model_script` key; default the page's) and a ``compare`` model whose
    next-token bars are drawn beside the first's, titled ``labels``. Outside a web page (in Jupyter) it
    shows a line saying so."""
    attrs = {"data-parts": check_str(parts, "parts", empty=False)}
    if text is not None:
        attrs["data-text"] = check_str(text, "text")
    if model is not None:
        attrs["data-model"] = _check_key(model, "model")
    if compare is not None:
        attrs["data-compare"] = _check_key(compare, "compare")
    if labels is not None:
        if (not isinstance(labels, (tuple, list)) or len(labels) != 2
                or not all(isinstance(x, str) and x and "|" not in x for x in labels)):
            raise InvalidValueError(f"labels must be two non-empty strings without '|', got {labels!r}")
        attrs["data-labels"] = "|".join(labels)
    shown = " ".join(f'{k}="{html.escape(v, quote=True)}"'.replace("\n", "&#10;") for k, v in attrs.items())
    return (f'<div class="gptlearn-live" {shown}>(In the HTML book a live explorer appears here. In Jupyter, the '
            "cells around it do the same with Python.)</div>")
