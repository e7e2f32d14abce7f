"""Writes through the gateway with InfluxDB 3's client library (PyPI `influxdb3-python`, module
`influxdb_client_3`), then reads the points back from influxd. Each case is one check (see
`CASES`). The library sends `Authorization: Token T` and, by default, `POST
/api/v2/write?org=default&bucket=DB&precision=(ns|us|ms|s)`; with `write_use_v2_api=False`,
`POST /api/v3/write_lp?org=default&db=DB&precision=(nanosecond|microsecond|millisecond|second)`
(`&accept_partial=false` when asked, `&no_sync=true` when asked). A v3 refusal with `data` per
line becomes InfluxDBPartialWriteError; every other refusal ApiException (an InfluxDBError).

Usage: clients_v3.py CASE --gateway URL --token T --database DB --influxd URL"""

from influx_check import (
    Failed,
    as_nanos,
    expect,
    in_precision,
    none_stored,
    run,
    same_points,
    wait_points,
)
from influxdb_client_3 import InfluxDBClient3, Point, WritePrecision
from influxdb_client_3.exceptions import InfluxDBError, InfluxDBPartialWriteError

PRECISIONS = {WritePrecision.NS: "ns", WritePrecision.US: "us", WritePrecision.MS: "ms", WritePrecision.S: "s"}


def client(args, token=None, **options):
    return InfluxDBClient3(host=args.gateway, token=token or args.token, database=args.database, **options)


def write_precisions(args, measurement, **options):
    """A Point with each precision written with `options`; what is stored checked."""
    expected = []
    with client(args, **options) as c:
        for precision, unit in PRECISIONS.items():
            t = in_precision(unit)
            point = (Point(measurement).tag("precision", unit).tag("host", "lg-3").field("value", 1.5)
                     .field("count", 7).field("label", f"p {unit}").time(t, precision))
            c.write(record=point, write_precision=precision)
            expected.append({"time": as_nanos(t, unit), "precision": unit, "host": "lg-3", "value": 1.5,
                             "count": 7, "label": f"p {unit}"})
        # A line of text without a time, in a list with one with a time.
        c.write(record=[f"{measurement},precision=none,host=lg-3 value=2.5", f"{measurement},precision=text,host=lg-4 "
                        f"value=3.5 {in_precision('ms')}"], write_precision=WritePrecision.MS)
        expected.append({"time": as_nanos(in_precision("ms"), "ms"), "precision": "text", "host": "lg-4", "value": 3.5})
    rows = wait_points(args.influxd, args.database, measurement, len(expected) + 1)
    stamped = [r for r in rows if r.get("precision") == "none"]
    expect(len(stamped) == 1 and stamped[0]["value"] == 2.5, f"{measurement}: the line without a time: {rows}")
    same_points([r for r in rows if r.get("precision") != "none"], expected, measurement)


def write_v2_endpoint(args):
    """The library's default: /api/v2/write."""
    write_precisions(args, "v3_via_v2")


def write_lp(args):
    """write_use_v2_api=False: /api/v3/write_lp with v3's precision names."""
    write_precisions(args, "v3_write_lp", write_use_v2_api=False)


def refused(args):
    """A field type conflict: over /api/v3/write_lp with accept_partial (the default) the valid
    line is stored and InfluxDBPartialWriteError names line 2 and its text; with
    accept_partial=False nothing is stored; over /api/v2/write an InfluxDBError (400) with the
    gateway's message."""
    t = in_precision("s")
    conflict = f'v3_conflict,case=partial value="text" {t + 2}'
    with client(args, write_use_v2_api=False) as c:
        c.write(record=f"v3_conflict,case=first value=1.5 {t}", write_precision=WritePrecision.S)
        try:
            c.write(record=[f"v3_conflict,case=partial value=2.5 {t + 1}", conflict], write_precision=WritePrecision.S)
        except InfluxDBPartialWriteError as e:
            lines = [(x.line_number, x.original_line) for x in e.line_errors]
            expect(lines == [(2, conflict)], f"partial write: the refused lines are {lines}, expected line 2")
            expect(all(x.error_message for x in e.line_errors), f"partial write without a reason: {e.line_errors}")
        else:
            raise Failed("the conflicting line was accepted")
    with client(args, write_use_v2_api=False, write_accept_partial=False) as c:
        try:
            c.write(record=[f"v3_conflict,case=whole value=4.5 {t + 3}", conflict], write_precision=WritePrecision.S)
        except InfluxDBError as e:
            expect(e.response is not None and e.response.status == 400, f"accept_partial=false: {e!r}")
        else:
            raise Failed("accept_partial=false: the conflicting line was accepted")
    with client(args) as c:
        try:
            c.write(record=conflict, write_precision=WritePrecision.S)
        except InfluxDBError as e:
            expect(e.response.status == 400 and len(str(e.message)) > 10, f"/api/v2/write: {e.response.status} {e!r}")
        else:
            raise Failed("/api/v2/write: the conflicting line was accepted")
    rows = wait_points(args.influxd, args.database, "v3_conflict", 2)
    expected = [{"time": as_nanos(t, "s"), "case": "first", "value": 1.5},
                {"time": as_nanos(t + 1, "s"), "case": "partial", "value": 2.5}]
    same_points(rows, expected, "v3_conflict")


def errors(args):
    """A wrong token (401) and a database the token may not write (403, naming what it may
    write), over both endpoints: InfluxDBError with the status and the gateway's message."""
    for options in ({}, {"write_use_v2_api": False}):
        for what, token, database, status, needle in (
            ("a wrong token", "wrong-token-0123456789abcdef", args.database, 401, None),
            ("a database the token may not write", args.token, args.forbidden_database, 403, args.database),
        ):
            with client(args, token, **options) as c:
                try:
                    c.write(record="v3_refused value=1", database=database)
                except InfluxDBError as e:
                    message = str(e.message)
                    where = f"{what} {options}"
                    expect(e.response is not None and e.response.status == status,
                           f"{where}: {e!r}, expected {status}")
                    expect(len(message) > 10, f"{where}: the library read no message: {e.response.data!r}")
                    expect(needle is None or needle in message, f"{where}: {message!r} does not name {needle!r}")
                else:
                    raise Failed(f"{what} {options}: the write succeeded")
    none_stored(args, "v3_refused")


CASES = {f.__name__: f for f in (write_v2_endpoint, write_lp, refused, errors)}

if __name__ == "__main__":
    run(__doc__, CASES)
