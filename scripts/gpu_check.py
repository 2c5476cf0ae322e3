"""The GPU check: one command that proves gptlearn on a CUDA GPU and measures it, within the few minutes
a lent GPU gives. ``bench/README.md`` ("The GPU check") says how to run it and what to do
with the results; ``scripts/gpu_check.sh`` is the command to type.

    bash scripts/gpu_check.sh                        # on the GPU machine: every step, into $OUT
    bash scripts/gpu_check.sh --prepare              # here, first: the data it reads into .gpu_carry/
    bash scripts/gpu_check.sh --dry-run --out DIR    # the same steps on the CPU with tiny sizes (CI)
    bash scripts/gpu_check.sh --only tests,generate  # some steps again

Steps, each in a fresh process under its own time limit, in the order of what they prove: the list STEPS
near the end of this file holds each step's name, time limit, function and what it proves
(``bash scripts/gpu_check.sh --help`` prints it).

The device tool brings back at most 8 files, so OUT gets 7: gpu_check.json (everything), gpu_check.md
(the report), gpu_check.log (every step's output) and run_all's tables, bench.json/md and
bench_bf16.json/md. The reports are rewritten after every step, so a run cut short still returns what
it finished. A step that would start with too little of the time budget left is skipped and says so.
Exit status: 0 when every step passed, 1 otherwise, 2 for a usage error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpu_carry"  # ignored by git; the device tool's `carry` sends it along
MIN_START_S = 20  # a step starts only with at least this much of the budget left
BUDGET_S = 450  # all steps together: with Python's start and the report, within 8 minutes
DRY_SLACK = 3  # the dry run's limits and budget are 3x: a shared CPU under load is slow, and it proves no speed
RUN_CALL = 'run(command="bash scripts/gpu_check.sh", carry=[".gpu_carry"], timeout_s=540)'


# ---- small helpers -----------------------------------------------------------------------------------
def data_dir() -> Path | None:
    """Where TinyShakespeare and STS-B are: $GPTLEARN_DATA_DIR, the carried copy, or ../shared/data. The rule of
    ``gptlearn.data.data_folder`` with the carried copy between, written out because this driver imports
    nothing of gptlearn (its steps do, each in a fresh process, after the install step)."""
    for d in (os.environ.get("GPTLEARN_DATA_DIR"), CARRY / "data", ROOT.parent / "shared" / "data"):
        if d and Path(d).is_dir():
            return Path(d)
    return None


def shakespeare() -> str:
    d = data_dir()
    path = d / "tinyshakespeare.txt" if d else None
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8")
    return "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 2000


def stsb_sentences() -> list[str]:
    """The unique sentences of STS-B dev (as bench/bench_embed.py reads them); TinyShakespeare's lines without it."""
    import csv

    d = data_dir()
    path = d / "stsb" / "sts-dev.csv" if d else None
    if path is None or not path.is_file():
        return list(dict.fromkeys(line for line in shakespeare().splitlines() if line.strip()))
    seen: dict[str, None] = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            for s in row[5:7]:
                if s.strip():
                    seen.setdefault(s, None)
    return list(seen)


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """(result, seconds) of one call, the GPU's queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---- the steps (each runs in its own process: python gpu_check.py --step NAME) -----------------------
def step_install(ctx) -> dict:
    """Carried wheels into work/site (PYTHONPATH), then the project (editable, no dependencies, offline)."""
    done, ok = [], True
    wheels = sorted((CARRY / "whl").glob("*.whl"))
    if wheels:
        site = ctx.work / "site"
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)])
        ok &= r.returncode == 0
        done.append(f"{len(wheels)} carried wheels into {site}" + ("" if r.returncode == 0 else " FAILED"))
    if ctx.dry or not shutil.which("nvidia-smi"):  # never re-point the shared install of a development machine
        done.append(("dry run" if ctx.dry else "no nvidia-smi here") + ": the project runs from PYTHONPATH")
    else:
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                            "--no-build-isolation", "-e", str(ROOT)])
        done.append("pip install -e . " + ("done" if r.returncode == 0 else "failed: the project runs from PYTHONPATH"))
    return {"ok": ok, "summary": "; ".join(done), "wheels": [w.name for w in wheels],
            "site": str(ctx.work / "site") if wheels else None}


def step_env(ctx) -> dict:
    import importlib.metadata as md
    import platform

    import torch

    import gptlearn

    packages = {}
    for name in ("torch", "numpy", "transformers", "sentence-transformers", "tokenizers", "huggingface_hub",
                 "tiktoken", "safetensors", "pytest", "triton"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "gpu_count": torch.cuda.device_count(),
            "packages": packages, "gptlearn": str(Path(gptlearn.__file__).parent),
            "cpu_threads": torch.get_num_threads(), "gptlearn_command": shutil.which("gptlearn")}
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                            "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
    from_repo = Path(gptlearn.__file__).resolve().parent == ROOT / "gptlearn"
    problems = [] if from_repo else [f"gptlearn is imported from {info['gptlearn']}, not this checkout"]
    if ctx.device == "cuda":
        if not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} sees no CUDA GPU (torch.version.cuda = {torch.version.cuda}); "
                            "a CUDA build of torch is needed and is too large to carry")
        else:
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                        memory_gib=round(props.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
            g = torch.Generator().manual_seed(0)
            a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
            torch.backends.cuda.matmul.allow_tf32 = False
            info["product_max_diff"] = float(((a.cuda() @ b.cuda()).cpu() - a @ b).abs().max())
            if not info["product_max_diff"] < 1e-3:
                problems.append(f"a 512x512 product on the GPU is {info['product_max_diff']:.2e} from the CPU's")
    what = info.get("gpu") or "CPU (dry run)"
    summary = (f"{what}; torch {torch.__version__} (CUDA {torch.version.cuda}); transformers {packages['transformers']}"
               + ("; " + "; ".join(problems) if problems else ""))
    return {"ok": not problems, "summary": summary, **info}


def step_tests(ctx) -> dict:
    """pytest -m cuda over the test files that carry the mark; outcomes read from its JUnit XML."""
    import xml.etree.ElementTree as ET

    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.cuda" in p.read_text(encoding="utf-8"))
    xml = ctx.work / "tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", "-rA", f"--junitxml={xml}",
           *files]
    print("$ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=ROOT)
    cases = []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                    message = (child.get("message") or child.text or "").strip()
            name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
            cases.append({"test": name, "outcome": outcome, "seconds": float(case.get("time") or 0),
                          "message": " ".join(message.split())[:400]})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    ran = counts["passed"] if ctx.device == "cuda" else counts["skipped"]  # on the CPU they must all skip
    ok = r.returncode == 0 and counts["failed"] == counts["error"] == 0 and ran > 0
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or f"no tests (pytest exit {r.returncode})"
    return {"ok": ok, "summary": summary, "exit": r.returncode, "files": files, "counts": counts, "cases": cases}


def first_difference(a, b) -> int | None:
    """Index of the first position where token rows differ (over all rows), or None."""
    diff = (a != b).any(0).nonzero()
    return int(diff[0]) if len(diff) else None


def step_generate(ctx) -> dict:
    """Greedy tokens of the trained bundled model: GPU (fp32 with and without the KV cache, a batch of 4,
    bf16 autocast) against the CPU, token for token. A difference is judged by the CPU's margin between
    its two best logits at that position: only a near tie (< 1e-4) may flip."""
    import torch

    import gptlearn
    from gptlearn import GPT

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = ctx.device
    cpu = GPT.from_pretrained("gptlearn-mini").eval()
    gpu = GPT.from_pretrained("gptlearn-mini", device=dev).eval()
    n_ctx = cpu.config.n_positions
    ids = cpu.tokenizer.encode(shakespeare()[:50_000])
    P, N = 16, (16 if ctx.dry else n_ctx + 60)  # past the context: the window slides, the cache refills
    prompts = torch.tensor([ids[i:i + P] for i in (0, 3000, 6000, 9000)])  # (4, P)
    gpu.generate(prompts[:1].to(dev), 4, do_sample=False)  # warm-up: CUDA context, kernels
    ref1 = cpu.generate(prompts[:1], N, do_sample=False)  # (1, P + N)
    ref4 = cpu.generate(prompts, N, do_sample=False)  # (4, P + N)
    runs = {
        "fp32, KV cache, batch 1": (lambda: gpu.generate(prompts[:1].to(dev), N, do_sample=False), ref1, True),
        "fp32, no cache, batch 1": (lambda: gpu.generate(prompts[:1].to(dev), N, do_sample=False, use_cache=False),
                                    ref1, True),
        "fp32, KV cache, batch 4": (lambda: gpu.generate(prompts.to(dev), N, do_sample=False), ref4, True),
    }

    def bf16_run():
        with gptlearn.autocast(dev):
            return gpu.generate(prompts[:1].to(dev), N, do_sample=False)

    runs["autocast (bf16), KV cache, batch 1"] = (bf16_run, ref1, False)  # reported, not required
    rows, ok = [], True
    for name, (fn, ref, required) in runs.items():
        out, seconds = timed(fn, dev)
        out = out.cpu()
        k = first_difference(out[:, P:], ref[:, P:])
        row = {"run": name, "tokens": N * out.size(0), "same": float((out[:, P:] == ref[:, P:]).float().mean()),
               "first_difference": k, "tok_s": N * out.size(0) / seconds, "required": required}
        if k is not None:  # the CPU's margin between its best two logits there
            with torch.no_grad():
                row_i = int((out[:, P + k] != ref[:, P + k]).nonzero()[0])
                logits = cpu(ref[row_i:row_i + 1, :P + k][:, -n_ctx:])[0, -1]  # (V,)
            top2 = logits.topk(2).values
            row["cpu_margin"] = float(top2[0] - top2[1])
            row["near_tie"] = row["cpu_margin"] < 1e-4
        if required and k is not None and not row.get("near_tie"):
            ok = False
        rows.append(row)
    same = [r for r in rows if r["required"]]
    summary = (f"{sum(r['first_difference'] is None for r in same)}/{len(same)} fp32 runs identical to the CPU over "
               f"{N} tokens; bf16 same {100 * rows[-1]['same']:.0f}%; KV cache {rows[0]['tok_s']:.0f} tok/s, "
               f"no cache {rows[1]['tok_s']:.0f} tok/s")
    return {"ok": ok, "summary": summary, "model": "gptlearn-mini", "prompt": P, "new": N, "runs": rows}


def step_train(ctx) -> dict:
    """A short training run with train() on the device (bf16 autocast on a GPU that has it): the loss must
    fall by 1 nat (0.3 in the dry run), and a forward under gptlearn.autocast says which dtype ran."""
    import torch

    from gptlearn import GPT, GPTConfig, autocast
    from gptlearn.tokenizers import CharTokenizer
    from gptlearn.train import train

    dev = ctx.device
    text_path = ctx.work / "train.txt"
    text_path.write_text(shakespeare()[:100_000 if ctx.dry else None], encoding="utf-8")
    tok = CharTokenizer.from_text(text_path.read_text(encoding="utf-8"))
    preset, steps, B, T, lr, drop = ("tiny", 30, 8, 64, 3e-3, 0.3) if ctx.dry else ("mini", 400, 64, 256, 2e-3, 1.0)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset(preset, vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0))
    model.tokenizer = tok
    t0 = time.perf_counter()
    h = train(model, text_path, device=dev, steps=steps, batch_size=B, block_size=T, lr=lr, warmup=steps // 10,
              eval_every=steps, eval_iters=5, sample_tokens=64, progress=False, seed=0)
    seconds = time.perf_counter() - t0
    with torch.no_grad(), autocast(dev):
        dtype = model(torch.zeros(1, 8, dtype=torch.long, device=model.device)).dtype
    k = max(1, steps // 10)
    first, last = statistics.mean(h.train_loss[:k]), statistics.mean(h.train_loss[-k:])
    tok_s = statistics.median(h.tokens_per_sec[k:])
    params = model.num_parameters()
    expected = "torch.bfloat16" if dev == "cuda" and torch.cuda.is_bf16_supported() else "torch.float32"
    ok = finite(first) and finite(last) and last < first - drop and str(dtype) == expected
    summary = (f"{preset}, {steps} steps of {B}x{T} under {dtype}: loss {first:.3f} -> {last:.3f} "
               f"(val {h.val_loss[-1]:.3f}); {tok_s:,.0f} tok/s")
    return {"ok": ok, "summary": summary, "preset": preset, "params": params, "steps": steps, "batch": [B, T],
            "autocast_dtype": str(dtype), "first_loss": first, "last_loss": last, "val_loss": h.val_loss[-1],
            "tok_s": tok_s, "flop_per_token": 6.0 * params, "seconds": seconds, "sample": h.samples[-1]}


def step_embed(ctx) -> dict:
    """Embedder.encode: GPU against CPU on 64 sentences (fp32: cosine > 0.99999), then sentences/s over
    STS-B dev at several batch sizes, fp32 and bf16 autocast, with a GPT-2-shaped model."""
    import numpy as np
    import torch

    from gptlearn import GPT, Embedder, GPTConfig, autocast
    from gptlearn.tokenizers import Tokenizer

    torch.backends.cuda.matmul.allow_tf32 = False
    dev = ctx.device
    sentences = stsb_sentences()[:64 if ctx.dry else None]
    preset, sizes = ("tiny", (8, 32)) if ctx.dry else ("gpt2", (32, 128, 512))
    torch.manual_seed(0)
    cpu = GPT(GPTConfig.from_preset(preset)).eval()
    gpu = GPT(cpu.config, device=dev).eval()
    gpu.load_state_dict(cpu.state_dict())
    tok = Tokenizer.gpt2()
    e_cpu, e_gpu = Embedder(cpu, tok, pooling="mean"), Embedder(gpu, tok, pooling="mean")

    def cosines(a, b):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    ref = e_cpu.encode(sentences[:64]).astype(np.float64)
    got = e_gpu.encode(sentences[:64]).astype(np.float64)
    with autocast(dev):
        got16 = e_gpu.encode(sentences[:64]).astype(np.float64)
    parity = {"max_abs_diff": float(np.abs(got - ref).max()), "min_cosine": float(cosines(got, ref).min()),
              "bf16_min_cosine": float(cosines(got16, ref).min())}
    n_tokens = sum(len(r) for r in e_gpu.tokenize(sentences))
    rows = []
    for dtype in ("fp32", "bf16"):
        for bs in sizes:
            def run():
                with autocast(dev, None if dtype == "bf16" else torch.float32):
                    return e_gpu.encode(sentences, batch_size=bs)

            run()  # warm-up (allocator, kernels for these shapes)
            _, seconds = timed(run, dev)
            rows.append({"dtype": dtype, "batch_size": bs, "sent_s": len(sentences) / seconds,
                         "tok_s": n_tokens / seconds})
    params = gpu.num_parameters()
    ok = parity["min_cosine"] > 0.99999 and (ctx.dry or parity["bf16_min_cosine"] > 0.99)
    best = max(rows, key=lambda r: r["sent_s"])
    summary = (f"{preset}: GPU vs CPU min cosine {parity['min_cosine']:.7f} (bf16 {parity['bf16_min_cosine']:.5f}); "
               f"best {best['sent_s']:,.0f} sentences/s ({best['dtype']}, batch {best['batch_size']}) "
               f"over {len(sentences)} sentences")
    return {"ok": ok, "summary": summary, "preset": preset, "sentences": len(sentences), "tokens": n_tokens,
            "flop_per_token": 2.0 * params, "parity": parity, "rows": rows}


def step_roofline(ctx) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_roofline

    row = gpu_roofline.measure(ctx.device, smoke=ctx.dry)
    ok = all(finite(v) and v > 0 for k, v in row.items() if k.endswith(("_tflops", "_gb_s")))
    summary = (f"GEMM bf16 {row['gemm_bf16_tflops']:.1f}, fp32 {row['gemm_fp32_tflops']:.1f} "
               f"(TF32 {row['gemm_tf32_tflops']:.1f}) TFLOP/s; HBM read {row['read_gb_s']:.0f} GB/s, "
               f"copy {row['copy_gb_s']:.0f} GB/s")
    return {"ok": ok, "summary": summary, **row}


BENCH_LIMIT_S = {"forward": 90, "generate": 120, "train": 150, "embed": 90}


def step_bench(ctx, bf16: bool = False) -> dict:
    """bench/run_all.py one benchmark at a time (a failure or hang in one leaves the others), then
    run_all's table over all rows; each row checked for what must hold whatever the speed."""
    sys.path.insert(0, str(ROOT / "bench"))
    import common
    import run_all

    name = "bench_bf16" if bf16 else "bench"
    scripts = ["forward"] if ctx.dry else list(BENCH_LIMIT_S)
    flags = ["--device", ctx.device, *(["--smoke"] if ctx.dry else ([] if bf16 else ["--memory"]))]
    extra = ["--", "--bf16"] if bf16 else []
    rows, runs = [], []
    deadline = ctx.deadline or time.time() + 3600
    for script in scripts:
        out = ctx.work / f"{name}_{script}"
        cmd = [sys.executable, str(ROOT / "bench" / "run_all.py"), *flags, "--only", script, "--out", str(out), *extra]
        limit = min(BENCH_LIMIT_S[script] * (DRY_SLACK if ctx.dry else 1), deadline - time.time() - 5)
        print("$ " + " ".join(cmd[1:]) + f"   (limit {limit:.0f} s)", flush=True)
        t0, code = time.time(), None
        if limit < 10:
            code = "skipped: out of time"
        else:
            try:
                code = subprocess.run(cmd, cwd=ROOT, timeout=limit).returncode
            except subprocess.TimeoutExpired:
                code = f"timed out after {limit:.0f} s"
        got = []
        for path in (out.with_suffix(".json"), out.with_suffix(".partial.json")):
            if path.is_file():
                data = json.loads(path.read_text())
                got = data["rows"] if isinstance(data, dict) else data
                break
        rows += got
        runs.append({"script": script, "exit": code, "rows": len(got), "seconds": round(time.time() - t0, 1),
                     "command": " ".join(["python bench/run_all.py", *flags, "--only", script, *extra])})
        write_bench_tables(ctx.work / name, rows, runs, common.machine(), run_all.table)
    problems = [f"{r['script']}: exit {r['exit']}" for r in runs if r["exit"] != 0]
    problems += [p for row in rows for p in bench_row_problems(row, bf16)]
    summary = "; ".join(f"{r['row']} {r['speedup']:.2f}x" + (f" ({100 * r['gptlearn_roofline']:.0f}% of bound)"
                                                             if finite(r.get("gptlearn_roofline")) else "")
                        for r in rows) or "no rows"
    if problems:
        summary += "; PROBLEMS: " + "; ".join(problems)
    return {"ok": not problems and bool(rows), "summary": summary, "runs": runs, "rows": rows}


def bench_row_problems(row: dict, bf16: bool) -> list[str]:
    """What must hold in a row whatever the speed: same answers on both sides (fp32 exactly enough)."""
    kind, out = row["row"], []
    if kind == "forward" and not bf16 and not row["max_abs_logit_diff"] < 1e-3:
        out.append(f"forward: logits differ by {row['max_abs_logit_diff']:.1e}")
    if kind.startswith("generate") and not bf16 and row["same_tokens"] != 1.0:
        out.append(f"{kind}: {100 * row['same_tokens']:.0f}% same tokens")
    if kind == "embed" and not row["min_cosine"] > (0.999 if not bf16 else 0.99):
        out.append(f"embed: min cosine {row['min_cosine']:.6f}")
    if kind.startswith("train") and not bf16 and not abs(row["first_loss"][0] - row["first_loss"][1]) < 1e-3:
        out.append(f"{kind}: first losses {row['first_loss']}")
    return out


def write_bench_tables(base: Path, rows: list[dict], runs: list[dict], machine: str, table) -> None:
    commands = "  \n".join(f"`{r['command']}` (exit {r['exit']}, {r['seconds']:.0f} s)" for r in runs)
    md = f"Commands:  \n{commands}  \nMachine: {machine}  \nDate: {time.strftime('%Y-%m-%d %H:%M')}\n\n{table(rows)}\n"
    atomic_write(base.with_suffix(".json"), json.dumps({"machine": machine, "runs": runs, "rows": rows}, indent=1))
    atomic_write(base.with_suffix(".md"), md)


class Step(NamedTuple):
    name: str
    limit_s: int  # the most it may take
    run: Callable[[argparse.Namespace], dict]
    proves: str


STEPS = [  # the one list of steps, in the order of what they prove
    Step("install", 90, step_install, "wheels carried in .gpu_carry/whl (if any), then the project itself "
         "(pip install -e .)"),
    Step("env", 60, step_env, "versions, driver, the GPU, one product on it checked against the CPU "
         "(nothing runs without it)"),
    Step("tests", 180, step_tests, "the cuda-marked tests (tests/test_cuda.py and the others that carry the mark)"),
    Step("generate", 90, step_generate, "greedy tokens of gptlearn-mini on the GPU (KV cache, no cache, batch "
         "of 4) against the CPU's"),
    Step("train", 90, step_train, "a short bf16-autocast training run (gptlearn.train, TinyShakespeare): its "
         "loss must fall"),
    Step("embed", 90, step_embed, "Embedder.encode: GPU against CPU embeddings, then sentences/s by batch "
         "size, fp32 and bf16"),
    Step("roofline", 60, step_roofline, "the GPU's ceilings (bench/gpu_roofline.py): bf16/fp16/fp32/TF32 GEMM, "
         "HBM streaming read"),
    Step("bench", 330, step_bench, "bench/run_all.py --device cuda --memory, one benchmark at a time, "
         "references in the same run"),
    Step("bench_bf16", 200, lambda ctx: step_bench(ctx, bf16=True), "the same with --bf16 (autocast on both "
         "sides), without --memory"),
]
STEP_NAMES = [step.name for step in STEPS]
STEP_BY_NAME = {step.name: step for step in STEPS}


def steps_help() -> str:
    """The steps as a table for --help."""
    width = max(len(name) for name in STEP_NAMES)
    return "steps (in order):\n" + "\n".join(f"  {s.name:<{width}}  {s.limit_s:>3} s  {s.proves}" for s in STEPS)


# ---- the report --------------------------------------------------------------------------------------
def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def clean(x):
    """Strict JSON: non-finite floats become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def pct(x) -> str:
    return f"{100 * x:.0f}%" if finite(x) else "-"


def markdown(report: dict) -> str:
    steps = report["steps"]
    env = steps.get("env", {}).get("data", {})
    roof = steps.get("roofline", {}).get("data", {})
    lines = [f"# GPU check: {report['mode']}", "",
             f"Started {report['started']}; {report['seconds']:.0f} s of a {report['budget_s']} s budget. "
             f"Command: `{report['command']}`  ",
             f"Machine: {env.get('gpu', '-')} ({env.get('nvidia_smi', 'no nvidia-smi')}); "
             f"torch {env.get('torch', '-')} (CUDA {env.get('torch_cuda', '-')}); Python {env.get('python', '-')}; "
             + ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if k != "torch" and v), "",
             f"**{report['verdict']}**", "",
             "| step | status | seconds | summary |", "|---|---|---|---|"]
    for name, s in steps.items():
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', 0):.0f} | {s.get('summary', '')} |")
    if roof:
        lines += ["", "## The GPU's ceilings (bench/gpu_roofline.py)", "",
                  "| bf16 GEMM | fp16 GEMM | fp32 GEMM | TF32 GEMM | HBM read (sum / mat-vec) | copy (read + write) |",
                  "|---|---|---|---|---|---|",
                  f"| {roof['gemm_bf16_tflops']:.1f} TFLOP/s | {roof['gemm_fp16_tflops']:.1f} TFLOP/s | "
                  f"{roof['gemm_fp32_tflops']:.1f} TFLOP/s | {roof['gemm_tf32_tflops']:.1f} TFLOP/s | "
                  f"{roof['read_gb_s']:.0f} GB/s ({roof['read_sum_gb_s']:.0f} / {roof['read_mv_gb_s']:.0f}) | "
                  f"{roof['copy_gb_s']:.0f} GB/s |"]
    tests = steps.get("tests", {}).get("data", {})
    if tests.get("cases"):
        lines += ["", f"## Tests (`pytest -m cuda {' '.join(tests['files'])}`)", "",
                  "| test | outcome | seconds | message |", "|---|---|---|---|"]
        lines += [f"| {c['test']} | {c['outcome']} | {c['seconds']:.1f} | {c['message'][:200]} |"
                  for c in tests["cases"]]
    gen = steps.get("generate", {}).get("data", {})
    if gen.get("runs"):
        lines += ["", f"## Greedy tokens against the CPU ({gen['model']}, prompt {gen['prompt']}, "
                      f"{gen['new']} new tokens)", "",
                  "| run | same tokens | first difference (CPU margin there) | tokens/s |", "|---|---|---|---|"]
        for r in gen["runs"]:
            where = "none"
            if r["first_difference"] is not None:
                tie = ", near tie" if r.get("near_tie") else ""
                where = f"{r['first_difference']} ({r.get('cpu_margin', float('nan')):.2e}{tie})"
            lines.append(f"| {r['run']} | {100 * r['same']:.1f}% | {where} | {r['tok_s']:,.0f} |")
    tr = steps.get("train", {}).get("data", {})
    if tr.get("tok_s"):
        ceiling = roof.get("gemm_bf16_tflops" if "bfloat16" in tr["autocast_dtype"] else "gemm_fp32_tflops")
        share = tr["flop_per_token"] * tr["tok_s"] / (ceiling * 1e12) if ceiling else None
        lines += ["", "## Training run", "",
                  f"{tr['preset']} ({tr['params'] / 1e6:.1f}M parameters), {tr['steps']} steps of "
                  f"{tr['batch'][0]}x{tr['batch'][1]} tokens, autocast {tr['autocast_dtype']}: "
                  f"loss {tr['first_loss']:.3f} -> {tr['last_loss']:.3f} "
                  f"(mean of the first and last tenth), val {tr['val_loss']:.3f}; {tr['tok_s']:,.0f} tokens/s "
                  f"= {pct(share)} of the GEMM ceiling (6 x parameters FLOP a token); {tr['seconds']:.0f} s in all.  ",
                  f"Sample: `{(tr.get('sample') or '')[:120]!r}`"]
    em = steps.get("embed", {}).get("data", {})
    if em.get("rows"):
        p = em["parity"]
        lines += ["", f"## Embedder.encode ({em['preset']}, {em['sentences']} STS-B dev sentences, "
                      f"{em['tokens']} tokens)", "",
                  f"GPU against CPU (64 sentences): max |diff| {p['max_abs_diff']:.1e}, "
                  f"min cosine {p['min_cosine']:.7f}; bf16 autocast min cosine {p['bf16_min_cosine']:.5f}.", "",
                  "| dtype | batch size | sentences/s | tokens/s | share of the GEMM ceiling |",
                  "|---|---|---|---|---|"]
        for r in em["rows"]:
            ceiling = roof.get(f"gemm_{r['dtype']}_tflops")
            share = em["flop_per_token"] * r["tok_s"] / (ceiling * 1e12) if ceiling else None
            lines.append(f"| {r['dtype']} | {r['batch_size']} | {r['sent_s']:,.0f} | {r['tok_s']:,.0f} "
                         f"| {pct(share)} |")
    for name, title in (("bench", "fp32, peak memory per side"), ("bench_bf16", "bf16 autocast on both sides")):
        path = Path(report["out"]) / f"{name}.md"
        if path.is_file():
            lines += ["", f"## bench/run_all.py: {title} ({name}.md)", "", path.read_text(encoding="utf-8").strip()]
    for name, s in steps.items():
        if s["status"] not in ("pass", "skipped") and s.get("log_tail"):
            lines += ["", f"## {name}: the end of its output", "", "```", s["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    report["seconds"] = time.time() - report["t0"]
    statuses = [s["status"] for s in report["steps"].values()]
    passed = statuses.count("pass")
    report["verdict"] = (f"{passed} of {len(report['selected'])} steps passed"
                         + (f"; not passed: {', '.join(n for n, s in report['steps'].items() if s['status'] != 'pass')}"
                            if passed < len(statuses) else "")
                         + ("" if len(statuses) == len(report["selected"]) else " (still running)"))
    atomic_write(out / "gpu_check.json", json.dumps(clean({k: v for k, v in report.items() if k != "t0"}), indent=1))
    atomic_write(out / "gpu_check.md", markdown(report))


# ---- running the steps -------------------------------------------------------------------------------
def run_step(name: str, args, work: Path, env: dict, log: Path, limit: float) -> dict:
    """One step in a fresh process (its own process group, killed whole at the limit); output to the log."""
    result = work / f"{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--work", str(work),
           "--deadline", str(time.time() + limit), *(["--dry-run"] if args.dry_run else [])]
    with log.open("a", encoding="utf-8") as f:
        f.write(f"\n==== {name} (limit {limit:.0f} s) {time.strftime('%H:%M:%S')} ====\n")
        f.flush()
        start = f.tell()
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
            status = None
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code, status = None, "timeout"
        seconds = time.time() - t0
    with log.open(encoding="utf-8", errors="replace") as f:
        f.seek(start)
        tail = "\n".join(f.read().splitlines()[-40:])
    if status == "timeout":
        return {"status": "timeout", "seconds": seconds, "summary": f"stopped after its limit of {limit:.0f} s",
                "log_tail": tail}
    if not result.is_file():
        return {"status": "error", "seconds": seconds, "summary": f"exit {code} before a result (see the log)",
                "log_tail": tail}
    data = json.loads(result.read_text())
    return {"status": "pass" if data.pop("ok") else "fail", "seconds": seconds, "summary": data.pop("summary"),
            "data": data, "log_tail": tail}


def child_env(work: Path) -> dict:
    env = dict(os.environ)
    paths = [str(ROOT)]
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error", GPTLEARN_CACHE=str(work / "cache"))
    d = data_dir()
    if d is not None:
        env["GPTLEARN_DATA_DIR"] = str(d)
    if (work / "site").is_dir():  # carried wheels, installed by the install step, come before the image's
        paths.insert(0, str(work / "site"))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def prepare(wheels: str | None) -> int:
    """Here, before the run: copy the data files the check reads into .gpu_carry/data (and download wheels)."""
    src = data_dir()
    files = ("tinyshakespeare.txt", "stsb/sts-dev.csv")
    if src is None or src == CARRY / "data" or not all((src / f).is_file() for f in files):
        print(f"gpu_check: error: {' and '.join(files)} not found; set GPTLEARN_DATA_DIR to the shared data folder",
              file=sys.stderr)
        return 2
    for rel in files:
        dst = CARRY / "data" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        shutil.copyfile(src / rel, dst)
    if wheels:
        platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64",
                                                 "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")]
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(CARRY / "whl"),
                            *wheels.split()])
        if r.returncode:
            return r.returncode
    size = sum(p.stat().st_size for p in CARRY.rglob("*") if p.is_file())
    print(f"gpu_check: {CARRY.relative_to(ROOT)} holds {size / 2**20:.1f} MiB; on the GPU machine run\n    {RUN_CALL}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=steps_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for the results (default: $OUT)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes (what CI runs)")
    p.add_argument("--only", default=None, help="comma-separated steps: " + ",".join(STEP_NAMES))
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for all steps (default {BUDGET_S}; {DRY_SLACK}x that in a dry run)")
    p.add_argument("--prepare", action="store_true", help="copy the data into .gpu_carry/ for the device tool")
    p.add_argument("--wheels", default=None, help="with --prepare: 'NAME==VERSION ...' to download into .gpu_carry/whl")
    p.add_argument("--step", choices=STEP_NAMES, help=argparse.SUPPRESS)  # internal: run one step
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def fail(message: str) -> int:
        print(f"gpu_check: error: {message}", file=sys.stderr)
        return 2

    if args.prepare:
        return prepare(args.wheels)
    if args.step:  # a child: run the step, write its result
        ctx = argparse.Namespace(device="cpu" if args.dry_run else "cuda", dry=args.dry_run, work=Path(args.work),
                                 deadline=args.deadline)
        result = STEP_BY_NAME[args.step].run(ctx)
        (ctx.work / f"{args.step}.json").write_text(json.dumps(result, default=str))
        return 0
    selected = STEP_NAMES if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in selected if s not in STEP_BY_NAME]
    if unknown or not selected:
        return fail(f"unknown steps {', '.join(unknown) or '(none given)'}; choose from {', '.join(STEP_NAMES)}")
    if not args.out:
        return fail("say where the results go: --out DIR, or set OUT (the device tool sets it)")
    if args.budget is not None and not args.budget > 0:
        return fail(f"--budget must be a positive number of seconds, got {args.budget}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").write_text("")
        (out / ".write-test").unlink()
    except OSError as e:
        return fail(f"cannot write to {out}: {e.strerror or e}")
    slack = DRY_SLACK if args.dry_run else 1
    budget = args.budget or BUDGET_S * slack
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    log = out / "gpu_check.log"
    log.write_text(f"gpu_check {' '.join(sys.argv[1:] if argv is None else argv)}\n", encoding="utf-8")
    report = {"mode": "dry run on the CPU (tiny sizes)" if args.dry_run else "CUDA",
              "command": "bash scripts/gpu_check.sh " + " ".join(sys.argv[1:] if argv is None else argv),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": budget, "selected": selected,
              "out": str(out), "t0": time.time(), "steps": {}}
    deadline = time.time() + budget
    for name in selected:
        left = deadline - time.time()
        if name != "install" and report["steps"].get("env", {}).get("status") not in (None, "pass"):
            step = {"status": "skipped", "summary": "the env step did not pass: nothing else can run (see env)"}
        elif left < MIN_START_S:
            step = {"status": "skipped", "summary": f"out of time: {left:.0f} s of the budget left"}
        else:
            step = run_step(name, args, work, child_env(work), log, min(STEP_BY_NAME[name].limit_s * slack, left))
        report["steps"][name] = step
        for f in ("bench", "bench_bf16"):  # run_all's tables, as far as they got
            for suffix in (".json", ".md"):
                if (work / f).with_suffix(suffix).is_file():
                    shutil.copyfile((work / f).with_suffix(suffix), (out / f).with_suffix(suffix))
        write_report(report, out)
        print(f"gpu_check: {name}: {step['status']} ({step.get('seconds', 0):.0f} s) {step.get('summary', '')}",
              flush=True)
    print(f"gpu_check: {report['verdict']}; the report is {out / 'gpu_check.md'}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(s["status"] == "pass" for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
