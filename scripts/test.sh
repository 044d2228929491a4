#!/usr/bin/env bash
# Runs every test: the Rust workspace (fmt, clippy, tests) and pytest against a freshly
# installed beamvm. Installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== loom model check of the lock-free inbox"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3} RUSTFLAGS="--cfg loom" \
  cargo test --release -p vm-core --lib loom --target-dir target/loom

echo "== system packages"
# tmux: tests/test_top_cli.py drives `python -m beamvm top` in a real terminal.
# chromium: tests/test_observer_browser.py loads the web observer in a real browser.
apt_install() { # COMMAND PACKAGE WHAT
  command -v "$1" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { [ -n "${APT_UPDATED:-}" ] || apt-get update -qq; } && APT_UPDATED=1 \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null \
      || echo "warning: could not install $2; the $3 test will be skipped"
  else
    echo "warning: $2 missing and cannot be installed here; the $3 test will be skipped"
  fi
}
apt_install tmux tmux terminal
apt_install chromium chromium browser

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
