"""Writes through the gateway with InfluxDB's v1 client library (PyPI `influxdb`), then reads the
points back from influxd. Each case is one check (see `CASES`); the library sends HTTP Basic
credentials (any user name, the token as the password), `POST /write?db=&rp=&precision=` with
line protocol, `/query?q=` for CREATE DATABASE (POST) and SHOW DATABASES (GET), `GET /ping`.

Usage: clients_v1.py CASE --gateway URL --token T --database DB --influxd URL"""

import datetime
import urllib.parse

from influx_check import (
    NANOS,
    Failed,
    as_nanos,
    create_retention_policy,
    expect,
    in_precision,
    none_stored,
    now_nanos,
    run,
    same_points,
    wait_points,
)
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError

# The library's precision names and the unit of each.
PRECISIONS = {"s": "s", "ms": "ms", "u": "us", "n": "ns"}


def client(args, token=None, database=None):
    url = urllib.parse.urlsplit(args.gateway)
    return InfluxDBClient(url.hostname, url.port, username="client-check", password=token or args.token,
                          database=database or args.database, retries=1)


def precisions(args):
    """write_points of dicts with each time_precision, and with none (a datetime: nanoseconds)."""
    c = client(args)
    expected = []
    for name, unit in PRECISIONS.items():
        t = in_precision(unit)
        c.write_points([{"measurement": "v1_precision", "tags": {"precision": name, "host": "lg-1"},
                         "time": t, "fields": {"value": 1.5, "count": 7, "label": f"p {name}", "ok": True}}],
                       time_precision=name)
        expected.append({"time": as_nanos(t, unit), "precision": name, "host": "lg-1",
                         "value": 1.5, "count": 7, "label": f"p {name}", "ok": True})
    # No time_precision: the library sends the datetime in nanoseconds and no precision.
    when = datetime.datetime.fromtimestamp(NANOS // 10**9, datetime.timezone.utc).replace(microsecond=654321)
    c.write_points([{"measurement": "v1_precision", "tags": {"precision": "none", "host": "lg-1"},
                     "time": when, "fields": {"value": 2.5, "count": 8, "label": "p none", "ok": False}}])
    expected.append({"time": (NANOS // 10**9) * 10**9 + 654_321_000, "precision": "none", "host": "lg-1",
                     "value": 2.5, "count": 8, "label": "p none", "ok": False})
    rows = wait_points(args.influxd, args.database, "v1_precision", len(expected))
    same_points(rows, expected, "v1_precision")


def retention_policy(args):
    """write_points(retention_policy=...) lands in that policy, not in the default one."""
    create_retention_policy(args.influxd, args.database, "week")
    t = in_precision("ms")
    client(args).write_points([{"measurement": "v1_rp", "tags": {"rp": "week"}, "time": t,
                                "fields": {"value": 3.0}}], time_precision="ms", retention_policy="week")
    rows = wait_points(args.influxd, args.database, "v1_rp", 1, rp="week")
    same_points(rows, [{"time": as_nanos(t, "ms"), "rp": "week", "value": 3.0}], "week.v1_rp")
    expect(wait_points(args.influxd, args.database, "v1_rp", 0) == [], "v1_rp is in the default policy too")


def batches(args):
    """write_points(batch_size=100) of 250 points: three writes, every point stored once."""
    base = in_precision("ms")
    data = [{"measurement": "v1_batch", "tags": {"shard": str(i % 3)}, "time": base + i,
             "fields": {"seq": i}} for i in range(250)]
    client(args).write_points(data, time_precision="ms", batch_size=100)
    rows = wait_points(args.influxd, args.database, "v1_batch", 250)
    expected = [{"time": as_nanos(base + i, "ms"), "shard": str(i % 3), "seq": i} for i in range(250)]
    same_points(rows, expected, "v1_batch")


def no_time(args):
    """Points without a time get the time the gateway took them: between before and after."""
    before = now_nanos()
    client(args).write_points([{"measurement": "v1_now", "tags": {"n": str(i)}, "fields": {"value": i}}
                               for i in range(3)])
    after = now_nanos()
    rows = wait_points(args.influxd, args.database, "v1_now", 3)
    for row in rows:
        expect(before <= row["time"] <= after, f"v1_now stamped {row['time']}, not within [{before}, {after}]")
    expect(sorted(r["n"] for r in rows) == ["0", "1", "2"], f"v1_now: {rows}")


def databases(args):
    """ping() answers InfluxDB's version header, create_database is the gateway's CREATE DATABASE,
    get_list_database (SHOW DATABASES) lists it, and a point written to it is stored."""
    c = client(args)
    version = c.ping()
    expect(bool(version), f"ping() gave the version {version!r}")
    c.create_database(args.database)
    listed = c.get_list_database()
    expect({"name": args.database} in listed, f"get_list_database() = {listed}, without {args.database!r}")
    t = in_precision("s")
    c.write_points([{"measurement": "v1_created", "time": t, "fields": {"value": 1}}], time_precision="s")
    same_points(wait_points(args.influxd, args.database, "v1_created", 1), [{"time": as_nanos(t, "s"), "value": 1}],
                "v1_created")


def errors(args):
    """A wrong token: InfluxDBClientError 401; a database the token may not write: 403 naming
    what it may write; nothing stored by either."""
    wrong = client(args, token="wrong-token-0123456789abcdef")
    point = [{"measurement": "v1_refused", "fields": {"value": 1.0}}]
    for what, c, database, code, needle in (
        ("a wrong token", wrong, args.database, 401, None),
        ("a database the token may not write", client(args), args.forbidden_database, 403, args.database),
    ):
        try:
            c.write_points(point, database=database)
        except InfluxDBClientError as e:
            expect(e.code == code, f"{what}: InfluxDBClientError {e.code}, expected {code}: {e}")
            expect('"error"' in e.content and len(str(e)) > 20, f"{what}: no message from the gateway: {e}")
            expect(needle is None or needle in str(e), f"{what}: the message does not name {needle!r}: {e}")
        else:
            raise Failed(f"{what}: write_points succeeded")
    none_stored(args, "v1_refused")


CASES = {f.__name__: f for f in (precisions, retention_policy, batches, no_time, databases, errors)}

if __name__ == "__main__":
    run(__doc__, CASES)
