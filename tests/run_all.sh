#!/usr/bin/env bash
# The test command: installs what the tests need into a fresh virtual environment, then runs every suite.
# Usage (from anywhere): bash tests/run_all.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${FASTCNN_TEST_VENV:-.venv-test}"
python="${PYTHON:-python3}"

echo "== fastcnn tests: creating ${venv}"
rm -rf "${venv}"
"${python}" -m venv "${venv}"
pip=("${venv}/bin/python" -m pip install --quiet --disable-pip-version-check)

echo "== installing fastcnn with its test extras (builds the C++ extension)"
# torch==2.13.0 is only used to cross-check results; that exact version is the one available offline here.
"${pip[@]}" ".[test,torch]"

echo "== running the test suites"
# The package sources live under python/, so from the repository root the tests import the installed package.
exec "${venv}/bin/python" -m pytest -p no:cacheprovider "$@"
