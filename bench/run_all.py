"""Run every benchmark (each in a fresh process) and write bench/results.json and bench/results.md.

    python bench/run_all.py [--device cuda] [--threads N] [--memory] [--smoke] [--only forward,generate]

Extra flags after ``--`` go to every script, e.g. ``python bench/run_all.py -- --reps 9``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

SCRIPTS = {
    "forward": "bench_forward.py",
    "generate": "bench_generate.py",
    "train": "bench_train.py",
    "embed": "bench_embed.py",
    "embedder": "bench_embedder.py",
    "tokenizer": "bench_tokenizer.py",
}


def run_script(name: str, flags: list[str]) -> list[dict]:
    cmd = [sys.executable, str(HERE / SCRIPTS[name]), *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    rows = [json.loads(ln[len("RESULT "):]) for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode != 0 or not rows:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return rows


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def mem(row: dict) -> str:
    m = row.get("memory") or {}
    return " / ".join(f"{v['delta_mib']:.0f}" for v in m.values()) if m else "-"


def table(rows: list[dict]) -> str:
    """One markdown line per result: what was measured, both sides, the ratio, % of this machine's roofline."""
    lines = ["| row | shape | gptlearn | reference | ratio (gptlearn faster by) | gptlearn % roofline | "
             "reference % roofline | check | peak MiB (gptlearn / ref) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind = r["row"]
        if kind == "forward":
            g, ref = f"{r['gptlearn_s'] * 1e3:.0f} ms", f"{r['transformers_s'] * 1e3:.0f} ms (transformers)"
            check = f"max logit diff {r['max_abs_logit_diff']:.1e}; GEMM {r['gemm_gflops']:.0f} GFLOP/s"
        elif kind == "generate":
            g = f"{r['gptlearn_tok_s']:.1f} tok/s (no cache {r['gptlearn_nocache_tok_s']:.1f})"
            ref = f"{r['transformers_tok_s']:.1f} tok/s (transformers)"
            best_mv = max(r["matvec_gb_s"], r["vecmat_gb_s"], r["split_matvec_gb_s"])
            check = (f"same tokens {100 * r['same_tokens']:.0f}%; stream bound {r['bound_tok_s']:.0f} tok/s "
                     f"({r['bandwidth_gb_s']:.1f} GB/s); best mat-vec probe {best_mv:.1f} GB/s "
                     f"({100 * best_mv / r['bandwidth_gb_s']:.0f}% of the stream); cache speeds up "
                     f"{r['cache_speedup']:.1f}x at {r['cache_speedup_at']} tokens")
        elif kind == "generate-fused":
            g = f"{r['gptlearn_tok_s']:.1f} tok/s (eager {r['eager_tok_s']:.1f})"
            ref = f"{r['transformers_tok_s']:.1f} tok/s (transformers)"
            check = (f"same tokens {100 * r['same_tokens']:.0f}%; stream bound {r['bound_tok_s']:.0f} tok/s "
                     f"({r['bandwidth_gb_s']:.1f} GB/s); {r['fused_vs_eager']:.2f}x the eager step")
        elif kind.startswith("train"):
            g, ref = f"{r['gptlearn_tok_s']:.0f} tok/s", f"{r['transformers_tok_s']:.0f} tok/s (transformers)"
            check = (f"first loss {r['first_loss'][0]:.4f} vs {r['first_loss'][1]:.4f}; "
                     f"GEMM {r['gemm_gflops']:.0f} GFLOP/s")
        elif kind == "embed":
            g, ref = f"{r['gptlearn_sent_s']:.0f} sent/s", f"{r['st_sent_s']:.0f} sent/s (sentence-transformers)"
            check = f"min cosine {r['min_cosine']:.6f}"
        elif kind == "embedder":
            g, ref = f"{r['gptlearn_sent_s']:.0f} sent/s", f"{r['st_sent_s']:.0f} sent/s (all-MiniLM-L6-v2)"
            check = f"dev Spearman {r['gptlearn_spearman']:.3f} vs {r['st_spearman']:.3f} on {r['pairs']} pairs"
        elif kind == "tokenizer":
            g = f"{r['gptlearn_mb_s']:.2f} MB/s (BPETokenizer {r['gptlearn_bpe_mb_s']:.3f} MB/s)"
            ref = f"{r['tiktoken_mb_s']:.2f} MB/s (tiktoken)"
            check = f"same ids {r['same_ids']}; BPETokenizer = {100 * r['bpe_vs_tiktoken']:.1f}% of tiktoken"
        else:
            continue
        lines.append(f"| {kind} | {r['shape']} | {g} | {ref} | {r['speedup']:.2f}x | {pct(r.get('gptlearn_roofline'))} "
                     "| "
                     f"{pct(r.get('transformers_roofline'))} | {check} | {mem(r)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--memory", action="store_true", help="peak memory per side (fresh process each)")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset of " + ",".join(SCRIPTS))
    p.add_argument("--out", default=str(HERE / "results"), help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    flags = ["--device", args.device, *(["--threads", str(args.threads)] if args.threads else []),
             *(["--memory"] if args.memory else []), *(["--smoke"] if args.smoke else []), *extra]
    rows: list[dict] = []
    out = Path(args.out)
    for name in args.only.split(","):
        t0 = time.time()
        rows += run_script(name, flags)
        print(f"{name}: done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        out.with_suffix(".partial.json").write_text(json.dumps(rows, indent=1))  # survives a later failure
    out.with_suffix(".partial.json").unlink()
    header = (f"Command: `python bench/run_all.py {' '.join(sys.argv[1:] if argv is None else argv)}`  \n"
              f"Machine: {common.machine()}  \nDate: {time.strftime('%Y-%m-%d %H:%M')}\n")
    md = header + "\n" + table(rows) + "\n"
    out.with_suffix(".json").write_text(json.dumps({"machine": common.machine(), "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
