#!/usr/bin/env bash
# End-to-end test of the systemd unit (scripts/metrics-consumer.service) under a live systemd:
# a Debian bookworm root (debootstrap, cached under target/systemd-e2e) boots systemd 252 as
# PID 1 in systemd-nspawn, sharing the host's network; scripts/install.sh installs the static
# gateway into a copy of that root with DESTDIR, configured as README.md's "Run as a service"
# says, against a throwaway influxd on the host's loopback. Then:
#   - `systemctl start` returns once the gateway reported READY=1 (Type=notify), with the
#     status `serving`, and it serves at once, as the dynamic user, with its seccomp filter and no capabilities;
#   - a register through the service is fsync'd (acknowledge = "disk") and lands in InfluxDB:
#     the hardening and SystemCallFilter allow the log's flock and fdatasync;
#   - with HTTPS added as docs/configuration.md says (a drop-in with LoadCredential= for cert and key),
#     `systemctl restart` keeps the running run, and a commit over TLS lands;
#   - `systemctl stop` leaves the unit inactive, not failed, after a graceful stop;
#   - the container is powered off and the cgroups it made are removed.
# Called by scripts/test.sh; can be run alone as root (installs debootstrap and
# systemd-container). E2E_KEEP=1 keeps the logs of a passing run (a failing run keeps them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

# shellcheck source=scripts/lib/install-influxdb.sh
source scripts/lib/install-influxdb.sh
# shellcheck source=scripts/lib/e2e.sh
source scripts/lib/e2e.sh

fail() {
    printf 'systemd-e2e: FAILED: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root: systemd-nspawn boots a container"
missing=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
PATH=$PATH:/usr/sbin:/sbin
for tool in curl openssl python3 nsenter; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: apt-get install $tool (scripts/test.sh installs curl, openssl, python3)"
done

cache=$root/target/systemd-e2e
pristine=$cache/bookworm
work=$(mktemp -d "${TMPDIR:-/tmp}/metrics-consumer-systemd-e2e.XXXXXX")
machine=$work/root
pids=()
nspawn_pid=
leader=
cgroups=()
ok=0

# Runs a command inside the container, in all of its namespaces.
inside() {
    nsenter -t "$leader" -a "$@"
}

# Removes the cgroups in `cgroups` (deepest first); fails while one is still there. A cgroup
# whose last process was killed may stay busy for a moment after systemd-nspawn has exited,
# so power_off retries it with a deadline.
remove_cgroups() {
    local cgroup
    for cgroup in "${cgroups[@]}"; do
        if [ -d "$cgroup" ]; then
            find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
        fi
    done
    for cgroup in "${cgroups[@]}"; do
        [ ! -e "$cgroup" ] || return 1
    done
}

# Powers the container off (systemd's poweroff), waits for systemd-nspawn to exit (SIGKILL
# after 60 s), and removes the cgroups it made: with --keep-unit and no systemd on the host,
# nobody else does.
power_off() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        inside systemctl poweroff 2>/dev/null || kill -s RTMIN+4 "$leader" 2>/dev/null || true
        wait_for 60 bash -c "! kill -0 $nspawn_pid 2>/dev/null" || {
            echo "systemd-e2e: the container did not power off within 60 s; killing it" >&2
            kill -KILL "$nspawn_pid" 2>/dev/null || true
        }
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    nspawn_pid=
    wait_for 10 remove_cgroups || true
}

cleanup() {
    local status=$?
    if [ "$ok" -ne 1 ] && [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        echo "--- the service's journal:" >&2
        inside journalctl -u metrics-consumer --no-pager 2>&1 | tail -n 40 >&2 || true
    fi
    power_off
    stop_pids
    # nspawn's mount propagation directory of this machine, which it leaves behind.
    rm -rf "/run/systemd/nspawn/propagate/$(basename "$machine")" 2>/dev/null || true
    rm -rf "$machine"
    if [ "$ok" -eq 1 ] && [ -z "${E2E_KEEP:-}" ]; then
        rm -rf "$work"
    elif [ "$ok" -ne 1 ]; then
        echo "systemd-e2e: FAILED (exit $status); logs kept in $work" >&2
    fi
}
trap cleanup EXIT

started=$(date +%s)

# ---------------------------------------------------------------------------
# The root (cached), its copy, the static binary installed with DESTDIR
# ---------------------------------------------------------------------------

if [ ! -e "$pristine/.complete" ]; then
    echo "--- debootstrap bookworm into $pristine (once; later runs reuse it)"
    rm -rf "$pristine" "$pristine.partial"
    mkdir -p "$cache"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm \
        "$pristine.partial" "${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 || {
        tail -n 20 "$work/debootstrap.log" >&2
        fail "debootstrap failed (is Debian's archive reachable? DEBOOTSTRAP_MIRROR sets another mirror)"
    }
    touch "$pristine.partial/.complete"
    mv "$pristine.partial" "$pristine"
fi
cp -a --reflink=auto "$pristine" "$machine"
rm -f "$machine/.complete"

echo "--- static binary"
binary=$(static_binary)
DESTDIR=$machine scripts/install.sh --binary "$binary" >"$work/install.log" ||
    fail "scripts/install.sh with DESTDIR=$machine failed"

start_influxd "$work/influxd"
echo "influxd on $influx_url (pid $influxd_pid)"
read -r port < <(python3 scripts/e2e/free_ports.py 1)
token=$(openssl rand -hex 32)
db=systemd_e2e
etc=$machine/etc/metrics-consumer

# The README's configuration: tokens from the credential "tokens", this test's ports.
sed -i -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
    -e "s|^url = .*|url = \"$influx_url\"|" \
    -e "s|^database = .*|database = \"$db\"|" \
    -e 's|^token_files = .*|token_files = ["tokens"]|' \
    -e 's|^heartbeat_interval = .*|heartbeat_interval = "1s"|' "$etc/consumer.toml"
for line in "listen = \"127.0.0.1:$port\"" 'token_files = ["tokens"]' "database = \"$db\""; do
    grep -qxF "$line" "$etc/consumer.toml" || fail "the installed consumer.toml has no line to set: $line"
done
echo "$token" >>"$etc/tokens"

# ---------------------------------------------------------------------------
# Boot
# ---------------------------------------------------------------------------

echo "--- systemd-nspawn -b: booting systemd"
systemd-nspawn -D "$machine" -b --register=no --keep-unit --console=passive >"$work/nspawn.log" 2>&1 &
nspawn_pid=$!
pids+=("$nspawn_pid")
find_leader() {
    leader=$(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null | awk '{ print $1; exit }')
    [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ]
}
wait_for 60 find_leader || {
    tail -n 20 "$work/nspawn.log" >&2
    fail "systemd-nspawn did not start systemd as PID 1 within 60 s"
}
# The cgroups to remove at the end: the container's (the parent of its init.scope) and
# systemd-nspawn's own, when it made one, in the unified and the named systemd hierarchy.
own_cgroup=$(sed -n 's/^0:://p' /proc/self/cgroup)
container_cgroup=$(dirname "$(sed -n 's/^0:://p' "/proc/$leader/cgroup")")
nspawn_cgroup=$(sed -n 's/^0:://p' "/proc/$nspawn_pid/cgroup")
for mount in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do
    [ -e "$mount/cgroup.procs" ] || continue
    [ "$container_cgroup" != / ] && cgroups+=("$mount$container_cgroup")
    [ "$nspawn_cgroup" != / ] && [ "$nspawn_cgroup" != "$own_cgroup" ] && cgroups+=("$mount$nspawn_cgroup")
done
# systemd is PID 1 well before it answers: `systemctl` (as root it talks to systemd's own
# socket /run/systemd/private) fails with "Failed to connect to bus: No such file or
# directory" until systemd has made that socket, then says "initializing" and "starting"
# until the boot's jobs are done. Polled, not waited for with --wait, which fails at once
# while the socket is missing.
state="nothing yet"
# Whether systemd in the container is done booting, well or not; `state` keeps what
# `systemctl is-system-running` said last. Stops the wait if systemd-nspawn exits.
system_booted() {
    if ! kill -0 "$nspawn_pid" 2>/dev/null; then
        state="gone: systemd-nspawn exited"
        return 0
    fi
    state=$(timeout 10 nsenter -t "$leader" -a systemctl is-system-running 2>&1) || true
    state=${state:-no answer within 10 s}
    case "$state" in
    running | degraded | maintenance | stopping | offline) return 0 ;;
    *) return 1 ;;
    esac
}
wait_for 120 system_booted || {
    tail -n 20 "$work/nspawn.log" >&2
    fail "systemd in the container did not finish booting within 120 s; 'systemctl is-system-running' said last: '$state'"
}
case "$state" in
running | degraded) echo "systemd $(inside systemctl --version | awk 'NR == 1 { print $2 }') is $state (PID 1 is pid $leader here)" ;;
*)
    tail -n 20 "$work/nspawn.log" >&2
    fail "systemd in the container is '$state', not running"
    ;;
esac

# ---------------------------------------------------------------------------
# Start: ready at once, hardened
# ---------------------------------------------------------------------------

unit=metrics-consumer
inside systemctl daemon-reload
echo "--- systemctl start $unit"
inside systemctl start "$unit" || fail "systemctl start $unit failed"
[ "$(inside systemctl show -p ActiveState --value "$unit")" = active ] || fail "$unit is not active after start"
# Type=notify: start returned after READY=1, so the port answers now, without waiting.
curl -fs -o /dev/null "http://127.0.0.1:$port/apiv0.1/ping" || fail "no answer right after systemctl start returned"
# The status sent with READY=1 (a long start sets another while it reads storage.dir back).
status_text=$(inside systemctl show -p StatusText --value "$unit")
[ "$status_text" = serving ] || fail "systemctl status shows '$status_text', not the status sent with READY=1 ('serving')"

main_pid=$(inside systemctl show -p MainPID --value "$unit")
status_of_main=$(inside cat "/proc/$main_pid/status")
grep -qE '^Seccomp:[[:space:]]+2' <<<"$status_of_main" || fail "the gateway runs without its seccomp filter"
grep -qE '^NoNewPrivs:[[:space:]]+1' <<<"$status_of_main" || fail "the gateway runs without NoNewPrivileges"
grep -qE '^CapEff:[[:space:]]+0+$' <<<"$status_of_main" || fail "the gateway has capabilities"
grep -qE '^Uid:[[:space:]]+0[[:space:]]' <<<"$status_of_main" && fail "the gateway runs as root"

auth=(-H "Authorization: Bearer $token")
# POSTs $3 to route $2 of the gateway at $1 (curl options before: "${tls[@]}"), prints the
# answer, fails unless 200.
post() {
    local url=$1 route=$2 body=$3 answer
    answer=$(curl -s "${tls[@]}" -w '\n%{http_code}' "${auth[@]}" "$url/apiv0.1/events/$route" -d "$body") ||
        fail "POST $route: curl failed"
    [ "${answer##*$'\n'}" = 200 ] || fail "POST $route answered ${answer##*$'\n'}: ${answer%$'\n'*}"
    printf '%s\n' "${answer%$'\n'*}"
}
uuid_of() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)["uuid"])'
}
# Whether InfluxDB holds a point of measurement $1 of run $2.
landed() {
    [ "$(count_points "$influx_url" "$db" "$1" "$2")" -ge 1 ]
}
# Whether the unit's journal holds a line containing $1. journald reads the service's
# standard output from a socket of its own, so a line the gateway wrote before READY=1 or
# before it exited may reach the journal after `systemctl` has returned: poll with wait_for.
journal_has() {
    local journal
    journal=$(inside journalctl -u "$unit" --no-pager -o cat 2>/dev/null) || return 1
    grep -qF -- "$1" <<<"$journal"
}

echo "--- a register through the service (fsync'd in the log, then delivered)"
tls=()
url=http://127.0.0.1:$port
answer=$(post "$url" register '{"host": "systemd-e2e", "measurement": {"fields": {"users": 3}}}')
run=$(uuid_of <<<"$answer")
wait_for 30 landed load_testing_events "$run" ||
    fail "the register's points did not reach InfluxDB"
states=$(curl -fs "${auth[@]}" "$url/apiv0.1/states") || fail "GET /apiv0.1/states failed"
python3 -c 'import json, sys; sys.exit(not json.loads(sys.argv[1])["memory"]["resident_bytes"])' "$states" ||
    fail "states shows no resident memory: /proc/self/status is not readable under ProtectProc/ProcSubset"
[ -d "$machine/var/lib/private/metrics-consumer/data/log" ] || fail "no log in the state directory"

# ---------------------------------------------------------------------------
# HTTPS as docs/configuration.md adds it, restart keeps the run
# ---------------------------------------------------------------------------

echo "--- HTTPS through credentials, systemctl restart"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$etc/key.pem" -out "$etc/cert.pem" \
    -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE >"$work/openssl.log" 2>&1 || fail "openssl req failed"
chmod 600 "$etc/key.pem"
mkdir -p "$machine/etc/systemd/system/$unit.service.d"
cat >"$machine/etc/systemd/system/$unit.service.d/tls.conf" <<'INI'
[Service]
LoadCredential=cert.pem:/etc/metrics-consumer/cert.pem
LoadCredential=key.pem:/etc/metrics-consumer/key.pem
INI
sed -i -e 's|^tls_cert = .*|tls_cert = "cert.pem"|' -e 's|^tls_key = .*|tls_key = "key.pem"|' "$etc/consumer.toml"
inside systemctl daemon-reload
inside systemctl restart "$unit" || fail "systemctl restart $unit failed"
tls=(--cacert "$etc/cert.pem")
url=https://127.0.0.1:$port
running=$(curl -fs "${tls[@]}" "${auth[@]}" "$url/apiv0.1/events/isrunning") || fail "isrunning over HTTPS failed"
grep -q "\"$run\":true" <<<"$running" || fail "run $run is not running after the restart: $running"
post "$url" commit "{\"uuid\": \"$run\", \"measurement\": {\"fields\": {\"requestStats\": {\"stats\": [{\"name\": \"/\", \"method\": \"GET\", \"num_requests\": 5}]}}}}" >/dev/null
wait_for 30 landed load_testing_result "$run" ||
    fail "the commit over HTTPS did not reach InfluxDB"
wait_for 30 journal_has "listening on https://127.0.0.1:$port" ||
    fail "the restarted gateway does not log listening on HTTPS (30 s)"
journal_has "running jobs restored: 1," || fail "the restart did not restore the running run"

# ---------------------------------------------------------------------------
# Stop: inactive, not failed
# ---------------------------------------------------------------------------

echo "--- systemctl stop $unit"
inside systemctl stop "$unit" || fail "systemctl stop $unit failed"
shown=$(inside systemctl show -p ActiveState,Result,ExecMainStatus "$unit")
for expected in ActiveState=inactive Result=success ExecMainStatus=0; do
    grep -qx "$expected" <<<"$shown" || fail "after stop, $unit has not $expected: $(tr '\n' ' ' <<<"$shown")"
done
# The last line the gateway writes; once the journal has it, it has all of them.
wait_for 30 journal_has "stopped; 0 bytes of the log wait for InfluxDB" ||
    fail "the gateway did not log a graceful stop (30 s)"
journal=$(inside journalctl -u "$unit" --no-pager -o cat)
if grep -q "\[ERROR\]" <<<"$journal"; then
    grep "\[ERROR\]" <<<"$journal" >&2
    fail "the gateway logged errors"
fi
if grep -qF "$token" <<<"$journal"; then
    fail "the token appears in the journal"
fi

echo "--- power off"
power_off
for cgroup in "${cgroups[@]}"; do
    [ ! -e "$cgroup" ] || fail "the cgroup $cgroup is still there after power-off"
done

ok=1
echo "systemd-e2e: all checks passed in $(($(date +%s) - started)) s"
