"""Runs Locust 2.x headless for a few seconds with locust-influxdb-listener writing through the
gateway (locustfile_influxdb_listener.py), then reads back from influxd what the listener wrote:
one locust_requests point per request Locust counted (its --json summary), each tagged as the
listener tags it, and Locust's events (test_started, spawning_complete, quitting).

The listener swallows its own failures (a refused CREATE DATABASE only logs, a refused write
kills its flush loop), so the check is what is stored, not Locust's exit code.

Usage: clients_locust.py run --gateway URL --token T --database DB --influxd URL"""

import json
import os
import subprocess
import sys
from pathlib import Path

from influx_check import Failed, expect, points, run, wait_points


def locust_run(args):
    """A 4-second run of 2 users, its requests and events stored."""
    env = dict(os.environ, INFLUX_CHECK_GATEWAY=args.gateway, INFLUX_CHECK_TOKEN=args.token,
               INFLUX_CHECK_DATABASE=args.database)
    locustfile = Path(__file__).with_name("locustfile_influxdb_listener.py")
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "2", "-r", "2", "-t", "4s",
         "-H", args.gateway, "--json", "--exit-code-on-error", "0"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        raise Failed(f"locust exited {done.returncode}:\n{done.stderr[-3000:]}")
    expect("Unexpected error" not in done.stderr, f"the listener failed to start:\n{done.stderr[-3000:]}")
    expect("Traceback" not in done.stderr, f"an exception in the run:\n{done.stderr[-3000:]}")
    stats = [s for s in json.loads(done.stdout) if s["name"] == "/ping"]
    expect(len(stats) == 1 and stats[0]["num_requests"] > 0, f"Locust's summary: {done.stdout[:2000]}")
    requests = stats[0]["num_requests"]
    rows = wait_points(args.influxd, args.database, "locust_requests", requests)
    for row in rows:
        tags = {k: row.get(k) for k in ("name", "request_type", "success", "node_id", "exception")}
        expect(tags == {"name": "/ping", "request_type": "GET", "success": "True", "node_id": "local",
                        "exception": "None"}, f"locust_requests tags: {row}")
        expect(isinstance(row.get("response_time"), float) and row.get("response_length") == 0,
               f"locust_requests fields: {row}")
    counters = sorted(row["counter"] for row in rows)
    expect(counters == list(range(1, requests + 1)), f"locust_requests counters {counters[:20]}... of {requests}")
    happened = [row["event"] for row in points(args.influxd, args.database, "locust_events")]
    for event in ("test_started", "spawning_complete", "quitting"):
        expect(event in happened, f"locust_events: {happened}, without {event}")
    print(f"{requests} requests and the events {happened} stored")


CASES = {"run": locust_run}

if __name__ == "__main__":
    run(__doc__, CASES)
