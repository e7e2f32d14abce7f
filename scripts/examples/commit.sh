#!/usr/bin/env bash
# Finishes a run and records its result: POST /apiv0.1/events/commit, gzip'd. Prints the
# gateway's JSON answer.
#
# Usage: commit.sh UUID [REQUEST_STATS | @FILE]
#   UUID           the run's uuid, as register.sh printed it
#   REQUEST_STATS  the result as Locust reports it: a JSON object, or the array of rows that
#                  `locust --json-file NAME` writes; default: an example
#   @FILE          the same, read from FILE (e.g. @locust-stats.json): a file of any size,
#                  where "$(cat FILE)" stops at the shell's limit on one argument (128 KiB)
# Environment:
#   METRICS_CONSUMER_URL    the gateway (default http://127.0.0.1:3000; a trailing / is fine)
#   METRICS_CONSUMER_TOKEN  sent as "Authorization: Bearer TOKEN" when set
# Exits non-zero, after printing the gateway's error, when the answer is not a 200
# (404: no such run; 409: committed already).
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
    echo "usage: $0 UUID [REQUEST_STATS | @FILE]   (UUID: the uuid register.sh printed; @FILE: the stats read from FILE)" >&2
    exit 2
fi
stats=${2:-$(
    cat <<'JSON'
{"stats": [{"name": "/items", "method": "GET", "num_requests": 120, "num_failures": 2,
            "avg_response_time": 12.5, "median_response_time": 11, "current_rps": 8.5}],
 "errors": [], "total_rps": 8.5, "fail_ratio": 0.0167}
JSON
)}

if [[ $stats == @* ]]; then
    file=${stats#@}
    [ -r "$file" ] || {
        echo "$0: cannot read $file" >&2
        exit 2
    }
    stats=$(<"$file")
fi

# gzip'd, so that the statistics of a run with thousands of endpoints stay within the
# gateway's body limit (server.max_body_bytes). printf is a shell builtin: no argument limit.
printf '{"uuid": "%s", "measurement": {"fields": {"requestStats": %s}}}' "$uuid" "$stats" |
    gzip -c |
    curl -sS --fail-with-body --connect-timeout 10 --max-time 60 -w '\n' \
        -H @<(auth_header) -H 'Content-Type: application/json' -H 'Content-Encoding: gzip' \
        --data-binary @- "$url/apiv0.1/events/commit"
