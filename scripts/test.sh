#!/usr/bin/env bash
# The project's one test command, run by CI (.ci/run) and by developers:
# installs what the tests need when it is missing, then checks formatting,
# lints, runs the unit and integration tests, and the end-to-end tests: Locust,
# the container image (podman) and the systemd unit (under systemd-nspawn).
# Exits non-zero on any failure. The last two need root; run as another user,
# they are skipped with a note (CI, which runs as root, fails instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/install-influxdb.sh
source scripts/lib/install-influxdb.sh
# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh

step() {
    printf '\n==> %s\n' "$*"
}

step "Checking the toolchain"
command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install Rust (https://rustup.rs), then rerun"
cargo fmt --version >/dev/null 2>&1 ||
    die "rustfmt not found: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 ||
    die "clippy not found: rustup component add clippy"
cargo --version

step "Installing test dependencies (influxd, curl, openssl, shellcheck, chromium, systemd-analyze, python3-venv, podman, runc, debootstrap, systemd-nspawn; Locust and ruff from PyPI) when missing"
ensure_influxd
ensure_tools
ensure_chromium
ensure_systemd_analyze
ensure_python_venv
ensure_test_venv
if [ "$(id -u)" -eq 0 ]; then
    ensure_deploy_tools
fi
"$(influxd_path)" version

# The integration tests open hundreds of sockets at once (connection-limit
# tests go past 600), more than the common default of 1024 leaves room for.
step "Raising the open-file limit"
min_files=4096
current=$(ulimit -n)
if [ "$current" != unlimited ] && [ "$current" -lt "$min_files" ]; then
    ulimit -n "$min_files" 2>/dev/null ||
        die "cannot raise the open-file limit to $min_files (hard limit: $(ulimit -Hn)); raise it, e.g. in /etc/security/limits.conf"
fi
echo "open files: $(ulimit -n)"

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# The profiles of .config/nextest.toml (the real-time tests apart, one at a time) need
# cargo-nextest: `cargo test` would run them beside everything else.
if ! cargo nextest --version >/dev/null 2>&1; then
    step "Installing cargo-nextest (cargo install --locked cargo-nextest)"
    cargo install --locked cargo-nextest ||
        die "cannot install cargo-nextest; install it (https://nexte.st) and run again"
fi
step "Tests: cargo nextest run --all-targets --no-fail-fast"
cargo nextest run --all-targets --no-fail-fast
# The tests that measure real time, one at a time (.config/nextest.toml).
step "Real-time fairness tests: cargo nextest run --profile slow --no-fail-fast"
cargo nextest run --profile slow --no-fail-fast

step "End to end: Locust plugin and Grafana dashboard (scripts/e2e-locust.sh)"
scripts/e2e-locust.sh

if [ "$(id -u)" -eq 0 ]; then
    step "End to end: the container image with podman (scripts/container-e2e.sh)"
    scripts/container-e2e.sh
    step "End to end: the systemd unit under systemd in systemd-nspawn (scripts/systemd-e2e.sh)"
    scripts/systemd-e2e.sh
elif [ -n "${CI:-}" ]; then
    die "the container and systemd end-to-end tests need root, and CI must run them: run scripts/test.sh as root"
else
    step "SKIPPED: scripts/container-e2e.sh and scripts/systemd-e2e.sh need root (podman, systemd-nspawn); run them as root, as CI does"
fi

step "All checks passed"
