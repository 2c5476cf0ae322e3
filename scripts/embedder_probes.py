"""Short probes of recipes for gptlearn-embed's topics (docs/gptlearn-embed.md, "Recipes for the topics"):
continue training the bundled embedder for a few hundred steps one way, then score it on the topic
benchmark's **dev** split, on STS-B dev, and by how closely it copies the teacher on the dev sentences.

Usage: python scripts/embedder_probes.py SENTENCES STEPS --lr LR [--similarity-weight W]
           [--neighbours W [--temperature T]] [--out FOLDER]

SENTENCES is the distillation corpus (scripts/embedder_corpus.py). Its teacher vectors come from the cache
(gptlearn.teacher.teacher_embeddings: labelling 280,593 sentences takes ~25 minutes the first time).

* plain: batches of 64 random sentences; loss = W x similarity_distill_loss + embedding_distill_loss, the
  objective of ``gptlearn train-embeddings --objective distill --similarity-weight W``.
* ``--neighbours W``: batches of 32 random sentences and one of each one's 4 nearest teacher neighbours
  in the corpus (cosine < 0.95, so not its near-copies), plus W x a KL term: each sentence's softmax over
  the batch's other sentences' cosines / T copies the teacher's (in-batch "who is whose neighbour").
  Measured worse than plain distillation (the card), so the package does not carry it.

AdamW (0.9, 0.98), weight decay 0.01, 10% warm-up then linear decay, gradients clipped at 1, seed 0;
two threads. Not part of the shipped recipe; scripts/train_embedder.sh is.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from gptlearn import Embedder
from gptlearn.analysis import neighbour_accuracy, topic_gap
from gptlearn.data import load_topics, read_sentences
from gptlearn.embed_train import embedding_distill_loss, evaluate_sts, similarity_distill_loss
from gptlearn.teacher import load_teacher, teacher_embeddings


def neighbour_kl(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(teacher || student) of each row's softmax over the other rows' cosines / tau, mean over rows."""
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    eye = torch.eye(len(s), dtype=torch.bool)
    log_s = (s @ s.T / tau).masked_fill(eye, -1e9).log_softmax(-1)  # (N, N)
    p_t = (t @ t.T / tau).masked_fill(eye, -1e9).softmax(-1)  # (N, N)
    return F.kl_div(log_s, p_t, reduction="batchmean")


def nearest(vectors: torch.Tensor, k: int = 4, chunk: int = 4096) -> torch.Tensor:
    """(N, k) each row's k nearest other rows by cosine, skipping near-copies (cosine > 0.95)."""
    out = torch.empty(len(vectors), k, dtype=torch.int64)
    for a in range(0, len(vectors), chunk):
        cos = vectors[a:a + chunk] @ vectors.T  # (chunk, N)
        cos[cos > 0.95] = -2.0
        out[a:a + chunk] = cos.topk(k, dim=1).indices
    return out


def measure(emb: Embedder, teacher, texts: list[str], topics: list[str]) -> dict:
    emb.model.eval()
    X = emb.encode(texts)  # (300, 384)
    T = teacher.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    emb.model.train()
    return {"topic dev neighbour": round(neighbour_accuracy(X, topics), 4),
            "topic dev gap": round(topic_gap(X, topics), 4),
            "cos to teacher (dev sentences)": round(float(F.cosine_similarity(torch.from_numpy(X),
                                                                              torch.from_numpy(T)).mean()), 3),
            "STS-B dev": round(evaluate_sts(emb, "stsb-dev"), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sentences")
    p.add_argument("steps", type=int)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--similarity-weight", type=float, default=10.0)
    p.add_argument("--neighbours", type=float, default=0.0)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(2)
    sentences = read_sentences(args.sentences)
    targets = teacher_embeddings(sentences)  # (S, 384), from the cache
    pairs = nearest(targets) if args.neighbours else None
    emb = Embedder.from_pretrained("gptlearn-embed", dtype=torch.float32)
    tokens = emb.tokenize(sentences)
    teacher = load_teacher("cpu")
    dev_texts, dev_topics = load_topics("dev")
    print("start", measure(emb, teacher, dev_texts, dev_topics), flush=True)
    opt = torch.optim.AdamW(emb.model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng, t0 = np.random.default_rng(0), time.time()
    for step in range(args.steps):
        done = step / args.steps
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / (0.1 * args.steps)) * (1 - done if done > 0.1 else 1)
        if pairs is not None:
            a = rng.integers(0, len(sentences), 32)
            idx = np.concatenate([a, pairs[a, rng.integers(0, pairs.shape[1], 32)].numpy()])
        else:
            idx = rng.integers(0, len(sentences), 64)
        s, t = emb.embed_tokens([tokens[i] for i in idx]).float(), targets[idx]  # (64, 384) each
        loss = args.similarity_weight * similarity_distill_loss(s, t) + embedding_distill_loss(s, t)
        if args.neighbours:
            loss = loss + args.neighbours * neighbour_kl(s, t, args.temperature)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(emb.model.parameters(), 1.0)
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    print("end", measure(emb, teacher, dev_texts, dev_topics), flush=True)
    if args.out:
        emb.save_pretrained(args.out)


if __name__ == "__main__":
    main()
