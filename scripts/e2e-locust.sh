#!/usr/bin/env bash
# End-to-end test of the Locust plugin (scripts/locust_consumer.py) and the Grafana dashboard
# (scripts/grafana-dashboard.json): a real headless Locust loads a tiny loopback service,
# records the run through the real gateway into a real, throwaway InfluxDB 1.x, and the points
# are checked by query; then every query of the dashboard must return rows. Also checks that a
# distributed run (master + 2 workers, with Locust's --json-file) commits from the master every
# endpoint row with the requests of Locust's own statistics, that a run with 5 000 endpoints is
# recorded (the plugin gzips its commit), that a --consumer-tags key naming a field stops Locust
# at start, that a gateway that is down never breaks the load test, and that points InfluxDB
# refuses (the gateway's dead_letter) are a warning with InfluxDB's words; with
# --consumer-strict, both make Locust exit non-zero; and that --consumer-check decides Locust's
# exit code: 0 when the checks pass, 1 when one fails (printed), 1 at the start for a check the
# gateway refuses, with the test tag (the locustfile's name) finding the baseline run. First,
# the plugin's unit tests against a stub gateway.
#
# Locust comes from PyPI into a virtualenv under target/e2e-venv, made once and reused.
# Every process started here listens on 127.0.0.1 only and is stopped by its PID on exit.
# Called by scripts/test.sh; can be run alone (needs influxd, python3 with venv, cargo).
# E2E_KEEP=1 keeps the logs and data of a passing run too (a failing run always keeps them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

# shellcheck source=scripts/lib/install-influxdb.sh
source scripts/lib/install-influxdb.sh
# shellcheck source=scripts/lib/python-venv.sh
source scripts/lib/python-venv.sh
# shellcheck source=scripts/lib/e2e.sh
source scripts/lib/e2e.sh

venv=$TEST_VENV
users=5

# ---------------------------------------------------------------------------
# Processes and clean-up
# ---------------------------------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/metrics-consumer-e2e-locust.XXXXXX")
pids=()
ok=0

cleanup() {
    stop_pids
    if [ "$ok" -eq 1 ] && [ -z "${E2E_KEEP:-}" ]; then
        rm -rf "$work"
    elif [ "$ok" -eq 1 ]; then
        echo "e2e-locust: logs kept in $work (E2E_KEEP is set)"
    else
        echo "e2e-locust: FAILED; logs kept in $work" >&2
    fi
}
trap cleanup EXIT

fail() {
    printf 'e2e-locust: FAILED: %s\n' "$*" >&2
    exit 1
}

alive() {
    kill -0 "$1" 2>/dev/null
}

# ---------------------------------------------------------------------------
# Tools: the gateway binary, influxd, the virtualenv with Locust
# ---------------------------------------------------------------------------

influxd=$(influxd_path)
[ -n "$influxd" ] || die "influxd not found: install Debian's influxdb package or run scripts/test.sh, which installs it"
command -v curl >/dev/null 2>&1 || die "curl not found: apt-get install curl (scripts/test.sh installs it)"
command -v python3 >/dev/null 2>&1 || die "python3 not found: apt-get install python3 python3-venv"

cargo build --quiet --bin metrics-consumer
gateway_bin=$root/target/debug/metrics-consumer

ensure_test_venv
py=$root/$venv/bin/python
locust=$root/$venv/bin/locust
"$locust" --version

started=$(date +%s)

# Locust imports the plugin from scripts/, as a user's locustfile would from its own directory;
# no __pycache__ is left in the source tree.
export PYTHONPATH=$root/scripts
export PYTHONDONTWRITEBYTECODE=1
# No METRICS_CONSUMER_* from the caller's environment may change what is tested.
unset METRICS_CONSUMER_URL METRICS_CONSUMER_TOKEN METRICS_CONSUMER_INTERVAL METRICS_CONSUMER_TAGS \
    METRICS_CONSUMER_STRICT METRICS_CONSUMER_CHECKS

echo
echo "--- unit tests of the plugin (stub gateway)"
timeout 120 "$py" -m unittest scripts/e2e/test_locust_consumer.py ||
    fail "unit tests of scripts/locust_consumer.py"

# ---------------------------------------------------------------------------
# influxd on two free loopback ports (HTTP and RPC), data in $work
# ---------------------------------------------------------------------------

start_influxd "$work/influxd"
echo "influxd on $influx_url (pid $influxd_pid)"

# ---------------------------------------------------------------------------
# The gateway, with a token and one heartbeat a second
# ---------------------------------------------------------------------------

token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')

# Starts a gateway named $1 (its files under $work/$1, its log $work/$1.log) writing to
# database $2 of influxd, with the lines $3 added to its [influxdb] table and $4 to the end of
# its configuration; sets started_addr (host:port).
start_gateway() {
    local name=$1 database=$2 influxdb_extra=$3 extra=$4 pid
    mkdir -p "$work/$name"
    cat >"$work/$name/consumer.toml" <<TOML
[server]
listen = "127.0.0.1:0"

[auth]
tokens = ["$token"]

[influxdb]
url = "$influx_url"
database = "$database"
$influxdb_extra

[jobs]
heartbeat_interval = "1s"

[storage]
dir = "$work/$name/data"
$extra
TOML
    "$gateway_bin" --config "$work/$name/consumer.toml" >"$work/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    listening() {
        alive "$pid" || {
            tail -n 30 "$work/$name.log" >&2
            fail "the gateway $name exited at start"
        }
        grep -q 'listening on http://' "$work/$name.log"
    }
    wait_for 15 listening || fail "the gateway $name did not log 'listening on' within 15 s"
    started_addr=$(sed -n 's|.*listening on http://\([0-9.:]*\).*|\1|p' "$work/$name.log" | head -n 1)
    echo "gateway $name on http://$started_addr (pid $pid)"
}

db=e2e_locust
start_gateway gateway "$db" "" ""
gateway_addr=$started_addr
gateway_url=http://$gateway_addr

# ---------------------------------------------------------------------------
# The service under load
# ---------------------------------------------------------------------------

"$py" scripts/e2e/target.py "$work/target.port" 2>"$work/target.log" &
target_pid=$!
pids+=("$target_pid")
wait_for 10 test -s "$work/target.port" || fail "the target service did not start"
target_url=http://127.0.0.1:$(cat "$work/target.port")
echo "target on $target_url (pid $target_pid)"

# The total request count of Locust's own summary (its first "Aggregated" line), which the
# committed statistics must match.
summary_requests() {
    awk '$1 == "Aggregated" { print $2; exit }' "$1"
}

# Fails when Locust's output shows an exception from the plugin.
no_tracebacks() {
    if grep -qE 'Traceback|Uncaught exception|unexpected error' "$1"; then
        grep -nE -A15 'Traceback|Uncaught exception|unexpected error' "$1" | head -n 40 >&2
        fail "$2: the output shows an exception"
    fi
}

# ---------------------------------------------------------------------------
# 1. A local run, 10 s, token as Bearer; it has failures (/flaky), which must
#    not change Locust's exit code here (--exit-code-on-error 0). Its checks pass, and give
#    the dashboard's Verdict table its rows.
# ---------------------------------------------------------------------------

echo
echo "--- local run: $users users for 10 s"
from_ms=$(($(date +%s) * 1000 - 5000))
status=0
timeout 60 "$locust" -f scripts/e2e/locustfile.py --headless -u "$users" -r "$users" -t 10s \
    --host "$target_url" --only-summary --exit-code-on-error 0 \
    --consumer-url "$gateway_url" --consumer-token "$token" --consumer-interval 1 \
    --consumer-tags "scenario=e2e-local,suite=metrics-consumer" \
    --consumer-check "requests > 0" --consumer-check "/items: p95 < 10s" \
    >"$work/locust-local.log" 2>&1 || status=$?
[ "$status" -eq 0 ] || {
    tail -n 40 "$work/locust-local.log" >&2
    fail "local run: locust exited $status"
}
no_tracebacks "$work/locust-local.log" "local run"
grep -q "metrics-consumer: run .* finished; wrote" "$work/locust-local.log" || {
    tail -n 40 "$work/locust-local.log" >&2
    fail "local run: the plugin did not log its commit"
}
if grep -qF "$token" "$work/locust-local.log"; then
    fail "local run: the token appears in Locust's output"
fi
run_uuid=$("$py" scripts/e2e/check_run.py run --influx "$influx_url" --db "$db" --users "$users" \
    --endpoints "GET /items,POST /orders,GET /flaky" --min-heartbeats 5 --errors \
    --tag "targetHost=$target_url" --tag mode=local --tag scenario=e2e-local --tag suite=metrics-consumer \
    --tag test=locustfile --verdict \
    --requests "$(summary_requests "$work/locust-local.log")") ||
    fail "local run: the points in InfluxDB are not as expected"

echo
echo "--- Prometheus metrics after the run"
"$py" scripts/e2e/check_metrics.py "$gateway_url" "$token" ||
    fail "/apiv0.1/metrics does not parse with prometheus_client or did not count the run"

# ---------------------------------------------------------------------------
# 2. The dashboard's queries, on the points of that run
# ---------------------------------------------------------------------------

echo
echo "--- dashboard queries"
to_ms=$(($(date +%s) * 1000 + 5000))
"$py" scripts/e2e/check_run.py dashboard --influx "$influx_url" --db "$db" \
    --dashboard scripts/grafana-dashboard.json --run "$run_uuid" --from-ms "$from_ms" --to-ms "$to_ms" ||
    fail "the dashboard's queries do not all return rows"

# ---------------------------------------------------------------------------
# 3. A distributed run: master + 2 workers, the token in the URL (Basic auth), and Locust's
#    --json-file, which empties the master's endpoint rows as it writes them. Only the master
#    records; its commit must hold the workers' statistics: every endpoint row with the
#    requests of Locust's own JSON file (which replaces the printed summary).
# ---------------------------------------------------------------------------

echo
echo "--- distributed run: master and 2 workers, 4 users for 5 s, --json-file"
read -r master_port < <(python3 scripts/e2e/free_ports.py 1)
worker_pids=()
for w in 1 2; do
    "$locust" -f scripts/e2e/locustfile.py --worker --master-host 127.0.0.1 --master-port "$master_port" \
        >"$work/locust-worker-$w.log" 2>&1 &
    worker_pids+=("$!")
    pids+=("$!")
done
status=0
timeout 60 "$locust" -f scripts/e2e/locustfile.py --master --master-bind-host 127.0.0.1 \
    --master-bind-port "$master_port" --expect-workers 2 --expect-workers-max-wait 20 \
    --headless -u 4 -r 4 -t 5s --host "$target_url" --only-summary --exclude-tags flaky \
    --json-file "$work/locust-master" \
    --consumer-url "http://locust:$token@$gateway_addr" --consumer-interval 1 \
    >"$work/locust-master.log" 2>&1 || status=$?
[ "$status" -eq 0 ] || {
    tail -n 40 "$work/locust-master.log" >&2
    fail "distributed run: the master exited $status"
}
[ -s "$work/locust-master.json" ] || fail "distributed run: Locust wrote no $work/locust-master.json"
for w in 1 2; do
    wait_for 10 bash -c "! kill -0 ${worker_pids[w - 1]} 2>/dev/null" ||
        fail "distributed run: worker $w did not quit"
    no_tracebacks "$work/locust-worker-$w.log" "distributed run (worker $w)"
    if grep -q "metrics-consumer:" "$work/locust-worker-$w.log"; then
        fail "distributed run: worker $w talked to the gateway; only the master may"
    fi
done
no_tracebacks "$work/locust-master.log" "distributed run (master)"
distributed_uuid=$("$py" scripts/e2e/check_run.py run --influx "$influx_url" --db "$db" --users 4 \
    --endpoints "GET /items,POST /orders" --min-heartbeats 3 --exclude-uuid "$run_uuid" --tag mode=distributed \
    --locust-json "$work/locust-master.json") ||
    fail "distributed run: the points in InfluxDB are not as expected"

# ---------------------------------------------------------------------------
# 4. 5 000 endpoints: one user reports 5 000 names through Locust's request event (no load).
#    The commit is some 4 MB of JSON, over the gateway's default 1 MiB body limit; the plugin
#    gzips it, and the gateway keeps 1 000 rows (limits.max_stats_rows) and Aggregated.
# ---------------------------------------------------------------------------

echo
echo "--- 5 000 endpoints: 1 user for 3 s"
status=0
timeout 60 "$locust" -f scripts/e2e/locustfile_endpoints.py --headless -u 1 -r 1 -t 3s \
    --host "$target_url" --only-summary \
    --consumer-url "$gateway_url" --consumer-token "$token" --consumer-interval 1 \
    >"$work/locust-endpoints.log" 2>&1 || status=$?
[ "$status" -eq 0 ] || {
    tail -n 40 "$work/locust-endpoints.log" >&2
    fail "5 000 endpoints: locust exited $status"
}
no_tracebacks "$work/locust-endpoints.log" "5 000 endpoints"
# The plugin logs what the gateway said it wrote.
grep -q "metrics-consumer: run .* finished; wrote .* (1001 endpoint rows); 1001 of 5001 stats rows were written" \
    "$work/locust-endpoints.log" || {
    grep "metrics-consumer" "$work/locust-endpoints.log" | tail -n 5 >&2
    fail "5 000 endpoints: the plugin did not log the gateway's account of its commit"
}
"$py" scripts/e2e/check_run.py rows --influx "$influx_url" --db "$db" --rows 1001 --sent 5001 \
    --exclude-uuid "$run_uuid" --exclude-uuid "$distributed_uuid" >/dev/null ||
    fail "5 000 endpoints: the points in InfluxDB are not as expected"

# ---------------------------------------------------------------------------
# 5. A --consumer-tags key that names a field the plugin sends: Locust stops at start, with
#    an error naming it, before any test runs (nothing is registered).
# ---------------------------------------------------------------------------

echo
echo "--- a clashing --consumer-tags key stops Locust at start"
status=0
timeout 60 "$locust" -f scripts/e2e/locustfile.py --headless -u 1 -r 1 -t 30s \
    --host "$target_url" --only-summary \
    --consumer-url "$gateway_url" --consumer-token "$token" --consumer-tags "team=shop,num_requests=x" \
    >"$work/locust-clash.log" 2>&1 || status=$?
[ "$status" -ne 0 ] || fail "clashing tags: locust exited 0; it must refuse the tag at start"
grep -q "ERROR.*metrics-consumer: --consumer-tags: num_requests is also the name of a field" "$work/locust-clash.log" ||
    fail "clashing tags: no error naming the tag in Locust's output"
if grep -q "registered run" "$work/locust-clash.log"; then
    fail "clashing tags: a run was registered"
fi

# ---------------------------------------------------------------------------
# 6. The gateway is down: Locust must run and exit 0 all the same, with a warning.
#    (Port 9, discard, has no listener on loopback: connections are refused.)
# ---------------------------------------------------------------------------

echo
echo "--- gateway down: 3 s run against http://127.0.0.1:9"
status=0
timeout 60 "$locust" -f scripts/e2e/locustfile.py --headless -u 2 -r 2 -t 3s \
    --host "$target_url" --only-summary --exclude-tags flaky \
    --consumer-url http://127.0.0.1:9 --consumer-token "$token" --consumer-interval 1 \
    >"$work/locust-down.log" 2>&1 || status=$?
[ "$status" -eq 0 ] || {
    tail -n 40 "$work/locust-down.log" >&2
    fail "gateway down: locust exited $status; the plugin must never break the load test"
}
no_tracebacks "$work/locust-down.log" "gateway down"
grep -q "WARNING.*metrics-consumer: cannot register the run" "$work/locust-down.log" ||
    fail "gateway down: no warning about the failed register in Locust's output"
grep -q "WARNING.*metrics-consumer: gave up committing" "$work/locust-down.log" ||
    fail "gateway down: no warning about the failed commit in Locust's output"
if grep -qF "$token" "$work/locust-down.log"; then
    fail "gateway down: the token appears in Locust's output"
fi
grep -m1 "WARNING.*metrics-consumer" "$work/locust-down.log"

echo
echo "--- gateway down, --consumer-strict: Locust exits 3"
status=0
timeout 60 "$locust" -f scripts/e2e/locustfile.py --headless -u 1 -r 1 -t 1s \
    --host "$target_url" --only-summary --exclude-tags flaky \
    --consumer-url http://127.0.0.1:9 --consumer-token "$token" --consumer-strict \
    >"$work/locust-down-strict.log" 2>&1 || status=$?
no_tracebacks "$work/locust-down-strict.log" "gateway down, strict"
[ "$status" -eq 3 ] || {
    tail -n 20 "$work/locust-down-strict.log" >&2
    fail "gateway down, strict: locust exited $status, not 3"
}
grep -q "ERROR.*metrics-consumer: --consumer-strict: not recorded whole: .*connection refused" \
    "$work/locust-down-strict.log" || fail "gateway down, strict: no error saying why Locust fails"

# ---------------------------------------------------------------------------
# 7. InfluxDB refuses the points: a gateway that answers once InfluxDB has the points
#    (delivery.acknowledge = "influxdb") and does not check the schema itself, and a database
#    where total_rps of load_testing_result is already a string. The commit's result point is
#    refused (a field type conflict), and the answer says so in "dead_letter": the plugin warns
#    with InfluxDB's words; Locust exits 0, or 3 with --consumer-strict.
# ---------------------------------------------------------------------------

echo
echo "--- InfluxDB refuses the commit's points (field type conflict): a warning; 3 when strict"
refused_db=e2e_locust_refused
curl -fsS -o /dev/null -XPOST "$influx_url/query" --data-urlencode "q=CREATE DATABASE $refused_db" ||
    fail "cannot create database $refused_db"
curl -fsS -o /dev/null -XPOST "$influx_url/write?db=$refused_db" \
    --data-binary 'load_testing_result,uuid=seed total_rps="a string"' ||
    fail "cannot write the conflicting point to $refused_db"
start_gateway gateway-refusing "$refused_db" 'check_schema = false' '[delivery]
acknowledge = "influxdb"'
refusing_url=http://$started_addr
for strict in "" --consumer-strict; do
    name=refused${strict:+-strict}
    status=0
    timeout 60 "$locust" -f scripts/e2e/locustfile.py --headless -u 1 -r 1 -t 2s \
        --host "$target_url" --only-summary --exclude-tags flaky \
        --consumer-url "$refusing_url" --consumer-token "$token" --consumer-interval 1 $strict \
        >"$work/locust-$name.log" 2>&1 || status=$?
    no_tracebacks "$work/locust-$name.log" "$name"
    expected=0
    [ -z "$strict" ] || expected=3
    [ "$status" -eq "$expected" ] || {
        tail -n 20 "$work/locust-$name.log" >&2
        fail "$name: locust exited $status, not $expected"
    }
    warning=$(grep 'WARNING.*metrics-consumer: run .* finished; .*, but InfluxDB refused points of it: ' \
        "$work/locust-$name.log" || true)
    grep -qF 'field type conflict: input field "total_rps" on measurement "load_testing_result"' <<<"$warning" || {
        grep "metrics-consumer" "$work/locust-$name.log" | tail -n 5 >&2
        fail "$name: no warning with InfluxDB's words about the refused points"
    }
    if grep -q "recorded by the gateway" "$work/locust-$name.log"; then
        fail "$name: the plugin says the refused commit was recorded"
    fi
    if [ -n "$strict" ]; then
        grep -q "ERROR.*metrics-consumer: --consumer-strict: not recorded whole: .*field type conflict" \
            "$work/locust-$name.log" || fail "$name: no error saying why Locust fails"
    fi
done
grep -m1 "WARNING.*InfluxDB refused points" "$work/locust-refused.log"

# ---------------------------------------------------------------------------
# 8. Checks: --consumer-check decides Locust's exit code. A locustfile of its own name, so its
#    runs have a test tag (the gateway's run identity) no earlier run has: the first run passes
#    (exit 0) with no baseline, the second fails a check (exit 1, the check printed) against the
#    first as its baseline; a check the plugin cannot read, or the gateway refuses, stops Locust
#    at the start with exit code 1.
# ---------------------------------------------------------------------------

echo
echo "--- checks: a run that passes them, one that fails one, malformed checks"
cp scripts/e2e/locustfile.py "$work/checkout.py"
# Runs $work/checkout.py for $1 with the options that follow; its log is $work/locust-$name.log
# (name: $2); sets status to Locust's exit code.
run_checkout() {
    local time=$1 name=$2
    shift 2
    status=0
    timeout 60 "$locust" -f "$work/checkout.py" --headless -u 2 -r 2 -t "$time" \
        --host "$target_url" --only-summary --exclude-tags flaky \
        --consumer-url "$gateway_url" --consumer-token "$token" --consumer-interval 1 "$@" \
        >"$work/locust-$name.log" 2>&1 || status=$?
    no_tracebacks "$work/locust-$name.log" "$name"
}
# The uuid of the run a Locust log registered.
registered_uuid() {
    sed -n 's/.*metrics-consumer: registered run \([0-9a-f-]*\) at .*/\1/p' "$1" | head -n 1
}

run_checkout 3s checks-pass --consumer-check "requests > 0" --consumer-check "/items: fail_ratio < 50%"
[ "$status" -eq 0 ] || {
    grep "metrics-consumer" "$work/locust-checks-pass.log" | tail -n 10 >&2
    fail "passing checks: locust exited $status, not 0"
}
grep -q "INFO.*metrics-consumer: run .* passed its checks: 2 of 2 passed (no baseline run)" \
    "$work/locust-checks-pass.log" || {
    grep "metrics-consumer" "$work/locust-checks-pass.log" | tail -n 10 >&2
    fail "passing checks: no line saying the run passed its 2 checks without a baseline"
}
first_uuid=$(registered_uuid "$work/locust-checks-pass.log")
[ -n "$first_uuid" ] || fail "passing checks: no 'registered run' line"

run_checkout 3s checks-fail --consumer-check "requests > 0" --consumer-check "requests < 1"
[ "$status" -eq 1 ] || {
    grep "metrics-consumer" "$work/locust-checks-fail.log" | tail -n 10 >&2
    fail "a failing check: locust exited $status, not 1"
}
grep -q "ERROR.*metrics-consumer: run .* FAILED its checks: 1 of 2 failed (baseline: run $first_uuid)" \
    "$work/locust-checks-fail.log" || {
    grep "metrics-consumer" "$work/locust-checks-fail.log" | tail -n 10 >&2
    fail "a failing check: no line saying 1 of 2 checks failed against the first run as baseline"
}
grep -qE "ERROR.*metrics-consumer:   failed: Aggregated: requests < 1: [0-9]+, limit 1" \
    "$work/locust-checks-fail.log" || fail "a failing check: the failed check is not printed with its value and limit"
grep -q "ERROR.*metrics-consumer: checks not passed: .*; Locust exits with code 1" "$work/locust-checks-fail.log" ||
    fail "a failing check: no last line saying why Locust exits with code 1"
# The run as the gateway keeps it: the test tag is the locustfile's name, the baseline the first.
second_uuid=$(registered_uuid "$work/locust-checks-fail.log")
curl -fsS -H "Authorization: Bearer $token" "$gateway_url/apiv0.1/runs/$second_uuid" >"$work/run-checks-fail.json" ||
    fail "GET /apiv0.1/runs/$second_uuid failed"
"$py" - "$work/run-checks-fail.json" "$first_uuid" <<'PY' || fail "the failed run, as GET /apiv0.1/runs/UUID shows it"
import json, sys
run = json.load(open(sys.argv[1]))
assert run["tags"].get("test") == "checkout", run["tags"]
assert run["verdict"]["passed"] is False and run["verdict"]["baseline"] == sys.argv[2], run["verdict"]
assert run["baseline"]["uuid"] == sys.argv[2], run["baseline"]
PY

run_checkout 30s checks-malformed --consumer-check "p96 < 500ms"
[ "$status" -eq 1 ] || fail "a malformed check: locust exited $status, not 1"
grep -q "ERROR.*metrics-consumer: --consumer-check: 'p96 < 500ms' reads the unknown metric 'p96'" \
    "$work/locust-checks-malformed.log" || fail "a malformed check: no error naming it"
if grep -q "registered run" "$work/locust-checks-malformed.log"; then
    fail "a malformed check: a run was registered"
fi

started_refused=$(date +%s)
run_checkout 30s checks-refused --consumer-check "p95 < 5 parsecs"
[ "$status" -eq 1 ] || fail "a check the gateway refuses: locust exited $status, not 1"
grep -q "ERROR.*metrics-consumer: the gateway refused the run, so its checks cannot be verified: .*answered 400: .*parsecs" \
    "$work/locust-checks-refused.log" || {
    grep "metrics-consumer" "$work/locust-checks-refused.log" | tail -n 5 >&2
    fail "a check the gateway refuses: no error with the gateway's words"
}
[ $(($(date +%s) - started_refused)) -lt 20 ] || fail "a check the gateway refuses: the 30 s test was not stopped at its start"
grep -m1 "FAILED its checks" "$work/locust-checks-fail.log"
grep -m1 "failed: Aggregated" "$work/locust-checks-fail.log"

for log in "$work/gateway.log" "$work/gateway-refusing.log"; do
    if grep -qF "$token" "$log"; then
        fail "the token appears in the gateway's log $log"
    fi
done

ok=1
echo
echo "e2e-locust: all checks passed in $(($(date +%s) - started)) s (after the virtualenv was ready)"
