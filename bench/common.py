"""Shared helpers for the benchmarks: timing side by side, roofline probes, random GPT-2 folders, memory.

Every benchmark times its contenders *interleaved* in one process (rep 1: A B probe, rep 2: B probe A, ...),
drops warm-up reps and reports medians and ratios, because the machine is shared and noisy: a ratio
measured under the same noise is meaningful, an absolute time much less so.

Each script prints one line ``RESULT {json}`` per row (``bench/run_all.py`` collects them). The skeleton
they share is :func:`contest`: check the sides' outputs against each other, time them interleaved with
the probe of a hardware bound, measure memory in fresh processes, and read ratios and shares of the bound
from the :class:`Contest` it returns.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from gptlearn.data import DATA_DIR_ENV, data_folder  # noqa: E402 (this checkout's, after the settings above)

if data_folder() is not None:  # the processes a benchmark starts find the same folder
    os.environ.setdefault(DATA_DIR_ENV, str(data_folder()))


def data_file(name: str) -> Path:
    """The file ``name`` in the shared data folder (``gptlearn.data.data_folder``); exits saying how to give it."""
    folder = data_folder()
    if folder is None or not (folder / name).is_file():
        raise SystemExit(f"{name} not found in {folder or 'any data folder'}; set {DATA_DIR_ENV} to the shared "
                         "data folder")
    return folder / name


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, finishes in seconds (for tests)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per contender (after warm-up)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repetitions first")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both sides")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides (CUDA mostly)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory, one fresh process per side")
    p.add_argument("--side", default=None, help=argparse.SUPPRESS)  # internal: memory child process
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)  # internal: memory child process
    return p


def setup(args: argparse.Namespace) -> torch.device:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA GPU; run on a GPU machine or drop it")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.reps is None:
        args.reps = 3 if args.smoke else 5
    if args.warmup is None:
        args.warmup = 1  # on top of the correctness check each script runs first
    torch.manual_seed(0)
    return torch.device(args.device)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def interleaved(fns: dict[str, Callable[[], object]], *, reps: int, warmup: int,
                device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Time every function ``warmup + reps`` times, rotating their order each round; -> seconds per rep."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + reps):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            sync(device)
            t0 = time.perf_counter()
            fns[n]()
            sync(device)
            if r >= warmup:
                times[n].append(time.perf_counter() - t0)
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> float:
    """Relative spread (max - min) / median: how noisy the reps were."""
    return (max(xs) - min(xs)) / statistics.median(xs)


# ---- roofline probes ------------------------------------------------------------------------------
def gemm_probe(device: torch.device, n: int, dtype: torch.dtype = torch.float32):
    """A large square matmul; returns (fn, flops per call). Its rate is this machine's GEMM ceiling."""
    if torch.device(device).type == "cuda":  # a GPU needs larger, repeated products: bench/gpu_roofline.py
        import gpu_roofline

        return gpu_roofline.gemm_probe(device, dtype)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * n**3


def stream_probes(device: torch.device, nbytes: int) -> tuple[dict[str, Callable[[], object]], float]:
    """STREAM-like reads of one fp32 buffer of ``nbytes`` (>= 1 GB in a real run, far beyond any cache):
    ``torch.sum`` and ``torch.amax`` over all of it, each on all of torch's threads. Each call reads every
    byte once and does almost no arithmetic, so the faster one's rate is the memory bandwidth nothing
    can beat: the bound of batch-1 decoding, which must read every weight once a token.
    Returns ({name: fn}, bytes read per call)."""
    x = torch.ones(nbytes // 4, device=device)
    return {"stream_sum": lambda: torch.sum(x), "stream_max": lambda: torch.amax(x)}, float(x.numel() * 4)


def matvec_probe(device: torch.device, rows: int, cols: int, dtype: torch.dtype = torch.float32):
    """A matrix-vector product over a matrix much larger than cache: returns (fn, bytes read per call).
    Reported beside the stream bound: how much of the bandwidth one library call reaches."""
    w = torch.randn(rows, cols, device=device, dtype=dtype)
    x = torch.randn(cols, device=device, dtype=dtype)
    out = torch.empty(rows, device=device, dtype=dtype)
    return (lambda: torch.mv(w, x, out=out)), float(w.numel() * w.element_size())


def vecmat_probe(device: torch.device, rows: int, cols: int, dtype: torch.dtype = torch.float32):
    """The same bytes read the other way, (1, rows) @ (rows, cols): on some CPUs MKL streams this layout
    much faster than ``torch.mv``'s, so a bound from ``matvec_probe`` alone would be too low.
    Returns (fn, bytes read per call); the benchmark takes the faster probe as the bandwidth."""
    w = torch.randn(rows, cols, device=device, dtype=dtype)
    x = torch.randn(1, rows, device=device, dtype=dtype)
    out = torch.empty(1, cols, device=device, dtype=dtype)
    return (lambda: torch.mm(x, w, out=out)), float(w.numel() * w.element_size())


def split_matvec_probe(device: torch.device, rows: int, cols: int, dtype: torch.dtype = torch.float32):
    """``matvec_probe``'s product with the rows cut into one block per thread and multiplied in one
    ``torch.bmm``: on this CPU MKL runs a lone mat-vec on one core but spreads a batch over all of
    them, so this reads faster than either probe above (it is what ``gptlearn.fast.linear`` does when
    decoding). Returns (fn, bytes read per call)."""
    k = torch.get_num_threads() if device.type == "cpu" else 1
    w = torch.randn(k, rows // k, cols, device=device, dtype=dtype)  # (k, rows/k, cols)
    x = torch.randn(1, 1, cols, device=device, dtype=dtype).expand(k, 1, cols)
    out = torch.empty(k, 1, rows // k, device=device, dtype=dtype)
    return (lambda: torch.bmm(x, w.transpose(1, 2), out=out)), float(w.numel() * w.element_size())


# ---- models ---------------------------------------------------------------------------------------
def hf_config(preset: str, **overrides):
    """A transformers GPT2Config with the same shape as a gptlearn preset."""
    from transformers import GPT2Config

    from gptlearn import GPTConfig

    d = GPTConfig.from_preset(preset, **overrides).to_hf_dict()
    d = {k: v for k, v in d.items() if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
    return GPT2Config(**d)


def random_model_dir(preset: str, directory: Path, *, tokenizer: bool = False, **overrides) -> Path:
    """Save a randomly initialised transformers GPT-2 to ``directory`` (both sides then load it)."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(hf_config(preset, **overrides))
    hf.save_pretrained(directory)
    if tokenizer:
        save_gpt2_tokenizer(directory)
    return directory


def save_gpt2_tokenizer(directory: Path) -> None:
    """Write GPT-2's tokenizer files (from gptlearn's bundled copy) so transformers can load the folder."""
    from transformers import AutoTokenizer

    assets = ROOT / "gptlearn" / "assets" / "gpt2"
    (Path(directory) / "vocab.json").write_text((assets / "encoder.json").read_text())
    (Path(directory) / "merges.txt").write_text((assets / "vocab.bpe").read_text())
    tok = AutoTokenizer.from_pretrained(directory)
    if tok("Hello world")["input_ids"] != [15496, 995]:
        raise RuntimeError("transformers did not load GPT-2's tokenizer from the bundled files")
    tok.pad_token = tok.eos_token
    tok.save_pretrained(directory)


def load_hf(directory: Path, device: torch.device):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(directory).to(device).eval()


def load_gptlearn(directory: Path, device: torch.device):
    import gptlearn

    return gptlearn.GPT.from_pretrained(directory).to(device).eval()


# ---- memory ---------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class PeakMemory:
    """Peak memory of the code inside ``with`` (MiB above the level when it started).

    CPU: resets the kernel's RSS high-water mark (/proc/self/clear_refs) and reads VmHWM afterwards.
    CUDA: torch.cuda.max_memory_allocated. ``total_mib`` is the whole process's peak (RSS or allocated).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)

    def __enter__(self) -> "PeakMemory":
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _status_kb("VmHWM") * 1024
        self.total_mib = peak / 2**20
        self.delta_mib = (peak - self.base) / 2**20


def measure_memory_side(args: argparse.Namespace, prepare: Callable[[], Callable[[], object]], *,
                        warmup: bool = True) -> None:
    """Child-process half of ``--memory``: build one side, then report the peak of one run of it."""
    run = prepare()
    if warmup:
        run()  # lazy initialisation is not the workload
    from gptlearn.fast.memory import release_reused

    release_reused()  # memory gptlearn kept from the warm-up for reuse is counted in the measured run again
    with PeakMemory(torch.device(args.device)) as pm:
        run()
    print("MEMORY " + json.dumps({"side": args.side, "delta_mib": round(pm.delta_mib, 1),
                                  "total_mib": round(pm.total_mib, 1)}), flush=True)


def memory_in_subprocesses(script: str, args: argparse.Namespace, sides: list[str],
                           model_dir: Path | None = None) -> dict[str, dict]:
    """Run ``script --side S`` once per side in a fresh interpreter; -> {side: {delta_mib, total_mib}}."""
    out = {}
    for side in sides:
        cmd = [sys.executable, script, "--side", side, "--device", args.device]
        if args.smoke:
            cmd.append("--smoke")
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        if args.bf16:
            cmd.append("--bf16")
        if model_dir is not None:
            cmd += ["--model-dir", str(model_dir)]
        cmd += getattr(args, "extra_child_args", [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("MEMORY ")]
        if res.returncode != 0 or not lines:
            raise RuntimeError(f"memory run of {script} --side {side} failed:\n{res.stderr[-2000:]}")
        out[side] = json.loads(lines[-1][len("MEMORY "):])
    return out


def emit(row: dict, *, times: dict[str, list[float]], reps: int, memory: dict) -> dict:
    """Print one result row as ``RESULT {json}`` (what run_all.py and the smoke test parse), with the
    fields every row shares: the spread of each contender's timings, the repetitions and peak memory."""
    row = {"date": time.strftime("%Y-%m-%d %H:%M"), **row,
           "spread": {k: round(spread(v), 3) for k, v in times.items()}, "reps": reps, "memory": memory}
    print("RESULT " + json.dumps(row), flush=True)
    return row


# ---- one contest: the skeleton of every benchmark's main() -----------------------------------------------
def settings(args: argparse.Namespace, device: torch.device | str) -> dict:
    """The fields every model row starts with: where it ran, in which dtype, on how many threads."""
    return {"device": str(device), "dtype": "bf16-autocast" if args.bf16 else "fp32",
            "threads": torch.get_num_threads()}


class Contest:
    """What :func:`contest` measured: seconds per rep of each side and probe (``times``), what ``check`` said
    of the sides' first outputs (``checked``) and each side's peak memory (``memory``, empty without
    ``--memory``). Rates and shares of a bound are read from the medians. Timings taken another way (an
    extra round with other reps, a browser's own clock) are read the same way through ``Contest(times)``."""

    def __init__(self, times: dict[str, list[float]], *, reps: int | None = None, checked: object = None,
                 memory: dict | None = None) -> None:
        self.times, self.reps, self.checked, self.memory = times, reps, checked, memory or {}

    def med(self, name: str) -> float:
        """Median seconds per rep of ``name``."""
        return med(self.times[name])

    def rate(self, name: str, work: float) -> float:
        """``work`` (FLOPs, bytes, tokens, sentences) done per second by ``name``."""
        return work / self.med(name)

    def speedup(self, ours: str, theirs: str) -> float:
        """How many times faster ``ours`` ran than ``theirs`` (> 1: ours is faster)."""
        return self.med(theirs) / self.med(ours)

    def roofline(self, name: str, work: float, bound: float) -> float:
        """The share of the hardware ``bound`` (work per second) that ``name`` reached doing ``work`` a rep."""
        return self.rate(name, work) / bound

    def emit(self, row: dict, sides: dict[str, str] | None = None) -> dict:
        """Print ``row`` with the spread and memory of every timing, or of ``sides`` ({shown as: timed as})."""
        if sides is None:
            return emit(row, times=self.times, reps=self.reps, memory=self.memory)
        return emit(row, times={k: self.times[v] for k, v in sides.items()}, reps=self.reps,
                    memory={k: self.memory[v] for k, v in sides.items() if v in self.memory})


def contest(args: argparse.Namespace, device: torch.device | str, sides: dict[str, Callable[[], object]], *,
            check: Callable[[dict[str, object]], object] | None = None,
            probes: dict[str, Callable[[], object]] | None = None, script: str | None = None,
            model_dir: Path | None = None, memory_sides: list[str] | None = None) -> Contest:
    """Ours against the reference in one run: each side runs once and ``check`` compares their outputs
    ({side: output} -> what the row reports: a logit difference, the same tokens; the pass also warms every
    side up), then the sides and the roofline ``probes`` are timed :func:`interleaved`, and with ``--memory``
    each side (or each of ``memory_sides``) is measured in a fresh process of ``script``."""
    outputs = {name: run() for name, run in sides.items()}
    checked = check(outputs) if check is not None else None
    del outputs  # a side's output (a batch of logits) is not kept while the others are timed
    times = interleaved({**sides, **(probes or {})}, reps=args.reps, warmup=args.warmup, device=device)
    memory = {}
    if args.memory and script is not None:
        memory = memory_in_subprocesses(script, args, memory_sides or list(sides), model_dir)
    return Contest(times, reps=args.reps, checked=checked, memory=memory)


def machine() -> str:
    """A one-line description of the hardware the numbers came from."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    s = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        s += f", {torch.cuda.get_device_name()}"
    return s
