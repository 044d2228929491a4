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
        || echo "warning: could not install $1; the tests that need $2 will be skipped"
    else
      echo "warning: $2 missing and cannot be installed here; the tests that need it will be skipped"
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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== loom model checks (the inbox and run state word)"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3} RUSTFLAGS="--cfg loom" \
  cargo test --release -p vm-core --lib loom --target-dir target/loom

echo "== python environment"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# prometheus_client: its parser checks /metrics (tests/test_web_observer.py).
.venv/bin/python -m pip install -q "maturin>=1.5,<2" "pytest>=7" ruff "prometheus_client>=0.17"
echo "== ruff"
.venv/bin/ruff check python tests benches examples
echo "== build and install beamvm"
.venv/bin/python -m pip install -q .
echo "== pytest"
.venv/bin/python -m pytest -q tests
