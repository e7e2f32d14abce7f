"""Checks, by querying InfluxDB, what a Locust run recorded through metrics-consumer wrote, and
runs every InfluxQL query of the Grafana dashboard against it.

Usage:
    check_run.py run --influx URL --db DB --users N --endpoints "GET /items,POST /orders,..."
                     [--exclude-uuid U ...] [--min-heartbeats N] [--requests N] [--errors]
                     [--tag K=V ...] [--locust-json FILE] [--verdict]
        finds the one run (uuid) not excluded, checks its events (with --verdict, the run had
        checks: a verdict event too), heartbeats, result and
        per-endpoint rows, and prints its uuid on stdout. With --locust-json (the file of
        Locust's --json-file), every endpoint row, as a point and in the requestStats text, must
        have the requests that file gives it, and Aggregated their sum.
    check_run.py dashboard --influx URL --db DB --dashboard FILE --run UUID --from-ms T --to-ms T
        fills in the dashboard's variables and checks that each of its queries returns rows.
    check_run.py rows --influx URL --db DB --rows N --sent N [--exclude-uuid U ...]
        finds the one run not excluded and checks that it has N endpoint rows as points (the
        Aggregated row among them), that its result's requestStats text is JSON and holds the
        Aggregated row, and that it says how many of the N sent rows it left out.

Exits 1 with a message saying what is wrong when a check fails. Standard library only.
"""

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def query(influx, db, q):
    """Runs an InfluxQL statement (times as epoch milliseconds) and returns its first result;
    a statement error fails the check."""
    body = urllib.parse.urlencode({"q": q}).encode()
    url = f"{influx}/query?{urllib.parse.urlencode({'db': db, 'epoch': 'ms'})}"
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.load(resp)
    result = answer["results"][0]
    check("error" not in result, f"InfluxDB refused {q!r}: {result.get('error')}")
    return result


def rows(result):
    """The result's points as dicts (series tags merged in), null columns left out."""
    out = []
    for series in result.get("series", []):
        for values in series.get("values", []):
            row = dict(series.get("tags") or {})
            row.update({c: v for c, v in zip(series["columns"], values, strict=True) if v is not None})
            out.append(row)
    return out


def select(influx, db, q):
    return rows(query(influx, db, q))


def quote(value):
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------
# The run's points
# ---------------------------------------------------------------------------


def locust_json_requests(path):
    """{"METHOD name": requests} of every endpoint of a file written by Locust's --json-file."""
    with open(path) as f:
        entries = json.load(f)
    check(isinstance(entries, list) and entries, f"{path}: not a list of Locust's endpoint rows")
    return {f"{e.get('method') or ''} {e['name']}".strip(): e["num_requests"] for e in entries}


def check_run(args):
    influx, db = args.influx, args.db
    per_locust = None
    if args.locust_json:
        per_locust = locust_json_requests(args.locust_json)
        if args.requests is None:
            args.requests = sum(per_locust.values())
    events = select(influx, db, 'SELECT * FROM "load_testing_events"')
    uuids = sorted({e["uuid"] for e in events} - set(args.exclude_uuid))
    check(len(uuids) == 1, f"expected exactly one new run in load_testing_events, found {uuids} in {events}")
    uuid = uuids[0]
    mine = [e for e in events if e["uuid"] == uuid]
    kinds = sorted(e["event"] for e in mine)
    expected = ["finished", "started", "verdict"] if args.verdict else ["finished", "started"]
    check(kinds == expected, f"run {uuid}: expected the events {expected}, got {kinds}")
    check(all(e.get("text") for e in mine), f"run {uuid}: an event without text: {mine}")
    log(f"run {uuid}: {', '.join(expected)} events")

    where = f'WHERE "uuid" = {quote(uuid)}'
    beats = select(influx, db, f'SELECT * FROM "load_testing" {where}')
    check(
        len(beats) >= args.min_heartbeats,
        f"run {uuid}: {len(beats)} load_testing heartbeats, expected at least {args.min_heartbeats}",
    )
    users = [b.get("user_count") for b in beats]
    check(
        any(u is not None and u >= args.users for u in users),
        f"run {uuid}: no heartbeat shows user_count reaching {args.users} (values: {users}); "
        "the gateway must take /apiv0.1/events/progress",
    )
    check(
        all(b.get("clients") == args.users for b in beats), f"run {uuid}: heartbeat clients != {args.users}"
    )
    check(all(b.get("spawnRate", 0) > 0 for b in beats), f"run {uuid}: a heartbeat without spawnRate")
    check(max(b.get("num_requests", 0) for b in beats) > 0, f"run {uuid}: no heartbeat counts requests")
    log(f"run {uuid}: {len(beats)} heartbeats, user_count up to {max(u or 0 for u in users):g}")

    results = select(influx, db, f'SELECT * FROM "load_testing_result" {where}')
    check(len(results) == 1, f"run {uuid}: expected one load_testing_result point, got {len(results)}")
    result = results[0]
    for key, value in args.tag:
        for name, points in (("load_testing", beats), ("load_testing_result", results)):
            got = {p.get(key) for p in points}
            check(got == {value}, f"run {uuid}: tag {key} of {name} is {got}, expected {value!r}")
    check(result.get("total_rps", 0) > 0, f"run {uuid}: total_rps is {result.get('total_rps')}")
    try:
        stats = json.loads(result["requestStats"])
    except (KeyError, ValueError) as e:
        raise CheckFailed(f"run {uuid}: requestStats is missing or not JSON: {e}") from None
    expected = sorted(args.endpoints) + ["Aggregated"]
    sent = sorted(f"{r['method']} {r['name']}".strip() for r in stats["stats"])
    check(sorted(expected) == sent, f"run {uuid}: requestStats rows {sent}, expected {sorted(expected)}")
    for key in ("total_rps", "fail_ratio", "user_count", "response_time_percentile_0.95"):
        check(
            key in stats and key in result, f"run {uuid}: {key} missing from requestStats or the result point"
        )
    check(
        result["user_count"] == args.users,
        f"run {uuid}: result user_count is {result['user_count']}, not {args.users}",
    )
    aggregated = [r for r in stats["stats"] if r["name"] == "Aggregated"][0]
    if per_locust is not None:
        committed = {
            f"{r['method']} {r['name']}".strip(): r["num_requests"] for r in stats["stats"] if r is not aggregated
        }
        check(
            committed == per_locust,
            f"run {uuid}: the requestStats text has the endpoint requests {committed}, "
            f"Locust's --json-file says {per_locust}",
        )
    if args.requests is not None:
        check(
            aggregated["num_requests"] == args.requests == result["num_requests"],
            f"run {uuid}: committed {aggregated['num_requests']} requests (result point: "
            f"{result['num_requests']}), Locust's summary says {args.requests}",
        )
        log(f"run {uuid}: {args.requests} requests committed, as in Locust's summary")
    if args.errors:
        check(stats["errors"], f"run {uuid}: the error list is empty, but the run had failures")
        check(result["fail_ratio"] > 0, f"run {uuid}: fail_ratio is 0, but the run had failures")
    log(f"run {uuid}: result total_rps={result['total_rps']:.1f} fail_ratio={result['fail_ratio']:.3f}")

    per_endpoint = select(influx, db, f'SELECT * FROM "load_testing_request_stats" {where}')
    got = sorted(f"{r.get('method', '')} {r['name']}".strip() for r in per_endpoint)
    check(
        got == sorted(expected),
        f"run {uuid}: load_testing_request_stats rows {got}, expected {sorted(expected)}",
    )
    for r in per_endpoint:
        if r["name"] == "Aggregated" and args.requests is not None:
            check(
                r.get("num_requests") == args.requests,
                f"run {uuid}: the Aggregated row has {r.get('num_requests')} requests",
            )
        check(
            r.get("num_requests", 0) > 0,
            f"run {uuid}: row {r['name']} has num_requests {r.get('num_requests')}",
        )
        check("response_time_percentile_0.95" in r, f"run {uuid}: row {r['name']} has no 95th percentile")
    if per_locust is not None:
        stored = {
            f"{r.get('method', '')} {r['name']}".strip(): r.get("num_requests")
            for r in per_endpoint
            if r["name"] != "Aggregated"
        }
        check(
            stored == per_locust,
            f"run {uuid}: load_testing_request_stats has the endpoint requests {stored}, "
            f"Locust's --json-file says {per_locust}",
        )
        log(f"run {uuid}: every endpoint row has the requests of Locust's --json-file: {per_locust}")
    log(f"run {uuid}: {len(per_endpoint)} per-endpoint rows, each with requests")
    print(uuid)


def check_rows(args):
    influx, db = args.influx, args.db
    events = select(influx, db, 'SELECT * FROM "load_testing_events"')
    uuids = sorted({e["uuid"] for e in events} - set(args.exclude_uuid))
    check(len(uuids) == 1, f"expected exactly one new run, found {uuids}")
    uuid = uuids[0]
    where = f'WHERE "uuid" = {quote(uuid)}'
    kinds = sorted(e["event"] for e in events if e["uuid"] == uuid)
    check(kinds == ["finished", "started"], f"run {uuid}: events {kinds}: the commit was not recorded")
    per_endpoint = select(influx, db, f'SELECT * FROM "load_testing_request_stats" {where}')
    check(
        len(per_endpoint) == args.rows,
        f"run {uuid}: {len(per_endpoint)} load_testing_request_stats points, expected {args.rows}",
    )
    check(
        any(r["name"] == "Aggregated" for r in per_endpoint), f"run {uuid}: the Aggregated row is not a point"
    )
    results = select(influx, db, f'SELECT * FROM "load_testing_result" {where}')
    check(len(results) == 1, f"run {uuid}: expected one load_testing_result point, got {len(results)}")
    try:
        stats = json.loads(results[0]["requestStats"])
    except (KeyError, ValueError) as e:
        raise CheckFailed(f"run {uuid}: requestStats is missing or not JSON: {e}") from None
    kept = stats["stats"]
    check(kept and kept[-1]["name"] == "Aggregated", f"run {uuid}: the kept text lost the Aggregated row")
    check(
        len(kept) + stats.get("rows_left_out", 0) == args.sent,
        f"run {uuid}: the text keeps {len(kept)} rows and says {stats.get('rows_left_out')} were left out, "
        f"of {args.sent} sent",
    )
    log(f"run {uuid}: {len(per_endpoint)} endpoint rows as points, {len(kept)} of {args.sent} in requestStats")
    print(uuid)


# ---------------------------------------------------------------------------
# The dashboard's queries
# ---------------------------------------------------------------------------


def dashboard_queries(dash):
    """(where, query) for every InfluxQL query in the dashboard: variables, panel targets and
    annotations (both the target and the legacy top-level form)."""
    found = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            found.append((f"variable {var['name']}", q.get("query") if isinstance(q, dict) else q))
    panels = list(dash.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
        for target in panel.get("targets", []):
            found.append((f"panel {panel.get('title')!r} target {target.get('refId')}", target.get("query")))
    for ann in dash.get("annotations", {}).get("list", []):
        if ann.get("builtIn"):
            continue
        for q in (ann.get("query"), (ann.get("target") or {}).get("query")):
            if q:
                found.append((f"annotation {ann.get('name')!r}", q))
    return found


def check_dashboard_shape(dash):
    inputs = dash.get("__inputs", [])
    check(
        any(i.get("type") == "datasource" and i.get("pluginId") == "influxdb" for i in inputs),
        "dashboard: __inputs has no InfluxDB datasource",
    )
    names = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    check(names.get("datasource", {}).get("type") == "datasource", "dashboard: no datasource variable")
    check("run" in names, "dashboard: no run variable")
    ids = [p.get("id") for p in dash.get("panels", [])]
    check(len(ids) == len(set(ids)) and None not in ids, f"dashboard: panel ids missing or repeated: {ids}")
    for p in dash.get("panels", []):
        check("gridPos" in p, f"dashboard: panel {p.get('title')!r} has no gridPos")
        if p.get("type") != "row":
            ds = p.get("datasource") or {}
            check(
                ds.get("uid") == "${datasource}",
                f"dashboard: panel {p.get('title')!r} does not use $datasource",
            )


def fill(q, run, from_ms, to_ms):
    """The query as Grafana would send it for this run and time range."""
    q = q.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    q = q.replace("$__interval_ms", "1000").replace("$__interval", "1s")
    q = q.replace("${run}", run).replace("$run", run)
    left = re.findall(r"\$\{?\w+", q)
    check(not left, f"dashboard: query {q!r} has variables this check cannot fill: {left}")
    return q


def check_dashboard(args):
    with open(args.dashboard) as f:
        dash = json.load(f)
    check_dashboard_shape(dash)
    queries = dashboard_queries(dash)
    check(len(queries) >= 5, f"dashboard: only {len(queries)} queries found")
    for where, q in queries:
        check(isinstance(q, str) and q.strip(), f"dashboard: {where} has no query")
        filled = fill(q, args.run, args.from_ms, args.to_ms)
        result = query(args.influx, args.db, filled)
        n = len(rows(result))
        check(n > 0, f"dashboard: {where} returned no rows: {filled}")
        log(f"dashboard: {where}: {n} rows")


def log(message):
    print(message, file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--influx", required=True)
    run.add_argument("--db", required=True)
    run.add_argument("--users", type=float, required=True)
    run.add_argument(
        "--endpoints", required=True, type=lambda s: [e.strip() for e in s.split(",") if e.strip()]
    )
    run.add_argument("--exclude-uuid", action="append", default=[])
    run.add_argument("--min-heartbeats", type=int, default=5)
    run.add_argument(
        "--tag", action="append", default=[], type=lambda s: tuple(s.split("=", 1)), help="k=v the run has"
    )
    run.add_argument("--requests", type=int, help="the request count of Locust's own summary")
    run.add_argument("--errors", action="store_true", help="the run had failures: expect an error list")
    run.add_argument("--locust-json", help="the file of Locust's --json-file: the requests of every endpoint")
    run.add_argument("--verdict", action="store_true", help="the run had checks: expect a verdict event")
    dash = sub.add_parser("dashboard")
    dash.add_argument("--influx", required=True)
    dash.add_argument("--db", required=True)
    dash.add_argument("--dashboard", required=True)
    dash.add_argument("--run", required=True)
    dash.add_argument("--from-ms", type=int, required=True)
    dash.add_argument("--to-ms", type=int, required=True)
    many = sub.add_parser("rows")
    many.add_argument("--influx", required=True)
    many.add_argument("--db", required=True)
    many.add_argument("--rows", type=int, required=True, help="endpoint rows expected as points")
    many.add_argument("--sent", type=int, required=True, help="endpoint rows Locust sent")
    many.add_argument("--exclude-uuid", action="append", default=[])
    args = parser.parse_args()
    commands = {"run": check_run, "dashboard": check_dashboard, "rows": check_rows}
    try:
        commands[args.command](args)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
