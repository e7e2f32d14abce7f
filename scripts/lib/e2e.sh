# shellcheck shell=bash
# What the end-to-end scripts of the deployment share: polling, processes stopped by PID,
# a throwaway influxd on free loopback ports, and the statically linked release binary
# (built once, then reused by scripts/container-e2e.sh and scripts/systemd-e2e.sh).
# Sourced after scripts/lib/install-influxdb.sh (for die, influxd_path and influxd_config);
# defines functions only. The caller declares `pids=()` and calls stop_pids from its trap.

# Runs a command every 0.1 s until it succeeds (status 0) or $1 seconds of wall-clock time have
# passed; it runs at least once. Returns 1 on timeout.
# The deadline is measured, not a count of tries: a busy machine, where each try takes longer,
# neither stretches nor shortens it. A caller that must say what it saw keeps that in a
# variable of its own (the command runs in this shell, not a subshell).
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    while true; do
        if "$@"; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.1
    done
}

# Stops every process in the caller's `pids`: SIGTERM, up to 5 s, then SIGKILL.
stop_pids() {
    local pid _
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# Starts influxd with its data and log under $1, on two free loopback ports (HTTP and RPC),
# and waits for /ping (30 s at most). Sets influx_url, influx_port and influxd_pid, and adds the pid to
# `pids`. A port taken between choosing and binding it leads to new ports, 3 tries.
start_influxd() {
    local dir=$1 attempt rpc_port influxd
    influxd=$(influxd_path)
    [ -n "$influxd" ] || die "influxd not found: install Debian's influxdb package (scripts/test.sh installs it)"
    mkdir -p "$dir"
    for attempt in 1 2 3; do
        read -r influx_port rpc_port < <(python3 scripts/e2e/free_ports.py 2)
        influxd_config "$dir" "$influx_port" "$rpc_port" >"$dir/influxd.conf"
        "$influxd" run -config "$dir/influxd.conf" >"$dir/influxd.log" 2>&1 &
        influxd_pid=$!
        pids+=("$influxd_pid")
        influx_url=http://127.0.0.1:$influx_port
        if wait_for 30 curl -fs --max-time 5 -o /dev/null "$influx_url/ping"; then
            return 0
        fi
        kill -KILL "$influxd_pid" 2>/dev/null || true
        wait "$influxd_pid" 2>/dev/null || true
        if grep -q "address already in use" "$dir/influxd.log" && [ "$attempt" -lt 3 ]; then
            continue
        fi
        tail -n 30 "$dir/influxd.log" >&2
        die "influxd did not answer /ping within 30 s"
    done
}

# Prints the number of points of measurement $3 in InfluxDB database $2 at $1 whose uuid
# tag is $4 (0 when there are none).
count_points() {
    curl -fsG "$1/query" --data-urlencode "db=$2" \
        --data-urlencode "q=SELECT count(*) FROM \"$3\" WHERE \"uuid\" = '$4'" |
        python3 -c 'import json, sys
series = json.load(sys.stdin)["results"][0].get("series") or [{"values": [[0, 0]]}]
print(max(v for v in series[0]["values"][0][1:] if isinstance(v, int)))'
}

# The host's Rust target triple, e.g. x86_64-unknown-linux-gnu.
host_triple() {
    rustc -vV | sed -n 's/^host: //p'
}

# Whether the ELF file $1 has no program interpreter (PT_INTERP): a static or static-pie
# executable, which runs where there is no libc.
is_static() {
    python3 - "$1" <<'PY'
import struct, sys
with open(sys.argv[1], "rb") as f:
    head = f.read(64)
    if head[:4] != b"\x7fELF" or head[4] != 2:
        sys.exit(1)
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    f.seek(phoff)
    table = f.read(phentsize * phnum)
types = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)]
sys.exit(3 in types)
PY
}

# Builds the gateway as a statically linked release binary (glibc, crt-static) for the host's
# target, in target/<triple>/release, apart from the ordinary builds, so rebuilds stay
# incremental; prints its path. Both the container image and the systemd test use it.
static_binary() {
    local triple binary
    triple=$(host_triple)
    [ -n "$triple" ] || die "cannot read the host's target triple from 'rustc -vV'"
    RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --quiet --release --target "$triple" --bin metrics-consumer >&2 ||
        die "the static build failed: RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target $triple"
    binary=target/$triple/release/metrics-consumer
    is_static "$binary" ||
        die "$binary is not statically linked (it has a program interpreter): the static build did not take"
    echo "$binary"
}
