"""The bundled sentence embedder (gptlearn-embed) against its teacher all-MiniLM-L6-v2 through
sentence-transformers: sentences per second on STS-B dev sentences, in one run.

    python bench/bench_embedder.py [--device cuda] [--sentences 1000] [--smoke]

Two different models doing the same job, so the check is quality, not equal outputs: each side's
STS-B dev Spearman on the timed sentences' pairs is reported beside its speed. Both encode the same
sentences with batch_size 32 and sort them by length. A rep is a whole pass. The roofline column is
each side's useful FLOPs (2 x non-embedding weights per token, plus attention) over this machine's
GEMM rate.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def dev_pairs(n_sentences: int) -> tuple[list[str], list[tuple[int, int, float]]]:
    """The first unique STS-B dev sentences and the dev pairs among them: (sentences, [(i, j, score)])."""
    from gptlearn.data import read_pairs

    pairs = read_pairs("stsb-dev")
    sents = pairs.unique_sentences()[:n_sentences]
    row = {s: i for i, s in enumerate(sents)}
    kept = [(row[a], row[b], y) for a, b, y in zip(pairs.sentences1, pairs.sentences2, pairs.scores)
            if a in row and b in row]
    return sents, kept


def spearman(emb: np.ndarray, kept: list[tuple[int, int, float]]) -> float:
    from scipy.stats import spearmanr

    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = [float(e[i] @ e[j]) for i, j, _ in kept]
    return float(spearmanr(cos, [y for _, _, y in kept]).statistic)


def flops_per_pass(n_tokens: list[int], weights: int, layers: int, width: int) -> float:
    """2 FLOPs per weight per token, plus attention's two (T x T x C) products per layer."""
    return sum(2.0 * weights * t + 4.0 * layers * t * t * width for t in n_tokens)


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=1000, help="how many unique STS-B dev sentences")
    args = p.parse_args(argv)
    if args.reps is None and not args.smoke:
        args.reps, args.warmup = 3, 1
    device = common.setup(args)
    from sentence_transformers import SentenceTransformer

    from gptlearn import Embedder
    from gptlearn.embed_train import load_teacher

    sents, kept = dev_pairs(48 if args.smoke else args.sentences)
    emb = Embedder.from_pretrained(device=device)  # the bundled default: gptlearn-embed
    st: SentenceTransformer = load_teacher(device)

    def ours():
        return emb.encode(sents, batch_size=32)

    def theirs():
        return st.encode(sents, batch_size=32, convert_to_numpy=True, show_progress_bar=False)

    c = common.contest(args, device, {"gptlearn": ours, "sentence-transformers": theirs},
                       check=lambda out: {k: spearman(v, kept) for k, v in out.items()})
    gemm, gemm_flops = common.gemm_probe(device, 256 if args.smoke else 1024)
    peak = common.Contest(common.interleaved({"gemm": gemm}, reps=5, warmup=2, device=device)).rate("gemm", gemm_flops)

    cfg = emb.model.config
    ours_weights = sum(p.numel() for n, p in emb.model.named_parameters() if n.startswith("blocks."))
    bert = st[0].auto_model
    theirs_weights = sum(p.numel() for n, p in bert.named_parameters() if n.startswith("encoder."))
    ours_flops = flops_per_pass([len(r) for r in emb.tokenize(sents)], ours_weights, cfg.n_layer, cfg.n_embd)
    their_tokens = [len(x) for x in st.tokenizer(sents)["input_ids"]]
    theirs_flops = flops_per_pass(their_tokens, theirs_weights, bert.config.num_hidden_layers,
                                  bert.config.hidden_size)
    n = len(sents)
    row = {
        "row": "embedder",
        "shape": f"gptlearn-embed vs all-MiniLM-L6-v2, {n} STS-B dev sentences, batch 32",
        "device": str(device), "dtype": "fp32", "threads": torch.get_num_threads(),
        "gptlearn_sent_s": c.rate("gptlearn", n), "st_sent_s": c.rate("sentence-transformers", n),
        "speedup": c.speedup("gptlearn", "sentence-transformers"),
        "gptlearn_roofline": c.roofline("gptlearn", ours_flops, peak),
        "transformers_roofline": c.roofline("sentence-transformers", theirs_flops, peak),
        "gemm_gflops": peak / 1e9,
        "gptlearn_params_m": emb.model.num_parameters() / 1e6,
        "st_params_m": sum(p.numel() for p in bert.parameters()) / 1e6,
        "gptlearn_tokens": float(np.mean([len(r) for r in emb.tokenize(sents)])),
        "st_tokens": float(np.mean(their_tokens)),
        "gptlearn_spearman": c.checked["gptlearn"], "st_spearman": c.checked["sentence-transformers"],
        "pairs": len(kept),
    }
    return [c.emit(row)]


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
