"""A/B: this checkout's gptlearn against another checkout's (e.g. from before a refactor), in one process.

    git worktree add /tmp/before <commit>        # or: git archive <commit> | tar -x -C /tmp/before
    python bench/bench_ab.py --before /tmp/before [--rows forward,generate,train-mini,train-gpt2,embed]

The other checkout's package is copied to a temporary folder and imported beside this one as
``gptlearn_before``. Both load the same random weights as transformers and are timed **interleaved in
the same rounds** with transformers and the roofline probe of the row, so load on the machine falls on
all sides alike and "same speed before and after" can be read from one run even on a busy machine.
Rows: ``forward`` (GPT-2 124M shape, 8x128), ``generate`` (greedy, 16-token prompt + ``--new`` tokens,
batch 1, eager, and the fused step when both packages build it), ``train-mini`` / ``train-gpt2`` (forward
+ loss + backward + AdamW, 4x128), ``embed`` (``Embedder.encode`` of ``--sentences`` STS-B sentences).
Prints one ``RESULT {json}`` line per row: median seconds per side, each side's ratio to transformers,
after / before, and % of the roofline (GEMM for forward and training, the stream bound for decoding).
"""
from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_embed import sentences  # noqa: E402
from bench_train import make_optimizer  # noqa: E402

PACKAGES = {"after": "gptlearn", "before": "gptlearn_before"}


def import_before(checkout: Path, into: Path) -> None:
    """Copy ``checkout/gptlearn`` to ``into/gptlearn_before`` and make it importable (it imports itself
    relatively, so the new name works)."""
    src = checkout / "gptlearn"
    if not (src / "__init__.py").is_file():
        raise SystemExit(f"{checkout} has no gptlearn package; pass the root of a gptlearn checkout")
    shutil.copytree(src, into / "gptlearn_before", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(into))


def load(side: str, model_dir: Path):
    if side == "transformers":
        return common.load_hf(model_dir, torch.device("cpu"))
    return importlib.import_module(PACKAGES[side]).GPT.from_pretrained(model_dir).eval()


def batch(args, smoke: tuple[int, int], real: tuple[int, int]) -> tuple[int, int]:
    return smoke if args.smoke else real


def forward_runs(model_dir: Path, args) -> dict:
    idx = torch.randint(0, 50257, batch(args, (2, 16), (8, 128)), generator=torch.Generator().manual_seed(1))
    runs = {}
    for side in ("before", "after", "transformers"):
        m = load(side, model_dir)
        runs[side] = (lambda m=m, side=side: _logits(m, side, idx))
    return runs


def _logits(m, side, idx):
    with torch.inference_mode():
        out = m(idx)
        return out if side != "transformers" else out.logits


def generate_runs(model_dir: Path, args) -> dict:
    prompt = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(1))
    runs = {}
    for side in ("before", "after", "transformers"):
        m = load(side, model_dir)
        if side == "transformers":
            m.generation_config.pad_token_id = m.config.eos_token_id
            runs[side] = (lambda m=m: _hf_generate(m, prompt, args.new))
        else:
            runs[side] = (lambda m=m: m.generate(prompt, args.new, do_sample=False))
            if fused_builds(side):
                runs[f"{side}_fused"] = (lambda m=m: m.generate(prompt, args.new, do_sample=False, fused=True))
    return runs


def _hf_generate(m, prompt, n):
    with torch.inference_mode():
        return m.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False)


def fused_builds(side: str) -> bool:
    pkg = PACKAGES[side]
    name = f"{pkg}.fast.fused" if importlib.util.find_spec(f"{pkg}.fast") else f"{pkg}.fused"
    mod = importlib.import_module(name)
    try:
        mod.load_kernel()
        return True
    except mod.FusedUnavailable as e:
        print(f"{side}: no fused step ({e})", flush=True)
        return False


def train_runs(model_dir: Path, args) -> dict:
    B, T = batch(args, (2, 16), (4, 128))
    idx = torch.randint(0, 50257, (B, T + 1), generator=torch.Generator().manual_seed(1))
    x, y = idx[:, :-1], idx[:, 1:]
    runs = {}
    for side in ("before", "after", "transformers"):
        m = load(side, model_dir).train()
        opt = make_optimizer(m)
        runs[side] = (lambda m=m, opt=opt, side=side: _train_step(m, opt, side, x, y))
    return runs


def _train_step(m, opt, side, x, y):
    opt.zero_grad(set_to_none=True)
    if side == "transformers":
        loss = F.cross_entropy(m(x).logits.flatten(0, 1).float(), y.flatten())
    else:
        loss = m(x, targets=y)
    loss.backward()
    opt.step()
    return loss


def embed_runs(model_dir: Path, args) -> dict:
    from sentence_transformers import SentenceTransformer, models

    sents = sentences(48 if args.smoke else args.sentences)
    runs = {}
    for side in ("before", "after"):
        emb = importlib.import_module(f"{PACKAGES[side]}.embeddings").Embedder.from_pretrained(
            model_dir, pooling="mean")
        runs[side] = (lambda emb=emb: emb.encode(sents, batch_size=32))
    word = models.Transformer(str(model_dir))
    word.tokenizer.pad_token = word.tokenizer.eos_token
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), "mean")], device="cpu")
    runs["transformers"] = lambda: st.encode(sents, batch_size=32, convert_to_numpy=True)  # sentence-transformers
    return runs


ROWS = {
    "forward": ("gpt2", forward_runs, "gemm"),
    "generate": ("gpt2", generate_runs, "stream"),
    "train-mini": ("mini", train_runs, "gemm"),
    "train-gpt2": ("gpt2", train_runs, "gemm"),
    "embed": ("gpt2", embed_runs, None),
}


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="root of the other gptlearn checkout")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ",".join(ROWS))
    p.add_argument("--new", type=int, default=64, help="new tokens per generate call")
    p.add_argument("--sentences", type=int, default=500, help="STS-B dev sentences for the embed row")
    args = p.parse_args(argv)
    common.setup(args)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        import_before(Path(args.before).resolve(), Path(tmp))
        for name in args.rows.split(","):
            preset, make, probe = ROWS[name]
            preset = "tiny" if args.smoke else preset
            if args.smoke:
                args.new = min(args.new, 8)
            drop = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0) if name.startswith("train") else {}
            model_dir = common.random_model_dir(preset, Path(tmp) / name, tokenizer=(name == "embed"), **drop)
            probes = {}
            if probe == "gemm":
                probes["probe"], work = common.gemm_probe(torch.device("cpu"), 256 if args.smoke else 2048)
            elif probe == "stream":
                probes, work = common.stream_probes(torch.device("cpu"), (16 << 20) if args.smoke else (1 << 30))
            c = common.contest(args, "cpu", make(model_dir, args), probes=probes)  # a first pass warms every side
            med = {k: c.med(k) for k in c.times}
            row = {"row": f"ab-{name}", "shape": preset, "seconds": med,
                   "new_tokens": args.new if name == "generate" else None,
                   "after_vs_before": c.speedup("after", "before"),
                   "speedup_before": c.speedup("before", "transformers"),
                   "speedup_after": c.speedup("after", "transformers")}
            if "after_fused" in med and "before_fused" in med:
                row.update(fused_after_vs_before=c.speedup("after_fused", "before_fused"),
                           fused_speedup_before=c.speedup("before_fused", "transformers"),
                           fused_speedup_after=c.speedup("after_fused", "transformers"))
            ref = load("after", model_dir)
            if probe == "gemm":
                rate = c.rate("probe", work)
                B, T = batch(args, (2, 16), (8, 128) if name == "forward" else (4, 128))
                flops = (2.0 if name == "forward" else 6.0) * ref.num_parameters() * B * T
                row["roofline"] = {k: c.roofline(k, flops, rate) for k in ("before", "after", "transformers")}
            elif probe == "stream":
                bandwidth = max(c.rate(k, work) for k in probes)
                weight_bytes = (ref.num_parameters() - ref.wpe.weight.numel()) * 4
                bound = bandwidth / weight_bytes  # tokens/s
                row.update(bandwidth_gb_s=bandwidth / 1e9, bound_tok_s=bound)
                row["roofline"] = {k: c.roofline(k, args.new, bound) for k in med if k not in probes}
            out.append(c.emit(row))
    return out


if __name__ == "__main__":
    main()
