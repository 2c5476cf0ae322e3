"""The page's head ablation and logit lens (live_model.js, forward(text, {ablate, lens})) against PyTorch,
run by V8 from Python (mini-racer): logits within 1e-3 under any ablation set, the lens within 1e-3, and
bad options give a message, never an exception."""
from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("py_mini_racer", reason="mini-racer (pip install mini-racer) runs the page's JavaScript")

from gptlearn import GPT  # noqa: E402
from gptlearn.patching import ablate_heads  # noqa: E402
from gptlearn.web.js import LiveJS  # noqa: E402

ATOL = 1e-3
TEXT = "ROMEO:\nGood night, good night! parting is such sweet sorrow, that I shall say good"


@pytest.fixture(scope="module")
def mini():
    return GPT.from_pretrained("gptlearn-mini").eval()


@pytest.fixture(scope="module")
def mini_js(mini):
    return LiveJS(mini)


def _ablation_sets(L, H):
    rng = random.Random(0)
    every = [(l, h) for l in range(L) for h in range(H)]
    return [[], [(0, 2)], [(1, 4), (1, 1), (1, 6)], rng.sample(every, 5), [(l, 0) for l in range(L)], every]


def test_logits_match_pytorch_under_ablation(mini, mini_js):
    ids = mini.tokenizer.encode_ordinary(TEXT)
    L, H = mini.config.n_layer, mini.config.n_head
    for heads in _ablation_sets(L, H):
        out = mini_js.forward(TEXT, {"ablate": [list(p) for p in heads]})
        assert out["message"] is None and out["ids"] == ids
        with torch.no_grad(), ablate_heads(mini, heads):
            want = mini(torch.tensor([ids]))[0, -1]
        torch.testing.assert_close(torch.tensor(out["logits"]), want, atol=ATOL, rtol=0)
    with torch.no_grad():
        intact = mini(torch.tensor([ids]))[0, -1]
    knocked = torch.tensor(mini_js.forward(TEXT, {"ablate": [[0, 2]]})["logits"])
    assert (knocked - intact).abs().max() > 0.1  # the ablation really changes the answer


@pytest.mark.parametrize("heads", [[], [(0, 2)]])
def test_lens_matches_ln_f_then_unembedding(mini, mini_js, heads):
    ids = mini.tokenizer.encode_ordinary(TEXT)
    out = mini_js.forward(TEXT, {"lens": True, "ablate": [list(p) for p in heads]})
    L = mini.config.n_layer
    assert len(out["lens"]) == L + 1 and all(len(row) == mini.config.vocab_size for row in out["lens"])
    with torch.no_grad(), ablate_heads(mini, heads):
        logits, cache = mini.run_with_cache(torch.tensor([ids]))
    for layer in range(L):
        want = mini.lm_head(mini.ln_f(cache["resid_pre", layer]))[0, -1]
        torch.testing.assert_close(torch.tensor(out["lens"][layer]), want, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.tensor(out["lens"][L]), logits[0, -1], atol=ATOL, rtol=0)
    assert out["lens"][L] == out["logits"]
    assert mini_js.forward(TEXT)["lens"] is None  # only when asked


@pytest.mark.parametrize("options, words", [
    ({"ablate": [[4, 0]]}, "head [4, 0] does not exist: this model has layers 0..3 and heads 0..7"),
    ({"ablate": [[0, 8]]}, "head [0, 8] does not exist"),
    ({"ablate": [[-1, 0]]}, "head [-1, 0] does not exist"),
    ({"ablate": [[0.5, 1]]}, "pairs of whole numbers"),
    ({"ablate": [[0]]}, "pairs of whole numbers"),
    ({"ablate": "0.2"}, "list of [layer, head] pairs"),
])
def test_a_head_that_does_not_exist_is_a_message(mini_js, options, words):
    out = mini_js.forward(TEXT, options)
    assert words in out["message"]
    assert out["logits"] is None and out["attention"] is None and out["lens"] is None


def test_lens_on_empty_text_and_odd_options_never_throw(mini_js):
    out = mini_js.forward("", {"lens": True})
    assert out["lens"] is None and out["logits"] is None and "at least one token" in out["message"]
    for odd in ("lens", 5, [1, 2]):
        assert mini_js.eval(f"gptlearn.live.forward('hello', {odd!r}).message") is None
    assert mini_js.eval("gptlearn.live.forward('hello', null).message") is None
