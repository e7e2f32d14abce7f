#!/usr/bin/env bash
# Which runs are running: GET /apiv0.1/events/isrunning. Prints the gateway's JSON answer,
# {"<uuid>": true} for each running run and false for runs that ended lately.
#
# Usage: isrunning.sh
# Environment:
#   METRICS_CONSUMER_URL    the gateway (default http://127.0.0.1:3000; a trailing / is fine)
#   METRICS_CONSUMER_TOKEN  sent as "Authorization: Bearer TOKEN" when set
set -euo pipefail

url=${METRICS_CONSUMER_URL:-http://127.0.0.1:3000}
# Without its trailing slashes, so that the paths below do not start with //.
while [[ $url == */ ]]; do url=${url%/}; done
# curl reads the header from a pipe, so the token never shows in `ps` output.
auth_header() {
    if [ -n "${METRICS_CONSUMER_TOKEN:-}" ]; then
        printf 'Authorization: Bearer %s\n' "$METRICS_CONSUMER_TOKEN"
    fi
}

curl -sS --fail-with-body --connect-timeout 10 --max-time 60 -w '\n' \
    -H @<(auth_header) "$url/apiv0.1/events/isrunning"
