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
echo "== loom model checks (vm-core's inbox, vm-python's interpreter-exit gate)"
LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-3} RUSTFLAGS="--cfg loom" \
  cargo test --release -p vm-core -p vm-python --lib loom --target-dir target/loom

echo "== system packages"
# tmux: tests/test_top_cli.py drives `python -m beamvm top` in a real terminal.
if ! command -v tmux >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null \
      || echo "warning: could not install tmux; the terminal test will be skipped"
  else
    echo "warning: tmux missing and cannot be installed here; the terminal test will be skipped"
  fi
fi

echo "== python environment"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "maturin>=1.5,<2" "pytest>=7" ruff
echo "== ruff"
.venv/bin/ruff check python tests benches examples
echo "== build and install beamvm"
.venv/bin/python -m pip install -q .
echo "== pytest"
.venv/bin/python -m pytest -q tests
