"""What the checks of the InfluxDB client libraries (clients_v1.py, clients_v2.py, clients_v3.py,
clients_locust.py) share: their command line, InfluxQL over plain HTTP to read back from influxd
what went through the gateway, and failing with one clear message.

Each check writes with a real client library to the gateway (--gateway, --token, --database),
reads the points back from influxd itself (--influxd) and exits 1 naming what differs."""

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request

# The instant the checks write at, an hour ago (inside any retention policy they make), with
# every digit set below the second, so a time read back at the wrong scale cannot pass.
NANOS = (time.time_ns() // 10**9 - 3600) * 10**9 + 123_456_789


def in_precision(unit):
    """NANOS in `unit` ("s", "ms", "us", "ns"), cut as a client would send it."""
    return NANOS // {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]


def as_nanos(value, unit):
    """A time in `unit` read back in nanoseconds."""
    return value * {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]


class Failed(Exception):
    """A check that did not hold; its text is the whole message."""


def expect(condition, message):
    if not condition:
        raise Failed(message)


def arguments(doc, cases):
    """The command line: a case of `cases` (name -> function(args)) and where everything is."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("case", choices=sorted(cases))
    parser.add_argument("--gateway", required=True, help="the gateway's URL, http://HOST:PORT")
    parser.add_argument("--token", required=True, help="a token that may write --database")
    parser.add_argument("--database", required=True)
    parser.add_argument("--forbidden-database", default="not_yours", help="a database the token may not write")
    parser.add_argument("--influxd", required=True, help="influxd's URL, to read the points back")
    return parser.parse_args()


def run(doc, cases):
    """Runs the case named on the command line; exit 1 with its message when a check fails."""
    args = arguments(doc, cases)
    try:
        cases[args.case](args)
    except Failed as failed:
        print(f"FAILED ({args.case}): {failed}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {args.case}")


def influxql(influxd, database, statement):
    """One InfluxQL statement on influxd (POST /query, times as integer nanoseconds); its result."""
    query = urllib.parse.urlencode({"db": database, "epoch": "ns"})
    body = urllib.parse.urlencode({"q": statement}).encode()
    with urllib.request.urlopen(f"{influxd}/query?{query}", data=body, timeout=30) as answer:
        result = json.load(answer)["results"][0]
    expect("error" not in result or result["error"].startswith("database not found"),
           f"influxd refused {statement!r}: {result.get('error')}")
    return result


def points(influxd, database, measurement, rp=None):
    """Every point of `measurement` (of retention policy `rp`) as dicts, oldest first; None
    columns (fields a point has not) left out."""
    source = f'"{rp}"."{measurement}"' if rp else f'"{measurement}"'
    result = influxql(influxd, database, f"SELECT * FROM {source}")
    rows = []
    for series in result.get("series", []):
        for values in series["values"]:
            rows.append({k: v for k, v in zip(series["columns"], values, strict=True) if v is not None})
    return rows


def wait_points(influxd, database, measurement, count, rp=None, timeout=30.0):
    """The points of `measurement` once there are `count` of them (more fails at once); fails
    naming what was there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rows = points(influxd, database, measurement, rp)
        expect(len(rows) <= count, f"{measurement}: {len(rows)} points stored, {count} written: {rows}")
        if len(rows) == count:
            return rows
        if time.monotonic() >= deadline:
            raise Failed(f"{measurement}: {len(rows)} of {count} points stored after {timeout}s: {rows}")
        time.sleep(0.1)


def none_stored(args, measurement):
    """Fails when any point of `measurement` is in the allowed or the forbidden database: every
    write of it was refused."""
    for database in (args.database, args.forbidden_database):
        rows = points(args.influxd, database, measurement)
        expect(rows == [], f"{database}: refused points of {measurement} stored: {rows}")


def same_points(rows, expected, what):
    """`rows` read back equal `expected` (dicts of time, tags and fields), in time order.
    InfluxDB returns points of one time in no set order: those are compared as a set."""
    def in_order(points):
        return sorted(points, key=lambda p: (p["time"], json.dumps(p, sort_keys=True)))

    rows, expected = in_order(rows), in_order(expected)
    expect(rows == expected, f"{what}: stored {rows}, expected {expected}")


def create_retention_policy(influxd, database, rp):
    """Makes `database` and a retention policy `rp` on it in influxd itself (not the default)."""
    influxql(influxd, "", f'CREATE DATABASE "{database}"')
    influxql(influxd, database, f'CREATE RETENTION POLICY "{rp}" ON "{database}" DURATION 7d REPLICATION 1')


def now_nanos():
    return time.time_ns()
