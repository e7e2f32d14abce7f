#!/usr/bin/env bash
# End-to-end test of the container image (Containerfile) with podman: builds the static
# binary and the image (FROM scratch: nothing is pulled), then, against a throwaway influxd
# on loopback, runs the image with --network=host and configured by environment alone:
#   - the image's defaults (0.0.0.0:3000, no token) refuse to start, saying why;
#   - as user 10001, not root, the gateway resolves InfluxDB's host name (a name only in
#     /etc/hosts, from --add-host) and a registered and committed run's points land;
#   - a second run left running is kept in the volume across `podman restart`, and can be
#     committed afterwards;
#   - `podman stop` ends it cleanly as PID 1 (exit 0, "stopped" logged), without an init;
#   - a new container on the same volume, as after an upgrade, knows both runs.
# Every container, volume and image it makes is removed on exit, and influxd is stopped by
# its PID. Called by scripts/test.sh; can be run alone as root (installs podman and runc).
# podman runs with --runtime runc (crun refuses these machines' hybrid cgroups) and with the
# README's --ulimit flags. E2E_KEEP=1 keeps the logs of a passing run too (a failing run always
# keeps them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/install-influxdb.sh
source scripts/lib/install-influxdb.sh
# shellcheck source=scripts/lib/e2e.sh
source scripts/lib/e2e.sh

fail() {
    printf 'container-e2e: FAILED: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
command -v curl >/dev/null 2>&1 || die "curl not found: apt-get install curl (scripts/test.sh installs it)"
command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install python3"
[ "$(id -u)" -eq 0 ] || die "run as root: the test runs podman as root (rootless podman needs subuids set up)"

# One name for everything this run makes, so clean-up removes exactly that.
tag=metrics-consumer-e2e-$$
image=localhost/$tag:test
container=$tag
volume=$tag
pod() {
    podman --runtime runc "$@"
}
# The README's limits, so the test runs the image as the README says to. Without them podman
# (as root) asks the runtime for the largest limits, which a host that caps them refuses
# before the gateway starts ("error setting rlimit type 7"); with them the test also shows
# that these limits are enough for the gateway.
run_flags=(--network=host --ulimit nofile=8192:8192 --ulimit nproc=4096:4096)

work=$(mktemp -d "${TMPDIR:-/tmp}/metrics-consumer-container-e2e.XXXXXX")
pids=()
ok=0
cleanup() {
    if [ "$ok" -ne 1 ] && podman container exists "$container" 2>/dev/null; then
        echo "--- the container's log:" >&2
        podman logs "$container" 2>&1 | tail -n 40 >&2 || true
    fi
    podman rm -f -t 0 "$container" "$container-defaults" >/dev/null 2>&1 || true
    podman volume rm -f "$volume" >/dev/null 2>&1 || true
    podman rmi -f "$image" >/dev/null 2>&1 || true
    stop_pids
    if [ "$ok" -eq 1 ] && [ -z "${E2E_KEEP:-}" ]; then
        rm -rf "$work"
    elif [ "$ok" -ne 1 ]; then
        echo "container-e2e: FAILED; logs kept in $work" >&2
    fi
}
trap cleanup EXIT

started=$(date +%s)

# ---------------------------------------------------------------------------
# The static binary and the image
# ---------------------------------------------------------------------------

echo "--- static binary (RUSTFLAGS='-C target-feature=+crt-static', cargo build --release)"
binary=$(static_binary)
ls -l "$binary"

echo "--- podman build $image (FROM scratch)"
pod build --quiet --pull=never --layers=false --build-arg "BINARY=$binary" -t "$image" -f Containerfile . >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    fail "podman build -f Containerfile failed"
}
pod run --rm "${run_flags[@]}" "$image" --version | grep -q "^metrics-consumer " ||
    fail "the image does not run the gateway (--version)"
user=$(podman image inspect --format '{{.Config.User}}' "$image")
[ "$user" = "10001:10001" ] || fail "the image's user is '$user', not 10001:10001"
podman image inspect --format '{{json .Config.Volumes}} {{json .Config.ExposedPorts}}' "$image" |
    grep -q '/var/lib/metrics-consumer.*3000/tcp' || fail "the image lacks VOLUME /var/lib/metrics-consumer or EXPOSE 3000"

# ---------------------------------------------------------------------------
# The secure default: 0.0.0.0:3000 without a token does not start
# ---------------------------------------------------------------------------

echo "--- the image's defaults without a token refuse to start"
status=0
pod run --rm --name "$container-defaults" "${run_flags[@]}" "$image" >"$work/defaults.log" 2>&1 || status=$?
[ "$status" -eq 2 ] || fail "without a token the image exited $status, not 2: $(cat "$work/defaults.log")"
grep -q "CONSUMER_SERVER_LISTEN (sets server.listen): 0.0.0.0:3000 is not a loopback address and no tokens are configured" "$work/defaults.log" ||
    fail "without a token the message does not say why: $(cat "$work/defaults.log")"

# ---------------------------------------------------------------------------
# The gateway against influxd, configured by environment
# ---------------------------------------------------------------------------

start_influxd "$work/influxd"
echo "influxd on $influx_url (pid $influxd_pid)"
read -r port < <(python3 scripts/e2e/free_ports.py 1)
gateway=http://127.0.0.1:$port
token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
db=container_e2e
# A name that only the container's /etc/hosts knows: the static binary must look it up there.
influx_host=influxdb.container-e2e.test

pod volume create "$volume" >/dev/null
# Runs the gateway as container $container, its state in the volume, configured by environment.
run_gateway() {
    pod run -d --name "$container" "${run_flags[@]}" \
        --add-host "$influx_host:127.0.0.1" \
        -v "$volume:/var/lib/metrics-consumer" \
        -e "CONSUMER_SERVER_LISTEN=127.0.0.1:$port" \
        -e "CONSUMER_AUTH_TOKENS=$token" \
        -e "CONSUMER_INFLUXDB_URL=http://$influx_host:$influx_port" \
        -e "CONSUMER_INFLUXDB_DATABASE=$db" \
        -e "CONSUMER_DELIVERY_ACKNOWLEDGE=influxdb" \
        -e "CONSUMER_JOBS_HEARTBEAT_INTERVAL=1s" \
        "$image" >/dev/null
}
echo "--- podman run: $gateway, InfluxDB at http://$influx_host:$influx_port"
run_gateway

# Waits for the $1-th "listening on" line of the container's log (one per start), then ping;
# the deadlines leave room for a loaded machine, where podman itself is slow.
await_listening() {
    local want=$1
    wait_for 60 bash -c "[ \"\$(podman logs $container 2>&1 | grep -c 'listening on http://')\" -ge $want ]" ||
        fail "the gateway did not log 'listening on' (start $want) within 60 s: $(podman logs "$container" 2>&1 | tail -n 5)"
    wait_for 30 curl -fs --max-time 5 -o /dev/null "$gateway/apiv0.1/ping" || fail "ping did not answer on $gateway within 30 s"
}
await_listening 1
podman logs "$container" >"$work/gateway-1.log" 2>&1
grep -q "no configuration file consumer.toml: built-in defaults and CONSUMER_" "$work/gateway-1.log" ||
    fail "the start does not say it runs on defaults and the environment"
if grep -qF "$token" "$work/gateway-1.log"; then
    fail "the token appears in the log"
fi
who=$(podman top "$container" user | tail -n 1 | tr -d ' ')
[ "$who" = metrics-consumer ] || [ "$who" = 10001 ] || fail "the gateway runs as '$who', not the image's user"

auth=(-H "Authorization: Bearer $token")
# POSTs $2 to route $1 and prints the answer; fails unless the status is 200.
post() {
    local answer
    answer=$(curl -s -w '\n%{http_code}' "${auth[@]}" "$gateway/apiv0.1/events/$1" -d "$2") ||
        fail "POST $1: curl failed"
    [ "${answer##*$'\n'}" = 200 ] || fail "POST $1 answered ${answer##*$'\n'}: ${answer%$'\n'*}"
    printf '%s\n' "${answer%$'\n'*}"
}
uuid_of() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)["uuid"])'
}

echo "--- register, progress and commit a run"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$gateway/apiv0.1/events/register" -d '{}')" = 401 ] ||
    fail "a register without the token was not refused with 401"
answer=$(post register '{"host": "container-e2e", "measurement": {"fields": {"users": 2}}}')
first=$(uuid_of <<<"$answer")
post progress "{\"uuid\": \"$first\", \"measurement\": {\"fields\": {\"users\": 4}}}" >/dev/null
committed=$(post commit "{\"uuid\": \"$first\", \"measurement\": {\"fields\": {\"requestStats\": {\"stats\": [{\"name\": \"/items\", \"method\": \"GET\", \"num_requests\": 10}]}}}}")
grep -q '"delivered":true' <<<"$committed" || fail "the commit was not delivered to InfluxDB: $committed"
for measurement in load_testing_events load_testing_result load_testing_request_stats; do
    n=$(count_points "$influx_url" "$db" "$measurement" "$first")
    [ "$n" -ge 1 ] || fail "no $measurement point of run $first in InfluxDB"
done
echo "run $first: its points landed in InfluxDB"

answer=$(post register '{"host": "container-e2e", "measurement": {"fields": {"users": 1}}}')
second=$(uuid_of <<<"$answer")

echo "--- podman restart: the running run is kept in the volume"
pod restart -t 20 "$container" >/dev/null
await_listening 2
podman logs "$container" >"$work/gateway-2.log" 2>&1
grep -q "signal 15: stopping" "$work/gateway-2.log" || fail "the restart did not stop the gateway with SIGTERM"
grep -q "running jobs restored: 1," "$work/gateway-2.log" || fail "the restarted gateway did not restore the running run"
running=$(curl -fs "${auth[@]}" "$gateway/apiv0.1/events/isrunning")
grep -q "\"$second\":true" <<<"$running" || fail "run $second is not running after the restart: $running"
post commit "{\"uuid\": \"$second\", \"measurement\": {\"fields\": {\"duration\": 3}}}" >/dev/null
# Whether InfluxDB holds a point of measurement $1 of run $2.
landed() {
    [ "$(count_points "$influx_url" "$db" "$1" "$2")" -ge 1 ]
}
# The answer may come before delivery ("delivered": false when InfluxDB was slow to answer):
# the points are then delivered from the log, so wait for them.
wait_for 30 landed load_testing_result "$second" ||
    fail "the commit after the restart did not land within 30 s"
mountpoint=$(podman volume inspect --format '{{.Mountpoint}}' "$volume")
[ "$(stat -c %u "$mountpoint/data/log")" = 10001 ] || fail "the volume's data is not owned by the image's user"

# Stops the container with podman stop and checks the stop was graceful; $1 names the log.
stop_gracefully() {
    local stop_started exit_code
    stop_started=$(date +%s)
    pod stop -t 20 "$container" >/dev/null
    exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
    podman logs "$container" >"$work/$1.log" 2>&1
    [ "$exit_code" = 0 ] || fail "the gateway exited $exit_code on podman stop, not 0"
    [ "$(tail -n 1 "$work/$1.log" | grep -c 'stopped;')" = 1 ] ||
        fail "the last log line is not 'stopped': $(tail -n 1 "$work/$1.log")"
    [ $(($(date +%s) - stop_started)) -lt 15 ] || fail "podman stop took 15 s or more"
}

echo "--- podman stop: a graceful stop as PID 1"
stop_gracefully gateway-3

echo "--- a new container on the same volume (as after an upgrade) knows both runs"
pod rm "$container" >/dev/null
run_gateway
await_listening 1
running=$(curl -fs "${auth[@]}" "$gateway/apiv0.1/events/isrunning")
for run in "$first" "$second"; do
    grep -q "\"$run\":false" <<<"$running" || fail "the new container does not know run $run as finished: $running"
done
stop_gracefully gateway-4

ok=1
echo "container-e2e: all checks passed in $(($(date +%s) - started)) s"
