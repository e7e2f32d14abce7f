#!/usr/bin/env bash
# Reports how a run is doing: POST /apiv0.1/events/progress. The fields replace those of
# the same name, so the run's following heartbeats carry them. Prints the gateway's JSON
# answer.
#
# Usage: progress.sh UUID [FIELDS]
#   UUID    the run's uuid, as register.sh printed it
#   FIELDS  a JSON object of field values; default: an example
# Environment:
#   METRICS_CONSUMER_URL    the gateway (default http://127.0.0.1:3000; a trailing / is fine)
#   METRICS_CONSUMER_TOKEN  sent as "Authorization: Bearer TOKEN" when set
# Exits non-zero, after printing the gateway's error, when the answer is not a 200
# (404: no such run; 409: the run has ended).
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

uuid=${1:-}
if ! [[ $uuid =~ ^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$ ]]; then
    echo "usage: $0 UUID [FIELDS]   (UUID: the uuid register.sh printed)" >&2
    exit 2
fi
fields=${2:-'{"clients": 50, "requests": 1200, "rps": 41.5}'}

curl -sS --fail-with-body --connect-timeout 10 --max-time 60 -w '\n' \
    -H @<(auth_header) -H 'Content-Type: application/json' \
    --data-binary "{\"uuid\": \"$uuid\", \"measurement\": {\"fields\": $fields}}" \
    "$url/apiv0.1/events/progress"
