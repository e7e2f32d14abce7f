#!/usr/bin/env bash
# Benchmark of the gateway: starts a throwaway influxd and the release binary on
# loopback, drives them with the Rust load generator (examples/loadgen.rs) and
# prints one markdown table, every figure from this run, next to the targets.
# The gateway is measured in both acknowledgement modes (delivery.acknowledge
# "disk" and "influxdb"); the direct writes it is compared with are checked
# against wrk (Debian's package) posting the same lines, so that the comparison's
# yardstick is not the load generator's own limit.
#
#   scripts/bench.sh              full run (several minutes)
#   scripts/bench.sh --quick      fewer cycles, shorter time limits (a few minutes)
#   scripts/bench.sh --write-api [--quick]
#                                 only the rows of InfluxDB's write API (k6-shaped
#                                 batches and single lines, straight to influxd and
#                                 through the gateway in both acknowledgement modes)
#   scripts/bench.sh --soak-k6 [SECONDS] [--direct]
#                                 the k6-shaped memory check: a gzip'd batch of 5 000
#                                 lines a second from 4 connections for SECONDS (600 by
#                                 default) through the gateway, its RSS sampled every
#                                 10 s; fails if it grows by more than 2 MiB in the last
#                                 half. --direct sends the same to influxd and samples
#                                 influxd instead (a check of the check).
#
# Every phase has a time limit: a phase that does not finish its cycles in time
# reports how many it did. Each throughput phase starts a fresh gateway with an
# empty job table, so the phases are comparable. Not part of scripts/test.sh:
# it prints figures, it asserts nothing, but a write of the write API rows not answered
# 204 is a failure: the table says which, and the script exits non-zero after it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/install-influxdb.sh
source scripts/lib/install-influxdb.sh

usage="usage: scripts/bench.sh [--quick] [--write-api] | --soak-k6 [SECONDS] [--direct]"
quick=0
only=""          # write-api: only the write API rows; soak: only the memory check
soak_seconds=600
soak_direct=0
while [ "$#" -gt 0 ]; do
    case "$1" in
    --quick) quick=1 ;;
    --write-api) only=write-api ;;
    --soak-k6)
        only=soak
        if [[ "${2:-}" =~ ^[0-9]+$ ]]; then
            soak_seconds=$2
            shift
        fi
        ;;
    --direct) soak_direct=1 ;;
    *) die "$usage" ;;
    esac
    shift
done

if [ "$quick" -eq 1 ]; then
    mode="quick"
    cycles=2000        # register+commit cycles per throughput phase (all rounds)
    phase_limit=4      # seconds per throughput phase at most (all rounds)
    mem_steps=(1000 10000)
    mem_limits=(4 10)  # seconds for each memory step at most
    retention_steps=(2500 20000) # cycles with finished runs forgotten after 1 s
    wide_commits=32    # wide commits (one per connection)
    lp_seconds=3       # seconds per write API run at most (each round)
    lp_batches=300     # k6-shaped batches per write API run at most
    lp_singles=40000   # single-line writes per write API run at most
else
    mode="full"
    cycles=20000
    phase_limit=30
    mem_steps=(10000 100000)
    mem_limits=(60 300)
    retention_steps=(12500 100000)
    wide_commits=64
    lp_seconds=10
    lp_batches=2000
    lp_singles=200000
fi
running_jobs=10000
ticks=4
# Gateway and direct writes take turns this many times at each concurrency, each round with a
# third of the cycles and time; the verdicts use the median round, so one stall of influxd or
# of the machine does not decide them.
rounds=3
round_cycles=$((cycles / rounds))
round_limit=$(awk -v t="$phase_limit" -v r="$rounds" 'BEGIN { printf "%.1f", t / r }')

step() {
    printf "==> [%3ss] %s\n" "$SECONDS" "$*" >&2
}

step "Building the release binary and the load generator"
cargo build --release --quiet --bin metrics-consumer --example loadgen
bin=target/release/metrics-consumer
loadgen=target/release/examples/loadgen
ensure_influxd
influxd=$(influxd_path)
command -v curl >/dev/null 2>&1 || ensure_tools
if [ -z "$only" ] && ! command -v wrk >/dev/null 2>&1; then
    step "Installing wrk (the yardstick of the direct writes)"
    apt_install wrk
fi
if [ -z "$only" ] && ! command -v callgrind_control >/dev/null 2>&1; then
    step "Installing valgrind (instructions a request, the figure the machine's load does not move)"
    apt_install valgrind
fi
# A command the gateway is started under (launch_gateway), e.g. valgrind; none by default.
gw_prefix=()

work=$(mktemp -d "${TMPDIR:-/tmp}/metrics-consumer-bench.XXXXXX")
pids=()
cleanup() {
    local rc=$? pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$rc" -eq 0 ]; then
        rm -rf "$work"
    else
        echo "bench: failed; the logs are kept in $work" >&2
    fi
}
trap cleanup EXIT

# TOML appended to the configuration of the gateways started while it is set (the write
# API's token).
gw_extra=""

# Waits up to 10 s until a command succeeds.
wait_for() {
    local what=$1
    shift
    local i
    for i in $(seq 200); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
    done
    die "timed out waiting for $what (tried $i times)"
}

# key=value lines of a loadgen run -> one value.
val() {
    sed -n "s/^$1=//p" "$2" | head -n 1
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# Peak resident memory so far, KiB.
hwm_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

mib() {
    awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'
}

# met GOT OP LIMIT: "met" or "missed" (numbers compared with awk).
met() {
    awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
        ok = (op == ">=") ? (a >= b) : (a <= b)
        print (ok ? "met" : "**missed**") }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'
}
# median VALUES...: the middle value (the lower middle of an even count).
median() {
    printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"
}

# The first lines of the report: the run and the machine, then the table's head.
print_head() {
    echo
    echo "Benchmark ($mode$([ "$only" = write-api ] && echo ", write API only")): $(date -u +%Y-%m-%d), $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, influxd $("$influxd" version | awk '{ print $2 }')"
    echo
    echo "| # | measure | measured | target | |"
    echo "|---|---|---|---|---|"
}

# --- influxd ------------------------------------------------------------------
step "Starting a throwaway influxd"
mapfile -t ports < <("$loadgen" free-ports --n 2)
mkdir -p "$work/influxd"
influxd_config "$work/influxd" "${ports[0]}" "${ports[1]}" >"$work/influxd/influxd.conf"
env -u INFLUXDB_HTTP_BIND_ADDRESS "$influxd" run -config "$work/influxd/influxd.conf" \
    >"$work/influxd/log" 2>&1 &
influxd_pid=$!
pids+=("$influxd_pid")
influx="127.0.0.1:${ports[0]}"
wait_for "influxd on $influx" curl -sf "http://$influx/ping"
# k6bench is the gateway's target in the write API rows, made here as the direct writes'
# k6bench_direct is, so that neither side's first write waits for a database to be made.
for db in bench_gateway bench_direct k6bench k6bench_direct; do
    curl -sf -XPOST "http://$influx/query" --data-urlencode "q=CREATE DATABASE $db" >/dev/null
done

step "Starting a null InfluxDB"
"$loadgen" null-influx --listen 127.0.0.1:0 >"$work/null.out" &
pids+=("$!")
wait_for "the null InfluxDB" grep -q '^listening=' "$work/null.out"
null=$(val listening "$work/null.out")

# --- the gateway ----------------------------------------------------------------
gw_pid=""
gw_addr=""
gw_n=0
# The acknowledgement mode of the next gateway started (delivery.acknowledge).
ack=disk
# start_gateway INFLUX_ADDR HEARTBEAT_INTERVAL [JOBS_JSON] [SERVER_LINES] [JOBS_LINES]: a fresh
# gateway with its own storage dir (and SERVER_LINES added to [server], JOBS_LINES to [jobs]),
# in mode $ack; sets gw_pid and gw_addr.
start_gateway() {
    gw_n=$((gw_n + 1))
    local dir="$work/gateway-$gw_n"
    mkdir -p "$dir/data"
    if [ -n "${3:-}" ]; then
        cp "$3" "$dir/data/jobs.json"
    fi
    cat >"$dir/consumer.toml" <<EOF
[server]
listen = "127.0.0.1:0"
max_body_bytes = 2097152
${4:-}
[influxdb]
url = "http://$1"
database = "bench_gateway"
[delivery]
acknowledge = "$ack"
[jobs]
heartbeat_interval = "$2"
max_running = 20000
${5:-}
[storage]
dir = "$dir/data"
$gw_extra
EOF
    launch_gateway
}

# launch_gateway: starts the gateway of $work/gateway-$gw_n (again, after a stop or a kill)
# and waits for its first ping; sets gw_pid and gw_addr.
launch_gateway() {
    local dir="$work/gateway-$gw_n" before
    touch "$dir/stderr"
    # Only what this start logs counts: an earlier start's lines are in the same file.
    before=$(wc -l <"$dir/stderr")
    ${gw_prefix[@]+"${gw_prefix[@]}"} "$bin" --config "$dir/consumer.toml" 2>>"$dir/stderr" &
    gw_pid=$!
    pids+=("$gw_pid")
    wait_for "the gateway to listen" \
        sh -c "tail -n +$((before + 1)) '$dir/stderr' | grep -q 'listening on http://'"
    gw_addr=$(tail -n +$((before + 1)) "$dir/stderr" | sed -n 's|.*listening on http://||p' | head -n 1)
    wait_for "the gateway's ping" curl -sf "http://$gw_addr/apiv0.1/ping"
}

stop_gateway() {
    kill -TERM "$gw_pid"
    wait "$gw_pid" || true
}

# run NAME LOADGEN-ARGS...: runs the load generator, bounded in time, into $work/NAME.
run() {
    local name=$1
    shift
    timeout 900 "$loadgen" "$@" >"$work/$name"
    if [ "$(val errors "$work/$name")" != "0" ] && [ -n "$(val errors "$work/$name")" ]; then
        echo "warning: $name: $(val errors "$work/$name") errors, first: $(val first_error "$work/$name")" >&2
    fi
}


# --- 8: InfluxDB's write API ------------------------------------------------------------------
# The token of the write API rows' gateways, allowed to write k6bench only. Their log may hold
# what a run sends before InfluxDB takes it (2 000 k6-shaped batches inflate to about 2 GB): at
# the default 1 GiB a machine that answers faster than influxd takes the lines filled it within
# a 10 s round (1 400 batches), and the gateway answered 503 `spool_share_full`, as it should.
# The first lines go under the [storage] table the gateway's configuration ends with.
k6_token="k6bench-token-0123456789abcdef"
k6_gateway_toml="max_spool_bytes = 4294967296
[[auth.token]]
name = \"k6\"
token = \"$k6_token\"
databases = [\"k6bench\"]"
# The write API runs that failed (a write not answered 204): named in the table, and the
# script exits non-zero after it.
lp_failed=()

# run_lp NAME LOADGEN-ARGS...: one `loadgen lp-write`, bounded in time, into $work/NAME; its
# error, if it fails, into $work/NAME.err, and NAME into lp_failed.
run_lp() {
    local name=$1
    shift
    if ! timeout 600 "$loadgen" lp-write "$@" >"$work/$name" 2>"$work/$name.err"; then
        lp_failed+=("$name")
        echo "bench: $name failed: $(tail -n 1 "$work/$name.err")" >&2
    fi
}

# The write API rows' runs: for each shape, rounds of direct writes, then the gateway in disk
# mode, then in "influxdb" mode (a fresh gateway each), all against the same influxd. Each
# gateway run waits until the gateway has delivered everything before it stops, so the next
# run does not share influxd with a backlog.
write_api_phase() {
    local shape r args
    gw_extra=$k6_gateway_toml
    for shape in k6 single; do
        if [ "$shape" = k6 ]; then
            args=(--lines 5000 --gzip --concurrency 4 --requests "$lp_batches")
        else
            args=(--lines 1 --concurrency 32 --requests "$lp_singles")
        fi
        for r in $(seq "$rounds"); do
            step "Write API, $shape, round $r of $rounds: straight to influxd, then the gateway (disk, then influxdb), up to ${lp_seconds}s each"
            run_lp "lp-$shape-direct-$r" --addr "$influx" --db k6bench_direct "${args[@]}" \
                --max-seconds "$lp_seconds" --influxd-pid "$influxd_pid"
            for ack in disk influxdb; do
                start_gateway "$influx" 1h
                run_lp "lp-$shape-$ack-$r" --addr "$gw_addr" --db k6bench --token "$k6_token" \
                    "${args[@]}" --max-seconds "$lp_seconds" --pid "$gw_pid" \
                    --influxd-pid "$influxd_pid" --wait-delivered
                stop_gateway
            done
            ack=disk
        done
    done
    gw_extra=""
}

# lp_error PREFIX: the error of the first failed round of PREFIX, or nothing.
lp_error() {
    local r
    for r in $(seq "$rounds"); do
        if [ -s "$work/$1-$r.err" ]; then
            tail -n 1 "$work/$1-$r.err" | cut -c1-300
            return
        fi
    done
}

# lp_rounds KEY PREFIX: KEY of each round of PREFIX, one a line.
lp_rounds() {
    local r
    for r in $(seq "$rounds"); do
        val "$1" "$work/$2-$r"
    done
}

# lp_cell PREFIX: the measured figures of a write API phase (medians of the rounds, then each
# round's points/s), or the failure.
lp_cell() {
    local p=$1 e note=""
    e=$(lp_error "$p")
    if [ -n "$e" ]; then
        printf '**failed**: %s' "$e"
        return
    fi
    if [[ "$(lp_rounds stopped_early "$p")" == *true* ]]; then
        note=" (the ${lp_seconds}s limit before the count)"
    fi
    # shellcheck disable=SC2046 # one value per round, split on purpose
    printf 'median of %s rounds: %s points/s (%s writes/s), p50 %s ms, p99 %s ms a write; rounds: %s points/s, %s writes each%s' \
        "$rounds" "$(median $(lp_rounds points_per_s "$p"))" "$(median $(lp_rounds requests_per_s "$p"))" \
        "$(median $(lp_rounds request_p50_ms "$p"))" "$(median $(lp_rounds request_p99_ms "$p"))" \
        "$(lp_rounds points_per_s "$p" | paste -sd, - | sed 's/,/, /g')" \
        "$(lp_rounds requests "$p" | paste -sd/ -)" "$note"
    if [ -n "$(val delivered_after_s "$work/$p-1")" ]; then
        # shellcheck disable=SC2046
        printf '; delivered %s points/s, the last %s s after the last answer; gateway CPU %s ms per 1 000 lines, RSS after %s' \
            "$(median $(lp_rounds delivered_points_per_s "$p"))" "$(median $(lp_rounds delivered_after_s "$p"))" \
            "$(median $(lp_rounds server_cpu_ms_per_1000_lines "$p"))" \
            "$(mib "$(median $(lp_rounds server_rss_after_kib "$p"))")"
    fi
    # shellcheck disable=SC2046
    printf '; influxd CPU %s ms per 1 000 lines' "$(median $(lp_rounds influxd_cpu_ms_per_1000_lines "$p"))"
}

# lp_ratios KEY SHAPE ACK: the rounds' ratios of the gateway's KEY to the direct writes'.
lp_ratios() {
    local r
    for r in $(seq "$rounds"); do
        # One ratio a line: `ratio` ends none.
        ratio "$(val "$1" "$work/lp-$2-$3-$r")" "$(val points_per_s "$work/lp-$2-direct-$r")"
        echo
    done
}

# The write API rows of the table.
write_api_rows() {
    local shape ack label target r rd verdict
    for shape in k6 single; do
        if [ "$shape" = k6 ]; then
            label="k6-shaped batches (5 000 lines, gzip'd, 4 connections)"
        else
            label="single lines (one a write, not compressed, 32 connections)"
        fi
        echo "| 8 | direct /write, $label | $(lp_cell "lp-$shape-direct") | | |"
        for ack in disk influxdb; do
            echo "| 8 | gateway ($ack) /write, $label | $(lp_cell "lp-$shape-$ack") | | |"
            target=""
            if [ "$ack" = disk ]; then
                target=1.0
                [ "$shape" = single ] && target=2.0
            fi
            if [ -n "$(lp_error "lp-$shape-direct")$(lp_error "lp-$shape-$ack")" ]; then
                echo "| 8 | gateway ($ack) / direct points/s, $label | **failed** (above) | ${target:+≥ $target×} | ${target:+**missed**} |"
                continue
            fi
            # shellcheck disable=SC2046 # one value per round, split on purpose
            r=$(median $(lp_ratios points_per_s "$shape" "$ack"))
            # shellcheck disable=SC2046
            rd=$(median $(lp_ratios delivered_points_per_s "$shape" "$ack"))
            verdict=""
            [ -n "$target" ] && verdict=$(met "$r" ">=" "$target")
            echo "| 8 | gateway ($ack) / direct points/s answered, $label (median of the rounds' ratios: $(lp_ratios points_per_s "$shape" "$ack" | sed 's/$/×/' | paste -sd, - | sed 's/,/, /g')); delivered to influxd, load and catching up: $rd× | $r× | ${target:+≥ $target×} | $verdict |"
        done
    done
}

# Exits non-zero, naming them, if write API runs failed.
write_api_verdict() {
    if [ "${#lp_failed[@]}" -gt 0 ]; then
        echo "bench: write API runs failed (a write not answered 204, so no figure): ${lp_failed[*]}; their errors are in $work" >&2
        exit 1
    fi
}

# The k6-shaped memory check (--soak-k6): exits with its outcome.
soak_phase() {
    local addr=$influx db=k6bench_direct pid=$influxd_pid token=() rc=0
    if [ "$soak_direct" -eq 0 ]; then
        gw_extra=$k6_gateway_toml
        start_gateway "$influx" 1h
        addr=$gw_addr
        db=k6bench
        pid=$gw_pid
        token=(--token "$k6_token")
    fi
    step "k6-shaped memory check, $([ "$soak_direct" -eq 1 ] && echo "straight to influxd" || echo "through the gateway"): a gzip'd batch of 5 000 lines a second from 4 connections for ${soak_seconds}s, RSS every 10 s (bound: 2 MiB growth in the last half)"
    timeout $((soak_seconds + 300)) "$loadgen" k6-soak --addr "$addr" --db "$db" "${token[@]}" \
        --pid "$pid" --seconds "$soak_seconds" --max-growth-kib 2048 | tee "$work/soak" || rc=$?
    if [ "$soak_direct" -eq 0 ]; then
        stop_gateway
    fi
    exit "$rc"
}

if [ "$only" = soak ]; then
    soak_phase
fi
write_api_phase
if [ "$only" = write-api ]; then
    print_head
    write_api_rows
    write_api_verdict
    exit 0
fi

# --- 1-3: throughput and latency ---------------------------------------------------
step "Warming up influxd (shards of both databases)"
start_gateway "$influx" 1h
run warm-gw gateway --addr "$gw_addr" --concurrency 4 --cycles 100 --max-seconds 10
stop_gateway
run warm-direct direct --influx "$influx" --db bench_direct --concurrency 4 --cycles 100

wrk_seconds=$(awk -v t="$round_limit" 'BEGIN { s = int(t + 0.5); print (s < 2 ? 2 : s) }')
"$loadgen" wrk-script --db bench_direct --out "$work/direct.lua"
for c in 8 32; do
    for r in $(seq "$rounds"); do
        step "Concurrency $c, round $r of $rounds: gateway (disk, then influxdb), then direct, up to $round_cycles cycles or ${round_limit}s each"
        for ack in disk influxdb; do
            start_gateway "$influx" 1h
            run "gw-$ack-$c-$r" gateway --addr "$gw_addr" --concurrency "$c" \
                --cycles "$round_cycles" --max-seconds "$round_limit" --pid "$gw_pid"
            stop_gateway
        done
        ack=disk
        run "direct-$c-$r" direct --influx "$influx" --db bench_direct --concurrency "$c" \
            --cycles "$round_cycles" --max-seconds "$round_limit"
    done
    step "Concurrency $c: wrk posting the same lines straight to influxd for ${wrk_seconds}s (the yardstick's check)"
    timeout 120 wrk -t 2 -c "$c" -d "${wrk_seconds}s" --latency -s "$work/direct.lua" \
        "http://$influx" >"$work/wrk-$c" 2>&1 || true
    step "Concurrency $c: gateway against the null InfluxDB"
    start_gateway "$null" 1h
    run "null-$c" gateway --addr "$gw_addr" --concurrency "$c" --cycles "$cycles" \
        --max-seconds "$phase_limit" --pid "$gw_pid"
    stop_gateway
done
# The CPU time a request spreads by a quarter from run to run on a shared machine; the
# instructions it takes do not. Counted by callgrind (about 30 times slower) from the first
# cycle to the last, the start and the stop left out.
ir_cycles=1000
step "Concurrency 8: instructions a request, the gateway under callgrind against the null InfluxDB ($ir_cycles cycles)"
gw_prefix=(valgrind --tool=callgrind "--callgrind-out-file=$work/callgrind.%p")
start_gateway "$null" 1h
gw_prefix=()
callgrind_control --zero "$gw_pid" >/dev/null
run ir-8 gateway --addr "$gw_addr" --concurrency 8 --cycles "$ir_cycles" --max-seconds 300
callgrind_control --dump "$gw_pid" >/dev/null
ir_total=$(awk '/^totals:/ { print $2; exit }' "$work/callgrind.$gw_pid.1" 2>/dev/null)
[ -n "$ir_total" ] || die "callgrind wrote no count of instructions ($work/callgrind.$gw_pid.1)"
stop_gateway

# --- 5: memory ------------------------------------------------------------------------
step "Memory: idle, then ${mem_steps[0]} and ${mem_steps[1]} cycles (null InfluxDB, ${mem_limits[0]}s and ${mem_limits[1]}s at most)"
start_gateway "$null" 1h
sleep 1
rss_idle=$(rss_kib "$gw_pid")
run mem-1 gateway --addr "$gw_addr" --concurrency 8 --cycles "${mem_steps[0]}" \
    --max-seconds "${mem_limits[0]}"
rss_step1=$(rss_kib "$gw_pid")
run mem-2 gateway --addr "$gw_addr" --concurrency 8 \
    --cycles "$((mem_steps[1] - mem_steps[0]))" --max-seconds "${mem_limits[1]}"
rss_step2=$(rss_kib "$gw_pid")
mem_done1=$(val cycles "$work/mem-1")
mem_done2=$((mem_done1 + $(val cycles "$work/mem-2")))
stop_gateway

step "Memory with finished runs forgotten after 1 s: ${retention_steps[0]} then ${retention_steps[1]} cycles (null InfluxDB, heartbeat every 2 s)"
start_gateway "$null" 2s "" "" 'finished_retention = "1s"'
run ret-1 gateway --addr "$gw_addr" --concurrency 8 --cycles "${retention_steps[0]}" --max-seconds 60
sleep 3 # past the retention and a tick: what is left is what stays
rss_ret1=$(rss_kib "$gw_pid")
run ret-2 gateway --addr "$gw_addr" --concurrency 8 \
    --cycles "$((retention_steps[1] - retention_steps[0]))" --max-seconds 120
sleep 3
rss_ret2=$(rss_kib "$gw_pid")
ret_done1=$(val cycles "$work/ret-1")
ret_done2=$((ret_done1 + $(val cycles "$work/ret-2")))
stop_gateway

step "$running_jobs running jobs: heartbeat every 1s against influxd"
# One register gives a job as the gateway saves it; the table of N running jobs is made of
# copies of it (registering them one by one would take minutes, see docs/performance.md).
start_gateway "$null" 1h
run seed-register register-many --addr "$gw_addr" --n 1
stop_gateway
"$loadgen" seed-jobs --from "$work/gateway-$gw_n/data/jobs.json" --n "$running_jobs" \
    --out "$work/jobs-seeded.json" >/dev/null
start_gateway "$influx" 1s "$work/jobs-seeded.json"
run tick tick --pid "$gw_pid" --ticks "$ticks" --max-seconds 20
rss_jobs=$(rss_kib "$gw_pid")
beats=$(curl -sf "http://$gw_addr/apiv0.1/states" | grep -o '"heartbeat_ticks":[0-9]*' | cut -d: -f2)
stop_gateway
step "The same $running_jobs heartbeats written straight to influxd, one write each"
run batch batch --influx "$influx" --db bench_direct --lines "$running_jobs" --writes 4

# --- 7: what a token holder can make the gateway hold ------------------------------------
step "Wide runs: 300 registers of about 1 MiB (63 string fields of 16 300 bytes)"
start_gateway "$null" 1h
run wide-1mib register-wide --addr "$gw_addr" --fields 63 --bytes 16300 --n 300
rss_wide=$(rss_kib "$gw_pid")
stop_gateway
step "Wide runs: registers of 60 KiB until the job table is full (jobs.max_table_bytes), then a kill -9 and a restart"
start_gateway "$null" 1h
run wide-fill register-wide --addr "$gw_addr" --fields 60 --bytes 1000 --n 100000 --until-refused
rss_full=$(rss_kib "$gw_pid")
kill -KILL "$gw_pid"
wait "$gw_pid" 2>/dev/null || true
restart_t0=$(date +%s%N)
launch_gateway
restart_ms=$((($(date +%s%N) - restart_t0) / 1000000))
restart_hwm=$(hwm_kib "$gw_pid")
restart_rss=$(rss_kib "$gw_pid")
stop_gateway
step "Memory with 512 stalled 1 MiB bodies from 8 loopback addresses: without a body budget, then with the default"
# A budget of 1 TiB is no budget: the gateway holds what it was sent, as before there was one.
start_gateway "$null" 1h "" "max_body_bytes_in_flight = 1099511627776"
run stalled-unbounded stalled-bodies --addr "$gw_addr" --pid "$gw_pid"
stop_gateway
start_gateway "$null" 1h
run stalled-budget stalled-bodies --addr "$gw_addr" --pid "$gw_pid"
stop_gateway
step "Memory with wide commits: 32 connections, gzip'd commits of 1 000 rows x 1 000 numeric members ($wide_commits commits), then 10 s idle"
start_gateway "$null" 1h
run wide-commits wide-commits --addr "$gw_addr" --pid "$gw_pid" --concurrency 32 \
    --commits "$wide_commits" --rows 1000 --members 1000 --after 10 --max-seconds 300
stop_gateway

# --- 6: start-up and size ----------------------------------------------------------------
step "Start-up time (median of 5) and binary size"
mkdir -p "$work/startup-cfg/data"
cat >"$work/startup-cfg/consumer.toml" <<EOF
[influxdb]
url = "http://$null"
[storage]
dir = "$work/startup-cfg/data"
EOF
run startup startup --bin "$bin" --config "$work/startup-cfg/consumer.toml" --runs 5
cp "$bin" "$work/stripped"
strip "$work/stripped"
size=$(stat -c %s "$work/stripped")

# --- the table ------------------------------------------------------------------------------
# rounds_of KEY PREFIX: KEY of each round's file PREFIX-1, PREFIX-2, ...
rounds_of() {
    local r
    for r in $(seq "$rounds"); do
        val "$1" "$work/$2-$r"
    done
}
# per_round KEY PREFIX: "a, b, c" for the table.
per_round() {
    rounds_of "$1" "$2" | paste -sd, - | sed 's/,/, /g'
}
# rounds_cyc PREFIX: median figures of the rounds, then each round's.
rounds_cyc() {
    local note="" r
    for r in $(seq "$rounds"); do
        if [ "$(val stopped_early "$work/$1-$r")" = "true" ]; then
            note=" (some rounds hit their ${round_limit}s limit)"
        fi
    done
    # shellcheck disable=SC2046 # one value per round, split on purpose
    printf 'median of %s rounds: %s cycles/s, p50 %s ms, p99 %s ms; rounds: %s cycles/s, p99 %s ms; %s cycles each%s' \
        "$rounds" "$(median $(rounds_of cycles_per_s "$1"))" "$(median $(rounds_of cycle_p50_ms "$1"))" \
        "$(median $(rounds_of cycle_p99_ms "$1"))" "$(per_round cycles_per_s "$1")" \
        "$(per_round cycle_p99_ms "$1")" "$(per_round cycles "$1" | sed 's/, /\//g')" "$note"
}
cyc() {
    local f="$work/$1" note=""
    if [ "$(val stopped_early "$f")" = "true" ]; then
        note=" (${phase_limit}s limit)"
    fi
    printf '%s cycles/s, p50 %s ms, p99 %s ms; %s cycles%s' "$(val cycles_per_s "$f")" \
        "$(val cycle_p50_ms "$f")" "$(val cycle_p99_ms "$f")" "$(val cycles "$f")" "$note"
}

print_head
# wrk_cycles C: wrk's requests per second at concurrency C, halved (a cycle is two writes).
wrk_cycles() {
    awk '/^Requests\/sec:/ { printf "%.1f", $2 / 2 }' "$work/wrk-$1"
}
for c in 8 32; do
    # shellcheck disable=SC2046 # one value per round, split on purpose
    dp99=$(median $(rounds_of cycle_p99_ms "direct-$c"))
    # shellcheck disable=SC2046
    dcyc=$(median $(rounds_of cycles_per_s "direct-$c"))
    echo "| 2 | direct /write, concurrency $c | $(rounds_cyc "direct-$c") | | |"
    wcyc=$(wrk_cycles "$c")
    wp99=$(awk '$1 == "99%" { print $2 }' "$work/wrk-$c")
    if grep -q 'Non-2xx' "$work/wrk-$c" || [ -z "$wcyc" ]; then
        echo "| 2 | wrk posting the same lines, concurrency $c | failed: $(tr '\n' ' ' <"$work/wrk-$c" | cut -c1-200) | | **missed** |"
    else
        echo "| 2 | wrk posting the same lines, concurrency $c: is the direct client the limit? | wrk $wcyc cycles/s (requests/s ÷ 2), p99 $wp99 per request; the direct client $dcyc cycles/s | direct ≥ 0.9 × wrk | $(met "$dcyc" ">=" "$(awk -v w="$wcyc" 'BEGIN { print 0.9 * w }')") |"
    fi
    for ack in disk influxdb; do
        if [ "$ack" = disk ]; then
            # The default mode keeps at least twice the direct writes' rate at both.
            target=2.0
        else
            target=1.0
            [ "$c" -eq 32 ] && target=1.5
        fi
        ratios=()
        for r in $(seq "$rounds"); do
            ratios+=("$(ratio "$(val cycles_per_s "$work/gw-$ack-$c-$r")" "$(val cycles_per_s "$work/direct-$c-$r")")")
        done
        r=$(median "${ratios[@]}")
        # shellcheck disable=SC2046
        gp99=$(median $(rounds_of cycle_p99_ms "gw-$ack-$c"))
        # shellcheck disable=SC2046
        echo "| 1 | gateway ($ack), concurrency $c | $(rounds_cyc "gw-$ack-$c"); server CPU $(median $(rounds_of server_cpu_us_per_request "gw-$ack-$c")) µs/request | | |"
        echo "| 3 | gateway ($ack) / direct cycles/s, concurrency $c (median of the rounds' ratios: $(printf '%s× ' "${ratios[@]}" | sed 's/ $//; s/ /, /g')) | $r× | ≥ $target× | $(met "$r" ">=" "$target") |"
        if [ "$ack" = disk ]; then
            echo "| 3 | gateway ($ack) p99 vs direct p99, concurrency $c (medians of the rounds) | $gp99 ms vs $dp99 ms | ≤ direct | $(met "$gp99" "<=" "$dp99") |"
        fi
    done
done
ir_requests=$(($(val cycles "$work/ir-8") * 2))
echo "| 4 | gateway, null InfluxDB, concurrency 8: instructions a request (callgrind, $ir_requests requests; steady where the CPU time is not) | $(awk -v t="$ir_total" -v n="$ir_requests" 'BEGIN { printf "%.0f", t / n }') | | |"
for c in 8 32; do
    echo "| 4 | gateway, null InfluxDB, concurrency $c | $(cyc "null-$c"); per request p50 $(val request_p50_ms "$work/null-$c") ms, p99 $(val request_p99_ms "$work/null-$c") ms; server CPU $(val server_cpu_us_per_request "$work/null-$c") µs/request | CPU ≤ 40 µs/request | $(met "$(val server_cpu_us_per_request "$work/null-$c")" "<=" 40) |"
done
echo "| 5 | RSS idle | $(mib "$rss_idle") | ≤ 8 MiB | $(met "$rss_idle" "<=" 8192) |"
echo "| 5 | RSS after $mem_done1 cycles (asked: ${mem_steps[0]} in ${mem_limits[0]}s) | $(mib "$rss_step1"); $(val cycles_per_s "$work/mem-1") cycles/s | | |"
grow=$((rss_step2 - rss_step1))
echo "| 5 | RSS after $mem_done2 cycles (asked: ${mem_steps[1]} in ${mem_limits[0]}+${mem_limits[1]}s) | $(mib "$rss_step2"), +$(mib "$grow"); $(val cycles_per_s "$work/mem-2") cycles/s in this step | within 1 MiB of the first step, 100 000 vs 10 000 cycles | $(met "$grow" "<=" 1024) |"
echo "| 5 | RSS after $ret_done1 cycles, finished runs forgotten after 1 s (finished_retention) | $(mib "$rss_ret1") | | |"
ret_grow=$((rss_ret2 - rss_ret1))
echo "| 5 | the same after $ret_done2 cycles | $(mib "$rss_ret2"), +$(mib "$ret_grow") | within 1 MiB of the first step | $(met "$ret_grow" "<=" 1024) |"
echo "| 5 | RSS with $running_jobs running jobs | $(mib "$rss_jobs") | ≤ 16 MiB | $(met "$rss_jobs" "<=" 16384) |"
# stalled FILE: the figures of one stalled-bodies run.
stalled() {
    local f="$work/$1"
    printf 'peak %s (%s sent); %s of %s refused with 503 too_many_bodies, %s closed; a normal register meanwhile: %s in %s ms' \
        "$(mib "$(val rss_peak_kib "$f")")" "$(val sent_mib "$f") MiB" "$(val refused "$f")" \
        "$(val connections "$f")" "$(val closed "$f")" "$(val register_status "$f")" "$(val register_ms "$f")"
}
echo "| 5 | RSS with 512 stalled 1 MiB bodies, half sent, from 8 loopback addresses; no body budget (max_body_bytes_in_flight = 1 TiB, as before it existed) | $(stalled stalled-unbounded) | | |"
echo "| 5 | the same with the default budget of 64 MiB | $(stalled stalled-budget) | peak ≤ 80 MiB | $(met "$(val rss_peak_kib "$work/stalled-budget")" "<=" 81920) |"
wide="$work/wide-commits"
echo "| 5 | 32 connections, gzip'd commits of 1 000 rows × 1 000 numeric members ($(val wire_bytes "$wide") bytes sent, $(val inflated_bytes "$wide") inflated; $(val commits "$wide") committed in $(val seconds "$wide") s; answers $(val answers "$wide")): peak RSS during the load (VmHWM) | $(mib "$(val rss_peak_kib "$wide")") | ≤ 256 MiB | $(met "$(val rss_peak_kib "$wide")" "<=" 262144) |"
echo "| 5 | the same, RSS $(val after_s "$wide") s after the load (VmRSS) | $(mib "$(val rss_after_kib "$wide")") | ≤ 64 MiB | $(met "$(val rss_after_kib "$wide")" "<=" 65536) |"
echo "| 5 | heartbeat tick, $running_jobs jobs, to influxd ($(val ticks "$work/tick") ticks after the first; $beats counted by the gateway) | wall p50 $(val tick_wall_p50_ms "$work/tick") ms, max $(val tick_wall_max_ms "$work/tick") ms; CPU p50 $(val tick_cpu_p50_ms "$work/tick") ms; the first tick, which has InfluxDB create the $running_jobs series: $(val first_tick_wall_ms "$work/tick") ms | ≤ 100 ms | $(met "$(val tick_wall_max_ms "$work/tick")" "<=" 100) |"
echo "| 5 | $running_jobs heartbeat lines in one write straight to influxd ($(val writes "$work/batch") writes after the one creating the series): what a tick waits for | p50 $(val batch_wall_p50_ms "$work/batch") ms, max $(val batch_wall_max_ms "$work/batch") ms | | |"
echo "| 7 | 300 registers of about 1 MiB each ($(val answers "$work/wide-1mib")) | RSS $(mib "$rss_wide") | ≤ 256 MiB | $(met "$rss_wide" "<=" 262144) |"
echo "| 7 | registers of 60 KiB until the table is full ($(val answers "$work/wide-fill")) | RSS $(mib "$rss_full") | ≤ 256 MiB | $(met "$rss_full" "<=" 262144) |"
echo "| 7 | restart after kill -9 with that table: time to first ping, peak RSS (RSS after) | $restart_ms ms, peak $(mib "$restart_hwm") ($(mib "$restart_rss")) | ≤ 10 s, ≤ 256 MiB | $(met "$restart_ms" "<=" 10000), $(met "$restart_hwm" "<=" 262144) |"
echo "| 6 | start-up to first ping (median of 5: $(val startup_runs_ms "$work/startup") ms) | $(val startup_median_ms "$work/startup") ms | ≤ 20 ms | $(met "$(val startup_median_ms "$work/startup")" "<=" 20) |"
echo "| 6 | stripped release binary (reported: the release profile is chosen by CPU a request, not size) | $(mib $((size / 1024))) ($size bytes) | | |"
write_api_rows
write_api_verdict
