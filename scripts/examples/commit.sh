#!/usr/bin/env bash
# Finishes a run and records its result: POST /apiv0.1/events/commit, gzip'd. Prints the
# gateway's JSON answer; when the run has checks (register.sh's METRICS_CONSUMER_THRESHOLDS, or
# the gateway's [[verdict.rule]]), also the verdict on stderr: passed or FAILED, with one line
# per failed check (endpoint: check: value, limit; reason), response times in ms and fail_ratio
# as a ratio. Reads the answer with python3, or with jq when there is no python3.
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
# Exit codes:
#   0  committed; the checks passed, or the run has none
#   1  committed; the verdict FAILED (the failed checks are on stderr)
#   2  usage, an unreadable @FILE, or neither python3 nor jq to read the verdict with (checked
#      before anything is sent)
#   curl's own on a failed call, after printing the gateway's error: 22 for an answer other than
#   200 (404: no such run; 409: committed already), 7 when the gateway cannot be reached, …
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

# The verdict of the gateway's answer (on stdin): a first line "passed" or "failed", then the
# lines to show; nothing when the run has no checks.
read_verdict_python() {
    python3 -c '
import json, sys
verdict = json.load(sys.stdin).get("verdict")
checks = verdict.get("checks") if isinstance(verdict, dict) else None
checks = [c for c in checks or [] if isinstance(c, dict)]
if not checks:
    sys.exit()
def number(x):
    if not isinstance(x, (int, float)):
        return "none"
    return str(int(x)) if float(x).is_integer() else str(x)
def where(c):
    return " ".join(str(p) for p in (c.get("method"), c.get("endpoint")) if p)
failed = [c for c in checks if c.get("passed") is False]
skipped = [c for c in checks if c.get("passed") is None]
baseline = verdict.get("baseline")
base = "baseline: run %s" % baseline if baseline else "no baseline run"
if verdict.get("passed") is False:
    print("failed")
    print("FAILED its checks: %d of %d failed (%s)" % (len(failed), len(checks), base))
else:
    print("passed")
    print("passed its checks: %d of %d passed (%s)" % (len(checks) - len(skipped), len(checks), base))
for c in failed:
    reason = "; %s" % c["reason"] if c.get("reason") else ""
    print("  failed: %s: %s: value %s, limit %s%s"
          % (where(c), c.get("check"), number(c.get("value")), number(c.get("limit")), reason))
for c in skipped:
    print("  skipped: %s: %s: %s" % (where(c), c.get("check"), c.get("reason") or "no reason given"))
'
}

read_verdict_jq() {
    jq -r '
def number: if type != "number" then "none" elif . == floor then floor | tostring else tostring end;
def where: [.method, .endpoint] | map(select(. != null and . != "") | tostring) | join(" ");
.verdict as $v
| if ($v | type) != "object" then empty else
    ($v.checks // [] | map(select(type == "object"))) as $c
    | if ($c | length) == 0 then empty else
        ($c | map(select(.passed == false))) as $f
        | ($c | map(select(.passed == null))) as $s
        | (if $v.baseline then "baseline: run \($v.baseline)" else "no baseline run" end) as $b
        | (if $v.passed == false
            then "failed", "FAILED its checks: \($f | length) of \($c | length) failed (\($b))"
            else "passed", "passed its checks: \(($c | length) - ($s | length)) of \($c | length) passed (\($b))"
            end),
          ($f[] | "  failed: \(where): \(.check): value \(.value | number), limit \(.limit | number)\(if .reason then "; \(.reason)" else "" end)"),
          ($s[] | "  skipped: \(where): \(.check): \(.reason // "no reason given")")
    end end'
}

# Checked before the commit is sent: a run committed once cannot be committed again.
if command -v python3 >/dev/null 2>&1; then
    read_verdict=read_verdict_python
elif command -v jq >/dev/null 2>&1; then
    read_verdict=read_verdict_jq
else
    echo "$0: neither python3 nor jq found, to read the verdict of the answer: install one (apt-get install python3, or jq)" >&2
    exit 2
fi

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
status=0
answer=$(printf '{"uuid": "%s", "measurement": {"fields": {"requestStats": %s}}}' "$uuid" "$stats" |
    gzip -c |
    curl -sS --fail-with-body --connect-timeout 10 --max-time 60 \
        -H @<(auth_header) -H 'Content-Type: application/json' -H 'Content-Encoding: gzip' \
        --data-binary @- "$url/apiv0.1/events/commit") || status=$?
printf '%s\n' "$answer"
[ "$status" -eq 0 ] || exit "$status"

verdict=$(printf '%s\n' "$answer" | "$read_verdict") || {
    echo "$0: cannot read the verdict in the gateway's answer (above)" >&2
    exit 2
}
[ -n "$verdict" ] || exit 0
{
    IFS= read -r outcome
    IFS= read -r head
    printf '%s: run %s %s\n' "$0" "$uuid" "$head"
    cat
} <<<"$verdict" >&2
[ "$outcome" != failed ] || exit 1
