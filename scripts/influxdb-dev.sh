#!/usr/bin/env bash
# Runs a throwaway InfluxDB 1.x in the foreground on 127.0.0.1:8086, to watch
# the gateway's points land (the default consumer.toml writes there). Data and
# the generated config live in ${INFLUXDB_DEV_DIR:-./influxdb-dev}; delete that
# directory to start over. Ctrl-C stops the server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/install-influxdb.sh
source scripts/lib/install-influxdb.sh

ensure_influxd
influxd=$(influxd_path)

dir=${INFLUXDB_DEV_DIR:-./influxdb-dev}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
config="$dir/influxdb.conf"

# A friendlier message than influxd's "address already in use".
if (exec 3<>/dev/tcp/127.0.0.1/8086) 2>/dev/null; then
    die "something already listens on 127.0.0.1:8086 (another influxd?); stop it first"
fi

influxd_config "$dir" 8086 8088 >"$config"

cat <<MSG
InfluxDB on http://127.0.0.1:8086 with data in $dir; Ctrl-C stops it.
Look at what arrived with, for example:
  curl -sG http://127.0.0.1:8086/query --data-urlencode 'q=SHOW DATABASES'
  curl -sG http://127.0.0.1:8086/query --data-urlencode 'db=telegraf' --data-urlencode 'q=SHOW MEASUREMENTS'
MSG
# exec, so Ctrl-C's SIGINT reaches influxd itself, which shuts down cleanly.
exec "$influxd" run -config "$config"
