"""The live book: a gptlearn model running inside a web page, with no kernel, server or network.

:func:`export` writes the model (weights, tokenizer, a PyTorch check) as a classic ``<script>`` beside
the JavaScript model ``static/live_model.js`` (the forward pass of :mod:`gptlearn.model`, one function
per piece, walked in the book's appendix "The live model") and the explorer ``static/live_explorer.js``
that draws tokens, attention, the heads' contributions, the next token and sentence embeddings.
The built book calls it through ``scripts/book_live.py``; readers can call it for their own model:

    gptlearn export-web --model runs/tiny --out my-model-live      # then open my-model-live/index.html

In a page, ``window.gptlearn.live.forward(text)`` returns ``{ids, tokens, logits, attention, message}``:
the token ids and strings, the last position's V logits, the attention patterns nested
``[layer][head][query][key]``, and (when the model cannot read the text: empty, longer than the
context) ``logits`` and ``attention`` null with a message saying why. A page may carry further models
(:func:`model_script`; a fine-tuned copy of the page's model can travel as its change), run as
``gptlearn.live.model(key)`` and by explorers that name them (:func:`explorer_div`).
"""
from __future__ import annotations

from typing import Any

from ..names import OFFLINE_MODEL
from .exporter import (BOOK_MAX_PARAMETERS, CHECK_TEXT, DATA_FILE, FORMAT, MAX_PARAMETERS, STATIC_FILES, export,
                     page_model, payload, read_export, static_dir)
from .exporter import explorer_div, model_script, read_model_script  # further models in a page
from ..folders import check_folder, check_name
from ..model import from_pretrained

__all__ = ["export", "payload", "read_export", "static_dir", "page_model", "register_cli", "FORMAT", "DATA_FILE",
           "STATIC_FILES", "MAX_PARAMETERS", "BOOK_MAX_PARAMETERS", "CHECK_TEXT"]
__all__ += ["model_script", "read_model_script", "explorer_div"]


def register_cli(subparsers: Any) -> None:
    """Add ``gptlearn export-web`` to the ``gptlearn`` command."""
    p = subparsers.add_parser(
        "export-web", help="write a model as a web page that runs it in the browser (works from file://)",
        description="Write the model, the JavaScript forward pass and the explorer into a folder; open its "
                    "index.html in a browser, from disk, with no network.")
    p.add_argument("--model", default=OFFLINE_MODEL, metavar="NAME|FOLDER",
                   help=f"model name or folder (default {OFFLINE_MODEL})")
    p.add_argument("--out", required=True, help="folder to write into (created if missing)")
    p.add_argument("--name", default=None, help="the model's name on the page (default: --model)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that holds other things (only files gptlearn wrote are replaced)")
    p.set_defaults(func=_cli_main)


def _cli_main(args: Any) -> int:

    check_folder(check_name(args.out, "--out"), kind="site", overwrite=args.overwrite, what="--out",
                 hint="pass --overwrite")  # before the model is loaded
    model = from_pretrained(args.model, device="cpu")
    path = export(model, args.out, name=args.name, overwrite=args.overwrite)
    print(f"wrote {path.parent} ({path.stat().st_size / 1e6:.1f} MB of model data); open {path.parent / 'index.html'}")
    return 0
