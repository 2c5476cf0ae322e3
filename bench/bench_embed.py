"""Sentence embeddings of STS-B dev sentences, mean pooling: ``gptlearn.Embedder.encode`` vs
sentence-transformers wrapping the same GPT-2 weights (and GPT-2's tokenizer, pad = eos).

    python bench/bench_embed.py [--device cuda] [--bf16] [--memory] [--smoke] [--sentences 1000]

Both sides encode the same sentences with batch_size 32 (both sort by length); the embeddings must
agree (cosine > 0.999 on every sentence). A rep is a whole pass (2 reps after the check pass);
``--memory`` measures one pass over the first 256 sentences.
"""
from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def sentences(n: int) -> list[str]:
    path = common.data_file("stsb/sts-dev.csv")
    seen: dict[str, None] = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in row[5:7]:
                if s.strip():
                    seen.setdefault(s, None)
    return list(seen)[:n]


def prepare(side: str, model_dir: Path, args, device, sents: list[str]):
    if side == "gptlearn":
        from gptlearn.embeddings import Embedder

        emb = Embedder.from_pretrained(model_dir, device=device, pooling="mean")

        def run():
            with common.autocast(device, args.bf16):
                return emb.encode(sents, batch_size=32)
    else:
        from sentence_transformers import SentenceTransformer, models

        word = models.Transformer(str(model_dir))
        word.tokenizer.pad_token = word.tokenizer.eos_token
        st = SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), "mean")],
                                 device=str(device))
        st.eval()

        def run():
            with common.autocast(device, args.bf16):
                return st.encode(sents, batch_size=32, convert_to_numpy=True)
    return run


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=1000, help="how many unique STS-B dev sentences")
    args = p.parse_args(argv)
    if args.reps is None and not args.smoke:  # a rep is a whole pass over the sentences
        args.reps, args.warmup = 2, 0  # the cosine check (the first pass) warms both sides up
    device = common.setup(args)
    preset = "tiny" if args.smoke else "gpt2"
    sents = sentences(48 if args.smoke else args.sentences)
    if args.side:  # peak memory of one pass over the first 256 sentences (batches are length-sorted)
        sents = sents[:256]
        common.measure_memory_side(args, lambda: prepare(args.side, Path(args.model_dir), args, device, sents),
                                   warmup=args.smoke)
        return []
    with tempfile.TemporaryDirectory() as d:
        model_dir = common.random_model_dir(preset, Path(d), tokenizer=True)
        sides = {"gptlearn": prepare("gptlearn", model_dir, args, device, sents),
                 "sentence-transformers": prepare("sentence-transformers", model_dir, args, device, sents)}
        c = common.contest(args, device, sides, check=min_cosine, script=__file__, model_dir=model_dir)
    n = len(sents)
    row = {
        "row": "embed",
        "shape": f"{preset} {n} STS-B dev sentences, batch 32, mean pooling", **common.settings(args, device),
        "gptlearn_sent_s": c.rate("gptlearn", n),
        "st_sent_s": c.rate("sentence-transformers", n),
        "speedup": c.speedup("gptlearn", "sentence-transformers"),
        "min_cosine": c.checked,
        "memory_on": "first 256 sentences",
    }
    return [c.emit(row)]


def min_cosine(out: dict) -> float:
    """The lowest cosine between the two sides' embeddings of one sentence."""
    a, b = (np.asarray(out[k], dtype=np.float64) for k in ("gptlearn", "sentence-transformers"))
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


if __name__ == "__main__":
    main()
