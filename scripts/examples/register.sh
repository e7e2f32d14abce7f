#!/usr/bin/env bash
# Starts a run: POST /apiv0.1/events/register. Prints the gateway's JSON answer, and on
# stderr how to keep its uuid for progress.sh and commit.sh.
#
# Usage: register.sh [BODY]
#   BODY  the JSON to send; default: an example run from this host
# Environment:
#   METRICS_CONSUMER_URL    the gateway (default http://127.0.0.1:3000; a trailing / is fine)
#   METRICS_CONSUMER_TOKEN  sent as "Authorization: Bearer TOKEN" when set
#   METRICS_CONSUMER_THRESHOLDS  the run's checks, added to the body as its "thresholds": a JSON
#                           object of endpoint → checks, e.g.
#                           '{"Aggregated": ["fail_ratio < 1%"], "/checkout": ["p95 < 500ms"]}';
#                           commit.sh then prints the verdict and fails when a check failed.
#                           (A BODY with "thresholds" of its own needs no such variable; the
#                           two together are refused, as one would silently replace the other.
#                           Without python3 or jq, any "thresholds" in BODY's text counts.)
# Exits non-zero, after printing the gateway's error, when the answer is not a 200 (400 names a
# malformed check); 2 when METRICS_CONSUMER_THRESHOLDS is set and BODY is not a JSON object, or
# holds "thresholds" of its own.
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

# The checks go first in the body's object, before its own members.
if [ -n "${METRICS_CONSUMER_THRESHOLDS:-}" ]; then
    if ! [[ $body =~ ^[[:space:]]*\{ ]]; then
        echo "$0: METRICS_CONSUMER_THRESHOLDS is set, but the body is not a JSON object to add them to" >&2
        exit 2
    fi
    # Whether the body's object has a member "thresholds": read as JSON where python3 or jq
    # can (a key written with escapes is the same key), else any "thresholds" in its text.
    if command -v python3 >/dev/null; then
        has_own() { python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if isinstance(d, dict) and "thresholds" in d else 1)'; }
    elif command -v jq >/dev/null; then
        has_own() { jq -e 'type == "object" and has("thresholds")' >/dev/null; }
    else
        has_own() { [[ $(cat) == *'"thresholds"'* ]]; }
    fi
    if printf '%s' "$body" | has_own 2>/dev/null; then
        echo "$0: METRICS_CONSUMER_THRESHOLDS is set, but the body has \"thresholds\" of its own; the gateway would keep only one of them: unset the variable or take them out of the body" >&2
        exit 2
    fi
    members=${body#*\{}
    separator=", "
    if [[ $members =~ ^[[:space:]]*\} ]]; then
        separator=""
    fi
    body="{\"thresholds\": $METRICS_CONSUMER_THRESHOLDS$separator$members"
fi

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
