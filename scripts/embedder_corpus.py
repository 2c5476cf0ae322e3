"""Build the unlabelled sentences that gptlearn-embed is distilled on (docs/gptlearn-embed.md).

Usage: python scripts/embedder_corpus.py OUT_DIR [--augment N]

Writes OUT_DIR/sentences.txt (one sentence a line, shuffled, deduplicated) and OUT_DIR/sources.json
(how many sentences came from each source). Sources, all already on the machine:

* WordNet 3.0 glosses and their example sentences (Debian ``wordnet-base``: /usr/share/wordnet);
* the ``fortunes`` quotes (Debian ``fortunes``: /usr/share/games/fortunes), split into sentences;
* STS-B *train* sentences (GPTLEARN_DATA_DIR/stsb/sts-train.csv), plus ``--augment`` variants of each:
  a crop, a copy with a word or two dropped, and a copy with WordNet synonyms swapped in;
* TinyShakespeare lines of 6 or more words (GPTLEARN_DATA_DIR/tinyshakespeare.txt).

Every STS-B dev sentence is removed, so the dev score stays a held-out measurement. The data is only
read here: the embedder's wheel ships weights, never these sentences.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

from gptlearn.data import data_folder

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
_WS = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def usable(s: str, lo: int = 3, hi: int = 60) -> bool:
    """A sentence of lo..hi words, mostly letters (no ASCII art, no code)."""
    n = len(s.split())
    letters = sum(c.isalpha() or c == " " for c in s)
    return lo <= n <= hi and letters >= 0.8 * len(s)


def wordnet_sentences() -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(glosses, example sentences, synonyms by word) from WordNet's data.{noun,verb,adj,adv}."""
    glosses, examples = [], []
    synonyms: dict[str, list[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # the licence header
            head, gloss = line.split("|", 1)
            fields = head.split()
            n_words = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i].split("(")[0].replace("_", " ") for i in range(n_words)]
            simple = [w for w in lemmas if " " not in w and w.isalpha() and w.islower()]
            for w in simple:
                synonyms.setdefault(w, []).extend(x for x in simple if x != w)
            parts = [p.strip() for p in gloss.split(";")]
            for p in parts:
                if p.startswith('"'):
                    ex = clean(p.strip('"'))
                    if usable(ex, 3):
                        examples.append(ex)
                elif p:
                    g = clean(p)
                    if usable(g, 3):
                        glosses.append(g)
    return glosses, examples, synonyms


def fortune_sentences() -> list[str]:
    """Quotes from the fortunes files (no offensive set, no ASCII art), split into sentences."""
    out = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.is_dir() or path.name in ("art", "ascii-art", "perl", "linuxcookie"):
            continue
        for quote in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            body = "\n".join(line for line in quote.splitlines() if not line.strip().startswith(("--", "\u2014")))
            text = clean(body)
            if usable(text, 3, 40):
                out.append(text)
            out.extend(s for s in _SENTENCE_END.split(text) if usable(s, 4, 40) and s != text)
    return out


def stsb_sentences(data_dir: Path, split: str) -> list[str]:
    rows = (data_dir / "stsb" / f"sts-{split}.csv").read_text(encoding="utf-8").splitlines()
    out = []
    for row in rows:
        f = row.split("\t")
        if len(f) >= 7:
            out.extend([clean(f[5]), clean(f[6])])
    return [s for s in out if s]


def shakespeare_lines(data_dir: Path) -> list[str]:
    lines = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()
    return [clean(s) for s in lines if len(s.split()) >= 6 and not s.rstrip().endswith(":")]


def augment(sentence: str, synonyms: dict[str, list[str]], rng: random.Random) -> list[str]:
    """Three variants of a sentence for the teacher to label: a crop, a word or two dropped, synonyms in."""
    words = sentence.split()
    out = []
    if len(words) >= 6:
        n = rng.randint(max(3, len(words) // 2), len(words) - 1)
        start = rng.randint(0, len(words) - n)
        out.append(" ".join(words[start:start + n]))
    if len(words) >= 4:
        drop = set(rng.sample(range(len(words)), k=min(2, len(words) // 4 or 1)))
        out.append(" ".join(w for i, w in enumerate(words) if i not in drop))
    swapped, changed = [], False
    for w in words:
        core = w.strip(".,;:!?\"'()").lower()
        if synonyms.get(core) and rng.random() < 0.5:
            swapped.append(w.lower().replace(core, rng.choice(synonyms[core])))
            changed = True
        else:
            swapped.append(w)
    if changed:
        out.append(" ".join(swapped))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--augment", type=int, default=2, help="rounds of augmentation of each STS-B train sentence")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data_dir = data_folder()
    if data_dir is None:
        raise SystemExit("embedder_corpus: error: no data folder; set GPTLEARN_DATA_DIR to the shared data folder")
    rng = random.Random(args.seed)

    glosses, examples, synonyms = wordnet_sentences()
    train = list(dict.fromkeys(stsb_sentences(data_dir, "train")))
    sources = {
        "wordnet-gloss": glosses,
        "wordnet-example": examples,
        "fortunes": fortune_sentences(),
        "stsb-train": train,
        "stsb-train-augmented": [v for _ in range(args.augment) for s in train for v in augment(s, synonyms, rng)],
        "tinyshakespeare": shakespeare_lines(data_dir),
    }
    dev = set(stsb_sentences(data_dir, "dev"))
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    for name, sentences in sources.items():
        for s in sentences:
            if s not in seen and s not in dev:
                seen.add(s)
                rows.append((name, s))
    rng.shuffle(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentences.txt").write_text("".join(s + "\n" for _, s in rows), encoding="utf-8")
    (args.out / "sources.tsv").write_text("".join(f"{n}\t{s}\n" for n, s in rows), encoding="utf-8")
    counts = Counter(n for n, _ in rows)
    (args.out / "sources.json").write_text(json.dumps(dict(counts), indent=2) + "\n")
    print(f"{len(rows)} sentences -> {args.out / 'sentences.txt'}: {dict(counts)}")


if __name__ == "__main__":
    main()
