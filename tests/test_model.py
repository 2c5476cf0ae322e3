"""GPT: the forward pass against transformers' GPT2LMHeadModel (in memory), hidden states, loss.

Each parity test runs on the default model and, where marked ``fast``, also on model.py's plain layers
(``GPT(config, fast=False)``): both must give transformers' numbers. Tolerances: fp32 logits within 1e-4
of transformers, hidden states within 1e-5 (sums over at most a few hundred terms of O(1) numbers, so
fp32 rounding stays around 1e-6).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlearn import GPT, GPTConfig
from gptlearn.kv_cache import KVCache
from gptlearn.model import sinusoidal_positions

pytest.importorskip("transformers")

LOGITS_ATOL = 1e-4
HIDDEN_ATOL = 1e-5

# (n_layer, n_head, n_embd, n_positions, vocab_size)
SHAPES = [(1, 1, 16, 32, 1000), (2, 4, 64, 64, 50257), (3, 6, 96, 128, 1000)]
FAST = pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])


@FAST
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L{}H{}C{}P{}V{}".format(*s))
def test_logits_and_hidden_states_match_transformers(shape, fast, random_hf, to_gptlearn):
    hf = random_hf(*shape)
    model = to_gptlearn(hf, fast=fast)
    n_layer, _, n_embd, n_positions, vocab = shape
    torch.manual_seed(1)
    for B, T in [(2, 7), (1, n_positions)]:  # T = n_positions: the whole context
        idx = torch.randint(0, vocab, (B, T))
        last_block = {}
        handle = hf.transformer.h[-1].register_forward_hook(
            lambda m, a, out: last_block.setdefault("x", out[0] if isinstance(out, tuple) else out))
        with torch.no_grad():
            ref = hf(idx, output_hidden_states=True)
            logits = model(idx)
            handle.remove()
            assert logits.shape == (B, T, vocab)
            torch.testing.assert_close(logits, ref.logits, rtol=0, atol=LOGITS_ATOL)
            # layer=-1 is after ln_f, which is also HF's last entry of hidden_states
            torch.testing.assert_close(model.hidden_states(idx), ref.hidden_states[-1], rtol=0, atol=HIDDEN_ATOL)
            torch.testing.assert_close(model.hidden_states(idx, layer=-1), hf.transformer(idx).last_hidden_state,
                                       rtol=0, atol=HIDDEN_ATOL)
            # layer=l is the residual stream after block l: HF's hidden_states[l + 1], except for the last
            # block, whose raw output HF only reports after ln_f (so read it with a forward hook)
            for layer in range(n_layer - 1):
                torch.testing.assert_close(model.hidden_states(idx, layer=layer), ref.hidden_states[layer + 1],
                                           rtol=0, atol=HIDDEN_ATOL)
            torch.testing.assert_close(model.hidden_states(idx, layer=n_layer - 1), last_block["x"],
                                       rtol=0, atol=HIDDEN_ATOL)


@pytest.mark.parametrize("extra", [{"activation_function": "gelu"}, {"n_inner": 40},
                                   {"layer_norm_epsilon": 1e-3}, {"activation_function": "gelu_pytorch_tanh"}])
def test_config_variants_match_transformers(extra, random_hf, to_gptlearn):
    hf = random_hf(2, 2, 16, 16, 300, seed=2, **extra)
    model = to_gptlearn(hf)
    idx = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, rtol=0, atol=LOGITS_ATOL)


@FAST
def test_loss_matches_transformers(fast, random_hf, to_gptlearn):
    hf = random_hf(2, 4, 64, 64, 1000, seed=3)
    model = to_gptlearn(hf, fast=fast)
    idx = torch.randint(0, 1000, (3, 20))
    with torch.no_grad():
        ref = hf(idx, labels=idx).loss  # transformers shifts the labels itself
        ours = model.loss(idx[:, :-1], idx[:, 1:])
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    # ignore_index: masked targets do not count
    targets = idx[:, 1:].clone()
    targets[:, :5] = -100
    with torch.no_grad():
        logits = model(idx[:, :-1])
        expected = F.cross_entropy(logits[:, 5:].reshape(-1, 1000), idx[:, 6:].reshape(-1))
        # float32 sums in another order (the blocked loss): a few ulps, 1e-6 relative (~7e-6 here)
        assert model.loss(idx[:, :-1], targets).item() == pytest.approx(expected.item(), rel=1e-6)


@FAST
def test_training_gradients_match_transformers(fast, random_hf, to_gptlearn):
    """model(idx, targets=...) (with the wing: the blocked loss, through tied weights) gives transformers'
    gradients."""
    hf = random_hf(2, 4, 64, 64, 50257, seed=6, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).train()
    model = to_gptlearn(hf, fast=fast).train()
    idx = torch.randint(0, 50257, (2, 33))
    hf_loss = hf(idx, labels=idx).loss
    hf_loss.backward()
    loss = model(idx[:, :-1], targets=idx[:, 1:])
    loss.backward()
    assert loss.item() == pytest.approx(hf_loss.item(), abs=1e-5)
    torch.testing.assert_close(model.wte.weight.grad, hf.transformer.wte.weight.grad, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(model.blocks[1].mlp.c_fc.weight.grad, hf.transformer.h[1].mlp.c_fc.weight.grad.T,
                               rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(model.ln_f.weight.grad, hf.transformer.ln_f.weight.grad, rtol=1e-3, atol=1e-7)


def test_padded_rows_skip_padding_and_match_transformers(random_hf, to_gptlearn):
    """hidden_states(lengths=...) runs the position-wise layers on real tokens only: the real tokens get
    transformers' values (right padding, attention mask), the padding comes back as zeros, and
    gradients equal those of the plain padded pass."""
    hf = random_hf(2, 4, 64, 64, 1000, seed=7, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = to_gptlearn(hf)
    lengths = torch.tensor([5, 9, 1, 7])
    T = 9
    real = torch.arange(T) < lengths[:, None]  # (B, T)
    idx = torch.randint(0, 1000, (4, T)).masked_fill(~real, 0)
    with torch.no_grad():
        ref = hf(idx, attention_mask=real.long(), output_hidden_states=True).hidden_states
        for layer, expected in [(-1, ref[-1]), (0, ref[1])]:
            packed = model.hidden_states(idx, layer=layer, lengths=lengths)
            assert packed.shape == (4, T, 64)
            torch.testing.assert_close(packed[real], expected[real], rtol=0, atol=HIDDEN_ATOL)
            assert torch.equal(packed[~real], torch.zeros_like(packed[~real]))
            torch.testing.assert_close(packed[real], model.hidden_states(idx, layer=layer)[real], rtol=0, atol=1e-6)
    weights = torch.randn(4, T, 64)
    grads = []
    for kwargs in ({"lengths": lengths}, {}):
        model.zero_grad()
        (model.hidden_states(idx, **kwargs)[real] * weights[real]).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for packed, plain in zip(*grads):
        torch.testing.assert_close(packed, plain, rtol=1e-4, atol=1e-6)


def test_padded_rows_bad_lengths(tiny_model):
    idx = torch.zeros(2, 4, dtype=torch.long)
    for bad in ([0, 4], [2, 5], [[1, 2]]):
        with pytest.raises(ValueError, match="lengths must be"):
            tiny_model.hidden_states(idx, lengths=torch.tensor(bad))
    with pytest.raises(ValueError, match="3 entries for a batch of 2 rows"):
        tiny_model.hidden_states(idx, lengths=torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match="cannot be combined"):
        tiny_model.hidden_states(idx, lengths=torch.tensor([4, 4]), kv_cache=KVCache.for_model(tiny_model, 2))


def test_num_parameters_matches_transformers(random_hf):
    for shape in SHAPES:
        hf = random_hf(*shape)
        with torch.device("meta"):
            model = GPT(GPTConfig.from_hf_dict(hf.config.to_dict()))
        assert model.num_parameters() == hf.num_parameters()


def test_forward_accepts_1d_and_refuses_too_long(tiny_model, tiny_config):
    idx = torch.randint(0, tiny_config.vocab_size, (9,))
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(idx), tiny_model(idx[None]), rtol=0, atol=0)
        too_long = torch.zeros(1, tiny_config.n_positions + 1, dtype=torch.long)
        with pytest.raises(ValueError, match=r"longer than the context.*crop"):
            tiny_model(too_long)
        with pytest.raises(ValueError, match="layer must be an integer"):
            tiny_model.hidden_states(idx[None], layer=tiny_config.n_layer)


def test_batch_rows_are_independent(tiny_model, tiny_config):
    torch.manual_seed(4)
    idx = torch.randint(0, tiny_config.vocab_size, (3, 12))
    with torch.no_grad():
        batch = tiny_model(idx)
        for b in range(3):
            torch.testing.assert_close(batch[b], tiny_model(idx[b:b + 1])[0], rtol=0, atol=1e-5)
        # causality: changing a later token never changes earlier logits
        changed = idx.clone()
        changed[:, 8] = (changed[:, 8] + 1) % tiny_config.vocab_size
        out = tiny_model(changed)
    torch.testing.assert_close(out[:, :8], batch[:, :8], rtol=0, atol=0)
    assert not torch.allclose(out[:, 8:], batch[:, 8:])


def test_weights_tied_and_initialised_like_gpt2(tiny_model, tiny_config):
    assert tiny_model.lm_head.weight is tiny_model.wte.weight
    std = tiny_model.blocks[0].mlp.c_fc.weight.std().item()
    assert std == pytest.approx(0.02, rel=0.1)
    proj = torch.cat([b.attn.c_proj.weight.flatten() for b in tiny_model.blocks]).std().item()
    assert proj == pytest.approx(0.02 / (2 * tiny_config.n_layer) ** 0.5, rel=0.15)
    assert all(b.attn.c_attn.bias.abs().sum() == 0 for b in tiny_model.blocks)


def test_gradients_reach_every_parameter(tiny_config):
    torch.manual_seed(5)
    model = GPT(tiny_config.replace(vocab_size=100)).train()
    idx = torch.randint(0, 100, (2, 10))
    model.loss(idx, idx).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_only_in_training():
    torch.manual_seed(6)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50, resid_pdrop=0.5,
                          embd_pdrop=0.5, attn_pdrop=0.5))
    idx = torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        a, b = model(idx), model(idx)
        assert not torch.allclose(a, b)  # dropout is on in training mode
        model.eval()
        torch.testing.assert_close(model(idx), model(idx), rtol=0, atol=0)


def test_constructor_dtype_and_device():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=8, vocab_size=30), device="cpu",
                dtype=torch.float64)
    assert model.wte.weight.dtype == torch.float64 and model.device == torch.device("cpu")
    assert model(torch.zeros(1, 3, dtype=torch.long)).dtype == torch.float64


def test_sinusoidal_positions():
    pe = sinusoidal_positions(50, 16)  # (n_positions, C)
    assert pe.shape == (50, 16) and pe.abs().max() <= 1
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0] * 8))  # sin(0), cos(0)
    freq = 10000 ** (-torch.arange(0, 16, 2) / 16)  # (C/2,): channel pair i turns at its own rate
    torch.testing.assert_close(pe[7, 0::2], torch.sin(7 * freq))
    torch.testing.assert_close(pe[7, 1::2], torch.cos(7 * freq))
    assert sinusoidal_positions(4, 5).shape == (4, 5)  # an odd width keeps its last sine channel
