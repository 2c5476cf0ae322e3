"""Tokenizing TinyShakespeare: gptlearn's ``Tokenizer`` (tiktoken-backed) and ``BPETokenizer`` (the
readable one) vs ``tiktoken`` built from the same GPT-2 files.

    python bench/bench_tokenizer.py [--smoke] [--memory]

``--device`` is accepted for uniformity; tokenizers run on the CPU. Throughput is MB of UTF-8 text
per second; the teaching tokenizer encodes a slice (``--slow-bytes``) with a fresh cache each rep.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def load_text(args) -> str:
    text = common.data_file("tinyshakespeare.txt").read_text(encoding="utf-8")
    return text[:20_000] if args.smoke else text


def reference_tiktoken():
    """tiktoken's own GPT-2 encoding (its split pattern), built offline from gptlearn's bundled files."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    assets = common.ROOT / "gptlearn" / "assets" / "gpt2"
    ranks = data_gym_to_mergeable_bpe_ranks(str(assets / "vocab.bpe"), str(assets / "encoder.json"))
    return tiktoken.Encoding(name="gpt2-local", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def prepare(side: str, text: str, slow_text: str):
    from gptlearn.tokenizers import BPETokenizer, Tokenizer

    if side == "gptlearn":
        tok = Tokenizer.gpt2()
        return lambda: tok.encode(text)
    if side == "tiktoken":
        enc = reference_tiktoken()
        return lambda: enc.encode_ordinary(text)
    if side == "gptlearn_bpe":
        bpe = BPETokenizer.gpt2()

        def run():
            bpe._cache.clear()  # measure the algorithm, not a warm word cache
            return bpe.encode(slow_text)
        return run
    raise ValueError(f"unknown side {side!r}")


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--slow-bytes", type=int, default=100_000, help="text given to the teaching BPETokenizer")
    args = p.parse_args(argv)
    common.setup(args)
    args.device = "cpu"  # tokenizers run on the CPU: --memory measures RSS there, even with --device cuda
    text = load_text(args)
    slow_text = text[: min(len(text), 5_000 if args.smoke else args.slow_bytes)]
    if args.side:
        common.measure_memory_side(args, lambda: prepare(args.side, text, slow_text))
        return []
    bpe = prepare("gptlearn_bpe", text, slow_text)
    bpe_ids = bpe()
    c = common.contest(args, "cpu", {s: prepare(s, text, slow_text) for s in ("gptlearn", "tiktoken")},
                       check=lambda ids: (len(ids["tiktoken"]), ids["gptlearn"] == ids["tiktoken"]
                                          and bpe_ids == ids["tiktoken"][: len(bpe_ids)]),
                       script=__file__, memory_sides=["gptlearn", "tiktoken", "gptlearn_bpe"])
    t_bpe = common.Contest(common.interleaved({"gptlearn_bpe": bpe}, reps=max(1, args.reps // 3), warmup=0))
    n_tokens, same_ids = c.checked
    mb, slow_mb = len(text.encode()) / 1e6, len(slow_text.encode()) / 1e6
    row = {
        "row": "tokenizer",
        "shape": f"TinyShakespeare {mb:.2f} MB ({n_tokens} tokens); BPETokenizer on {slow_mb:.2f} MB",
        "device": "cpu", "dtype": "-",
        "gptlearn_mb_s": c.rate("gptlearn", mb), "tiktoken_mb_s": c.rate("tiktoken", mb),
        "gptlearn_bpe_mb_s": t_bpe.rate("gptlearn_bpe", slow_mb),
        "speedup": c.speedup("gptlearn", "tiktoken"),
        "bpe_vs_tiktoken": t_bpe.rate("gptlearn_bpe", slow_mb) / c.rate("tiktoken", mb),
        "same_ids": same_ids,
    }
    return [c.emit(row)]


if __name__ == "__main__":
    main()
