"""GPT: the forward pass against transformers' GPT2LMHeadModel (in memory), hidden states, loss.

Tolerances: fp32 logits within 1e-4 of transformers, hidden states within 1e-5 (sums over at most a
few hundred terms of O(1) numbers, so fp32 rounding stays around 1e-6).
"""
from __future__ import annotations

import pytest
import torch

from gptlearn import GPT, GPTConfig
from gptlearn.model import lm_loss, unembed, unembed_loss
from gptlearn.pretrained import hf_to_gptlearn

transformers = pytest.importorskip("transformers")

LOGITS_ATOL = 1e-4
HIDDEN_ATOL = 1e-5

# (n_layer, n_head, n_embd, n_positions, vocab_size)
SHAPES = [(1, 1, 16, 32, 1000), (2, 4, 64, 64, 50257), (3, 6, 96, 128, 1000)]


def random_hf(n_layer, n_head, n_embd, n_positions, vocab_size, seed=0, **extra):
    """A random GPT2LMHeadModel whose every parameter (biases and LayerNorms too) is non-trivial."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                                  vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, **extra)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hf


def to_gptlearn(hf) -> GPT:
    model = GPT(GPTConfig.from_hf_dict(hf.config.to_dict())).eval()
    model.load_state_dict(hf_to_gptlearn(hf.state_dict()), strict=True)
    return model


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L{}H{}C{}P{}V{}".format(*s))
def test_logits_and_hidden_states_match_transformers(shape):
    hf = random_hf(*shape)
    model = to_gptlearn(hf)
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
def test_config_variants_match_transformers(extra):
    hf = random_hf(2, 2, 16, 16, 300, seed=2, **extra)
    model = to_gptlearn(hf)
    idx = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, rtol=0, atol=LOGITS_ATOL)


def test_loss_matches_transformers():
    hf = random_hf(2, 4, 64, 64, 1000, seed=3)
    model = to_gptlearn(hf)
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
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 1000), idx[:, 6:].reshape(-1))
    assert lm_loss(logits, targets).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("N,C,V", [(5, 16, 300), (64, 32, 50257), (3000, 8, 2500)])
def test_unembed_loss_matches_the_plain_path_in_value_and_gradients(N, C, V):
    """The blocked loss (one to seven vocabulary blocks here) against F.cross_entropy on full logits,
    with ignored targets, a target in the last (short) block, and a scaled loss as grad_accum makes."""
    torch.manual_seed(N)
    x = torch.randn(N, C, dtype=torch.float64).float().requires_grad_()
    w = (torch.randn(V, C) * 0.3).requires_grad_()
    t = torch.randint(0, V, (N,))
    t[0], t[1:3] = V - 1, -100
    plain = lm_loss(unembed(x, w)[None], t[None])
    gx, gw = torch.autograd.grad(plain / 3, (x, w))
    fused = unembed_loss(x, w, t)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    fx, fw = torch.autograd.grad(fused / 3, (x, w))
    torch.testing.assert_close(fx, gx, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(fw, gw, rtol=1e-4, atol=1e-8)
    # only one input needing a gradient, and no autograd at all, give the same numbers
    (fx_only,) = torch.autograd.grad(unembed_loss(x, w.detach(), t), (x,))
    torch.testing.assert_close(fx_only * (1 / 3), gx, rtol=1e-4, atol=1e-8)
    with torch.no_grad():
        assert unembed_loss(x, w, t).item() == pytest.approx(plain.item(), rel=1e-6)


def test_unembed_loss_under_cpu_autocast_takes_the_plain_path():
    """bf16 autocast makes bf16 logits: the blocked path must not run on them (it mixed dtypes)."""
    torch.manual_seed(7)
    x = torch.randn(40, 16, requires_grad=True)
    w = torch.randn(9000, 16, requires_grad=True)
    t = torch.randint(0, 9000, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = unembed_loss(x, w, t)
        plain = lm_loss(unembed(x, w)[None], t[None])
    assert fused.item() == plain.item()
    fused.backward()
    assert x.grad is not None and w.grad is not None and w.grad.dtype == torch.float32


def test_training_gradients_match_transformers():
    """model(idx, targets=...) (the fused loss, through tied weights) gives transformers' gradients."""
    hf = random_hf(2, 4, 64, 64, 50257, seed=6, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).train()
    model = to_gptlearn(hf).train()
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


def test_padded_rows_skip_padding_and_match_transformers():
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
    from gptlearn.generate import KVCache

    idx = torch.zeros(2, 4, dtype=torch.long)
    for bad in ([0, 4], [2, 5], [[1, 2]]):
        with pytest.raises(ValueError, match="lengths must be"):
            tiny_model.hidden_states(idx, lengths=torch.tensor(bad))
    with pytest.raises(ValueError, match="3 entries for a batch of 2 rows"):
        tiny_model.hidden_states(idx, lengths=torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match="cannot be combined"):
        tiny_model.hidden_states(idx, lengths=torch.tensor([4, 4]), kv_cache=KVCache.for_model(tiny_model, 2))


def test_num_parameters_matches_transformers():
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
        with pytest.raises(ValueError, match="layer must be in"):
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


@pytest.mark.parametrize("rows", [1, 7, 8, 40])  # fewer than 8 rows: the plain (or row-split) product
def test_unembed_in_vocabulary_blocks_equals_one_product(rows):
    """gptlearn.model.unembed multiplies a wide vocabulary in blocks (CPU speed); values and gradients
    must be those of the single F.linear (fp32: the same dot products, so within 1e-5)."""
    from gptlearn.model import unembed

    torch.manual_seed(0)
    w = torch.randn(9000, 24, requires_grad=True)  # V > chunk: more than one block, a ragged last one
    x = torch.randn(rows, 24, requires_grad=True)
    g = torch.randn(rows, 9000)
    got = unembed(x, w, chunk=4096)
    torch.autograd.backward(got, g)
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    want = torch.nn.functional.linear(x, w)
    torch.autograd.backward(want, g)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(gx, x.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gw, w.grad, atol=1e-4, rtol=1e-5)
    with torch.no_grad():  # the no-autograd path fills one preallocated output
        torch.testing.assert_close(unembed(x[None], w, chunk=4096), want[None], atol=1e-5, rtol=0)  # (B, T, V)


def test_gelu_is_torchs_tanh_gelu_with_and_without_autograd():
    """gptlearn.model.gelu computes the tanh form as x·σ(2z) on the CPU without autograd: the same curve."""
    from gptlearn.model import gelu

    F = torch.nn.functional
    x = torch.cat([torch.linspace(-12, 12, 20001), torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0])])
    with torch.inference_mode():
        fast = gelu(x)
    torch.testing.assert_close(fast, F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-6, equal_nan=True)
    torch.testing.assert_close(gelu(x, "none"), F.gelu(x), equal_nan=True)
    xg = x[:20001].clone().requires_grad_(True)
    gelu(xg).sum().backward()  # with autograd: torch's own kernel and its backward
    ref = xg.detach().clone().requires_grad_(True)
    F.gelu(ref, approximate="tanh").sum().backward()
    torch.testing.assert_close(xg.grad, ref.grad)


def test_tied_training_gradients_add_in_place_in_reused_memory_and_match_transformers(small_pool, monkeypatch):
    """The fused loss's (V, C) gradient and the embedding's are pooled, and autograd adds them in place
    (a pooled tensor is not a view, so it may): the sum never costs a fresh (V, C) allocation."""
    monkeypatch.setattr(small_pool, "REUSE_MAX_BYTES", 128 << 20)
    hf = random_hf(2, 4, 64, 64, 50257, seed=6, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).train()
    model = to_gptlearn(hf).train()
    idx = torch.randint(0, 50257, (2, 33))
    hf(idx, labels=idx).loss.backward()
    for _ in range(2):  # as train() with grad_accum=2: the loss halved, gradients accumulated
        (model(idx[:, :-1], targets=idx[:, 1:]) / 2).backward()
    grad = model.wte.weight.grad
    assert not grad.untyped_storage().resizable()  # an out-of-place sum would be a torch.empty tensor
    torch.testing.assert_close(grad, hf.transformer.wte.weight.grad, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(model.wpe.weight.grad, hf.transformer.wpe.weight.grad, rtol=1e-3, atol=1e-7)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own
def test_compiled_training_step_gives_the_eager_gradients(small_pool, monkeypatch):
    """train(compile=True) wraps the model in torch.compile: the fused loss and the pooled embedding
    gradient (custom autograd Functions) must trace, or fall back, to the same numbers."""
    monkeypatch.setattr(small_pool, "REUSE_MAX_BYTES", 128 << 20)  # the tiny model's (V, C) grads pooled
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).train()
    x, y = torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16))
    model(x, targets=y).backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.compile(model)(x, targets=y).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager[n], rtol=1e-4, atol=1e-6, msg=n)
