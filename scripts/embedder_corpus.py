"""Build the unlabelled sentences that gptlearn-embed is distilled on (docs/gptlearn-embed.md).

Usage: python scripts/embedder_corpus.py OUT_DIR [--augment N]
       python scripts/embedder_corpus.py OUT_DIR --short   (the short items of the sixth pass, issue 30)

Writes OUT_DIR/sentences.txt (one sentence a line, shuffled, deduplicated) and OUT_DIR/sources.json
(how many sentences came from each source); with ``--short``, OUT_DIR/short.txt and short-sources.json
instead: words and phrases of one to six words (below), none of them already in sentences.txt, and
OUT_DIR/mix.txt, the sentences and the short items shuffled together (the sixth distillation pass's input).
Sources, all already on the machine:

* WordNet 3.0 glosses and their example sentences (Debian ``wordnet-base``: /usr/share/wordnet);
* the ``fortunes`` quotes (Debian ``fortunes``: /usr/share/games/fortunes), split into sentences;
* STS-B *train* sentences (GPTLEARN_DATA_DIR/stsb/sts-train.csv), plus ``--augment`` variants of each:
  a crop, a copy with a word or two dropped, and a copy with WordNet synonyms swapped in;
* TinyShakespeare lines of 6 or more words (GPTLEARN_DATA_DIR/tinyshakespeare.txt).

The short items: WordNet lemmas (a word or a two-word phrase) that occur at least three times in the
corpus's sentences, as they are or capitalised with a full stop ("duck", "Frying pan."), and a crop of two
to six words from a WordNet example, a fortune or an STS-B train sentence. The sentences above are at
least three words long (half of them eight or fewer) and none is a lone word or a two-word phrase; the
short items give the student the teacher's vectors of words and phrases too.

None of them is a sentence of the topic benchmark (``load_topics``).

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

from gptlearn.data import data_folder, load_topics

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


def short_items(corpus: list[str], examples: list[str], others: list[str], rng: random.Random,
                min_count: int = 3) -> dict[str, list[str]]:
    """The ``--short`` sources (see the module docstring): common WordNet lemmas, and short crops."""
    # two-word lemmas are counted among the word pairs findall takes without overlap (words 1-2, 3-4, ...),
    # so about half their occurrences: the shipped short items were made so (their threshold is stricter)
    counts = Counter(w for s in corpus for w in re.findall(r"[a-z]+(?: [a-z]+)?", s.lower()))
    words = Counter(w for s in corpus for w in re.findall(r"[a-z]+", s.lower()))
    lemmas = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"index.{pos}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" "):
                continue  # the licence header
            lemma = line.split(" ", 1)[0].replace("_", " ")
            parts = lemma.split(" ")
            if len(parts) <= 2 and all(p.isalpha() and p.islower() for p in parts):
                n = words[lemma] if len(parts) == 1 else counts[lemma]
                if n >= min_count:
                    lemmas.add(lemma)
    lemma_items = [w if rng.random() < 0.5 else w.capitalize() + "." for w in sorted(lemmas)]
    crops = []
    for s in examples + others:
        words_ = s.split()
        if len(words_) >= 4:
            n = rng.randint(2, min(6, len(words_) - 1))
            start = rng.randint(0, len(words_) - n)
            crops.append(" ".join(words_[start:start + n]).strip(",;:"))
    return {"wordnet-lemma": lemma_items, "short-crop": crops}


def write(out: Path, stem: str, sources: dict[str, list[str]], exclude: set[str], rng: random.Random) -> list[str]:
    """Deduplicate (and drop ``exclude``), shuffle, write OUT/{stem}.txt and the per-source counts; return
    the lines written."""
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    for name, sentences in sources.items():
        for s in sentences:
            if s and s not in seen and s not in exclude:
                seen.add(s)
                rows.append((name, s))
    rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.txt").write_text("".join(s + "\n" for _, s in rows), encoding="utf-8")
    counts = Counter(n for n, _ in rows)
    meta = "sources" if stem == "sentences" else f"{stem}-sources"
    if stem == "sentences":
        (out / "sources.tsv").write_text("".join(f"{n}\t{s}\n" for n, s in rows), encoding="utf-8")
    (out / f"{meta}.json").write_text(json.dumps(dict(counts), indent=2) + "\n")
    print(f"{len(rows)} items -> {out / (stem + '.txt')}: {dict(counts)}")
    return [s for _, s in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--augment", type=int, default=2, help="rounds of augmentation of each STS-B train sentence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--short", action="store_true", help="write OUT_DIR/short.txt (needs OUT_DIR/sentences.txt)")
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
    if args.short:
        corpus_file = args.out / "sentences.txt"
        if not corpus_file.is_file():
            raise SystemExit(f"embedder_corpus: error: {corpus_file} is missing; build the corpus first")
        corpus = corpus_file.read_text(encoding="utf-8").splitlines()
        short = short_items(corpus, examples, sources["fortunes"] + train, random.Random(args.seed + 1))
        benchmark = set(load_topics("dev")[0] + load_topics("test")[0])  # never trained on, even by chance
        mix = corpus + write(args.out, "short", short, dev | set(corpus) | benchmark, random.Random(args.seed + 1))
        random.Random(6).shuffle(mix)  # the sixth distillation pass's order
        (args.out / "mix.txt").write_text("".join(s + "\n" for s in mix), encoding="utf-8")
        print(f"{len(mix)} sentences and short items, shuffled -> {args.out / 'mix.txt'}")
        return
    write(args.out, "sentences", sources, dev, rng)


if __name__ == "__main__":
    main()
