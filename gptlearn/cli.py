"""The ``gptlearn`` command: embed, compare and generate text from the terminal.

    gptlearn embed --sentence "A cat sat." --sentence "A dog ran."
    gptlearn embed --file sentences.txt          # one a line, for many (a progress bar on stderr)
    gptlearn similarity --sentence1 "A cat sat." --sentence2 "A dog ran." --all-metrics
    gptlearn generate --prompt "Once upon a time" --max-new-tokens 40 --seed 0
    gptlearn generate --interactive
    gptlearn info --model gpt2

Every subcommand takes ``--model NAME|FOLDER`` and ``--device auto|cpu|cuda|mps``. ``embed`` and
``similarity`` default to ``gptlearn-embed``, the bundled sentence embedder (docs/gptlearn-embed.md);
``generate`` and ``info`` to the bundled language model ``gptlearn-english``; both work offline.
A mistake the user can fix (a :class:`~gptlearn.GptlearnError`, or an OSError from a path they gave)
prints one line, ``gptlearn: error: ...``, on stderr and exits with status 2; anything else is a bug
and keeps its traceback. ``gptlearn.train`` and ``gptlearn.embed_train`` add their own subcommands
through ``register_cli(subparsers)``.
"""
from __future__ import annotations

import argparse
import codecs
import importlib
import json
import math
import sys
import warnings
from typing import Sequence

from .errors import GptlearnError, InvalidValueError, NoTokenizerError
from .names import OFFLINE_EMBEDDER, OFFLINE_MODEL
from .checks import non_finite
from .model import from_pretrained
from .embeddings import Embedder, POOLING
from .data import read_sentences
from .similarity import METRICS
from .generate import check_sampling
from .finetune import CLASSIFIER_FILE, is_classifier_folder
from . import __version__

__all__ = ["main", "build_parser"]

DEFAULT_MODEL = OFFLINE_MODEL
DEFAULT_EMBEDDER = OFFLINE_EMBEDDER
_PLUGINS = ("gptlearn.train", "gptlearn.embed_train", "gptlearn.web",
            "gptlearn.finetune")  # modules that add subcommands when present
MAX_SENTENCE_ARGS = 1000  # argparse reads repeated options in quadratic time: more go in a --file
PROGRESS_FROM = 256  # embed shows a progress bar on stderr from this many sentences
_TEXT_ARGS = ("sentence", "sentence1", "sentence2", "prompt", "name")  # text we encode or echo (paths may be any bytes)


# ---- helpers ---------------------------------------------------------------------------------------
def _load_model(args: argparse.Namespace):
    return _finite(from_pretrained(args.model, device=args.device))


def _load_embedder(args: argparse.Namespace):
    embedder = Embedder.from_pretrained(args.model, device=args.device, pooling=args.pooling, layer=args.layer)
    _finite(embedder.model)
    return embedder


def _finite(model):
    """The model, if its weights are finite numbers; a diverged run's NaN would print as invalid JSON."""
    bad = non_finite(model)
    if bad is not None:
        raise GptlearnError(f"the weights of {model.name_or_path} hold NaN or infinity ({bad}), so every "
                            "output would be NaN; load a model that trained without diverging")
    return model


def _tokenizer(model):
    return model.tokenizer  # NoTokenizerError (one line) for a folder that carried none


def _check_text_args(args: argparse.Namespace) -> None:
    """Refuse text arguments that are not UTF-8: Python hands such bytes over as lone surrogates
    (U+DC80..U+DCFF), which would be echoed raw into the output."""
    for name in _TEXT_ARGS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            bad = next((c for c in value or "" if "\ud800" <= c <= "\udfff"), None)
            if bad is not None:
                byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if ord(bad) >= 0xDC80 else f"U+{ord(bad):04X}"
                raise InvalidValueError(f"--{name.replace('_', '-')} is not UTF-8 text ({byte} in "
                                        f"{value.encode('utf-8', 'backslashreplace').decode()!r}); pass UTF-8")


def _json(obj) -> None:
    """Print ``obj`` as JSON on one line: ASCII escapes where the terminal cannot show UTF-8."""
    ascii_only = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().replace("-", "") != "utf8"
    print(json.dumps(obj, ensure_ascii=ascii_only, allow_nan=False))


# ---- subcommands -----------------------------------------------------------------------------------
def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    sentences = list(args.sentence or [])
    if args.file is not None:
        sentences += read_sentences(args.file)  # one a line; a FIFO or a device is refused
    if not sentences:
        raise GptlearnError("give the sentences to embed: --sentence TEXT (repeat it) or --file FILE (one a line)")
    embedder = _load_embedder(args)
    vectors = embedder.encode(sentences, normalize_embeddings=args.normalize,  # (N, D)
                              show_progress_bar=len(sentences) > PROGRESS_FROM)  # a bar on stderr for long inputs
    if not np.isfinite(vectors).all():
        raise GptlearnError("the embeddings hold NaN or infinity (the model overflowed); try --device cpu or another "
                            "model")
    items = [{"sentence": s, "embedding": v.tolist(), "dimensions": int(v.shape[0])}
             for s, v in zip(sentences, vectors)]
    _json(items[0] if len(items) == 1 else items)
    return 0


def _similarity(args: argparse.Namespace) -> int:
    embedder = _load_embedder(args)
    a, b = embedder.encode([args.sentence1, args.sentence2])  # (2, D) -> two (D,)
    names = list(METRICS) if args.all_metrics else ["cosine"]
    values = {name: float(METRICS[name][0](a, b)) for name in names}
    if not all(map(math.isfinite, values.values())):
        raise GptlearnError(f"the similarity is not a number ({values}): the embeddings overflowed; try another model")
    if args.json:
        _json({"sentence1": args.sentence1, "sentence2": args.sentence2, **values})
        return 0
    labels = {"cosine": "cosine similarity", "euclidean": "euclidean distance",
              "manhattan": "manhattan distance", "dot": "dot product"}
    width = max(len(labels[n]) for n in names)
    for name in names:
        print(f"{labels[name] + ':':<{width + 1}} {values[name]:>10.4f}   ({METRICS[name][1]})")
    return 0


def _check_prompt(tok, prompt: str) -> None:
    """A prompt may not hold a special token's text (tiktoken's rule: no control tokens from typed text)."""
    special = [t for t in getattr(tok, "special_tokens", {}) if t in prompt]
    if special:
        raise GptlearnError(f"the prompt contains {special[0]!r}, the text of a special token, which a typed prompt "
                            "may not hold (tiktoken refuses it too); remove it")


def _stream(model, prompt: str, args: argparse.Namespace, generator, out=None, *, echo: bool = False) -> None:
    """Print the continuation of ``prompt`` (after the prompt itself with ``echo``) token by token, never
    splitting a UTF-8 character. A prompt the tokenizer cannot encode is refused before anything is printed."""
    out = out or sys.stdout
    tok = _tokenizer(model)
    _check_prompt(tok, prompt)
    ids = tok.encode(prompt)
    if not ids:
        raise GptlearnError("the prompt is empty; give some text to continue")
    if echo:
        out.write(prompt)
    eot = getattr(tok, "eot_token", None)
    # A token can end in the middle of a multi-byte character (Japanese, emoji); the incremental
    # decoder keeps those bytes until the character is complete.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stream = model.generate_stream(ids, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                   top_p=args.top_p, do_sample=not args.greedy, generator=generator,
                                   fused=getattr(args, "fused", False))
    for nxt in stream:
        token = int(nxt[0])
        if token == eot:
            break
        out.write(decoder.decode(tok.decode_bytes([token])))
        out.flush()
    out.write(decoder.decode(b"", final=True))
    out.flush()


def _generate(args: argparse.Namespace) -> int:
    import torch

    if args.interactive == (args.prompt is not None):
        raise GptlearnError("give either --prompt TEXT or --interactive (one of them)")
    if args.max_new_tokens < 0:
        raise GptlearnError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    check_sampling(args.temperature, args.top_k, args.top_p, names=("--temperature", "--top-k", "--top-p"))
    if args.seed is not None and not 0 <= args.seed < 2 ** 64:
        raise GptlearnError(f"--seed must be an integer from 0 to 2**64 - 1 (18446744073709551615), got {args.seed}")
    if not args.interactive and not args.prompt:
        raise GptlearnError("the prompt is empty; give some text to continue")
    _refuse_classifier(args.model)
    model = _load_model(args)
    _tokenizer(model)
    generator = torch.Generator(device=model.device)
    if args.seed is not None:
        generator.manual_seed(args.seed)
    else:
        generator.seed()  # a fresh random seed
    if not args.interactive:
        _stream(model, args.prompt, args, generator, echo=True)
        print()
        return 0
    print(f"{model.name_or_path}: type a prompt and press Enter; 'quit' or Ctrl-D leaves.", file=sys.stderr)
    while True:
        sys.stderr.write("> ")
        sys.stderr.flush()
        try:
            line = _read_line(sys.stdin)
            if line is None:  # EOF
                sys.stderr.write("\n")
                return 0
            prompt = line.rstrip("\r\n")
            if prompt.strip().lower() in ("quit", "exit"):
                return 0
            if prompt.strip():
                _stream(model, prompt, args, generator)
                print()
        except GptlearnError as e:  # this line only: answer it and read the next
            sys.stdout.flush()
            print(f"gptlearn: error: {_one_line(e)}", file=sys.stderr)


def _read_line(stdin) -> str | None:
    """The next line of ``stdin`` (None at the end), read as bytes so that one line that is not UTF-8
    is an error for that line and not the end of the session."""
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # a text stream without bytes underneath (io.StringIO)
        return stdin.readline() or None
    raw = buffer.readline()
    if not raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidValueError(f"that line is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                                "type it again") from None


def _info(args: argparse.Namespace) -> int:
    model = _load_model(args)
    c = model.config
    print(f"model:      {model.name_or_path}")
    print(f"parameters: {model.num_parameters():,} ({model.num_parameters() / 1e6:.1f}M)")
    print(f"device:     {model.device}")
    print(f"dtype:      {str(model.wte.weight.dtype).removeprefix('torch.')}")
    try:
        print(f"tokenizer:  {model.tokenizer!r}")
    except NoTokenizerError:
        print("tokenizer:  none (this folder carries no tokenizer and its vocabulary is not GPT-2's)")
    print("config:")
    for key, value in c.to_hf_dict().items():
        print(f"  {key}: {value}")
    return 0


# ---- fine-tuning (gptlearn finetune / classify live in gptlearn/finetune.py) -------------------------
def _refuse_classifier(name_or_path: str) -> None:
    """A classifier folder holds a GPT too, but its body was tuned to feed a head, not to write text."""
    if is_classifier_folder(name_or_path):
        raise GptlearnError(f"{name_or_path} is a classifier (it has {CLASSIFIER_FILE}), not a language model; label "
                            "sentences with gptlearn classify --model, or generate with a language model")


# ---- the parser ------------------------------------------------------------------------------------
def _common(parser: argparse.ArgumentParser, *, embedding: bool = False) -> None:
    default = DEFAULT_EMBEDDER if embedding else DEFAULT_MODEL
    parser.add_argument("--model", default=default, metavar="NAME|FOLDER",
                        help=f"model name (gptlearn-embed, gptlearn-english, gptlearn-mini, gpt2, ...) or folder "
                             f"(default: {default})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to run (default: auto = CUDA, then MPS, then CPU)")
    if embedding:
        parser.add_argument("--pooling", choices=POOLING, default=None,
                            help="how token vectors become one vector (default: the folder's embedder.json, else mean)")
        parser.add_argument("--layer", type=int, default=None,
                            help="which layer's hidden states to pool (default: -1, after the final LayerNorm)")


def build_parser() -> argparse.ArgumentParser:
    """The ``gptlearn`` command's parser: one subcommand per task (and per plugin), each with its options."""
    parser = argparse.ArgumentParser(prog="gptlearn", description="A small, readable GPT-2: embed, compare, generate.")
    parser.add_argument("--version", action="version", version=f"gptlearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("embed", help="print sentence embeddings as JSON")
    p.add_argument("--sentence", action="append", help="a sentence to embed (repeat for several, up to "
                   f"{MAX_SENTENCE_ARGS:,})")
    p.add_argument("--file", metavar="FILE", help="a text file of sentences to embed, one a line (for many)")
    p.add_argument("--normalize", action="store_true", help="scale each embedding to length 1")
    _common(p, embedding=True)
    p.set_defaults(func=_embed)

    p = sub.add_parser("similarity", help="how similar two sentences are")
    p.add_argument("--sentence1", required=True)
    p.add_argument("--sentence2", required=True)
    p.add_argument("--all-metrics", action="store_true", help="cosine, euclidean, manhattan and dot product")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    _common(p, embedding=True)
    p.set_defaults(func=_similarity)

    p = sub.add_parser("generate", help="continue a prompt, printing tokens as they come")
    p.add_argument("--prompt", help="text to continue")
    p.add_argument("--interactive", action="store_true", help="read prompts from stdin until 'quit' or EOF")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--greedy", action="store_true", help="always pick the most likely token")
    p.add_argument("--fused", action="store_true",
                   help="decode with the fused C++ step (CPU, fp32; compiled on first use, then cached)")
    _common(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("info", help="print a model's configuration, size and device")
    _common(p)
    p.set_defaults(func=_info)

    for name in _PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # the module itself is absent; anything it fails to import is a real error
                continue
            raise
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    return parser


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename and not isinstance(e, GptlearnError):
        msg = f"{e.filename}: {e.strerror}"
    else:
        msg = str(e)
    return " ".join(msg.split()) or type(e).__name__


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"  # torch's, a RuntimeError


def _no_home(e: BaseException) -> bool:
    return type(e) is RuntimeError and str(e).startswith("Could not determine home directory")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gptlearn`` command; returns the exit status (0 ok, 2 a user error)."""
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    repeated = sum(str(a) == "--sentence" or str(a).startswith("--sentence=") for a in given)
    if repeated > MAX_SENTENCE_ARGS:
        print(f"gptlearn: error: {repeated:,} --sentence arguments are more than the {MAX_SENTENCE_ARGS:,} the command "
              "line takes; put the sentences in a file, one a line, and pass --file FILE", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(given)
    except SystemExit as e:  # --help, --version, or a usage error (argparse printed it, status 2)
        return e.code if isinstance(e.code, int) else 2
    if hasattr(sys.stdout, "reconfigure") and (sys.stdout.encoding or "").lower().replace("-", "") != "utf8":
        sys.stdout.reconfigure(errors="replace")  # a terminal that cannot show some text shows "?", not a crash

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"gptlearn: warning: {_one_line(Warning(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        try:
            _check_text_args(args)
            return int(args.func(args) or 0)
        except BrokenPipeError:  # e.g. `gptlearn embed ... | head` closed the pipe early
            return 0
        except (GptlearnError, OSError) as e:  # the user's mistake, or a path they gave: one line
            sys.stdout.flush()
            print(f"gptlearn: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except (MemoryError, RuntimeError) as e:
            if _no_home(e):  # Path.expanduser on "~nosuchuser/..." in a path the user gave
                print("gptlearn: error: a path starts with ~USER for a user this machine does not have (or ~ with no "
                      "home folder); give the full path", file=sys.stderr)
                return 2
            if not _out_of_memory(e):
                raise  # a bug: its traceback
            print(f"gptlearn: error: out of memory ({_one_line(e)[:200]}); use a smaller model, batch or --device",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
