"""Train gptlearn-english, the book's English teaching model (docs/gptlearn-english.md), stage by stage.

Usage: OMP_NUM_THREADS=1 python scripts/train_english.py OUT_DIR [--stages 1,2,3]

Resumable: a stage whose folder holds a finished run is skipped, an unfinished one continues where it
stopped (``resume=True``), so the command can be stopped and run again at any time. Each stage writes
OUT_DIR/stageN (a model folder with its trainer state) and appends its measurements to
OUT_DIR/stageN.measure.jsonl at every evaluation (previous-token and induction heads, held-out loss): beside
the run's folder, since gptlearn writes only into folders that hold nothing but its own files.
Needs Debian's wordnet-base, fortunes, fortunes-min, debian-handbook and python3-doc, and GPTLEARN_DATA_DIR
with TinyShakespeare and STS-B train (scripts/english_corpus.py says what it reads); stages 11 and on also
the npm data packages of english_corpus.py in GPTLEARN_NPM_DATA. The shipped model is
stage 12's; ``python scripts/export_english.py OUT_DIR/stage12`` copies it into the package in float16.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import gptlearn
from gptlearn.train import train
from gptlearn.analysis import induction_scores, previous_token_scores
from gptlearn.data import TokenDataset, data_folder
from gptlearn.model import sinusoidal_positions
from gptlearn.tokenizers import BPETokenizer, Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import english_corpus  # noqa: E402

VOCAB = 12288
# The training text: every source once, the short everyday ones (fortunes, STS-B train) twice.
MIX = {"python-docs": 1, "debian-handbook": 1, "fortunes": 2, "wordnet": 1, "stsb-train": 2, "shakespeare": 1}
# Stage 11's text adds running modern prose (english_corpus.py: State of the Union addresses since 1900,
# Moby-Dick), which the sources above lack; the tokenizer stays the one learned on MIX's text
PROSE = {"sotu": 1, "moby-dick": 1}
SHIPPED = 12  # the stage whose weights the package ships: the script's default runs stages 1 to it
CONFIG = {"n_layer": 4, "n_head": 6, "n_embd": 192, "n_positions": 256,
          "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
COMMON = {"batch_size": 8, "block_size": 256, "eval_every": 100, "eval_iters": 10, "device": "cpu",
          "progress": False, "sample_tokens": 48}
STAGES = {
    # 1: from scratch, with position embeddings started from sine/cosine codes (positional heads form early)
    #    and a share of rows of random tokens written twice (only copying predicts them: induction heads)
    1: dict(steps=1000, lr=2e-3, min_lr=4e-4, warmup=100, seed=2024, induction_frac=0.3),
    # 2: mostly text (stage 1's 30% copying rows had not made induction heads by step 1,000)
    2: dict(steps=1000, lr=1.5e-3, min_lr=1e-4, warmup=50, seed=2025, induction_frac=0.1),
    # 3: gptlearn-mini's recipe for the circuit (docs/gptlearn-mini.md): 70% copying rows at a high rate,
    #    run until the phase change (mini's came after ~2,000 steps)
    3: dict(steps=2500, lr=3e-3, min_lr=3e-4, warmup=100, seed=2026, induction_frac=0.7),
    # 4: text again to win back what stage 3 cost, 10% copying rows keep the heads
    4: dict(steps=1500, lr=1e-3, min_lr=1e-4, warmup=100, seed=2027, induction_frac=0.1),
    # 5: stage 3 had not made the circuit in 2,500 steps (a 12,288-token vocabulary learns copying far more
    #    slowly than mini's 1,024: even copying the previous token, period-2 rows, takes hundreds of steps).
    #    The same 70% of copying rows, longer, on rows of 128 tokens: half the cost a step, and the point
    #    where induction heads appear grows only with the square root of batch x context (Aoyama et al.,
    #    2025), so fewer tokens in all
    #    It was stopped at step 3,300 without the circuit (``stop``: the schedule is still 6,000 steps').
    5: dict(steps=6000, stop=3300, lr=3e-3, min_lr=5e-4, warmup=100, seed=2028, induction_frac=0.7, block_size=128),
    # 6: what chapter 5c's toy, changed one setting at a time toward this model, needed
    #    (scripts/induction_sweep.py): short copying rows (32 tokens) at a learning rate 10x lower than
    #    stage 5's (3e-4, constant). Tried first with the whole vocabulary as the rows' alphabet and text
    #    in 20% of the rows: nothing in 2,200 steps. The rows here are the toy's own: every row copies, its
    #    tokens drawn from the 1,024 earliest merges (common pieces of words)
    6: dict(steps=2500, lr=3e-4, min_lr=3e-4, warmup=0, seed=2029, block_size=32, batch_size=64,
            copy_rows=dict(first=1024)),
    # 7: the same rows, half of them from an alphabet that doubles every 300 steps to the whole vocabulary (rare
    #    tokens' vectors are barely trained: the 4,096 latest merges occur ~60 times in the training text).
    #    Widening all rows at once (a probe) raised the loss to 8.8 and undid the circuit on common tokens
    7: dict(steps=2500, lr=3e-4, min_lr=3e-4, warmup=0, seed=2030, block_size=32, batch_size=64,
            copy_rows=dict(first=1024, widen=300)),
    # 8: the same rows, 128 tokens long (periods of 4 to 64), every alphabet already the whole vocabulary: heads
    #    trained on rows of 32 copy only within 32 positions (on random tokens written twice 50 apart, the
    #    package's measure, stage 7's best induction head scored 0.02 while scoring 0.90 at 16 apart); and half
    #    the rows without ``<|endoftext|>`` first: rows that all had it made heads that copy only after it
    8: dict(steps=1500, lr=3e-4, min_lr=3e-4, warmup=0, seed=2031, block_size=128, batch_size=16,
            copy_rows=dict(first=1024, widen=300, start=2500, no_bos=0.5)),
    # 9: text again, with 20% of the package's copying rows (random tokens, no BOS, periods 8-64, rows of 256) to
    #    keep the heads, at stages 6-8's rate: a probe at 6e-4 with 10% such rows dropped the best induction
    #    head from 0.51 to 0.14 in its first 200 steps and held it near 0.32 to step 1,400
    9: dict(steps=6000, lr=3e-4, min_lr=3e-5, warmup=100, seed=2032, induction_frac=0.2),
    # 10: more of stage 9 (its text loss was still falling at its end: 5.37 nats, stage 4 reached 5.18), the
    #     schedule restarted lower; stopped at step 3,500 (held-out text 5.18 nats): the shipped model
    10: dict(steps=6000, lr=2e-4, min_lr=2e-5, warmup=100, seed=2033, induction_frac=0.2, stop=3500),
    # A second line, not shipped (the card: "A second line"): stages 6-8's copying rows with a quarter of the
    # rows text (``text``), started from stage 4 (text only, held-out 5.18 nats), so that the text is not
    # given up while the circuit forms (copying alone took it to 10-13 nats, and stages 9-10 9,500 steps to
    # win it back); then text with 20% copying rows as in stage 9
    "6m": dict(base=4, steps=2500, lr=3e-4, min_lr=3e-4, warmup=0, seed=2129, block_size=32, batch_size=64,
               copy_rows=dict(first=1024, text=0.25)),
    "7m": dict(base="6m", steps=2500, lr=3e-4, min_lr=3e-4, warmup=0, seed=2130, block_size=32, batch_size=64,
               copy_rows=dict(first=1024, widen=300, text=0.25)),
    "8m": dict(base="7m", steps=1500, lr=3e-4, min_lr=3e-4, warmup=0, seed=2131, block_size=128, batch_size=16,
               copy_rows=dict(first=1024, widen=300, start=2500, no_bos=0.5, text=0.25)),
    "9m": dict(base="8m", steps=3000, lr=3e-4, min_lr=3e-5, warmup=100, seed=2132, induction_frac=0.2),
    # 11: the model shipped until 2026-12-08 (stage 10 at step 3,500, rounded to float16 as the package stored
    #     it: ``half``) on text with running modern prose added (PROSE), the copying rows kept, the rate of
    #     stage 10's start
    11: dict(base=10, half=True, prose=1, steps=2500, lr=2e-4, min_lr=2e-5, warmup=100, seed=2034,
             induction_frac=0.2),
    # 11b: the same with the prose twice as heavy (38% of the tokens instead of 23%)
    "11b": dict(base=10, half=True, prose=2, steps=2500, lr=2e-4, min_lr=2e-5, warmup=100, seed=2035,
                induction_frac=0.2),
    # 12: stage 11 (held-out modern prose 2.04 -> 1.98 bits/byte), on the heavier prose of 11b, longer, lower:
    #     the shipped model (13 and 14 read the modern prose better, 1.95, but their token table groups words
    #     worse: 36% and 35% against 38%; docs/gptlearn-english.md)
    12: dict(base=11, prose=2, steps=4000, lr=1.5e-4, min_lr=1.5e-5, warmup=100, seed=2036, induction_frac=0.2),
    # 13: more of stage 12 (its modern prose fell only 1.977 -> 1.969 bits/byte over its second half), lower
    13: dict(prose=2, steps=2000, lr=1e-4, min_lr=1e-5, warmup=100, seed=2037, induction_frac=0.2),
    # 14: the last of the schedule (stage 13 left the modern prose at 0.751 of a unigram model)
    14: dict(prose=2, steps=1000, lr=6e-5, min_lr=6e-6, warmup=50, seed=2038, induction_frac=0.2),
}


class CopyRows(TokenDataset):
    """Chapter 5c's toy task on this model's tokens: every row is ``<|endoftext|>`` and a random block of 4 to
    T/2 tokens written over and over; the targets of the first block are ignored, so only copying from
    context lowers the loss. The blocks' tokens come from ids 256 .. 256 + ``first`` (the earliest merges:
    common pieces of words). With ``widen``, half the rows take their tokens from an alphabet that doubles
    every ``widen`` steps, counted from ``start``, until it is the whole vocabulary (``step`` is kept by the
    caller). A share ``no_bos`` of the rows start without ``<|endoftext|>`` (heads learn to copy without it),
    and a share ``text`` are windows of the text itself (every target scored)."""

    def __init__(self, data: TokenDataset, first: int, widen: int | None = None, start: int = 0,
                 no_bos: float = 0.0, text: float = 0.0, step: int = 0):
        self.__dict__.update(vars(data))  # the same tokens: train() checks them on resume
        self.first, self.widen, self.start, self.no_bos, self.step = first, widen, start, no_bos, step
        self.text = text

    def alphabet(self, generator) -> tuple[int, int]:
        """The ids [lo, hi) a row's block is drawn from."""
        vocab = self.tokenizer.vocab_size
        if self.widen is None or torch.rand(1, generator=generator) < 0.5:
            return 256, 256 + self.first
        size = int(self.first * 2 ** ((self.start + self.step) / self.widen))
        return (256, 256 + size) if 256 + size < vocab else (0, vocab)

    def get_batch(self, split, batch_size, block_size, generator=None, **_):
        bos = self.tokenizer.eot_token
        x = torch.empty(batch_size, block_size + 1, dtype=torch.long)  # (B, T + 1)
        copies = torch.zeros(batch_size, block_size, dtype=torch.bool)  # (B, T): True where copying predicts
        for b in range(batch_size):
            if self.text and torch.rand(1, generator=generator) < self.text:  # (no draw without text rows)
                row_x, row_y = TokenDataset.get_batch(self, split, 1, block_size, generator)  # (1, T) each
                x[b, :-1], x[b, -1], copies[b] = row_x[0], row_y[0, -1], True
                continue
            period = int(torch.randint(4, block_size // 2 + 1, (1,), generator=generator))
            block = torch.randint(*self.alphabet(generator), (period,), generator=generator)
            block[block == bos] = 256
            # 1: the row starts with the BOS (no draw when every row does: stages 6-7 ran before no_bos existed)
            first = 1 if self.no_bos == 0 else int(torch.rand(1, generator=generator) >= self.no_bos)
            x[b, :first] = bos
            x[b, first:] = block.repeat(block_size // period + 2)[: block_size + 1 - first]
            copies[b, period - 1 + first:] = True  # x[t + 1] was seen ``period`` tokens before
        y = x[:, 1:].masked_fill(~copies, -100)  # (B, T)
        return x[:, :-1], y


class _Stopped(Exception):
    """A stage reached its ``stop`` step (its checkpoint there is written)."""


def corpus(out: Path, prose: int = 0) -> tuple[list[str], list[str]]:
    """(train, val) documents: every 100th document of each source is held out. ``prose`` adds PROSE's
    sources, each ``prose`` times its weight there."""
    data = data_folder()
    if data is None:
        raise SystemExit("train_english: error: no data folder; set GPTLEARN_DATA_DIR to the shared data folder")
    sources = {"python-docs": english_corpus.python_docs(), "debian-handbook": english_corpus.handbook(),
               "fortunes": english_corpus.fortunes(), "wordnet": english_corpus.wordnet(),
               "stsb-train": english_corpus.stsb_train(data), "shakespeare": english_corpus.shakespeare(data)}
    if prose:
        sources |= {"sotu": english_corpus.sotu(), "moby-dick": english_corpus.moby_dick()}
    weights = MIX | {name: w * prose for name, w in PROSE.items()}
    train, val, stats = [], [], {}
    for name, docs in sources.items():
        docs = list(dict.fromkeys(docs))
        train += [d for i, d in enumerate(docs) if i % 100 != 50] * weights[name]
        val += [d for i, d in enumerate(docs) if i % 100 == 50]
        stats[name] = {"documents": len(docs), "characters": sum(map(len, docs)), "weight": weights[name],
                       "licence": english_corpus.LICENCES[name]}
    out.mkdir(parents=True, exist_ok=True)
    (out / (f"sources-prose{prose}.json" if prose else "sources.json")).write_text(json.dumps(stats, indent=1))
    import random

    random.Random(0).shuffle(train)
    return train, val


def tokenizer(out: Path, train: list[str]) -> Tokenizer:
    """A byte-level BPE of VOCAB tokens learned on the training documents (kept in OUT/tokenizer)."""
    folder = out / "tokenizer"
    if not (folder / "merges.txt").is_file():
        t0 = time.perf_counter()
        BPETokenizer.train("<|endoftext|>".join(train), VOCAB).save(folder)
        print(f"BPE of {VOCAB} tokens learned in {time.perf_counter() - t0:.0f} s", flush=True)
    return Tokenizer.from_bpe(BPETokenizer.from_files(folder / "vocab.json", folder / "merges.txt"))


def measuring(log: Path, model, text: TokenDataset | None = None):
    """A train() callback appending head scores at every evaluation to the file ``log`` (JSON lines); with
    ``text``, also the held-out loss on the text alone (10 fixed batches of 8 x 256 tokens), for stages
    whose own held-out rows are copying rows."""
    def callback(event, history):
        if event != "eval":
            return
        was = model.training
        model.eval()
        ind = induction_scores(model, seq_len=50, batch=4)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.config.vocab_size - 1, (4, 128), generator=g)
        prev = previous_token_scores(model, ids)
        extra = {}
        if text is not None:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                losses = [model.loss(x, y) for x, y in
                          (text.get_batch("val", 8, 256, generator=g) for _ in range(10))]
            extra["text_val_loss"] = round(float(torch.stack(losses).mean()), 4)
        model.train(was)
        row = {"step": history.step[-1], "val_loss": history.val_loss[-1], "train_loss": history.eval_train_loss[-1],
               **extra, "induction_max": round(float(ind.max()), 4), "prev_token_max": round(float(prev.max()), 4),
               "time": time.time()}
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return callback


def saved_step(folder: Path) -> int | None:
    """The step of the run saved in ``folder``, None when there is none yet."""
    state = folder / "trainer_state.json"
    return json.loads(state.read_text())["step"] if state.is_file() else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--stages", default=",".join(str(n) for n in range(1, SHIPPED + 1)),
                   help=f"comma-separated stage names (default: the shipped line, 1-{SHIPPED}; the mixed line is "
                        "6m,7m,8m,9m)")
    args = p.parse_args()
    torch.set_num_threads(1)
    train_docs, val_docs = corpus(args.out)
    tok = tokenizer(args.out, train_docs)
    data = TokenDataset.from_documents(train_docs, val_docs, tok)
    print(f"{len(data.splits['train']):,} training tokens, {len(data.splits['val']):,} held out", flush=True)
    with_prose = {}  # the text with PROSE added, by its weight, built when a stage asks for it
    names = {str(n): n for n in STAGES}
    for name in args.stages.split(","):
        if name not in names:
            raise SystemExit(f"train_english: error: no stage {name!r}; the stages are {', '.join(names)}")
        n = names[name]
        folder = args.out / f"stage{n}"
        settings = {**COMMON, **STAGES[n]}
        stop = settings.pop("stop", settings["steps"])
        done = saved_step(folder)
        if done is not None and done >= stop:
            print(f"stage {n}: finished", flush=True)
            continue
        resume = done is not None
        base = settings.pop("base", None)  # the stage it starts from (the mixed line names it; else the one before)
        if n == 1:  # a fresh GPT-2 of CONFIG's shape, positions started from sine/cosine codes
            torch.manual_seed(settings["seed"])
            model = gptlearn.GPT(gptlearn.GPTConfig(**CONFIG, vocab_size=tok.vocab_size, bos_token_id=tok.eot_token,
                                                    eos_token_id=tok.eot_token))
            with torch.no_grad():
                pe = sinusoidal_positions(CONFIG["n_positions"], CONFIG["n_embd"])  # (n_positions, C)
                model.wpe.weight.copy_(pe * (0.05 / pe.std()))
            model.tokenizer = tok
        else:  # fine-tuned from the stage before (on resume its weights are replaced by the run's)
            model = gptlearn.GPT.from_pretrained(args.out / f"stage{n - 1 if base is None else base}")
            if settings.pop("half", False):  # the base as the package shipped it: float16, computed in float32
                model.half().float()
        settings.pop("pos_init", None)
        t0 = time.perf_counter()
        log = folder.with_suffix(".measure.jsonl")
        rows = data
        prose = settings.pop("prose", 0)
        if prose:
            if prose not in with_prose:
                with_prose[prose] = TokenDataset.from_documents(*corpus(args.out, prose=prose), tok)
                print(f"with prose x{prose}: {len(with_prose[prose].splits['train']):,} training tokens", flush=True)
            rows = with_prose[prose]
        if "copy_rows" in settings:
            rows = CopyRows(rows, step=done or 0, **settings.pop("copy_rows"))  # copying rows beside the stage's text
        measure = measuring(log, model, text=data if rows is not data else None)

        def callback(event, history, stop=stop):
            measure(event, history)
            if event == "step" and isinstance(rows, CopyRows):
                rows.step = history.step[-1]
            if event == "step" and history.step[-1] >= stop:
                raise _Stopped

        try:
            train(model, rows, out_dir=folder, resume=resume, callback=callback, **settings)
        except _Stopped:
            pass
        print(f"stage {n}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
