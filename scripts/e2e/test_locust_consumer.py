"""Unit tests of scripts/locust_consumer.py against a stub gateway on 127.0.0.1.

Run with the virtualenv that has Locust, from the repository root:
    PYTHONPATH=scripts target/e2e-venv/bin/python -m unittest scripts/e2e/test_locust_consumer.py
(scripts/e2e-locust.sh does.) The real gateway is exercised by the end-to-end run; these tests
cover what it cannot show on demand: the exact headers sent, retries after refusals, and what
the plugin does with a gateway that fails in a chosen way.
"""

# Locust patches the standard library for gevent when imported; import it first, as locust does.
import locust  # noqa: F401, I001

import argparse
import base64
import gzip
import json
import logging
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from locust.env import Environment

import locust_consumer as lc


class StubGateway:
    """A loopback HTTP server that records every request and answers from a script: a list of
    statuses per route, used up in order (200 when the list is empty). A dict in the list is a
    200 whose answer has its members added (e.g. {"dead_letter": "..."}). GET /apiv0.1/runs/UUID
    is the route "runs", its answer {"uuid": UUID} with the members scripted."""

    def __init__(self):
        self.requests = []  # (route, headers, body, bytes on the wire)
        self.script = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                route = self.path.rsplit("/", 1)[-1]
                data = self.rfile.read(int(self.headers["Content-Length"]))
                statuses = stub.script.get(route) or []
                status = statuses.pop(0) if statuses else 200
                extra = {}
                if isinstance(status, dict):
                    status, extra = 200, status
                wire = len(data)
                if self.headers.get("Content-Encoding") == "gzip" and status != 415:
                    data = gzip.decompress(data)
                body = json.loads(data) if status != 415 else None
                stub.requests.append((route, dict(self.headers), body, wire))
                if status == 200:
                    answer = {"uuid": "u-1", "data": {"uuid": "u-1"}, "delivered": not extra, **extra}
                else:
                    answer = {"error": f"scripted {status}", "code": "scripted"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                statuses = stub.script.get("runs") or []
                status = statuses.pop(0) if statuses else 200
                extra = {}
                if isinstance(status, dict):
                    status, extra = 200, status
                stub.requests.append(("runs", dict(self.headers), self.path, 0))
                answer = {"uuid": self.path.rsplit("/", 1)[-1], **extra} if status == 200 else {"error": "scripted"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def routes(self):
        return [route for route, _, _, _ in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def environment(**options):
    """A Locust environment with a local runner and the plugin's options."""
    opts = argparse.Namespace(
        num_users=3,
        spawn_rate=1.5,
        consumer_url="",
        consumer_token="",
        consumer_interval=0.05,
        consumer_tags="",
        consumer_strict=False,
        consumer_check=[],
        headless=True,
    )
    for key, value in options.items():
        setattr(opts, key, value)
    env = Environment(user_classes=[], host="http://target.test", parsed_options=opts)
    env.create_local_runner()
    return env


def verdict(passed, *checks, baseline=None):
    """A verdict as the gateway's commit answer carries it; `checks` are (endpoint, check, value,
    limit, passed, reason)."""
    keys = ("endpoint", "check", "value", "limit", "passed", "reason")
    rows = [{**dict(zip(keys, c, strict=True)), "method": None, "source": "register"} for c in checks]
    return {"passed": passed, "baseline": baseline, "checks": rows}


FAILED = verdict(
    False,
    ("/checkout", "p95 < 500ms", 612.0, 500.0, False, None),
    ("Aggregated", "fail_ratio < 1%", 0.002, 0.01, True, None),
    ("Aggregated", "p95 <= 1.2x baseline", 300.0, None, None, "no baseline run"),
)
PASSED = verdict(True, ("Aggregated", "requests > 1", 7.0, 1.0, True, None), baseline="b-1")


def log_requests(stats):
    """Some requests and failures, as Locust's request event would log them."""
    for ms in (10, 20, 30, 40, 500):
        stats.log_request("GET", "/items", ms, 100)
    stats.log_request("POST", "/orders", 15, 10)
    stats.log_request("GET", "/flaky", 5, 0)
    stats.log_error("GET", "/flaky", "500 Server Error")


class GatewayClientTest(unittest.TestCase):
    def test_credentials_in_the_url_become_basic_auth_and_leave_the_url(self):
        client = lc.GatewayClient("http://locust:s%40cret@gw.test:3000/")
        self.assertEqual(client.base, "http://gw.test:3000")
        self.assertEqual((client.session.auth.username, client.session.auth.password), ("locust", "s@cret"))
        self.assertEqual(client.redact("token s@cret here"), "token *** here")

    def test_a_token_is_sent_as_bearer_and_wins_over_the_url(self):
        client = lc.GatewayClient("https://user:old@gw.test/prefix", token="t0ken")
        self.assertEqual(client.base, "https://gw.test/prefix")
        self.assertIsInstance(client.session.auth, lc.BearerAuth)

    def test_a_url_without_scheme_is_refused(self):
        for url in ("gw.test:3000", "ftp://gw.test", "http://"):
            with self.assertRaises(ValueError, msg=url):
                lc.GatewayClient(url)

    def test_headers_sent(self):
        gw = StubGateway()
        self.addCleanup(gw.close)
        host = gw.url.removeprefix("http://")
        lc.GatewayClient(f"http://locust:secret-token@{host}").post("register", {})
        lc.GatewayClient(gw.url, token="secret-token").post("register", {})
        basic = "Basic " + base64.b64encode(b"locust:secret-token").decode()
        self.assertEqual([h["Authorization"] for _, h, _, _ in gw.requests], [basic, "Bearer secret-token"])

    def test_a_compressed_body_is_gzip_and_sent_plain_to_a_gateway_that_cannot_read_it(self):
        gw = StubGateway()
        self.addCleanup(gw.close)
        client = lc.GatewayClient(gw.url)
        client.post("commit", {"n": 1}, compress=True)
        gw.script["commit"] = [415]
        client.post("commit", {"n": 2}, compress=True)
        client.post("progress", {"n": 3})
        encodings = [(h.get("Content-Encoding"), body) for _, h, body, _ in gw.requests]
        self.assertEqual(encodings, [("gzip", {"n": 1}), ("gzip", None), (None, {"n": 2}), (None, {"n": 3})])

    def test_failures_are_gateway_errors_without_the_token(self):
        gw = StubGateway()
        self.addCleanup(gw.close)
        gw.script["commit"] = [401]
        client = lc.GatewayClient(gw.url, token="secret-token")
        with self.assertRaises(lc.GatewayError) as caught:
            client.post("commit", {})
        self.assertEqual(caught.exception.status, 401)
        self.assertIn("answered 401: scripted 401", str(caught.exception))
        with self.assertRaises(lc.GatewayError) as caught:
            lc.GatewayClient("http://127.0.0.1:9", token="secret-token").post("register", {})
        self.assertIsNone(caught.exception.status)
        self.assertIn("connection refused", str(caught.exception))
        self.assertNotIn("secret-token", str(caught.exception))


class StatsTest(unittest.TestCase):
    def test_request_stats_has_a_row_per_endpoint_the_aggregate_errors_and_totals(self):
        env = environment()
        log_requests(env.stats)
        stats = lc.request_stats(env, peak_users=3)
        # JSON without NaN or infinities, as the gateway requires.
        json.dumps(stats, allow_nan=False)
        names = [(r["method"], r["name"]) for r in stats["stats"]]
        self.assertEqual(names, [("GET", "/flaky"), ("GET", "/items"), ("POST", "/orders"), ("", "Aggregated")])
        items = stats["stats"][1]
        self.assertEqual(items["num_requests"], 5)
        self.assertEqual((items["min_response_time"], items["max_response_time"]), (10, 500))
        for p in ("0.5", "0.95", "0.99", "1.0"):
            self.assertIn(f"response_time_percentile_{p}", items)
        self.assertEqual(items["response_time_percentile_1.0"], 500)
        total = stats["stats"][-1]
        self.assertEqual((total["num_requests"], total["num_failures"]), (7, 1))
        self.assertEqual(stats["errors"][0]["occurrences"], 1)
        self.assertIn("500 Server Error", stats["errors"][0]["error"])
        self.assertAlmostEqual(stats["fail_ratio"], 1 / 7)
        self.assertEqual(stats["user_count"], 3)

    def test_an_empty_run_has_only_the_aggregate_with_zeros(self):
        stats = lc.request_stats(environment())
        json.dumps(stats, allow_nan=False)
        self.assertEqual(len(stats["stats"]), 1)
        self.assertEqual(stats["stats"][0]["min_response_time"], 0)

    def test_the_clash_check_knows_every_field_sent(self):
        env = environment()
        log_requests(env.stats)
        stats = lc.request_stats(env)
        row_members = set(stats["stats"][0]) - {"name", "method"}
        self.assertEqual(
            {k for k in row_members if not k.startswith("response_time_percentile_")}, set(lc.ROW_MEMBERS)
        )
        self.assertEqual(set(lc.progress_fields(env)), set(lc.PROGRESS_FIELDS))
        names = lc.field_names()
        self.assertTrue(row_members <= names, row_members - names)
        self.assertTrue({k for k, v in stats.items() if isinstance(v, (int, float))} <= names)
        self.assertEqual(lc.tag_clashes({"num_requests": "x", "team": "a", "uuid": "u", "clients": "3"}),
                         ["clients", "num_requests", "uuid"])

    def test_tag_values_the_gateway_would_refuse_are_found(self):
        self.assertEqual(lc.tag_problems({"team": "shop", "env": "a-b_c.d"}), [])
        problems = lc.tag_problems(
            {"ok": "a\\b", "bell": "x\x07", "_x": "1", "time": "t", "long": "v" * 257, "k" * 129: "v", "e": ""}
        )
        self.assertEqual(len(problems), 7, problems)
        self.assertIn("the value of tag 'ok' contains a backslash", problems)

    def test_parse_tags(self):
        with self.assertLogs("locust_consumer", logging.WARNING):
            tags = lc.parse_tags(" team=shop, env = staging ,bad,,=x")
        self.assertEqual(tags, {"team": "shop", "env": "staging"})


class ChecksTest(unittest.TestCase):
    def test_a_check_is_split_from_its_endpoint_at_the_last_colon_before_a_metric(self):
        for text, expected in (
            ("p95 < 500ms", ("Aggregated", "p95 < 500ms")),
            ("  /checkout:  fail_ratio<1%  ", ("/checkout", "fail_ratio<1%")),
            ("/a: b: avg >= 2s", ("/a: b", "avg >= 2s")),
            ("GET /x:y: p99.9 <= 1.2x baseline", ("GET /x:y", "p99.9 <= 1.2x baseline")),
            ("Aggregated: rps > 10", ("Aggregated", "rps > 10")),
        ):
            self.assertEqual(lc.parse_check(text), expected, text)

    def test_what_is_no_check_is_named(self):
        for text, says in (
            ("p96 < 3", "unknown metric 'p96'; the metrics are avg,"),
            ("/x: p95", "is not a check: write [ENDPOINT: ]METRIC OP VALUE"),
            ("p95 = 3", "OP one of <, <=, >, >="),
            (": p95 < 3", "empty endpoint"),
            ("", "is not a check"),
        ):
            with self.assertRaises(ValueError, msg=text) as caught:
                lc.parse_check(text)
            self.assertIn(says, str(caught.exception), text)

    def test_checks_are_repeated_or_separated_by_semicolons(self):
        values = ["p95 < 5; /x: avg < 3", "/a;b: p95 < 4;rps > 1", " ; "]
        self.assertEqual(lc.split_checks(values), ["p95 < 5", "/x: avg < 3", "/a;b: p95 < 4", "rps > 1"])
        self.assertEqual(
            lc.thresholds_of(["p95 < 5", "/x: avg < 3", "fail_ratio < 1%"]),
            {"Aggregated": ["p95 < 5", "fail_ratio < 1%"], "/x": ["avg < 3"]},
        )
        self.assertEqual(lc.thresholds_of(None), {})

    def test_the_test_tag_is_the_locustfiles_name(self):
        for given, name in (
            ("scripts/e2e/locustfile.py", "locustfile"),
            ("checkout.py, search.py,checkout.py", "checkout,search"),
            ("tests/load/", "load"),
            ("https://files.test/x/checkout.py?raw=1", "checkout"),
            ("C:\\load\\shop.py", "shop"),
            ("x/" + "a" * 300 + ".py", "a" * 256),
            ("-", None),
        ):
            env = environment(locustfile=given)
            self.assertEqual(lc.locustfile_name(env), name, given)
        self.assertEqual(lc.run_tags(environment(locustfile="shop.py", consumer_tags="env=ci")),
                         {"env": "ci", "test": "shop"})
        self.assertEqual(lc.run_tags(environment(locustfile="shop.py", consumer_tags="test=mine")), {"test": "mine"})
        self.assertEqual(lc.run_tags(environment()), {})

    def test_a_verdict_is_told_line_by_line(self):
        lines = lc.verdict_lines("u-1", FAILED)
        self.assertEqual(
            lines,
            [
                (logging.ERROR, "metrics-consumer: run u-1 FAILED its checks: 1 of 3 failed (no baseline run)"),
                (logging.ERROR, "metrics-consumer:   failed: /checkout: p95 < 500ms: 612 ms, limit 500 ms"),
                (logging.INFO, "metrics-consumer:   skipped: Aggregated: p95 <= 1.2x baseline: no baseline run"),
            ],
        )
        failed_ratio = verdict(False, ("Aggregated", "fail_ratio < 1%", 0.05, 0.01, False, "5 of 100 failed"))
        failed_ratio["checks"][0].update(source="config", method="GET")
        self.assertEqual(
            lc.verdict_lines("u-2", failed_ratio)[1][1],
            "metrics-consumer:   failed: GET Aggregated: fail_ratio < 1% (from the gateway's configuration): "
            "5%, limit 1%; 5 of 100 failed",
        )
        self.assertEqual(
            lc.verdict_lines("u-3", PASSED),
            [(logging.INFO, "metrics-consumer: run u-3 passed its checks: 1 of 1 passed (baseline: run b-1)")],
        )
        self.assertEqual(lc.verdict_lines("u-4", {"passed": True, "baseline": None, "checks": []}), [])


class StartTest(unittest.TestCase):
    def test_tags_that_clash_with_fields_stop_locust_at_start(self):
        env = environment(consumer_url="http://gw.test:3000", consumer_tags="team=shop,num_requests=x")
        with self.assertLogs("locust_consumer", logging.ERROR) as logs, self.assertRaises(SystemExit) as caught:
            lc.on_init(environment=env, runner=env.runner)
        self.assertEqual(caught.exception.code, 1)
        self.assertIn("--consumer-tags: num_requests is also the name of a field", logs.output[0])

    def test_tags_the_gateway_would_refuse_stop_locust_at_start(self):
        env = environment(consumer_url="http://gw.test:3000", consumer_tags="team=a\\b")
        with self.assertLogs("locust_consumer", logging.ERROR) as logs, self.assertRaises(SystemExit) as caught:
            lc.on_init(environment=env, runner=env.runner)
        self.assertEqual(caught.exception.code, 1)
        self.assertIn("the value of tag 'team' contains a backslash", logs.output[0])

    def test_strict_without_a_url_stops_locust_at_start(self):
        env = environment(consumer_strict=True)
        with self.assertLogs("locust_consumer", logging.ERROR) as logs, self.assertRaises(SystemExit) as caught:
            lc.on_init(environment=env, runner=env.runner)
        self.assertEqual(caught.exception.code, 1)
        self.assertIn("--consumer-strict without --consumer-url", logs.output[0])

    def test_checks_without_a_url_stop_locust_at_start(self):
        env = environment(consumer_check=["p95 < 500ms"])
        with self.assertLogs("locust_consumer", logging.ERROR) as logs, self.assertRaises(SystemExit) as caught:
            lc.on_init(environment=env, runner=env.runner)
        self.assertEqual(caught.exception.code, 1)
        self.assertIn("--consumer-check without --consumer-url", logs.output[0])

    def test_other_tags_and_no_url_start_as_usual(self):
        for options in ({"consumer_url": "http://gw.test:3000", "consumer_tags": "team=shop,env=ci"},
                        {"consumer_tags": "num_requests=x"},
                        {"consumer_url": "http://gw.test:3000", "locustfile": "checkout.py",
                         "consumer_check": ["p95 < 500ms; /checkout: fail_ratio < 1%"]}):
            env = environment(**options)
            lc.on_init(environment=env, runner=env.runner)

    def test_a_malformed_check_stops_locust_at_start(self):
        env = environment(consumer_url="http://gw.test:3000", consumer_check=["p95 < 500ms", "/checkout: p96 < 1s"])
        with self.assertLogs("locust_consumer", logging.ERROR) as logs, self.assertRaises(SystemExit) as caught:
            lc.on_init(environment=env, runner=env.runner)
        self.assertEqual(caught.exception.code, 1)
        self.assertIn("--consumer-check: '/checkout: p96 < 1s' reads the unknown metric 'p96'", logs.output[0])

    def test_a_test_tag_the_gateway_would_refuse_is_left_out_with_a_warning(self):
        env = environment(consumer_url="http://gw.test:3000", locustfile="bell\x07.py")
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            lc.on_init(environment=env, runner=env.runner)
        self.assertIn("no test tag: the value of tag 'test' contains a control character", logs.output[0])


class RunTest(unittest.TestCase):
    def setUp(self):
        self.gw = StubGateway()
        self.addCleanup(self.gw.close)
        self.backoff = lc.COMMIT_BACKOFF
        lc.COMMIT_BACKOFF = (0.05, 0.05)
        self.addCleanup(setattr, lc, "COMMIT_BACKOFF", self.backoff)

    def run_for(self, seconds, tags=None):
        env = environment()
        client = lc.GatewayClient(self.gw.url, token="secret-token")
        run = lc.ConsumerRun(env, client, 0.05, tags or {})
        log_requests(env.stats)
        time.sleep(seconds)
        run.finish()
        return run

    def test_life_of_a_run(self):
        run = self.run_for(0.4, {"team": "shop"})
        routes = self.gw.routes()
        self.assertEqual(routes[0], "register")
        self.assertEqual(routes[-1], "commit")
        self.assertGreaterEqual(routes.count("progress"), 3)
        register = self.gw.requests[0][2]
        self.assertEqual(register["measurement"]["fields"]["clients"], 3.0)
        self.assertEqual(register["measurement"]["fields"]["spawnRate"], 1.5)
        self.assertEqual(
            register["measurement"]["tags"],
            {"mode": "local", "targetHost": "http://target.test", "team": "shop"},
        )
        progress = self.gw.requests[1][2]
        self.assertEqual(progress["uuid"], "u-1")
        self.assertEqual(set(progress["measurement"]["fields"]), set(lc.progress_fields(run.environment)))
        commit = self.gw.requests[-1][2]
        self.assertEqual(commit["uuid"], "u-1")
        self.assertEqual(len(commit["measurement"]["fields"]["requestStats"]["stats"]), 4)
        self.assertEqual(self.gw.requests[-1][1].get("Content-Encoding"), "gzip")

    def test_register_carries_the_live_values_of_its_moment(self):
        # The requests are logged before the greenlet gets to register (at the first sleep).
        self.run_for(0.01)
        register = self.gw.requests[0][2]["measurement"]["fields"]
        self.assertEqual(register["num_requests"], 7.0)
        self.assertEqual(register["num_failures"], 1.0)

    def test_a_commit_of_5000_endpoints_is_gzipped_below_the_body_limit(self):
        env = environment()
        for i in range(5000):
            path = f"/api/v2/catalog/products/{i}?fields=id,name,price&locale=de-DE"
            for ms in (10 + i % 90, 20 + i % 50, 300 + i % 7):
                env.stats.log_request("GET", path, ms, 2048 + i)
        client = lc.GatewayClient(self.gw.url)
        run = lc.ConsumerRun(env, client, 60, {})
        run.finish()
        route, headers, body, wire = self.gw.requests[-1]
        self.assertEqual((route, headers.get("Content-Encoding")), ("commit", "gzip"))
        self.assertEqual(len(body["measurement"]["fields"]["requestStats"]["stats"]), 5001)
        plain = len(json.dumps(body, separators=(",", ":")))
        self.assertGreater(plain, 1 << 20, "plain, it is over the gateway's default body limit")
        self.assertLess(wire, 1 << 20, f"gzip'd {wire} bytes of {plain}")

    def test_register_is_retried_and_commit_retried_after_a_server_error(self):
        self.gw.script["register"] = [503, 503]
        self.gw.script["commit"] = [503]
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            self.run_for(0.3)
        routes = self.gw.routes()
        self.assertEqual(routes[:3], ["register"] * 3)
        self.assertEqual(routes[-2:], ["commit", "commit"])
        # One warning for the register streak, one for the failed commit try.
        self.assertEqual(len([m for m in logs.output if "cannot register" in m]), 1)
        self.assertEqual(len([m for m in logs.output if "commit of run u-1 failed" in m]), 1)

    def test_a_refused_commit_is_not_retried(self):
        self.gw.script["commit"] = [400]
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            self.run_for(0.1)
        self.assertEqual(self.gw.routes().count("commit"), 1)
        self.assertIn("refused", logs.output[-1])

    def test_progress_stops_when_the_gateway_says_the_run_is_over(self):
        self.gw.script["progress"] = [409]
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            self.run_for(0.4)
        self.assertIn("already finished", logs.output[0])
        self.assertEqual(self.gw.routes().count("progress"), 1)

    def test_a_dead_letter_in_the_commit_answer_is_a_warning_with_influxdbs_words(self):
        words = (
            'partial write: field type conflict: input field "total_rps" on measurement '
            '"load_testing_result" is type float, already exists as type string dropped=1'
        )
        self.gw.script["commit"] = [{"dead_letter": words, "data": {"description": "run u-1 finished; wrote 5 points"}}]
        with self.assertLogs("locust_consumer", logging.INFO) as logs:
            run = self.run_for(0.1)
        last = logs.output[-1]
        self.assertTrue(last.startswith("WARNING:"), last)
        self.assertIn("run u-1 finished; wrote 5 points, but InfluxDB refused points of it: " + words, last)
        self.assertNotIn("recorded by the gateway", "".join(logs.output))
        self.assertEqual(self.gw.routes().count("commit"), 1)
        self.assertIn(words, run.problems["commit"])

    def test_a_dead_letter_in_the_register_answer_is_a_warning_too(self):
        self.gw.script["register"] = [{"dead_letter": "max-values-per-tag limit exceeded (100000/100000)"}]
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            run = self.run_for(0.1)
        self.assertIn("InfluxDB refused its points: max-values-per-tag limit exceeded", logs.output[0])
        self.assertEqual(list(run.problems), ["register"])

    def test_keys_the_gateway_ignored_near_known_ones_are_a_warning_once(self):
        near = {"did_you_mean": {"measurment": "measurement"}, "ignored": ["measurment"]}
        self.gw.script["register"] = [near]
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            self.run_for(0.1)
        said = [line for line in logs.output if "ignored keys of the register" in line]
        self.assertEqual(len(said), 1, logs.output)
        self.assertIn("'measurment' (did you mean 'measurement'?)", said[0])

    def test_a_gateway_that_is_down_costs_warnings_not_exceptions(self):
        env = environment()
        run = lc.ConsumerRun(env, lc.GatewayClient("http://127.0.0.1:9"), 0.05, {})
        start = time.monotonic()
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            time.sleep(0.2)
            run.finish()
        self.assertLess(time.monotonic() - start, 5)
        self.assertIn("gave up committing", logs.output[-1])


class VerdictTest(unittest.TestCase):
    """Checks through Locust's events on a local runner: sent with the register, the verdict of
    the commit answer logged, and Locust's exit code."""

    def setUp(self):
        self.gw = StubGateway()
        self.addCleanup(self.gw.close)
        self.addCleanup(lc._problems.clear)
        self.addCleanup(lc._failures.clear)
        self.backoff = lc.COMMIT_BACKOFF
        lc.COMMIT_BACKOFF = (0.05, 0.05)
        self.addCleanup(setattr, lc, "COMMIT_BACKOFF", self.backoff)

    def run_through_locust_events(self, checks=(), strict=False, **options):
        env = environment(consumer_url=self.gw.url, consumer_strict=strict, locustfile="scripts/checkout.py",
                          consumer_check=list(checks), **options)
        lc.on_test_start(environment=env)
        log_requests(env.stats)
        time.sleep(0.1)
        lc.on_test_stop(environment=env)
        lc.on_quitting(environment=env)
        return env.process_exit_code

    def test_checks_and_the_test_tag_go_with_the_register(self):
        self.gw.script["commit"] = [{"verdict": PASSED}]
        self.run_through_locust_events(["fail_ratio < 1%", "/checkout: p95 < 500ms; /checkout: rps > 1"])
        register = self.gw.requests[0][2]
        self.assertEqual(
            register["thresholds"],
            {"Aggregated": ["fail_ratio < 1%"], "/checkout": ["p95 < 500ms", "rps > 1"]},
        )
        self.assertEqual(register["measurement"]["tags"]["test"], "checkout")

    def test_a_failed_verdict_is_logged_check_by_check_and_is_exit_code_1(self):
        self.gw.script["commit"] = [{"verdict": FAILED}]
        with self.assertLogs("locust_consumer", logging.INFO) as logs:
            code = self.run_through_locust_events(["/checkout: p95 < 500ms"])
        self.assertEqual(code, lc.VERDICT_EXIT_CODE)
        said = "\n".join(logs.output)
        self.assertIn("ERROR:locust_consumer:metrics-consumer: run u-1 FAILED its checks: 1 of 3 failed", said)
        self.assertIn("ERROR:locust_consumer:metrics-consumer:   failed: /checkout: p95 < 500ms: 612 ms, limit 500 ms",
                      said)
        self.assertIn("skipped: Aggregated: p95 <= 1.2x baseline: no baseline run", said)
        self.assertTrue(logs.output[-1].endswith("run u-1: 1 of 3 checks failed; Locust exits with code 1"),
                        logs.output[-1])

    def test_a_failed_verdict_wins_over_strict(self):
        self.gw.script["commit"] = [{"verdict": FAILED, "dead_letter": "field type conflict"}]
        with self.assertLogs("locust_consumer", logging.WARNING):
            self.assertEqual(self.run_through_locust_events(["p95 < 1"], strict=True), lc.VERDICT_EXIT_CODE)

    def test_a_passed_verdict_leaves_the_exit_code_to_locust(self):
        self.gw.script["commit"] = [{"verdict": PASSED, "report": "/apiv0.1/runs/u-1/report"}]
        with self.assertLogs("locust_consumer", logging.INFO) as logs:
            self.assertIsNone(self.run_through_locust_events(["requests > 1"]))
        said = "\n".join(logs.output)
        self.assertIn("run u-1 passed its checks: 1 of 1 passed (baseline: run b-1)", said)
        self.assertIn(f"metrics-consumer: report of run u-1: {self.gw.url}/apiv0.1/runs/u-1/report", said)
        self.assertFalse([m for m in logs.output if m.startswith(("ERROR", "WARNING"))], logs.output)

    def test_a_run_without_checks_says_nothing_of_them(self):
        with self.assertLogs("locust_consumer", logging.INFO) as logs:
            self.assertIsNone(self.run_through_locust_events())
        self.assertNotIn("thresholds", self.gw.requests[0][2])
        self.assertFalse([m for m in logs.output if "check" in m or "verdict" in m], logs.output)

    def test_checks_without_a_verdict_are_a_warning_and_fail_strict(self):
        for strict, code in ((False, None), (True, lc.STRICT_EXIT_CODE)):
            lc._problems.clear()
            with self.assertLogs("locust_consumer", logging.WARNING) as logs:
                self.assertEqual(self.run_through_locust_events(["p95 < 500ms"], strict=strict), code)
            self.assertIn("the gateway gave no verdict on the checks of run u-1", logs.output[0])

    def test_a_commit_that_fails_gives_no_verdict_and_keeps_the_exit_code(self):
        self.gw.script["commit"] = [503, 503, 503]
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            self.assertIsNone(self.run_through_locust_events(["p95 < 500ms"]))
        self.assertIn("gave up committing", logs.output[-1])

    def test_the_verdict_of_a_commit_whose_answer_was_lost_is_read_from_the_run(self):
        self.gw.script["commit"] = [503, 409]
        self.gw.script["runs"] = [{"verdict": FAILED}]
        with self.assertLogs("locust_consumer", logging.INFO) as logs:
            self.assertEqual(self.run_through_locust_events(["p95 < 500ms"]), lc.VERDICT_EXIT_CODE)
        route, _, path, _ = self.gw.requests[-1]
        self.assertEqual((route, path), ("runs", "/apiv0.1/runs/u-1"))
        self.assertIn("failed: /checkout: p95 < 500ms", "\n".join(logs.output))

    def test_a_register_refused_with_checks_stops_the_test_and_is_exit_code_1(self):
        self.gw.script["register"] = [400]
        env = environment(consumer_url=self.gw.url, locustfile="checkout.py", consumer_check=["p95 < 5 parsecs"])
        stopped = threading.Event()
        env.runner.quit = stopped.set
        with self.assertLogs("locust_consumer", logging.INFO) as logs:
            lc.on_test_start(environment=env)
            self.assertTrue(stopped.wait(5), "the test was not stopped")
            lc.on_test_stop(environment=env)
            lc.on_quitting(environment=env)
        self.assertEqual(env.process_exit_code, lc.VERDICT_EXIT_CODE)
        self.assertEqual(self.gw.routes(), ["register"], "refused once, it is not sent again, nor a commit")
        said = "\n".join(logs.output)
        self.assertIn("ERROR:locust_consumer:metrics-consumer: the gateway refused the run, so its checks cannot be "
                      "verified: ", said)
        self.assertIn("answered 400: scripted 400", said)

    def test_a_register_refused_without_checks_is_tried_again_as_before(self):
        self.gw.script["register"] = [400]
        with self.assertLogs("locust_consumer", logging.WARNING) as logs:
            self.assertIsNone(self.run_through_locust_events())
        self.assertEqual(self.gw.routes()[:2], ["register", "register"])
        self.assertIn("cannot register the run", logs.output[0])


class StrictTest(unittest.TestCase):
    """--consumer-strict: Locust's exit code, set when Locust begins to shut down (on_quitting),
    which is before Locust reads it."""

    def setUp(self):
        self.gw = StubGateway()
        self.addCleanup(self.gw.close)
        self.addCleanup(lc._problems.clear)
        self.backoff = lc.COMMIT_BACKOFF
        lc.COMMIT_BACKOFF = (0.05, 0.05)
        self.addCleanup(setattr, lc, "COMMIT_BACKOFF", self.backoff)

    def run_through_locust_events(self, strict, url=None):
        """A run as Locust's events drive it on a local runner: start, stop, then shutting down.
        Returns the exit code the plugin left for Locust (None: Locust decides)."""
        env = environment(consumer_url=url or self.gw.url, consumer_strict=strict)
        lc.on_test_start(environment=env)
        log_requests(env.stats)
        time.sleep(0.1)
        lc.on_test_stop(environment=env)
        lc.on_quitting(environment=env)
        return env.process_exit_code

    def test_a_run_recorded_whole_leaves_the_exit_code_to_locust(self):
        self.assertIsNone(self.run_through_locust_events(strict=True))
        self.assertEqual(self.gw.routes()[-1], "commit")

    def test_a_dead_letter_fails_the_run_only_when_strict(self):
        for strict, code in ((False, None), (True, lc.STRICT_EXIT_CODE)):
            lc._problems.clear()
            self.gw.script["commit"] = [{"dead_letter": "field type conflict"}]
            with self.assertLogs("locust_consumer", logging.WARNING) as logs:
                self.assertEqual(self.run_through_locust_events(strict), code, f"strict={strict}")
            self.assertEqual(any("--consumer-strict" in m for m in logs.output), strict, logs.output)

    def test_a_refused_commit_fails_the_run_when_strict(self):
        self.gw.script["commit"] = [400]
        with self.assertLogs("locust_consumer", logging.ERROR) as logs:
            self.assertEqual(self.run_through_locust_events(strict=True), lc.STRICT_EXIT_CODE)
        self.assertIn("the gateway refused the commit", logs.output[-1])

    def test_a_gateway_that_cannot_be_reached_fails_the_run_when_strict(self):
        with self.assertLogs("locust_consumer", logging.ERROR) as logs:
            code = self.run_through_locust_events(strict=True, url="http://127.0.0.1:9")
        self.assertEqual(code, lc.STRICT_EXIT_CODE)
        self.assertIn("connection refused", logs.output[-1])


if __name__ == "__main__":
    unittest.main()
