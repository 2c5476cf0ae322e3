"""The bundled sentence embedder gptlearn-embed: it loads offline, is the CLI's default, orders the
seed pair right, separates chapter 9's topics and the topic benchmark's, and scores on STS-B dev
(docs/gptlearn-embed.md)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gptlearn import GPT, Embedder, cli
from gptlearn.pretrained import BUNDLED

FOLDER = BUNDLED["gptlearn-embed"]

CAT, FELINE, STOCKS = "The cat is sleeping", "A feline is resting", "The stock market fell sharply today"


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.from_pretrained()


def test_loads_offline_as_a_float32_gpt2(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = Embedder.from_pretrained()  # no name: the bundled default, from the package's files
    assert embedder.model.name_or_path == "gptlearn-embed"
    c = embedder.model.config
    assert (c.n_layer, c.n_embd, c.n_positions) == (4, 384, 128) and embedder.dimensions == 384
    assert all(p.dtype == torch.float32 for p in embedder.parameters())  # stored as float16, computed in float32
    assert embedder.pooling == json.loads((FOLDER / "embedder.json").read_text())["pooling"]
    model = GPT.from_pretrained("gptlearn-embed")  # the course's own model class loads it
    torch.testing.assert_close(model.wte.weight, embedder.model.wte.weight)
    size = sum(f.stat().st_size for f in FOLDER.iterdir())
    assert size <= 25e6, f"gptlearn-embed adds {size / 1e6:.1f} MB to the wheel; the budget is 25 MB"


def test_cli_default_orders_the_seed_pair(capsys):
    def cosine(a, b):
        code = cli.main(["similarity", "--sentence1", a, "--sentence2", b, "--json", "--device", "cpu"])
        assert code == 0
        return json.loads(capsys.readouterr().out)["cosine"]

    near, far = cosine(CAT, FELINE), cosine(CAT, STOCKS)
    assert near > far + 0.1, (near, far)  # the paraphrase clearly above the unrelated sentence (seed: backwards)
    code = cli.main(["embed", "--sentence", CAT, "--device", "cpu"])
    assert code == 0 and json.loads(capsys.readouterr().out)["dimensions"] == 384


def test_chapter_9_topics_separate(embedder):
    from gptlearn.analysis import TOPIC_SENTENCES, neighbour_accuracy

    texts = [s for sents in TOPIC_SENTENCES.values() for s in sents]
    topics = [t for t, sents in TOPIC_SENTENCES.items() for _ in sents]
    # measured 0.925, 37 of 40 (the weights before the third 2026-12-07 update: 0.825; before that 0.85 and
    # 0.80; raw gptlearn-mini: 0.2, chance: 0.18, the teacher all-MiniLM-L6-v2: 0.85), see the model card
    assert neighbour_accuracy(embedder.encode(texts), topics) >= 0.85


@pytest.mark.slow
def test_topic_benchmark_test_split(embedder):
    """Same-topic nearest neighbours and topic gap on the topic benchmark's test split, 300 sentences on 20
    topics written apart from the book and from the embedder's recipe. The floors sit a little under the
    measured level; the target, the teacher's level (0.503 on this split; the issue's 0.70 was the teacher
    on another held-out set), is not met yet (docs/gptlearn-embed.md)."""
    from gptlearn.analysis import neighbour_accuracy, neighbour_chance, topic_gap
    from gptlearn.data import load_topics

    sentences, topics = load_topics("test")
    E = embedder.encode(sentences)
    # measured 0.450 (135 of 300) and gap 0.127 (earlier 2026-12-07 weights: 0.367 and 0.103, 0.320 and 0.088;
    # those before: 0.237 and 0.052); chance 0.047; all-MiniLM-L6-v2 0.503 and 0.135
    # (scripts/measure_topics.py, docs/gptlearn-embed.md)
    assert neighbour_accuracy(E, topics) >= 0.43 > 9 * neighbour_chance(topics)
    assert topic_gap(E, topics) >= 0.12


@pytest.mark.slow
def test_stsb_dev_spearman_is_at_least_0_80(embedder, data_dir):
    from gptlearn.data import read_pairs
    from gptlearn.embed_train import evaluate_sts

    score = evaluate_sts(embedder, read_pairs(data_dir / "stsb" / "sts-dev.csv"))
    assert score >= 0.80, score  # measured 0.8250 (docs/gptlearn-embed.md); the teacher scores 0.867


def test_encode_agrees_with_a_batch_of_one(embedder):
    sentences = [CAT, FELINE, STOCKS, "Two men are playing chess in the park while it rains."]
    batch = embedder.encode(sentences)
    one_by_one = np.stack([embedder.encode(s) for s in sentences])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-4, rtol=1e-4)  # padding never leaks in
