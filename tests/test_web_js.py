"""The page's JavaScript model (gptlearn/web/static/live_model.js) against PyTorch, run by V8 from Python
(mini-racer): the same ids, logits within 1e-3, attention within 1e-4, every piece, every pooling.

The browser itself (Chromium, over file://) is tested in tests/test_web_browser.py on the built book.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("py_mini_racer", reason="mini-racer (pip install mini-racer) runs the page's JavaScript")

from gptlearn import GPT, GPTConfig, Embedder  # noqa: E402
from gptlearn.tokenizers import BPETokenizer, CharTokenizer, Tokenizer  # noqa: E402
from gptlearn.web.js import LiveJS, js_source  # noqa: E402

# over twenty texts: scripts, emoji (with modifiers and joiners), whitespace runs, contractions, digits,
# the special token's text (plain text here), one character, nothing at all
TEXTS = [
    "The big red car drove quickly", "Hello, world!", "日本語のテキストです。", "こんにちは世界",
    "Ελληνικά και русский",
    "emoji 🙂👍🏽 and 👨‍👩‍👧 family", "    four spaces before", "trailing spaces    ", "tabs\tand\nnewlines\n\n\n",
    "\u00a0non-breaking\u3000ideographic\u2028line", "don't I'll we've they're she'd it's", "'S 'T 'RE", "x", "🙂", " ",
    "", "numbers 1234567890 3.14159 and ½ ⅔", "<|endoftext|> stays plain text", "CamelCaseWordsAndsnake_case",
    "a\u0085b\ufeffc", "mixed: αβγ + 中文 + عربى + हिन्दी", "ROMEO:\nBut soft, what light through yonder window breaks?",
]


@pytest.fixture(scope="module")
def mini():
    return GPT.from_pretrained("gptlearn-mini").eval()


@pytest.fixture(scope="module")
def mini_js(mini):
    return LiveJS(mini)


def reference(model, ids):
    with torch.no_grad():
        logits, cache = model.run_with_cache(torch.tensor([ids]))
    return logits[0, -1], cache.stack("pattern")[:, 0]  # (V,), (L, H, T, T)


@pytest.mark.parametrize("text", TEXTS)
def test_forward_matches_pytorch(mini, mini_js, text):
    out = mini_js.forward(text)
    ids = mini.tokenizer.encode_ordinary(text)  # the page reads typed text: special-token text is plain text
    assert out["ids"] == ids
    assert out["tokens"] == mini.tokenizer.str_tokens(ids)
    if not ids:
        assert out["logits"] is None and out["attention"] is None and "at least one token" in out["message"]
        return
    logits, patterns = reference(mini, ids)
    assert out["message"] is None
    torch.testing.assert_close(torch.tensor(out["logits"], dtype=torch.float32), logits, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.tensor(out["attention"], dtype=torch.float32), patterns, atol=1e-4, rtol=0)


def test_more_tokens_than_the_context_is_a_message_not_an_error(mini, mini_js):
    text = "to be or not " * 100
    n = len(mini.tokenizer.encode(text))
    assert n > mini.config.n_positions
    out = mini_js.forward(text)
    assert out["logits"] is None and out["attention"] is None and len(out["ids"]) == n
    assert f"{n} tokens long" in out["message"] and f"at most {mini.config.n_positions}" in out["message"]
    exactly = mini.tokenizer.decode(mini.tokenizer.encode(text)[: mini.config.n_positions])
    assert mini_js.forward(exactly)["message"] is None  # the whole context is fine


def test_every_code_point_of_the_first_plane_tokenizes_like_python(mini, mini_js):
    """The regex (\\p{L}, \\p{N}, White_Space) and the byte-level BPE agree on every character."""
    chars = [chr(c) for c in range(1, 0x10000) if not 0xD800 <= c < 0xE000]
    for start in range(0, len(chars), 4096):
        chunk = "".join(f"{c}a {c}{c}1 " for c in chars[start:start + 4096])  # letters, digits, spaces around
        assert mini_js.forward(chunk)["ids"] == mini.tokenizer.encode(chunk), f"chunk at U+{ord(chars[start]):04X}"


def test_lone_surrogates_become_the_replacement_character(mini, mini_js):
    out = mini_js.eval('gptlearn.live.tokenize("a\\ud800b").ids')
    assert out == mini.tokenizer.encode("a\ud800b") == mini.tokenizer.encode("a\ufffdb")


@pytest.mark.parametrize("pooling", ["mean", "max", "last", "first", "weighted_mean"])
def test_sentence_embedding_matches_the_embedder(mini, mini_js, pooling):
    embedder = Embedder(mini, pooling=pooling)
    for text in ["The cat is sleeping", "A feline is resting on the warm windowsill", "x"]:
        js = np.asarray(mini_js.eval(f"gptlearn.live.sentenceEmbedding({text!r}, {pooling!r})"))
        np.testing.assert_allclose(js, embedder.encode([text])[0], atol=1e-4, rtol=1e-4)


def test_cosine_matches_gptlearn_similarity(mini_js):
    from gptlearn import similarity

    a, b = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
    assert mini_js.call("cosine", a, b) == pytest.approx(float(similarity.cosine(torch.tensor(a), torch.tensor(b))),
                                                         abs=1e-6)


def test_the_pieces_match_the_models_activations(mini, mini_js):
    ids = mini.tokenizer.encode("The big red car drove quickly down the hill")
    C, H = mini.config.n_embd, mini.config.n_head
    _, cache = mini.run_with_cache(torch.tensor([ids]))
    out = mini_js.call("runWithCache", ids, LiveJS.weights, {"attnResult": True})
    got = out["cache"]

    def close(name, want, atol=1e-4):
        torch.testing.assert_close(torch.from_numpy(got[name]), want.reshape(-1), atol=atol, rtol=1e-4)

    for layer in range(mini.config.n_layer):
        b = f"blocks.{layer}."
        close(b + "hook_resid_pre", cache["resid_pre", layer][0])
        for name in "qkv":  # cache (T, H, hs) vs the page's (H, T, hs)
            close(b + f"attn.hook_{name}", cache[name, layer][0].transpose(0, 1))
        close(b + "attn.hook_attn_scores", cache["attn_scores", layer][0])
        close(b + "attn.hook_pattern", cache["pattern", layer][0], atol=1e-5)
        close(b + "attn.hook_z", cache["z", layer][0])
        W_O = mini.blocks[layer].attn.c_proj.weight.T  # (C, C)
        hs = C // H
        per_head = torch.stack([cache["z", layer][0, :, h] @ W_O[h * hs:(h + 1) * hs] for h in range(H)], dim=1)
        close(b + "attn.hook_result", per_head)  # (T, H, C): z_h W_O^h
        close(b + "hook_attn_out", cache["attn_out", layer][0])
        close(b + "hook_resid_mid", cache["resid_mid", layer][0])
        close(b + "hook_mlp_out", cache["mlp_out", layer][0])
        close(b + "hook_resid_post", cache["resid_post", layer][0])
    close("hook_ln_final", cache["ln_final"][0])


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("T", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("n_in, n_out", [(8, 6), (8, 7), (5, 6), (128, 512)])
def test_linear_is_nn_linear_with_and_without_simd(mini_js, fast, T, n_in, n_out):
    """The WebAssembly SIMD kernel (4 rows x 2 outputs, rows padded to a multiple of 4) and the plain loop
    (every shape the kernel does not take: an odd number of outputs, inputs not a multiple of 4)."""
    assert mini_js.simd, "V8 here runs WebAssembly SIMD, as every current browser does"
    mini_js.set_fast(fast)
    try:
        g = torch.Generator().manual_seed(T * 1000 + n_in * 10 + n_out)
        x, w, b = torch.randn(T, n_in, generator=g), torch.randn(n_out, n_in, generator=g), \
            torch.randn(n_out, generator=g)
        torch.testing.assert_close(torch.from_numpy(mini_js.call("linear", x, T, w, b)),
                                   torch.nn.functional.linear(x, w, b).reshape(-1), atol=2e-5, rtol=1e-5)
        w2 = torch.randn(n_out, n_in, generator=g)  # a second weight of the same shape is placed separately
        torch.testing.assert_close(torch.from_numpy(mini_js.call("linear", x, T, w2, b)),
                                   torch.nn.functional.linear(x, w2, b).reshape(-1), atol=2e-5, rtol=1e-5)
    finally:
        mini_js.set_fast(True)


def test_the_inlined_webassembly_is_linear_wat():
    """live_fast.js carries the bytes of linear.wat, assembled: no binary the reader cannot read."""
    pytest.importorskip("wasmtime", reason="wasmtime (requirements-dev.txt) assembles linear.wat")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "build_live_wasm.py"
    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_a_readers_own_bpe_model_and_exact_gelu(tmp_path):
    corpus = ("It was the best of times, it was the worst of times; 1234 5678. Über naïve café — 日本語 🙂\n") * 40
    bpe = BPETokenizer.train(corpus, vocab_size=300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, n_positions=48, n_embd=24, n_layer=2, n_head=3,
                          activation_function="gelu")).eval()
    model.tokenizer = Tokenizer.from_bpe(bpe)
    js = LiveJS(model)
    for text in ["It was the best of times", "café 日本語 🙂", "  1234\n"]:
        out = js.forward(text)
        ids = model.tokenizer.encode(text)
        assert out["ids"] == ids
        logits, patterns = reference(model, ids)
        torch.testing.assert_close(torch.tensor(out["logits"], dtype=torch.float32), logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.tensor(out["attention"], dtype=torch.float32), patterns, atol=1e-5, rtol=0)


def test_a_char_tokenizer_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=6, n_positions=16, n_embd=8, n_layer=1, n_head=2)).eval()
    model.tokenizer = CharTokenizer.from_text("abcde ")
    js = LiveJS(model)
    out = js.forward("a bad cab")
    assert out["ids"] == model.tokenizer.encode("a bad cab") and out["tokens"] == list("a bad cab")
    torch.testing.assert_close(torch.tensor(out["logits"], dtype=torch.float32), reference(model, out["ids"])[0],
                               atol=1e-4, rtol=0)
    bad = js.forward("abz")
    assert bad["logits"] is None and '"z" is not in this model' in bad["message"]


def test_js_source_finds_each_piece():
    assert js_source("layerNorm").startswith("function layerNorm(x, T, weight, bias, eps) {")
    assert js_source("layerNorm").endswith("}")
    with pytest.raises(KeyError, match="no function 'nope'"):
        js_source("nope")


def test_a_model_with_gpt2s_tokenizer():
    """A reader's small model that kept GPT-2's 50,257-token BPE: the page tokenizes as tiktoken does."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, n_positions=64, n_embd=8, n_layer=1, n_head=2)).eval()
    js = LiveJS(model)  # model.tokenizer: GPT-2's
    for text in TEXTS[:-1]:
        out = js.forward(text)
        ids = model.tokenizer.encode_ordinary(text)  # typed text: special-token text is plain text
        assert out["ids"] == ids, text
        if 0 < len(ids) <= 64:
            torch.testing.assert_close(torch.tensor(out["logits"], dtype=torch.float32), reference(model, ids)[0],
                                       atol=1e-4, rtol=0)


def test_a_half_precision_model_travels_as_float16_and_computes_the_same(tmp_path):
    """Weights that are exactly float16 (the bundled models are stored so) go to the page as float16, half
    the bytes, and the page decodes them to the very same float32 numbers: parity is unchanged."""
    from gptlearn.web.exporter import payload, read_export, export

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, n_positions=48, n_embd=24, n_layer=2, n_head=3)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.tokenizer = Tokenizer.from_bpe(BPETokenizer.train("It was the best of times, it was the worst of times; the "
                                                            "cat sat on the mat. Über naïve café 1234 5678\n" * 40,
                                                            300))
    data = payload(model)
    assert data["weights_dtype"] == "float16"
    state = read_export(export(model, tmp_path / "site"))["state_dict"]
    for name, value in model.state_dict().items():
        assert torch.equal(state[name], value), name
    js = LiveJS(model)
    for name in ("wte.weight", "blocks.1.attn.c_attn.weight", "ln_f.bias"):
        assert np.array_equal(js.weight(name), model.state_dict()[name].numpy().ravel()), name
    out = js.forward("the cat ran")
    logits, patterns = reference(model, out["ids"])
    torch.testing.assert_close(torch.tensor(out["logits"], dtype=torch.float32), logits, atol=1e-4, rtol=0)
    with torch.no_grad():  # one weight off the float16 grid: float32, as before
        model.ln_f.bias[0] += 1e-6
    assert payload(model)["weights_dtype"] == "float32"
