# shellcheck shell=bash
# The Python virtualenv the tests use, under target/e2e-venv: Locust (the end-to-end test of
# the plugin), prometheus_client (reads /metrics in that test), ruff (lints the Python in
# scripts/) and the InfluxDB client libraries whose writes through the gateway tests/it/clients.rs
# checks: influxdb (v1), influxdb-client (v2), influxdb3-python (v3) and
# locust-influxdb-listener. Made once, reused, and made again when a pinned version changes.
# Sourced by scripts/test.sh and scripts/e2e-locust.sh after scripts/lib/install-influxdb.sh
# (for die).

LOCUST_VERSION=2.47.0
RUFF_VERSION=0.14.6
INFLUXDB_V1_VERSION=5.3.2
INFLUXDB_V2_VERSION=1.50.0
INFLUXDB_V3_VERSION=0.21.0
LOCUST_INFLUXDB_LISTENER_VERSION=1.0.2
TEST_VENV=target/e2e-venv

# The pinned packages, as pip takes them (ruff is checked apart: its version is not a module's).
test_venv_packages() {
    printf '%s\n' "locust==$LOCUST_VERSION" prometheus_client "ruff==$RUFF_VERSION" \
        "influxdb==$INFLUXDB_V1_VERSION" "influxdb-client==$INFLUXDB_V2_VERSION" \
        "influxdb3-python==$INFLUXDB_V3_VERSION" \
        "locust-influxdb-listener==$LOCUST_INFLUXDB_LISTENER_VERSION"
}

# Makes or refreshes $TEST_VENV with the pinned packages.
ensure_test_venv() {
    local packages
    mapfile -t packages < <(test_venv_packages)
    if "$TEST_VENV/bin/python" - "$RUFF_VERSION" "${packages[@]}" >/dev/null 2>&1 <<'PY'; then
import subprocess, sys
from importlib.metadata import version
ruff = subprocess.run([sys.prefix + "/bin/ruff", "--version"], capture_output=True, text=True)
wanted = [(p.split("==") + [None])[:2] for p in sys.argv[2:]]
# version() raises (exit 1) for a package not installed; None accepts any version.
sys.exit(ruff.stdout.split()[-1:] != [sys.argv[1]] or any(version(n) != (v or version(n)) for n, v in wanted))
PY
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install python3 python3-venv"
    echo "creating $TEST_VENV with ${packages[*]}"
    rm -rf "$TEST_VENV"
    python3 -c 'import ensurepip, venv' 2>/dev/null ||
        die "python3 cannot make virtualenvs: apt-get install python3-venv (scripts/test.sh installs it)"
    python3 -m venv "$TEST_VENV" || die "python3 -m venv $TEST_VENV failed: apt-get install python3-venv"
    "$TEST_VENV/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" ||
        die "pip install ${packages[*]} into $TEST_VENV failed (is PyPI reachable? pip's message is above)"
}
