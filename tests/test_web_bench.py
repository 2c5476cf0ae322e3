"""bench/bench_web.py runs and prints a well-formed row (no timing assertions): the page's forward pass in
headless Chromium beside PyTorch's, and the longest main-thread task while typing."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_bench_web_smoke():
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is missing")
    res = subprocess.run([sys.executable, str(BENCH / "bench_web.py"), "--smoke"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(ln[len("RESULT "):]) for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert [r["row"] for r in rows] == ["web"]
    row = rows[0]
    for key in ("page_ms", "torch_ms", "page_plain_js_ms", "simd_speedup", "page_gflops", "gemm_gflops_1core",
                "page_roofline",
                "longest_task_ms_worker", "longest_task_ms_page"):
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] >= 0, (key, row[key])
    assert row["max_abs_logit_diff"] < 1e-3
    assert row["typed_tokens"] > 0
