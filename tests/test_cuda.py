"""CUDA against the CPU: the same logits, tokens, embeddings and gradients on a GPU, within stated tolerances.

Every test here is marked ``cuda`` and skipped without a CUDA GPU; ``scripts/gpu_check.sh`` runs them on
one (``bench/README.md`` says how). Each tolerance is stated beside its test, with the error the same
comparison showed on the CPU (fp32 against fp64, or CPU autocast against fp32), so it is a real bound.
fp32 means fp32: TF32 products are switched off for every test (PyTorch's default for matrix products).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gptlearn
from gptlearn import GPT, Embedder, GPTConfig
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import train

HAS_CUDA = torch.cuda.is_available()
N_GPUS = torch.cuda.device_count() if HAS_CUDA else 0
REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                            "scripts/gpu_check.sh runs these on one"),
]

NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
CONFIG = GPTConfig(n_layer=4, n_head=4, n_embd=128, n_positions=128, vocab_size=1000, **NO_DROPOUT)
# GPT-2's initialisation (std 0.02) makes greedy text one token repeated; std 0.2 makes it vary
VARIED = CONFIG.replace(initializer_range=0.2)
IDX = torch.randint(0, CONFIG.vocab_size, (3, 64), generator=torch.Generator().manual_seed(1))  # (B, T)
TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 200


@pytest.fixture(autouse=True)
def _no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def pair(config: GPTConfig = CONFIG) -> tuple[GPT, GPT]:
    """The same random model on the CPU and on the GPU, in eval mode."""
    torch.manual_seed(0)
    cpu = GPT(config).eval()
    gpu = GPT(config, device="cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def test_fp32_logits_match_the_cpu():
    """fp32 on the GPU within 1e-4 of the CPU (fp32 against fp64 on the CPU: 8e-7; logits reach 1.6)."""
    cpu, gpu = pair()
    with torch.no_grad():
        ref = cpu(IDX)  # (B, T, V)
        out = gpu(IDX.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float32 and out.shape == ref.shape
    assert ref.abs().max() > 1.0  # logits of this size make 1e-4 a tight bound
    torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-4)


def test_run_with_cache_matches_the_cpu():
    """The explicit attention path (hooks attached) on the GPU: logits within 1e-4, patterns within 1e-5."""
    cpu, gpu = pair()
    ref_logits, ref_cache = cpu.run_with_cache(IDX)
    logits, cache = gpu.run_with_cache(IDX.cuda())
    torch.testing.assert_close(logits.cpu(), ref_logits, rtol=0, atol=1e-4)
    for layer in range(CONFIG.n_layer):
        pattern = cache["pattern", layer]  # (B, H, T, T)
        assert pattern.device.type == "cuda"
        torch.testing.assert_close(pattern.cpu(), ref_cache["pattern", layer], rtol=0, atol=1e-5)
        torch.testing.assert_close(cache["resid_post", layer].cpu(), ref_cache["resid_post", layer], rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype, max_rel, min_agree", [(torch.bfloat16, 0.02, 0.90), (torch.float16, 0.003, 0.97)])
def test_autocast_logits_within_tolerance(dtype, max_rel, min_agree):
    """Autocast logits against fp32 on the CPU. bf16 keeps 8 significant bits, fp16 11: the largest
    error must stay within 2% (bf16) / 0.3% (fp16) of the largest logit, and the argmax must agree at
    90% / 97% of positions. CPU autocast on this model: 0.37% / 0.05%, agreeing at 98.4% / 100%."""
    cpu, gpu = pair()
    with torch.no_grad():
        ref = cpu(IDX)  # (B, T, V)
        with gptlearn.autocast("cuda", dtype):
            out = gpu(IDX.cuda())
    assert out.dtype == dtype  # autocast really ran in low precision
    out = out.float().cpu()
    err = (out - ref).abs().max()
    assert 0 < err <= max_rel * ref.abs().max(), (err, ref.abs().max())
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean()
    assert agree >= min_agree, agree


def test_kv_cache_greedy_equals_no_cache_and_the_cpu():
    """Greedy tokens on the GPU: with the KV cache, without it and on the CPU, token for token. 130 new
    tokens after 8 overrun the 128-token context, so the cache's refill after the window slides runs too."""
    cpu, gpu = pair(VARIED)
    prompt = IDX[:2, :8]  # (B, T)
    cached = gpu.generate(prompt.cuda(), 130, do_sample=False)
    uncached = gpu.generate(prompt.cuda(), 130, do_sample=False, use_cache=False)
    on_cpu = cpu.generate(prompt, 130, do_sample=False)
    assert cached.device.type == "cuda" and cached.shape == (2, 138)
    assert len(set(cached[:, 8:].flatten().tolist())) > 10  # varied text: the comparison has content
    assert torch.equal(cached, uncached)
    assert torch.equal(cached.cpu(), on_cpu)


def test_training_step_gradients_match_the_cpu():
    """One training step (``model(x, targets=y)`` then backward): the loss within 1e-5 relative and every
    gradient within 1e-4 of its tensor's largest entry (fp32 against fp64 on the CPU: 1.2e-6)."""
    cpu, gpu = pair()
    cpu.train()
    gpu.train()  # no dropout: both sides compute the same function
    x, y = IDX[:, :-1], IDX[:, 1:]  # (B, T-1) each
    loss_cpu = cpu(x, targets=y)
    loss_cpu.backward()
    loss_gpu = gpu(x.cuda(), targets=y.cuda())
    loss_gpu.backward()
    assert loss_gpu.device.type == "cuda"
    assert abs(loss_gpu.item() - loss_cpu.item()) <= 1e-5 * loss_cpu.item()
    for (name, p_cpu), (_, p_gpu) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert p_gpu.grad is not None and p_gpu.grad.device.type == "cuda", name
        scale = float(p_cpu.grad.abs().max())
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=0, atol=1e-4 * scale,
                                   msg=lambda m: f"{name}: {m}")


def test_bf16_training_step_stays_close_to_fp32():
    """The same step under bf16 autocast on the GPU: the loss within 1e-3 relative and the gradient
    (all parameters as one vector) at cosine > 0.999 with fp32's (CPU autocast: 6e-6 and 1.0000)."""
    _, gpu = pair()
    gpu.train()
    x, y = IDX[:, :-1].cuda(), IDX[:, 1:].cuda()
    grads = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        gpu.zero_grad(set_to_none=True)
        with gptlearn.autocast("cuda", dtype):
            loss = gpu(x, targets=y)
        loss.backward()
        grads[name] = (loss.item(), torch.cat([p.grad.flatten() for p in gpu.parameters()]))
    (l32, g32), (l16, g16) = grads["fp32"], grads["bf16"]
    assert abs(l16 - l32) <= 1e-3 * l32
    assert not torch.equal(g16, g32)  # autocast changed the arithmetic
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.999


def test_embedder_encode_matches_the_cpu():
    """Sentences of different lengths, batched with padding (the packed position-wise path): embeddings
    on the GPU within 1e-5 of the CPU's."""
    tok = CharTokenizer.from_text(TEXT)
    cpu, gpu = pair(CONFIG.replace(vocab_size=tok.vocab_size))
    sentences = [TEXT[i:i + n] for i, n in ((0, 5), (3, 60), (10, 17), (7, 1), (20, 100), (1, 33))]
    ref = Embedder(cpu, tok, pooling="mean").encode(sentences, batch_size=4)
    out = Embedder(gpu, tok, pooling="mean").encode(sentences, batch_size=4, convert_to_tensor=True)
    assert out.device.type == "cuda" and out.shape == (len(sentences), CONFIG.n_embd)
    torch.testing.assert_close(out.cpu(), torch.from_numpy(ref), rtol=0, atol=1e-5)


def test_train_on_cuda_lowers_the_loss(tmp_path):
    """``gptlearn.train`` on the GPU (bf16 autocast where the GPU has it): 60 steps of characters."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=64, n_positions=64))
    model.tokenizer = tok
    h = train(model, text, device="cuda", steps=60, batch_size=16, block_size=64, lr=3e-3,
              warmup=5, eval_every=60, eval_iters=2, sample_tokens=8, progress=False)
    assert model.device.type == "cuda"
    first, last = sum(h.train_loss[:5]) / 5, sum(h.train_loss[-5:]) / 5
    assert first > 2.5 and last < first - 1.0, (first, last)  # from near-uniform over ~30 characters
    assert isinstance(h.samples[-1], str) and h.samples[-1] and not h.samples[-1].startswith("<no sample")


def test_fused_cpu_decoder_refuses_a_model_on_cuda(capsys):
    """The fused decoding step is C++ for the CPU: on a GPU model it is a clear error, in Python and in the CLI."""
    _, gpu = pair()
    with pytest.raises(ValueError, match=r"runs on the CPU; this model is on cuda"):
        gpu.generate(IDX[:1, :4].cuda(), 4, do_sample=False, fused=True)
    from gptlearn import cli

    code = cli.main(["generate", "--model", "gptlearn-mini", "--device", "cuda", "--prompt", "ROMEO:",
                     "--greedy", "--fused", "--max-new-tokens", "4"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("gptlearn: error: the fused decoding step runs on the CPU"), err


DDP_SCRIPT = """
import os, sys, torch, torch.distributed as dist
from gptlearn import GPT, GPTConfig
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import train
text_file, out = sys.argv[1], sys.argv[2]
tok = CharTokenizer.from_text(open(text_file).read())
torch.manual_seed(int(os.environ["RANK"]))  # different seeds: DDP must broadcast rank 0's weights
model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=64, n_positions=64))
model.tokenizer = tok
h = train(model, text_file, steps=30, eval_every=30, eval_iters=2, batch_size=8, block_size=64, lr=3e-3,
          warmup=2, progress=False, sample_tokens=0, out_dir=out)
torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "loss": h.train_loss,
            "backend": dist.get_backend(), "device": str(model.device)},
           os.path.join(out, f"rank{os.environ['RANK']}.pt"))
dist.destroy_process_group()
"""


@pytest.mark.skipif(N_GPUS < 2, reason=f"DDP with NCCL needs 2 GPUs; this machine has {N_GPUS}")
def test_ddp_with_nccl_on_two_gpus(tmp_path):
    """``torchrun --nproc_per_node=2`` over ``gptlearn.train``: one GPU per rank, NCCL, the same weights on
    both ranks at the end (DDP averaged the gradients and broadcast rank 0's start), and the loss falls."""
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), str(text), str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    assert (r0["backend"], r1["backend"]) == ("nccl", "nccl")
    assert (r0["device"], r1["device"]) == ("cuda:0", "cuda:1")
    for k in r0["state"]:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0)
    assert r0["loss"] == r1["loss"]  # the all-reduced loss
    assert r0["loss"][-1] < r0["loss"][0] - 0.5
    saved = GPT.from_pretrained(out)  # rank 0 wrote the folder
    torch.testing.assert_close(saved.wte.weight, r0["state"]["wte.weight"])
