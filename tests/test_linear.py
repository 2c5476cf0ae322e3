"""gptlearn.fast.linear: the row-split mat-vec used when decoding must give F.linear's numbers, and be taken
only where it is meant to be (inside split_matvecs(): a few rows, a CPU with several threads, no
autograd, large weights); outside it, Linear is nn.Linear bit for bit."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from gptlearn import GPT, GPTConfig
from gptlearn.fast.linear import Linear, linear, split_matvecs
from gptlearn.generate import next_token_logits
from gptlearn.kv_cache import KVCache


@pytest.fixture
def threads():
    """Set torch's thread count for one test, then put it back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def bmm_calls(monkeypatch):
    """Count torch.bmm calls (the split path's one batched product)."""
    calls = []
    real = torch.bmm

    def spy(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "bmm", spy)
    return calls


def weight(out_f, in_f, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_f, in_f, generator=g) * 0.02, torch.randn(out_f, generator=g)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("out_f", [1024, 1001])  # 1001: blocks overlap by 1001 % k rows
@pytest.mark.parametrize("lead", [(), (1,), (1, 1), (2, 3), (16,)])
def test_split_equals_f_linear(threads, bmm_calls, k, out_f, lead):
    threads(k)
    w, b = weight(out_f, 768)
    x = torch.randn(*lead, 768, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), split_matvecs():
        for bias in (b, None):
            got, ref = linear(x, w, bias), F.linear(x, w, bias)
            assert got.shape == ref.shape == (*lead, out_f)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert len(bmm_calls) == 2 and bmm_calls[0][0] == k  # one batched call per product, k blocks


def test_every_row_of_an_overlapping_split_is_its_own_dot_product(threads):
    """out % k != 0: the last block starts early; each output must still be row j of W times x."""
    threads(3)
    w, _ = weight(1000, 1024, seed=2)  # 1000 = 3 * 333 + 1
    x = torch.randn(1024, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode(), split_matvecs():
        got = linear(x, w)
    ref = (w.double() @ x.double()).float()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["outside split_matvecs", "switched off", "one thread", "small weight",
                                  "many rows", "autograd", "strided weight", "autocast", "mixed dtypes"])
def test_other_cases_take_f_linear(threads, bmm_calls, case):
    threads(1 if case == "one thread" else 2)
    w, b = weight(256 if case == "small weight" else 1024, 768)
    x = torch.randn(17 if case == "many rows" else 1, 768)
    if case == "strided weight":
        w = w.t().contiguous().t()  # (out, in) values stored (in, out)
    split = contextlib.nullcontext() if case == "outside split_matvecs" else split_matvecs(case != "switched off")
    with split:
        if case == "autograd":
            w.requires_grad_(True)
            y = linear(x, w, b)
            y.sum().backward()  # the plain path keeps the graph
            assert w.grad is not None
        elif case == "autocast":
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                assert linear(x, w, b).dtype == torch.bfloat16
        elif case == "mixed dtypes":  # F.linear's own error, not one from inside the split path
            with torch.inference_mode(), pytest.raises(RuntimeError, match="dtype"):
                linear(x.double(), w, b)
        else:
            with torch.inference_mode():
                assert torch.equal(linear(x, w, b), F.linear(x, w, b))  # the same kernel: bit for bit
    assert bmm_calls == []


def test_split_matvecs_is_scoped_and_nests(threads, bmm_calls):
    threads(2)
    w, b = weight(1024, 768)
    x = torch.randn(1, 768)
    with torch.inference_mode():
        with split_matvecs():
            linear(x, w, b)
            with split_matvecs(False):
                linear(x, w, b)
            linear(x, w, b)
        linear(x, w, b)
    assert len(bmm_calls) == 2  # the two calls directly inside the outer block


def test_linear_module_is_an_nn_linear_with_the_same_state(threads, bmm_calls):
    threads(2)
    torch.manual_seed(0)
    lin, ref = Linear(768, 1024), torch.nn.Linear(768, 1024)
    ref.load_state_dict(lin.state_dict())
    assert isinstance(lin, torch.nn.Linear) and lin.state_dict().keys() == ref.state_dict().keys()
    seen = []
    lin.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    x = torch.randn(1, 1, 768)
    with torch.no_grad():
        assert torch.equal(lin(x), ref(x))  # outside split_matvecs: nn.Linear exactly
        with split_matvecs():
            torch.testing.assert_close(lin(x), ref(x), rtol=1e-5, atol=1e-5)
    assert seen == [(1, 1, 1024)] * 2 and len(bmm_calls) == 1  # module hooks run on both paths


@pytest.mark.parametrize("k", [2, 3])
def test_decoding_a_wide_model_matches_its_full_forward(threads, bmm_calls, k):
    """A model wide enough for the split path (C = 512: c_attn, c_fc, the MLP's c_proj and the
    50257-row head are split, the 512 x 512 attention c_proj is too small): each cached one-token
    step gives the logits of a full forward over the whole sequence."""
    threads(k)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=8, n_embd=512, n_positions=32)).eval()
    idx = torch.randint(0, 50257, (1, 20), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        full = model(idx)[0]  # (T, V): 20 rows take the GEMM path
        assert bmm_calls == []
        cache = KVCache.for_model(model, 1)
        steps = [next_token_logits(model, idx[:, :12], cache)[0]]  # a 12-token prefill, then one token at a time
        steps += [next_token_logits(model, idx[:, t:t + 1], cache)[0] for t in range(12, 20)]
    assert len(bmm_calls) == 9 * 4  # c_attn, c_fc, mlp.c_proj and the head, in every call
    torch.testing.assert_close(torch.stack(steps), full[11:], rtol=1e-4, atol=1e-4)
    assert torch.equal(torch.stack(steps).argmax(-1), full[11:].argmax(-1))

