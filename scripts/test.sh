#!/usr/bin/env bash
# Runs every test: the Rust workspace (fmt, clippy, tests) and pytest against a freshly
# installed beamvm. Installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== system packages"
# Installs what the tests drive for real, with apt-get when missing (as root):
# tmux: tests/test_top_cli.py drives `python -m beamvm top` in a real terminal.
# erlang-base (erl, epmd, escript; OTP 25 on Debian 12): crates/vm-dist's tests talk to real
#   nodes; tests/test_b11_runner.py runs the gen_tcp peer server of B11.
# chromium: tests/test_observer_browser.py loads the web observer in a real browser.
apt_install() { # package command
  if ! command -v "$2" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq || true; APT_UPDATED=1; fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null \
        || echo "warning: could not install $1; the tests that need $2 will be skipped (fail under CI=true)"
    else
      echo "warning: $2 missing and cannot be installed here; the tests that need it will be skipped (fail under CI=true)"
    fi
  fi
}
apt_install tmux tmux
apt_install erlang-base erl
apt_install chromium chromium
if command -v erl >/dev/null 2>&1; then
  # erl is here: the distribution tests must run, not skip.
  export VM_DIST_REQUIRE_ERL=1
fi
if [ "${CI:-}" = "true" ]; then
  # In CI the browser and terminal tests must run: a failed install above makes
  # tests/test_observer_browser.py and tests/test_top_cli.py::test_top_in_a_terminal
  # fail instead of skipping silently.
  export VM_REQUIRE_BROWSER=1 VM_REQUIRE_TMUX=1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== loom model checks (vm-core's inbox and run state word, vm-python's interpreter-exit gate)"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3} RUSTFLAGS="--cfg loom" \
  cargo test --release -p vm-core -p vm-python --lib loom --target-dir target/loom

# The Python suite runs once per supported CPython (3.11, 3.12, 3.13; override with
# BEAMVM_PYTHON_VERSIONS="3.12" for instance). Each version gets its own venv
# (.venv-3.X) and its own release build of the extension, made by `pip install .` as a
# user gets it: after the first, a build costs ~25 s of CPU (vm-core's objects are
# reused; only pyo3 and the extension are rebuilt for the interpreter), which beats an
# abi3 wheel's cost in speed (it would forbid the C API's fast paths) and tests what
# each version's users install.
VERSIONS=${BEAMVM_PYTHON_VERSIONS:-"3.11 3.12 3.13"}

# A CPython of version $1: pyenv's if present (this project's machines), else one on
# PATH (python3.X, or python3 if it is that version), else one that uv installs (uv is
# the only way to get another CPython on a bare Debian box without compiling it).
find_python() {
  local v=$1 p
  for p in $(ls -d "$HOME"/.pyenv/versions/"$v".*/bin/python 2>/dev/null | sort -V -r); do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  for p in "python$v" python3; do
    if command -v "$p" >/dev/null 2>&1 \
      && [ "$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$v" ]; then
      command -v "$p"
      return 0
    fi
  done
  if [ ! -x .venv-tools/bin/uv ]; then
    "${PYTHON:-python3}" -m venv .venv-tools >&2
    .venv-tools/bin/python -m pip install -q "uv>=0.5,<1" >&2
  fi
  .venv-tools/bin/uv python install "$v" >&2 || return 1
  .venv-tools/bin/uv python find "$v"
}

FIRST=
for v in $VERSIONS; do
  echo "== CPython $v"
  if ! PY=$(find_python "$v"); then
    echo "error: no CPython $v here and it could not be installed" >&2
    exit 1
  fi
  echo "   using $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
  VENV=.venv-$v
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # prometheus_client: its parser checks /metrics (tests/test_web_observer.py).
  # coverage: `coverage run` must measure process code (tests/test_trace.py).
  "$VENV/bin/python" -m pip install -q "maturin>=1.5,<2" "pytest>=7" ruff "mypy>=2.4,<3" \
    "prometheus_client>=0.17" "coverage>=7"
  if [ -z "$FIRST" ]; then
    FIRST=$VENV
    echo "== ruff"
    "$VENV/bin/ruff" check python tests benches examples
  fi
  echo "== build and install beamvm for CPython $v"
  "$VENV/bin/python" -m pip install -q .
  echo "== stubtest (_native.pyi against the built module), CPython $v"
  "$VENV/bin/python" -m mypy.stubtest beamvm._native
  echo "== pytest, CPython $v"
  "$VENV/bin/python" -m pytest -q tests
done
