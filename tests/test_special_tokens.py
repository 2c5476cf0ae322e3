"""Where ``<|endoftext|>`` written in text goes, caller by caller, now that ``encode`` refuses it by default
(tiktoken's rule). Each caller inside the package chose on purpose:

* typed prompts (``gptlearn generate``): refused, one line, exit 2;
* documents (``TokenDataset``, ``bits_per_byte``, ``unigram_bits_per_byte``): plain text, ``encode_ordinary``;
* sentences to embed (``Embedder``): plain text, ``encode_ordinary_batch``;
* ``model.to_tokens``: the token, as TransformerLens and Hugging Face read it
  (tests/test_transformerlens_conventions.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gptlearn import GPT, Embedder, GPTConfig, TokenDataset, cli
from gptlearn.analysis import bits_per_byte, unigram_bits_per_byte
from gptlearn.tokenizers import CharTokenizer, Tokenizer, encode_document

EOT = "<|endoftext|>"
TEXT = f"First document.{EOT}Second document, a little longer than the first one."


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=64)).eval()


def test_generate_refuses_a_prompt_with_special_token_text(capsys, tmp_path, model):
    folder = model.save_pretrained(tmp_path / "m")
    code = cli.main(["generate", "--prompt", f"Hi {EOT} there", "--model", str(folder), "--max-new-tokens", "2"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("gptlearn: error: the prompt contains '<|endoftext|>'")


def test_documents_read_special_token_text_as_text(tmp_path, model):
    tok = Tokenizer.gpt2()
    plain = tok.encode_ordinary(TEXT)
    assert encode_document(tok, TEXT) == plain and 50256 not in plain
    assert encode_document(CharTokenizer.from_text(TEXT), TEXT) == CharTokenizer.from_text(TEXT).encode(TEXT)
    ds = TokenDataset(TEXT, tok, val_fraction=0.0, cache=tmp_path)
    assert ds.splits["train"].tolist() == plain
    with torch.no_grad():
        assert np.isfinite(bits_per_byte(model, TEXT))
    assert np.isfinite(unigram_bits_per_byte(TEXT, TEXT, tok))


def test_embedder_reads_special_token_text_as_text(model):
    embedder = Embedder(model)
    assert embedder.tokenize([TEXT]) == [Tokenizer.gpt2().encode_ordinary(TEXT)]
    assert embedder.encode(TEXT).shape == (16,)
