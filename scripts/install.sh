#!/usr/bin/env bash
# Installs metrics-consumer as a systemd service:
#   PREFIX/bin/metrics-consumer                     the binary (0755)
#   /etc/systemd/system/metrics-consumer.service    the unit, ExecStart pointing at the binary
#   /etc/metrics-consumer/consumer.toml             the configuration (0640), only when absent
#   /etc/metrics-consumer/tokens, influxdb-secret   empty secret files (0600), only when absent
# The unit hands the last three to the service as credentials, and systemd refuses
# to start it when one is missing, hence the empty secret files.
#
# Usage: scripts/install.sh [--prefix DIR] [--binary PATH]
#   --prefix DIR   where the binary goes, under DIR/bin (default /usr/local)
#   --binary PATH  install this binary instead of building one with cargo build --release
# DESTDIR, when set, is put in front of every path written (for packaging and tests);
# the paths inside the unit stay as they will be on the target system.
#
# Running it again changes only what differs; it never overwrites an existing
# configuration or secret file. It does not start anything: it prints the next steps.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=/usr/local
binary=

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 2
}

# The comment block at the top of this file, without its leading '#'.
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
    --prefix)
        [ "$#" -ge 2 ] || die "--prefix needs a directory"
        prefix=$2
        shift 2
        ;;
    --binary)
        [ "$#" -ge 2 ] || die "--binary needs a path"
        binary=$2
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        die "unknown argument '$1' (see --help)"
        ;;
    esac
done

# The prefix ends up in the unit's ExecStart=, where spaces, quotes, '%' and '$' have
# meanings of their own; plain paths need none of them.
case "$prefix" in
/*) ;;
*) die "--prefix must be an absolute path, not '$prefix'" ;;
esac
case "$prefix" in
*[!A-Za-z0-9._/+-]*) die "--prefix may hold only letters, digits and . _ / + -, not '$prefix'" ;;
esac
prefix=${prefix%/}
destdir=${DESTDIR:-}
destdir=${destdir%/}

if [ -z "$binary" ]; then
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: build with 'cargo build --release' as yourself, then run this with --binary target/release/metrics-consumer"
    echo "building: cargo build --release"
    (cd "$repo" && cargo build --release)
    binary=$repo/target/release/metrics-consumer
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
    die "$binary is not an executable file"
fi

bin_path=$prefix/bin/metrics-consumer
unit_path=/etc/systemd/system/metrics-consumer.service
config_dir=/etc/metrics-consumer

changed=0

# Writes $2 to the path $1 with mode $3 through a temporary file and a rename, so the file
# is never seen half-written (a running service's binary included).
place() {
    local target=$1 source=$2 mode=$3
    mkdir -p "$(dirname "$target")"
    local tmp
    tmp=$(mktemp "$target.XXXXXX")
    cp "$source" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$target"
    changed=1
}

# Puts the content of $2 at $destdir$1 with mode $3 (see place). Leaves an identical file
# alone, and only corrects the mode when only the mode differs.
put() {
    local target=$destdir$1 source=$2 mode=$3
    if [ -f "$target" ] && cmp -s "$source" "$target"; then
        if [ "$(stat -c %a "$target")" = "${mode#0}" ]; then
            echo "unchanged  $target"
        else
            chmod "$mode" "$target"
            echo "chmod $mode  $target"
            changed=1
        fi
        return
    fi
    place "$target" "$source" "$mode"
    echo "installed  $target"
}

# Creates $destdir$1 from $2 with mode $3 unless it exists: an operator's file is kept.
put_if_absent() {
    local target=$destdir$1 source=$2 mode=$3
    if [ -e "$target" ]; then
        echo "kept       $target (exists; not overwritten)"
        return
    fi
    place "$target" "$source" "$mode"
    echo "created    $target"
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

put "$bin_path" "$binary" 0755

# The shipped unit names /usr/local/bin/metrics-consumer; another prefix changes that line.
sed "s|^ExecStart=/usr/local/bin/metrics-consumer |ExecStart=$bin_path |" \
    "$repo/scripts/metrics-consumer.service" >"$scratch/unit"
grep -q "^ExecStart=$bin_path " "$scratch/unit" ||
    die "scripts/metrics-consumer.service has no ExecStart=/usr/local/bin/metrics-consumer line to adapt"
put "$unit_path" "$scratch/unit" 0644

if [ ! -d "$destdir$config_dir" ]; then
    mkdir -p "$destdir$config_dir"
    chmod 0755 "$destdir$config_dir"
fi
put_if_absent "$config_dir/consumer.toml" "$repo/consumer.toml" 0640
cat >"$scratch/tokens" <<'EOF'
# Client tokens for metrics-consumer, one per line (make one with `openssl rand -hex 32`).
# Lines starting with # are skipped. Used when consumer.toml has [auth] token_files = ["tokens"].
EOF
put_if_absent "$config_dir/tokens" "$scratch/tokens" 0600
# The gateway reads this file whole (less a trailing newline), so it holds the secret
# alone, without a comment.
: >"$scratch/influxdb-secret"
put_if_absent "$config_dir/influxdb-secret" "$scratch/influxdb-secret" 0600

if [ "$changed" -eq 0 ]; then
    echo "nothing to do: everything was installed already"
fi

cat <<EOF

Next steps (README.md, "Run as a service"):
  1. Edit $config_dir/consumer.toml; put client tokens into $config_dir/tokens
     and the InfluxDB password or token into $config_dir/influxdb-secret.
  2. systemctl daemon-reload
  3. systemctl enable --now metrics-consumer
  4. systemctl status metrics-consumer; journalctl -u metrics-consumer -f
EOF
