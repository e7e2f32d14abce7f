#!/usr/bin/env bash
# Finishes a run and records its result: POST /apiv0.1/events/commit. Prints the gateway's
# JSON answer.
#
# Usage: commit.sh UUID [REQUEST_STATS]
#   UUID           the run's uuid, as register.sh printed it
#   REQUEST_STATS  the result as Locust reports it (a JSON object); default: an example
# Environment:
#   METRICS_CONSUMER_URL    the gateway (default http://127.0.0.1:3000)
#   METRICS_CONSUMER_TOKEN  sent as "Authorization: Bearer TOKEN" when set
# Exits non-zero, after printing the gateway's error, when the answer is not a 200
# (404: no such run; 409: committed already).
set -euo pipefail

url=${METRICS_CONSUMER_URL:-http://127.0.0.1:3000}
# curl reads the header from a pipe, so the token never shows in `ps` output.
auth_header() {
    if [ -n "${METRICS_CONSUMER_TOKEN:-}" ]; then
        printf 'Authorization: Bearer %s\n' "$METRICS_CONSUMER_TOKEN"
    fi
}

uuid=${1:-}
if ! [[ $uuid =~ ^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$ ]]; then
    echo "usage: $0 UUID [REQUEST_STATS]   (UUID: the uuid register.sh printed)" >&2
    exit 2
fi
stats=${2:-$(
    cat <<'JSON'
{"stats": [{"name": "/items", "method": "GET", "num_requests": 120, "num_failures": 2,
            "avg_response_time": 12.5, "median_response_time": 11, "current_rps": 8.5}],
 "errors": [], "total_rps": 8.5, "fail_ratio": 0.0167}
JSON
)}

curl -sS --fail-with-body --connect-timeout 10 --max-time 60 -w '\n' \
    -H @<(auth_header) -H 'Content-Type: application/json' \
    --data-binary "{\"uuid\": \"$uuid\", \"measurement\": {\"fields\": {\"requestStats\": $stats}}}" \
    "$url/apiv0.1/events/commit"
