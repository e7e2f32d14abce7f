"""Reads the gateway's /apiv0.1/metrics with Prometheus's own parser (prometheus_client) and
checks that the families are well formed and that the Locust run moved the counters.

Usage: check_metrics.py URL TOKEN (the token is read, never printed)."""

import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url, token = sys.argv[1], sys.argv[2]
    request = urllib.request.Request(
        url.rstrip("/") + "/apiv0.1/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    kinds = {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    problems = []
    if kinds.get("metrics_consumer_request_duration_seconds") != "histogram":
        problems.append("request duration is not a histogram")
    for route in ("register", "progress", "commit"):
        n = value("metrics_consumer_requests_total", route=route, status="2xx")
        if not n or n < 1:
            problems.append(f"no successful {route} counted ({n})")
    written = value("metrics_consumer_points_written_total")
    if not written or written < 5:
        problems.append(f"points_written_total is {written}")
    if value("metrics_consumer_influxdb_up") != 1:
        problems.append("influxdb_up is not 1")
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"metrics: {len(kinds)} families parse; {int(written)} points written")


if __name__ == "__main__":
    main()
