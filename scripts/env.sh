# Sourced by setup.sh, build_book.sh and test.sh: which Python they install into and run.
# An active virtual environment (or conda environment) is used as it is; otherwise the repository's .venv,
# when setup.sh made one. `in_env` says whether some environment is active.
in_env() {
  [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] || "${PYTHON:-python3}" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'
}
use_venv() {  # what `source .venv/bin/activate` does, without touching the prompt
  export VIRTUAL_ENV="$(pwd)/.venv" PATH="$(pwd)/.venv/bin:$PATH"
  PYTHON="$VIRTUAL_ENV/bin/python"
}
if ! in_env && [ -x .venv/bin/python ]; then
  use_venv
fi
