#!/usr/bin/env bash
# Check the supported Pythons, 3.10-3.13. For each interpreter found (python3.X on PATH or under pyenv):
# every gptlearn source file compiles; pip resolves the package with all its extras (pyproject's ranges:
# requires-python, ">=3.10") and, separately, the course's pinned requirements-dev.txt (torch included;
# what scripts/setup.sh installs, which needs 3.11+), without installing anything (pip's --dry-run; needs
# the package index). Minutes, so it is a script and not a test; tests/test_python_versions.py does the
# fast part (compiling) in the test suite.
# Usage: bash scripts/check_pythons.sh [3.10 3.12 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.11 3.12 3.13)
failed=0
for v in "${versions[@]}"; do
  py=""
  for candidate in $(command -v "python$v" || true) $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python 2>/dev/null); do
    if "$candidate" -c 'import sys' >/dev/null 2>&1; then py=$candidate; break; fi  # a pyenv shim may not run
  done
  if [ -z "$py" ]; then
    echo "python $v: not found (install it, e.g. pyenv install $v)"; failed=1; continue
  fi
  tmp=$(mktemp -d)
  if ! "$py" scripts/compile_all.py gptlearn
  then echo "python $v ($py): FAILED to compile"; failed=1; rm -rf "$tmp"; continue; fi
  echo "python $v ($py): compiles"
  for what in package pins; do
    if [ $what = package ]; then args=(".[book,teacher,test]"); else args=(-r requirements-dev.txt); fi
    if "$py" -m pip install -q --dry-run --ignore-installed --report "$tmp/$what.json" "${args[@]}" >"$tmp/log" 2>&1; then
      n=$("$py" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["install"]))' "$tmp/$what.json")
      echo "python $v ($py): $what: resolves to $n packages"
    else
      echo "python $v ($py): $what: pip cannot resolve it:"; grep -v "^WARNING: Location" "$tmp/log" | tail -1 | cut -c1-300
      failed=1
    fi
  done
  rm -rf "$tmp"
done
exit $failed
