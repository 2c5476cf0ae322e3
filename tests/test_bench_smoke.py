"""The benchmarks in bench/ run and print well-formed results (never timing assertions).

Each script's ``--smoke`` mode uses tiny shapes; it still imports torch and transformers in a fresh
process, so those tests are marked slow. The helpers are checked directly and quickly.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import run_all  # noqa: E402

# keys every row of each benchmark must carry, as finite positive numbers
NUMBERS = {
    "forward": ["gptlearn_s", "transformers_s", "speedup", "gemm_gflops", "gptlearn_roofline", "transformers_roofline"],
    "generate": ["gptlearn_tok_s", "transformers_tok_s", "gptlearn_nocache_tok_s", "speedup", "bound_tok_s",
                 "gptlearn_roofline", "transformers_roofline", "stream_sum_gb_s", "stream_max_gb_s",
                 "split_matvec_gb_s"],
    "generate-fused": ["gptlearn_tok_s", "eager_tok_s", "transformers_tok_s", "speedup", "fused_vs_eager",
                       "bound_tok_s", "gptlearn_roofline", "transformers_roofline"],
    "train-tiny": ["gptlearn_tok_s", "transformers_tok_s", "speedup", "gptlearn_roofline", "transformers_roofline"],
    "embed": ["gptlearn_sent_s", "st_sent_s", "speedup"],
    "embedder": ["gptlearn_sent_s", "st_sent_s", "speedup", "gptlearn_roofline", "transformers_roofline",
                 "gemm_gflops"],
    "tokenizer": ["gptlearn_mb_s", "tiktoken_mb_s", "gptlearn_bpe_mb_s", "speedup"],
}


def check_row(row: dict) -> None:
    assert row["row"] in NUMBERS, row["row"]
    for key in NUMBERS[row["row"]]:
        assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    assert set(row["spread"]) >= {"gptlearn"}


def test_interleaved_rotates_order_and_drops_warmup():
    calls: list[str] = []
    t = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # each round starts one further along
    assert {k: len(v) for k, v in t.items()} == {"a": 3, "b": 3}


def test_contest_checks_each_side_once_then_times_sides_and_probes_together():
    calls: list[str] = []
    sides = {"ours": lambda: calls.append("ours") or 1, "theirs": lambda: calls.append("theirs") or 2}
    args = argparse.Namespace(reps=3, warmup=1, memory=False)
    c = common.contest(args, "cpu", sides, check=lambda out: dict(out), probes={"probe": lambda: calls.append("p")})
    assert c.checked == {"ours": 1, "theirs": 2} and calls[:2] == ["ours", "theirs"]
    assert {k: calls.count(k) for k in ("ours", "theirs", "p")} == {"ours": 5, "theirs": 5, "p": 4}
    assert {k: len(v) for k, v in c.times.items()} == {"ours": 3, "theirs": 3, "probe": 3} and c.memory == {}


def test_contest_reads_ratios_and_shares_of_a_bound_from_medians(capsys):
    c = common.Contest({"a": [1.0, 3.0, 2.0], "b": [4.0, 5.0, 3.0]}, reps=3)
    assert c.med("a") == 2.0 and c.speedup("a", "b") == 2.0  # a's median is half of b's: a is 2x faster
    assert c.rate("a", 10.0) == 5.0 and c.roofline("a", 10.0, bound=20.0) == 0.25
    row = c.emit({"row": "x"}, sides={"gptlearn": "b"})
    assert row["spread"] == {"gptlearn": 0.5} and row["reps"] == 3 and row["memory"] == {}
    printed = json.loads(capsys.readouterr().out.removeprefix("RESULT "))
    assert printed["spread"] == {"gptlearn": 0.5}


def test_peak_memory_sees_an_allocation():
    with common.PeakMemory(torch.device("cpu")) as pm:
        x = torch.ones(16 * 2**20 // 4)  # 16 MiB, touched
        del x
    assert pm.delta_mib >= 12 and pm.total_mib > pm.delta_mib


def test_table_has_one_line_per_row():
    row = {"row": "embed", "shape": "s", "gptlearn_sent_s": 10.0, "st_sent_s": 5.0, "speedup": 2.0,
           "min_cosine": 0.99999, "memory": {"gptlearn": {"delta_mib": 3.0}, "st": {"delta_mib": 4.0}}}
    md = run_all.table([row])
    assert md.count("\n") == 2 and "| embed |" in md and "2.00x" in md and "3 / 4" in md


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(run_all.SCRIPTS.values()))
def test_smoke_mode_prints_results(script, data_dir):
    flags = ["--smoke", "--threads", "1"] + (["--memory"] if script == "bench_forward.py" else [])
    res = subprocess.run([sys.executable, str(BENCH / script), *flags], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(ln[len("RESULT "):]) for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert rows, res.stdout[-2000:]
    if script == "bench_generate.py":  # on the CPU the fused step gets a row of its own
        assert [r["row"] for r in rows] == ["generate", "generate-fused"]
    for row in rows:
        check_row(row)
        if row["row"] == "forward":
            assert row["max_abs_logit_diff"] < 1e-3  # same weights on both sides
            assert set(row["memory"]) == {"gptlearn", "transformers"}
        if row["row"].startswith("generate"):
            assert row["same_tokens"] == 1.0  # greedy on the same weights picks the same tokens
        if row["row"] == "generate":  # the bound is the stream probe's, and every rate is measured against it
            assert row["bandwidth_gb_s"] == max(row["stream_sum_gb_s"], row["stream_max_gb_s"])
            assert row["gptlearn_roofline"] == pytest.approx(row["gptlearn_tok_s"] / row["bound_tok_s"])
        if row["row"] == "embed":
            assert row["min_cosine"] > 0.999
        if row["row"] == "embedder":  # both models rank the few dev pairs among the timed sentences well
            # (6 pairs in smoke mode: which of the two ranks them better is noise; the full dev set is in
            # tests/test_gptlearn_embed.py)
            assert 0.7 < row["gptlearn_spearman"] <= 1 and 0.7 < row["st_spearman"] <= 1
        if row["row"] == "tokenizer":
            assert row["same_ids"] is True
        if row["row"].startswith("train"):
            assert row["first_loss"][0] == pytest.approx(row["first_loss"][1], rel=1e-4)


@pytest.mark.slow
def test_ab_smoke_compares_a_checkout_with_itself(data_dir):
    """bench_ab.py imports another checkout beside this one; against itself its rows run (the eager and
    fused decoding with the stream bound, a training step with the GEMM probe; forward and embed share
    their code paths and are left out to keep CI short)."""
    res = subprocess.run([sys.executable, str(BENCH / "bench_ab.py"), "--smoke", "--threads", "1",
                          "--rows", "generate,train-mini", "--before", str(BENCH.parent)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["row"]: r for r in (json.loads(ln[len("RESULT "):]) for ln in res.stdout.splitlines()
                                   if ln.startswith("RESULT "))}
    assert set(rows) == {"ab-generate", "ab-train-mini"}
    for row in rows.values():
        for key in ("after_vs_before", "speedup_before", "speedup_after"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["row"], key)
    gen = rows["ab-generate"]
    assert gen["bound_tok_s"] > 0 and set(gen["roofline"]) >= {"before", "after", "before_fused", "after_fused"}
    assert set(rows["ab-train-mini"]["roofline"]) == {"before", "after", "transformers"}
