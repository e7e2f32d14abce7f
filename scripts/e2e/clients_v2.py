"""Writes through the gateway with InfluxDB's v2 client library (PyPI `influxdb-client`), then
reads the points back from influxd. Each case is one check (see `CASES`); the library sends
`Authorization: Token T`, `POST /api/v2/write?org=&bucket=&precision=(ns|us|ms|s)` with line
protocol (`Content-Type: text/plain`, never gzip'd unless asked), `GET /ping`, `GET /health`.

Usage: clients_v2.py CASE --gateway URL --token T --database DB --influxd URL"""

import warnings

from influx_check import (
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
from influxdb_client import InfluxDBClient, Point, WriteOptions, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

ORG = "load-tests"
# Each precision and its unit.
PRECISIONS = {WritePrecision.NS: "ns", WritePrecision.US: "us", WritePrecision.MS: "ms", WritePrecision.S: "s"}


def client(args, token=None):
    return InfluxDBClient(url=args.gateway, token=token or args.token, org=ORG, timeout=30_000)


def precisions(args):
    """A synchronous write of a Point with each WritePrecision, stored at that instant."""
    expected = []
    with client(args) as c:
        write = c.write_api(write_options=SYNCHRONOUS)
        for precision, unit in PRECISIONS.items():
            t = in_precision(unit)
            point = (Point("v2_precision").tag("precision", unit).tag("host", "lg-2").field("value", 1.5)
                     .field("count", 7).field("label", f"p {unit}").field("ok", True).time(t, precision))
            write.write(bucket=args.database, record=point, write_precision=precision)
            expected.append({"time": as_nanos(t, unit), "precision": unit, "host": "lg-2", "value": 1.5,
                             "count": 7, "label": f"p {unit}", "ok": True})
    rows = wait_points(args.influxd, args.database, "v2_precision", len(expected))
    same_points(rows, expected, "v2_precision")


def bucket_rp(args):
    """bucket="db/rp" writes to that retention policy, not to the default one."""
    create_retention_policy(args.influxd, args.database, "week")
    t = in_precision("s")
    with client(args) as c:
        c.write_api(write_options=SYNCHRONOUS).write(
            bucket=f"{args.database}/week", record=f"v2_rp,rp=week value=3 {t}", write_precision=WritePrecision.S)
    rows = wait_points(args.influxd, args.database, "v2_rp", 1, rp="week")
    same_points(rows, [{"time": as_nanos(t, "s"), "rp": "week", "value": 3.0}], "week.v2_rp")
    expect(wait_points(args.influxd, args.database, "v2_rp", 0) == [], "v2_rp is in the default policy too")


def batching(args):
    """The batching write_api: 120 records in batches of 50, flush() (a no-op in this library)
    and close() (which writes what is left); no error reported, every record stored once."""
    errors = []
    base = in_precision("ms")
    with client(args) as c:
        write = c.write_api(write_options=WriteOptions(batch_size=50, flush_interval=200, max_retries=0),
                            error_callback=lambda _batch, _data, e: errors.append(repr(e)))
        for i in range(120):
            write.write(bucket=args.database, record=f"v2_batch,shard={i % 4} seq={i}i {base + i}",
                        write_precision=WritePrecision.MS)
        write.flush()
        write.close()
    expect(errors == [], f"the batching writer reported {errors}")
    rows = wait_points(args.influxd, args.database, "v2_batch", 120)
    expected = [{"time": as_nanos(base + i, "ms"), "shard": str(i % 4), "seq": i} for i in range(120)]
    same_points(rows, expected, "v2_batch")


def no_time(args):
    """Records without a time get the time the gateway took them."""
    before = now_nanos()
    with client(args) as c:
        c.write_api(write_options=SYNCHRONOUS).write(
            bucket=args.database, record=[{"measurement": "v2_now", "tags": {"n": str(i)}, "fields": {"value": i}}
                                          for i in range(3)])
    after = now_nanos()
    rows = wait_points(args.influxd, args.database, "v2_now", 3)
    for row in rows:
        expect(before <= row["time"] <= after, f"v2_now stamped {row['time']}, not within [{before}, {after}]")


def health(args):
    """ping() (GET /ping) is True, version() reads its X-Influxdb-Version, health() (GET /health,
    deprecated in the library) passes."""
    with client(args) as c:
        expect(c.ping() is True, "ping() is False")
        expect(bool(c.version()), f"version() = {c.version()!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            h = c.health()
        expect(h.status == "pass", f"health() = {h}")


def errors(args):
    """A wrong token: ApiException 401; a bucket the token may not write: 403 naming what it
    may write; the gateway's message in the exception's `message` (v2's JSON read); nothing stored."""
    for what, token, bucket, status, needle in (
        ("a wrong token", "wrong-token-0123456789abcdef", args.database, 401, None),
        ("a database the token may not write", args.token, args.forbidden_database, 403, args.database),
    ):
        with client(args, token) as c:
            try:
                c.write_api(write_options=SYNCHRONOUS).write(bucket=bucket, record="v2_refused value=1")
            except ApiException as e:
                expect(e.status == status, f"{what}: ApiException {e.status}, expected {status}: {e}")
                message = e.message if isinstance(e.message, str) else ""
                expect(len(message) > 10, f"{what}: the library read no message from {e.body!r}")
                expect(needle is None or needle in message, f"{what}: {message!r} does not name {needle!r}")
            else:
                raise Failed(f"{what}: the write succeeded")
    none_stored(args, "v2_refused")


CASES = {f.__name__: f for f in (precisions, bucket_rp, batching, no_time, health, errors)}

if __name__ == "__main__":
    run(__doc__, CASES)
