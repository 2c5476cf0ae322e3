#!/usr/bin/env bash
# The GPU check (issue 20): proves gptlearn on a CUDA GPU and measures it, in one command of at most
# 8 minutes. scripts/gpu_check.py holds the steps; bench/README.md ("The GPU check") what to do with the results.
#
# 1. Here, before the run (copies TinyShakespeare and STS-B dev into .gpu_carry/, which git ignores):
#        bash scripts/gpu_check.sh --prepare
# 2. The device tool's call, exactly as written (one call, ~8 minutes; the machine starts in a minute or two):
#        run(command="bash scripts/gpu_check.sh", carry=[".gpu_carry"], timeout_s=540)
#    It writes $OUT/gpu_check.md (the report), gpu_check.json, gpu_check.log, bench.{json,md} and
#    bench_bf16.{json,md}. Then call give_back, unless a step is to be run again at once, e.g.
#        run(command="bash scripts/gpu_check.sh --only tests,generate", carry=[".gpu_carry"], timeout_s=300)
# On the CPU, the same steps with tiny sizes (tests/test_gpu_check.py runs this in CI):
#        bash scripts/gpu_check.sh --dry-run --out /tmp/gpu-check
#
# The GPU machine reaches no network. Its image brings Python 3.12 with torch 2.11 built for CUDA 13.0
# (its driver's), transformers, sentence-transformers, tiktoken and pytest, so the check installs only the
# project (pip install -e ., offline). A CUDA build of torch (~1 GB) is far over what `carry` takes
# (64 MiB): on a machine without one, the env step says so and the other steps do not start. Other
# packages can travel as wheels: `bash scripts/gpu_check.sh --prepare --wheels "NAME==VERSION ..."`
# downloads them for that machine into .gpu_carry/whl, and the install step puts them first on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's gptlearn, whatever else is installed
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
