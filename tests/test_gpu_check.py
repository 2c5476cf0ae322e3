"""scripts/gpu_check.sh: the GPU check's CPU dry run writes a report that says something real, and its
driver handles bad input, a spent time budget and the checks on benchmark rows.

The dry run is the GPU run's code path with tiny sizes on the CPU (every step in its own process), so a
mistake in the script shows here before a lent GPU's minutes are spent on it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def run(*args: str, timeout: float = 1500, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable, **env})  # this interpreter, not PATH's


@pytest.mark.slow
def test_dry_run_runs_every_step_and_reports_what_it_measured(tmp_path, data_dir):
    out = tmp_path / "out"
    r = run("--dry-run", "--out", str(out), GPTLEARN_DATA_DIR=str(data_dir))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # at most 8 files come back from the device tool
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md", "bench_bf16.json", "bench_bf16.md",
                                                     "gpu_check.json", "gpu_check.log", "gpu_check.md"]
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert list(steps) == gpu_check.STEP_NAMES and all(s["status"] == "pass" for s in steps.values()), \
        {k: (s["status"], s["summary"]) for k, s in steps.items()}
    assert report["verdict"] == f"{len(gpu_check.STEP_NAMES)} of {len(gpu_check.STEP_NAMES)} steps passed"

    assert steps["env"]["data"]["gptlearn"] == str(REPO / "gptlearn")  # this checkout's code ran
    tests = steps["tests"]["data"]  # on the CPU every cuda test is collected and skipped, none fails
    assert "tests/test_cuda.py" in tests["files"] and tests["counts"]["skipped"] >= 11
    assert tests["counts"]["passed"] == tests["counts"]["failed"] == tests["counts"]["error"] == 0
    assert all("CUDA" in c["message"] or "GPU" in c["message"] for c in tests["cases"])

    gen = steps["generate"]["data"]
    assert [r["run"] for r in gen["runs"]][:3] == ["fp32, KV cache, batch 1", "fp32, no cache, batch 1",
                                                   "fp32, KV cache, batch 4"]
    assert all(r["same"] == 1.0 and r["first_difference"] is None and r["tok_s"] > 0 for r in gen["runs"])

    tr = steps["train"]["data"]
    assert tr["last_loss"] < tr["first_loss"] - 0.3 and tr["autocast_dtype"] == "torch.float32" and tr["tok_s"] > 0

    em = steps["embed"]["data"]
    assert em["parity"]["min_cosine"] > 0.99999 and em["sentences"] == 64
    assert len(em["rows"]) == 4 and all(r["sent_s"] > 0 for r in em["rows"])

    roof = steps["roofline"]["data"]
    assert all(roof[k] > 0 for k in ("gemm_bf16_tflops", "gemm_fp32_tflops", "read_gb_s", "copy_gb_s"))

    fp32, bf16 = steps["bench"]["data"]["rows"], steps["bench_bf16"]["data"]["rows"]
    assert [r["row"] for r in fp32] == [r["row"] for r in bf16] == ["forward"]
    assert fp32[0]["dtype"] == "fp32" and fp32[0]["max_abs_logit_diff"] < 1e-3 and fp32[0]["speedup"] > 0
    assert bf16[0]["dtype"] == "bf16-autocast"
    assert json.loads((out / "bench.json").read_text())["rows"] == fp32

    md = (out / "gpu_check.md").read_text()
    for heading in ("## The GPU's ceilings", "## Tests", "## Greedy tokens against the CPU", "## Training run",
                    "## Embedder.encode", "## bench/run_all.py: fp32", "## bench/run_all.py: bf16"):
        assert heading in md
    log = (out / "gpu_check.log").read_text()
    assert all(f"==== {name} " in log for name in gpu_check.STEP_NAMES)


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "OUT"}, "PYTHON": sys.executable}
    for args, says in ((["--dry-run"], "say where the results go"),
                       (["--out", str(tmp_path), "--only", "env,nonsense"], "unknown steps nonsense"),
                       (["--out", str(tmp_path), "--budget", "-5"], "--budget must be a positive")):
        r = subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 2 and r.stderr.startswith(f"gpu_check: error: {says}"), r.stderr
        assert len(r.stderr.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written before the input was checked


def test_help_lists_every_step_in_order_with_its_limit():
    """--help prints the one list of steps: each name, its time limit and what it proves, in running order."""
    r = run("--help", timeout=120)
    assert r.returncode == 0, r.stderr
    rows = r.stdout[r.stdout.index("steps (in order):"):].splitlines()[1:]
    assert [row.split()[0] for row in rows] == gpu_check.STEP_NAMES
    assert [int(row.split()[1]) for row in rows] == [step.limit_s for step in gpu_check.STEPS]
    assert all(callable(step.run) and step.proves for step in gpu_check.STEPS)


def test_a_spent_budget_skips_steps_and_still_writes_the_report(tmp_path):
    r = run("--dry-run", "--out", str(tmp_path), "--only", "env,tests", "--budget", "1", timeout=120)
    assert r.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {k: s["status"] for k, s in report["steps"].items()} == {"env": "skipped", "tests": "skipped"}
    assert "out of time" in report["steps"]["env"]["summary"]
    assert "0 of 2 steps passed" in (tmp_path / "gpu_check.md").read_text()


def test_an_env_failure_stops_the_steps_that_need_it(tmp_path, monkeypatch):
    """Without CUDA the real (not dry) env step fails, and every later step is skipped, not run."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the env step would pass")
    r = run("--out", str(tmp_path), "--only", "env,tests,generate", timeout=180)
    assert r.returncode == 1
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert steps["env"]["status"] == "fail" and "sees no CUDA GPU" in steps["env"]["summary"]
    assert steps["tests"]["status"] == steps["generate"]["status"] == "skipped"


def test_bench_row_checks_catch_wrong_answers_whatever_the_speed():
    good = {"row": "forward", "max_abs_logit_diff": 2e-5}
    assert gpu_check.bench_row_problems(good, bf16=False) == []
    assert gpu_check.bench_row_problems({**good, "max_abs_logit_diff": 0.3}, bf16=False) \
        == ["forward: logits differ by 3.0e-01"]
    assert gpu_check.bench_row_problems({**good, "max_abs_logit_diff": 0.3}, bf16=True) == []  # bf16 rounds
    assert gpu_check.bench_row_problems({"row": "generate", "same_tokens": 0.75}, bf16=False) \
        == ["generate: 75% same tokens"]
    assert gpu_check.bench_row_problems({"row": "embed", "min_cosine": 0.9995}, bf16=True) == []
    assert gpu_check.bench_row_problems({"row": "embed", "min_cosine": 0.98}, bf16=True) \
        == ["embed: min cosine 0.980000"]
    assert gpu_check.bench_row_problems({"row": "train-mini", "first_loss": [10.8, 10.9]}, bf16=False) \
        == ["train-mini: first losses [10.8, 10.9]"]


def test_first_difference_finds_the_earliest_column_over_all_rows():
    torch = pytest.importorskip("torch")
    a = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert gpu_check.first_difference(a, a.clone()) is None
    b = a.clone()
    b[1, 2], b[0, 3] = 0, 0
    assert gpu_check.first_difference(a, b) == 2


def test_the_report_names_failures_near_ties_and_the_end_of_a_failed_steps_output(tmp_path):
    gen = {"model": "gptlearn-mini", "prompt": 16, "new": 316, "runs": [
        {"run": "fp32, KV cache, batch 1", "same": 1.0, "first_difference": None, "tok_s": 900.0},
        {"run": "fp32, no cache, batch 1", "same": 0.5, "first_difference": 158, "cpu_margin": 3e-5,
         "near_tie": True, "tok_s": 400.0}]}
    report = {"mode": "CUDA", "command": "bash scripts/gpu_check.sh", "started": "2026-12-02 10:00:00",
              "budget_s": 450, "selected": ["env", "generate", "train"], "out": str(tmp_path), "t0": 0.0,
              "steps": {"env": {"status": "pass", "seconds": 3.0, "summary": "NVIDIA H200",
                                "data": {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "packages": {}}},
                        "generate": {"status": "pass", "seconds": 20.0, "summary": "s", "data": gen},
                        "train": {"status": "timeout", "seconds": 90.0, "summary": "stopped after its limit of 90 s",
                                  "log_tail": "step 120: loss 2.1"}}}
    gpu_check.write_report(report, tmp_path)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "**2 of 3 steps passed; not passed: train**" in md
    assert "| fp32, no cache, batch 1 | 50.0% | 158 (3.00e-05, near tie) | 400 |" in md
    assert "## train: the end of its output" in md and "step 120: loss 2.1" in md
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["verdict"].startswith("2 of 3") and "t0" not in saved
