# shellcheck shell=bash
# The Python virtualenv the tests use, under target/e2e-venv: Locust (the end-to-end test of
# the plugin), prometheus_client (reads /metrics in that test) and ruff (lints the Python in
# scripts/). Made once, reused, and made again when a pinned version changes.
# Sourced by scripts/test.sh and scripts/e2e-locust.sh after scripts/lib/install-influxdb.sh
# (for die).

LOCUST_VERSION=2.47.0
RUFF_VERSION=0.14.6
TEST_VENV=target/e2e-venv

# Makes or refreshes $TEST_VENV with the pinned packages.
ensure_test_venv() {
    if "$TEST_VENV/bin/python" - "$LOCUST_VERSION" "$RUFF_VERSION" >/dev/null 2>&1 <<'PY'; then
import subprocess, sys
import locust, prometheus_client  # noqa: F401
ruff = subprocess.run([sys.prefix + "/bin/ruff", "--version"], capture_output=True, text=True)
sys.exit(locust.__version__ != sys.argv[1] or ruff.stdout.split()[-1:] != [sys.argv[2]])
PY
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install python3 python3-venv"
    echo "creating $TEST_VENV with locust==$LOCUST_VERSION and ruff==$RUFF_VERSION"
    rm -rf "$TEST_VENV"
    python3 -c 'import ensurepip, venv' 2>/dev/null ||
        die "python3 cannot make virtualenvs: apt-get install python3-venv (scripts/test.sh installs it)"
    python3 -m venv "$TEST_VENV" || die "python3 -m venv $TEST_VENV failed: apt-get install python3-venv"
    "$TEST_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "locust==$LOCUST_VERSION" prometheus_client "ruff==$RUFF_VERSION" ||
        die "pip install locust==$LOCUST_VERSION ruff==$RUFF_VERSION failed (is PyPI reachable?)"
}
