# shellcheck shell=bash
# Installs the system packages that the tests and the local InfluxDB need:
# InfluxDB 1.x (`influxd`, from Debian's `influxdb` package), curl, openssl, the
# shell linter shellcheck, Chromium (the report page's browser test),
# systemd-analyze (from Debian's `systemd` package), python3 with venv for the
# Locust end-to-end test, and for the deployment tests podman, runc, debootstrap
# and systemd-nspawn (ensure_deploy_tools).
# Sourced by scripts/test.sh and scripts/influxdb-dev.sh; defines functions only.

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when already root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run '$*': run as root or install sudo"
    fi
}

# apt-get update is slow, so it runs at most once per script run, and only when
# something is actually missing.
_apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install these by hand: $*"
    if [ "$_apt_updated" -eq 0 ]; then
        as_root apt-get update
        _apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$@"
}

# Path of influxd, or nothing when it is not installed. Debian puts it in
# /usr/bin, which a stripped-down PATH may lack.
influxd_path() {
    if command -v influxd >/dev/null 2>&1; then
        command -v influxd
    elif [ -x /usr/bin/influxd ]; then
        echo /usr/bin/influxd
    fi
}

# Installs Debian's influxdb package unless influxd is already there, without
# leaving the packaged system service running: tests start their own servers
# on free ports, and a system influxd would hold 8086 and 8088.
ensure_influxd() {
    if [ -n "$(influxd_path)" ]; then
        return 0
    fi
    echo "influxd not found; installing Debian's influxdb package"

    # The package's postinst starts the service through invoke-rc.d (and
    # deb-systemd-invoke), both of which ask policy-rc.d first; exit code 101
    # means "forbidden". An existing policy file is set aside and put back.
    local policy=/usr/sbin/policy-rc.d
    local backup="$policy.metrics-consumer-backup"
    if [ -e "$policy" ]; then
        as_root mv "$policy" "$backup"
    fi
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"

    local status=0
    apt_install influxdb || status=$?

    as_root rm -f "$policy"
    if [ -e "$backup" ]; then
        as_root mv "$backup" "$policy"
    fi
    [ "$status" -eq 0 ] || die "apt-get install influxdb failed (exit $status)"

    # On a systemd machine the unit was enabled for the next boot; undo that
    # and stop it in case it started anyway.
    as_root systemctl disable --now influxdb 2>/dev/null || true

    [ -n "$(influxd_path)" ] ||
        die "the influxdb package is installed but influxd is still missing"
}

# curl and openssl, which the tests and the docs' examples call, and shellcheck,
# which the tests run over the shell scripts.
ensure_tools() {
    local missing=()
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

# Debian's chromium, in which the tests open the run report headless. They run
# /usr/bin/chromium by that path, so another browser on PATH does not count.
ensure_chromium() {
    if [ -x /usr/bin/chromium ]; then
        return 0
    fi
    echo "installing chromium"
    apt_install chromium
    [ -x /usr/bin/chromium ] ||
        die "the chromium package is installed but /usr/bin/chromium is still missing"
}

# python3 able to make virtualenvs (Debian splits venv and ensurepip into python3-venv),
# which the Locust end-to-end test needs.
ensure_python_venv() {
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null; then
        return 0
    fi
    echo "installing python3 and python3-venv"
    apt_install python3 python3-venv
    python3 -c 'import ensurepip, venv' 2>/dev/null ||
        die "python3 still cannot make virtualenvs after installing python3-venv"
}

# systemd-analyze, with which the tests verify the shipped unit file. Debian ships
# it in the systemd package; installing that package on a machine or container that
# boots without systemd adds the tools and leaves its init system as it is (that
# would take systemd-sysv).
ensure_systemd_analyze() {
    if command -v systemd-analyze >/dev/null 2>&1 || [ -x /usr/bin/systemd-analyze ]; then
        return 0
    fi
    echo "systemd-analyze not found; installing Debian's systemd package"
    apt_install systemd
    command -v systemd-analyze >/dev/null 2>&1 || [ -x /usr/bin/systemd-analyze ] ||
        die "the systemd package is installed but systemd-analyze is still missing"
}

# Prints an influxd 1.x configuration for a server of this project's own: data under DIR,
# HTTP on 127.0.0.1:HTTP_PORT, the backup RPC on 127.0.0.1:RPC_PORT, nothing else listening,
# no usage reports (upstream calls the switch reporting-disabled, Debian's build
# reporting-enabled; influxd ignores unknown keys, so both are set).
#   influxd_config DIR HTTP_PORT RPC_PORT
influxd_config() {
    cat <<CONF
reporting-disabled = true
reporting-enabled = false
bind-address = "127.0.0.1:$3"
[meta]
  dir = "$1/meta"
[data]
  dir = "$1/data"
  wal-dir = "$1/wal"
  query-log-enabled = false
  index-version = "inmem"
[http]
  bind-address = "127.0.0.1:$2"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[logging]
  suppress-logo = true
CONF
}

# What the deployment tests need: podman and runc (scripts/container-e2e.sh; podman runs
# with --runtime runc), debootstrap and systemd-nspawn from systemd-container
# (scripts/systemd-e2e.sh). All are Debian's packages.
ensure_deploy_tools() {
    local missing=()
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}
