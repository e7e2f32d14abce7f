#!/usr/bin/env bash
# Starts a run: POST /apiv0.1/events/register. Prints the gateway's JSON answer, and on
# stderr how to keep its uuid for progress.sh and commit.sh.
#
# Usage: register.sh [BODY]
#   BODY  the JSON to send; default: an example run from this host
# Environment:
#   METRICS_CONSUMER_URL    the gateway (default http://127.0.0.1:3000; a trailing / is fine)
#   METRICS_CONSUMER_TOKEN  sent as "Authorization: Bearer TOKEN" when set
# Exits non-zero, after printing the gateway's error, when the answer is not a 200.
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

body=${1:-$(
    cat <<JSON
{"host": "${HOSTNAME:-lg-1}",
 "measurement": {"fields": {"clients": 10, "hatchRate": 0.5, "requests": 0},
                 "tags": {"targetHost": "http://10.10.10.1", "mode": "example"}}}
JSON
)}

status=0
answer=$(curl -sS --fail-with-body --connect-timeout 10 --max-time 60 -w '\n' \
    -H @<(auth_header) -H 'Content-Type: application/json' --data-binary "$body" \
    "$url/apiv0.1/events/register") || status=$?
printf '%s\n' "$answer"
[ "$status" -eq 0 ] || exit "$status"

uuid=$(printf '%s\n' "$answer" | sed -n 's/.*"uuid": *"\([0-9a-fA-F-]*\)".*/\1/p')
cat >&2 <<HINT
The run's uuid is $uuid; keep it for the next steps:
  export RUN=$uuid
  scripts/examples/progress.sh "\$RUN"
  scripts/examples/commit.sh "\$RUN"
HINT
