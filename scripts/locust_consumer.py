"""Record Locust runs into InfluxDB through a metrics-consumer gateway, and gate CI on checks.

Use it from a locustfile with one line::

    import locust_consumer  # noqa: F401  (registers the event listeners)

and point it at the gateway, on the command line or in the environment::

    locust -f locustfile.py --consumer-url http://gateway:3000 --consumer-token TOKEN
    METRICS_CONSUMER_URL=http://gateway:3000 METRICS_CONSUMER_TOKEN=TOKEN locust -f locustfile.py

What it does, on a local runner or on the master of a distributed run (workers do nothing):

- Locust start: refuses a --consumer-tags key that names a field the plugin sends and a
  --consumer-check that is not a check (Locust exits with an error before any test runs, as for
  its own bad options);
- test start: registers the run (POST /apiv0.1/events/register) with the target user count,
  the spawn rate, the live values known at that moment, the target host, the tags from
  --consumer-tags, the `test` tag (the locustfile's name, unless --consumer-tags sets `test`)
  and the checks of --consumer-check (`thresholds`);
- while the test runs: every --consumer-interval seconds, posts the live user count, request
  count, requests per second and failure ratio (POST /apiv0.1/events/progress), which the
  gateway's heartbeat points then carry;
- test stop: commits the run (POST /apiv0.1/events/commit) with the full statistics: one row per
  endpoint plus the aggregated row, the error list, total requests per second, failure ratio
  and response-time percentiles, gzip'd (Content-Encoding: gzip), so that a run with thousands
  of endpoints stays within the gateway's body limit; then logs the gateway's verdict on the
  run's checks (each failed check with its value and limit) and the address of the run's
  report, and a failed verdict makes Locust exit with code 1.

The gateway being down, slow or refusing never breaks the load test: every failure is caught
and logged as a warning, and the commit is tried three times with a growing pause between tries.
An answer saying that InfluxDB refused the points (`dead_letter`: the gateway keeps them in its
dead letters) is a warning with InfluxDB's words. With --consumer-strict, a run that was not
recorded whole (the gateway refused a call, could not be reached for the commit, or InfluxDB
refused points) makes Locust exit with code 3, for CI. One refusal does stop a run that has
checks: a register the gateway refuses (a check it cannot read, a wrong token) ends the test at
its start with exit code 1, since no verdict could come of it.

On a master the commit is sent when Locust begins to shut down, once the workers' last
statistics are in and before Locust's own --json-file or --json output, which empties the
endpoint rows as it writes them.

Works with Locust 2.x. It needs nothing but what Locust already brings (gevent, requests).
"""

import gzip
import json
import logging
import math
import re
import socket
import sys
import time
import urllib.parse

import gevent
import locust.stats
import requests
import requests.auth
from gevent.event import Event
from locust import events
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

__all__ = ["GatewayClient", "ConsumerRun", "request_stats"]

logger = logging.getLogger("locust_consumer")

API = "/apiv0.1/events/"
# (connect, read) timeouts of one call to the gateway, in seconds. The gateway answers once
# InfluxDB stored the points or it spooled them, which takes its own influxdb.timeout (5 s by
# default) at worst, so the read timeout is a little longer than that.
TIMEOUT = (3.0, 8.0)
# Commit tries and the pause before each retry, in seconds.
COMMIT_TRIES = 3
COMMIT_BACKOFF = (1.0, 2.0)
# The most that stopping a test may wait for the gateway, all tries included, in seconds.
COMMIT_DEADLINE = 30.0
# Percentiles of every stats row, as in Locust's own report; newer Locust lets a locustfile
# change this list, so it is read when the run ends.
DEFAULT_PERCENTILES = (0.5, 0.66, 0.75, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0)
# Locust's exit code under --consumer-strict when a run was not recorded whole. Locust's own are
# 1 (requests failed, --exit-code-on-error) and 2 (an unexpected error), so CI can tell them apart.
STRICT_EXIT_CODE = 3
# The most of InfluxDB's message (from a `dead_letter` answer) shown in a log line, in characters.
MAX_REASON_CHARS = 500
# Locust's exit code when a run's verdict failed, or a run with checks got none because the
# gateway refused its register: the code of failed requests, since both say "did not pass".
VERDICT_EXIT_CODE = 1
# The endpoint of a check given without "ENDPOINT: ": Locust's row of all requests.
AGGREGATED = "Aggregated"
# The metrics a check may read, as the gateway names them. The plugin checks a check's shape
# only (METRIC OP VALUE); the gateway reads the value and its unit, and its answer to the
# register names what is wrong.
CHECK_METRICS = (
    "avg", "min", "max", "median", "p50", "p75", "p90", "p95", "p99", "p99.9",
    "rps", "fail_ratio", "failures", "requests",
)  # fmt: skip
# METRIC OP VALUE, spaces around OP optional.
CHECK_SHAPE = re.compile(r"(?P<metric>[A-Za-z0-9_.]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>\S.*)", re.S)
# Where "ENDPOINT: " may end: ": " before a metric's name and an operator (endpoint names may
# hold ": " too, so a check is split at the last such place).
ENDPOINT_END = re.compile(r":\s+(?=[A-Za-z0-9_.]+\s*[<>])")
# Response-time metrics: the verdict's figures of these are in ms.
TIME_METRICS = {"avg", "min", "max", "median", "p50", "p75", "p90", "p95", "p99", "p99.9"}
# The most bytes of a tag value the gateway takes; a `test` tag from a long list of
# locustfiles is cut to it.
MAX_TAG_VALUE_BYTES = 256
# gzip level of compressed bodies: Locust's statistics shrink about tenfold already at 6, and
# higher levels cost the master's CPU at the end of the run for little more.
GZIP_LEVEL = 6


class GatewayError(Exception):
    """A call to the gateway failed: no answer, or an answer other than 200."""

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.status = status
        self.code = code


class BearerAuth(requests.auth.AuthBase):
    """Sends "Authorization: Bearer TOKEN"."""

    def __init__(self, token):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class GatewayClient:
    """Posts JSON to the gateway's /apiv0.1/events/ routes.

    `url` is the gateway's base URL, e.g. http://gw:3000, and may carry credentials
    (http://locust:TOKEN@gw:3000), sent as HTTP Basic auth (the gateway takes the token as the
    password). A `token` given separately is sent as "Authorization: Bearer TOKEN" instead, and
    wins over credentials in the URL. Neither ever appears in a log message: the URL kept and
    shown has no credentials.
    """

    def __init__(self, url, token=None, timeout=TIMEOUT):
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the consumer URL must look like http://host:port")
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        self._secrets = [s for s in (token, password, parts.password) if s]
        path = parts.path.rstrip("/")
        self.base = urllib.parse.urlunsplit((parts.scheme, _host_port(parts), path, "", ""))
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "locust-consumer/1"
        # Explicit auth, so requests never falls back to a ~/.netrc entry for the gateway.
        if token:
            self.session.auth = BearerAuth(token)
        elif user or password:
            self.session.auth = requests.auth.HTTPBasicAuth(user, password)

    def post(self, route, body, deadline=None, compress=False):
        """POSTs `body` to /apiv0.1/events/`route`; returns the JSON answer of a 200, else
        raises GatewayError with a message fit for the log. With a `deadline` (a
        time.monotonic() value) the call's timeouts are cut to end by then. With `compress`,
        the body is sent gzip'd; a gateway too old to read it (415, or 400 invalid_json) gets
        it again plain."""
        data = json.dumps(body, separators=(",", ":")).encode()
        if compress:
            try:
                return self._post(route, gzip.compress(data, GZIP_LEVEL), deadline, "gzip")
            except GatewayError as e:
                if not (e.status == 415 or (e.status == 400 and e.code == "invalid_json")):
                    raise
                logger.info("metrics-consumer: the gateway does not read gzip'd bodies; sending it plain")
        return self._post(route, data, deadline, None)

    def get(self, path, deadline=None):
        """GETs `path` (e.g. /apiv0.1/runs/UUID); returns the JSON answer of a 200, else raises
        GatewayError, as post() does."""
        return self._call("GET", path, None, deadline, None)

    def _post(self, route, data, deadline, encoding):
        return self._call("POST", f"{API}{route}", data, deadline, encoding)

    def _call(self, method, path, data, deadline, encoding):
        url = f"{self.base}{path}"
        timeout = self.timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0.1:
                raise GatewayError(f"{url}: no time left")
            timeout = (min(timeout[0], left), min(timeout[1], left))
        headers = {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if encoding:
            headers["Content-Encoding"] = encoding
        try:
            resp = self.session.request(method, url, data=data, headers=headers, timeout=timeout)
        except requests.RequestException as e:
            raise GatewayError(f"{url}: {self.redact(_reason(e))}") from None
        if resp.status_code == 200:
            try:
                return resp.json()
            except ValueError:
                raise GatewayError(f"{url}: the answer is not JSON", 200) from None
        # The gateway answers {"error": "...", "code": "..."}; anything else is shown cut short.
        code = error = None
        try:
            answer = resp.json()
            code, error = answer.get("code"), answer.get("error")
        except (ValueError, AttributeError):
            pass
        if error is None:
            error = resp.text[:200]
        raise GatewayError(
            f"{url} answered {resp.status_code}: {self.redact(str(error))}",
            resp.status_code,
            code,
        )

    def redact(self, text):
        """`text` with every secret this client knows replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _host_port(parts):
    """host[:port] of a split URL, without user and password."""
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def _reason(exc):
    """A short reason for a failed request, without the long chain requests wraps it in."""
    text = str(exc)
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "Temporary failure in name resolution" in text:
        return "unknown host"
    return f"{type(exc).__name__}: {text[:300]}"


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def _number(value):
    """A JSON-safe number: None and non-finite floats (which JSON cannot carry) become 0."""
    if value is None:
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return value


def _percentiles():
    """Locust's reported percentiles, always with the median, 95th and 99th, which the Grafana
    dashboard shows."""
    reported = getattr(locust.stats, "PERCENTILES_TO_REPORT", DEFAULT_PERCENTILES)
    return sorted(set(reported) | {0.5, 0.95, 0.99})


def stats_row(entry, percentiles):
    """One endpoint row (a StatsEntry) in the shape of Locust's own StatsEntry.to_dict(),
    with its failure ratio and every reported percentile added."""
    row = {
        "name": entry.name,
        "method": entry.method or "",
        "num_requests": entry.num_requests,
        "num_failures": entry.num_failures,
        "num_none_requests": getattr(entry, "num_none_requests", 0),
        "fail_ratio": entry.fail_ratio,
        "min_response_time": entry.min_response_time,
        "max_response_time": entry.max_response_time,
        "avg_response_time": entry.avg_response_time,
        "median_response_time": entry.median_response_time,
        "current_rps": entry.current_rps,
        "current_fail_per_sec": entry.current_fail_per_sec,
        "total_rps": entry.total_rps,
        "total_fail_per_sec": entry.total_fail_per_sec,
        "avg_content_length": entry.avg_content_length,
    }
    for p in percentiles:
        # Keys as Locust spells them: response_time_percentile_0.95
        row[f"response_time_percentile_{p}"] = (
            entry.get_response_time_percentile(p) if entry.num_requests else 0
        )
    return {k: (v if k in ("name", "method") else _number(v)) for k, v in row.items()}


def error_row(error):
    """One element of the error list: method, name, error text, occurrences."""
    return {
        "method": error.method or "",
        "name": error.name,
        # parse_error turns an exception into text without memory addresses, as Locust's report.
        "error": locust.stats.StatsError.parse_error(error.error),
        "occurrences": error.occurrences,
    }


def request_stats(environment, peak_users=0):
    """The `requestStats` object of a commit, built from environment.stats: one row per
    endpoint (sorted by name and method) and the aggregated row, the error list, and the run's
    totals as top-level numbers. `user_count` is the most users seen running: when a test has
    stopped, the runner's own count is already 0."""
    stats = environment.stats
    percentiles = _percentiles()
    total = stats.total
    rows = [
        stats_row(e, percentiles)
        for e in sorted(stats.entries.values(), key=lambda e: (e.name, e.method or ""))
    ]
    rows.append(stats_row(total, percentiles))
    errors = [error_row(e) for e in stats.errors.values()]
    runner = environment.runner
    result = {
        "stats": rows,
        "errors": errors,
        "total_rps": _number(total.total_rps),
        "total_fail_per_sec": _number(total.total_fail_per_sec),
        "fail_ratio": _number(total.fail_ratio),
        "num_requests": total.num_requests,
        "num_failures": total.num_failures,
        "avg_response_time": _number(total.avg_response_time),
        "user_count": max(peak_users, users_at_stop(runner)),
    }
    for p in percentiles:
        result[f"response_time_percentile_{p}"] = _number(
            total.get_response_time_percentile(p) if total.num_requests else 0
        )
    return result


def users_at_stop(runner):
    """Users running when the test was stopped: Locust keeps the count per user class."""
    counts = getattr(runner, "final_user_classes_count", None) or {}
    return max(sum(counts.values()), getattr(runner, "user_count", 0) or 0)


# The members of every endpoint row besides name and method (see stats_row), and the live
# values of progress (see progress_fields), by name: the clash check at start reads them.
ROW_MEMBERS = (
    "num_requests",
    "num_failures",
    "num_none_requests",
    "fail_ratio",
    "min_response_time",
    "max_response_time",
    "avg_response_time",
    "median_response_time",
    "current_rps",
    "current_fail_per_sec",
    "total_rps",
    "total_fail_per_sec",
    "avg_content_length",
)
PROGRESS_FIELDS = (
    "user_count",
    "num_requests",
    "num_failures",
    "current_rps",
    "current_fail_per_sec",
    "fail_ratio",
)


def progress_fields(environment):
    """The live values posted every interval; they keep the same names and types all run long,
    so InfluxDB never sees a field change type."""
    runner = environment.runner
    total = environment.stats.total
    return {
        "user_count": float(runner.user_count if runner is not None else 0),
        "num_requests": float(total.num_requests),
        "num_failures": float(total.num_failures),
        "current_rps": float(_number(total.current_rps)),
        "current_fail_per_sec": float(_number(total.current_fail_per_sec)),
        "fail_ratio": float(_number(total.fail_ratio)),
    }


# ---------------------------------------------------------------------------
# One run: register, progress, commit
# ---------------------------------------------------------------------------


class ConsumerRun:
    """The life of one test run on the gateway. A greenlet registers it and posts progress;
    finish() stops that greenlet and commits. No method raises."""

    def __init__(self, environment, client, interval, extra_tags, thresholds=None):
        self.environment = environment
        self.client = client
        self.interval = interval
        self.started_at = time.time()
        self.extra_tags = dict(extra_tags)
        # The run's checks, {endpoint: [check, …]}, sent with the register; none: no verdict
        # is expected (the gateway may still give one from its configuration's rules).
        self.thresholds = dict(thresholds or {})
        self.uuid = None
        self.finished = False
        # The gateway's verdict on the run's checks (the commit answer's `verdict`), once known.
        self.verdict = None
        # Why the run did not pass its checks (a failed verdict, or a register the gateway
        # refused while the run has checks); Locust then exits with VERDICT_EXIT_CODE.
        self.failed = None
        self.peak_users = 0
        # Why this run was not recorded whole, by call ("register", "progress", "commit"): the
        # first reason of each; --consumer-strict turns any of them into Locust's exit code.
        self.problems = {}
        # Calls that are failing ("register", "progress"): only the first failure of a streak
        # is a warning, so a gateway that is down for an hour does not flood the log.
        self._failing = set()
        # Calls whose ignored keys were warned about (once each).
        self._warned_ignored = set()
        self._register_error = "the run is not registered"
        self._stop = Event()
        self._greenlet = gevent.spawn(self._loop)

    def register_body(self):
        """The register, with the live values of this moment: a register sent late (the
        gateway was down, or the test was short) carries what the test has done so far."""
        env = self.environment
        opts = env.parsed_options
        runner = env.runner
        users = getattr(runner, "target_user_count", None) or getattr(opts, "num_users", None) or 0
        spawn_rate = getattr(runner, "spawn_rate", None) or getattr(opts, "spawn_rate", None) or 0
        tags = {"mode": "distributed" if isinstance(runner, MasterRunner) else "local"}
        if env.host:
            tags["targetHost"] = env.host
        tags.update(self.extra_tags)
        fields = {"clients": float(users), "spawnRate": float(spawn_rate)}
        # The live values too: the heartbeats carry them from the first point on.
        live = progress_fields(env)
        self.peak_users = max(self.peak_users, int(live["user_count"]))
        fields.update(live)
        body = {
            "startedAt": self.started_at,
            "host": socket.gethostname(),
            "measurement": {"fields": fields, "tags": tags},
        }
        if self.thresholds:
            body["thresholds"] = self.thresholds
        return body

    def _failed(self, call, message, *args):
        """Logs a failed call: a warning the first time, at debug level while it keeps failing."""
        level = logging.DEBUG if call in self._failing else logging.WARNING
        self._failing.add(call)
        logger.log(level, message, *args)

    def _succeeded(self, call):
        if call in self._failing:
            self._failing.discard(call)
            logger.info("metrics-consumer: %s works again", call)

    def _problem(self, call, reason):
        """Notes why the run is not recorded whole; the first reason of each call is kept."""
        self.problems.setdefault(call, reason)

    def _dead_letter(self, call, answer):
        """InfluxDB's words when the gateway says InfluxDB refused the points of this call
        (`dead_letter`, sent by a gateway with delivery.acknowledge = "influxdb"), else None.
        Such an answer is a 200: the gateway keeps the refused points in its dead letters."""
        why = answer.get("dead_letter") if isinstance(answer, dict) else None
        if not why:
            return None
        text = self.client.redact(str(why))
        if len(text) > MAX_REASON_CHARS:
            text = text[:MAX_REASON_CHARS] + "…"
        self._problem(call, f"InfluxDB refused the points of the {call}: {text}")
        return text

    def _ignored(self, call, answer):
        """Warns, once per call, when the gateway ignored keys of it that are near keys it reads
        (`did_you_mean`): a misspelled key would otherwise leave the run without its data."""
        near = answer.get("did_you_mean") if isinstance(answer, dict) else None
        if not near or call in self._warned_ignored:
            return
        self._warned_ignored.add(call)
        said = ", ".join(f"{k!r} (did you mean {v!r}?)" for k, v in sorted(near.items()))
        logger.warning("metrics-consumer: the gateway ignored keys of the %s: %s", call, said)

    def _register(self, deadline=None):
        """Registers the run once; returns whether it has a uuid."""
        if self.uuid is not None:
            return True
        if self.failed is not None:
            return False
        try:
            answer = self.client.post("register", self.register_body(), deadline)
        except GatewayError as e:
            self._register_error = f"cannot register the run: {e}"
            if self.thresholds and _refusal(e):
                # It would refuse the same register again; and the run, with checks that
                # decide whether the test passed, could never get a verdict.
                logger.error(
                    "metrics-consumer: the gateway refused the run, so its checks cannot be "
                    "verified: %s; Locust exits with code %d",
                    e,
                    VERDICT_EXIT_CODE,
                )
                self.failed = f"the gateway refused the run: {e}"
                self._problem("register", self._register_error)
                return False
            self._failed("register", "metrics-consumer: cannot register the run: %s", e)
            return False
        uuid = answer.get("uuid") or (answer.get("data") or {}).get("uuid")
        if not uuid:
            self._failed("register", "metrics-consumer: the register answer holds no uuid")
            self._register_error = "the register answer holds no uuid"
            return False
        self._succeeded("register")
        self.uuid = uuid
        self._ignored("register", answer)
        refused = self._dead_letter("register", answer)
        if refused:
            logger.warning(
                "metrics-consumer: registered run %s at %s, but InfluxDB refused its points: %s "
                "(the gateway keeps them in its dead letters)",
                uuid,
                self.client.base,
                refused,
            )
        else:
            logger.info("metrics-consumer: registered run %s at %s", uuid, self.client.base)
        return True

    def _loop(self):
        """Registers, then posts progress every interval until finish() or the gateway says the
        run is over. A gateway that is down is tried again at the next interval."""
        try:
            self._register()
            while self.failed is None and not self._stop.wait(self.interval):
                if not self._register():
                    continue
                if not self._progress():
                    return
            if self.failed is not None and not self._stop.is_set():
                # Stopping the runner finishes this run, which joins this greenlet: so it is
                # done from another greenlet, once this one has returned.
                gevent.spawn(_stop_test, self.environment)
        except Exception:  # never let a bug here reach Locust
            logger.warning("metrics-consumer: progress stopped by an unexpected error", exc_info=True)

    def _progress(self):
        """Posts the live values; returns False when progress should stop for this run."""
        fields = progress_fields(self.environment)
        self.peak_users = max(self.peak_users, int(fields["user_count"]))
        body = {"uuid": self.uuid, "measurement": {"fields": fields}}
        try:
            answer = self.client.post("progress", body)
        except GatewayError as e:
            if e.status == 409:
                logger.warning("metrics-consumer: run %s is already finished on the gateway", self.uuid)
                return False
            if e.status == 404:
                # Either the gateway does not know the run or it predates the progress route;
                # heartbeats go on with the registered values either way.
                logger.warning("metrics-consumer: no live progress for run %s: %s", self.uuid, e)
                return False
            if _refusal(e):
                self._problem("progress", f"the gateway refused the progress: {e}")
            self._failed("progress", "metrics-consumer: cannot post progress: %s", e)
            return True
        refused = self._dead_letter("progress", answer)
        if refused:
            self._failed(
                "progress",
                "metrics-consumer: InfluxDB refused the progress of run %s: %s "
                "(the gateway keeps it in its dead letters)",
                self.uuid,
                refused,
            )
            return True
        self._succeeded("progress")
        return True

    def _take_verdict(self, verdict):
        """Keeps and logs the gateway's verdict on the run's checks (None: the gateway gave
        none); a failed one is why the run did not pass."""
        if not isinstance(verdict, dict):
            if self.thresholds:
                logger.warning(
                    "metrics-consumer: the gateway gave no verdict on the checks of run %s "
                    "(is it older than checks?)",
                    self.uuid,
                )
                self._problem("commit", "the gateway gave no verdict on the run's checks")
            return
        self.verdict = verdict
        for level, line in verdict_lines(self.uuid, verdict):
            logger.log(level, line)
        if verdict.get("passed") is False:
            checks = verdict.get("checks") or []
            failed = sum(1 for c in checks if isinstance(c, dict) and c.get("passed") is False)
            self.failed = f"{failed} of {len(checks)} checks failed"

    def _verdict_of_run(self, deadline):
        """Reads the run's verdict from GET /apiv0.1/runs/UUID, for a commit whose answer was
        lost."""
        try:
            run = self.client.get(f"/apiv0.1/runs/{self.uuid}", deadline)
        except GatewayError as e:
            if self.thresholds:
                logger.warning("metrics-consumer: cannot read the verdict of run %s: %s", self.uuid, e)
                self._problem("commit", f"cannot read the run's verdict: {e}")
            return
        self._take_verdict(run.get("verdict") if isinstance(run, dict) else None)

    def stop_progress(self):
        """Stops posting progress; the run stays open for finish()."""
        self._stop.set()

    def finish(self):
        """Stops the progress greenlet and commits the run with its final statistics, trying
        COMMIT_TRIES times within COMMIT_DEADLINE seconds."""
        if self.finished:
            return
        self.finished = True
        deadline = time.monotonic() + COMMIT_DEADLINE
        try:
            self._stop.set()
            # The greenlet may be inside a call to the gateway; let it end that call, so that a
            # register in flight is not lost and registered twice.
            self._greenlet.join(timeout=sum(self.client.timeout))
            self._greenlet.kill(block=False)
            if self.failed is not None:
                return  # the gateway refused the run: nothing to commit
            stats = request_stats(self.environment, self.peak_users)
        except Exception:
            logger.warning("metrics-consumer: cannot collect the run's statistics", exc_info=True)
            return
        fields = {"requestStats": stats, "duration": round(time.time() - self.started_at, 3)}
        last = None
        for attempt in range(COMMIT_TRIES):
            if attempt:
                pause = COMMIT_BACKOFF[min(attempt - 1, len(COMMIT_BACKOFF) - 1)]
                gevent.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            # A run whose register never got through is registered now, so its result is kept.
            if not self._register(deadline):
                if self.failed is not None:
                    return
                last = self._register_error
                continue
            body = {"uuid": self.uuid, "measurement": {"fields": fields}}
            try:
                answer = self.client.post("commit", body, deadline, compress=True)
            except GatewayError as e:
                if e.status == 409 and attempt:
                    # An earlier try got through, but its answer was lost (a timeout); the
                    # verdict it held is asked for.
                    logger.info("metrics-consumer: committed run %s", self.uuid)
                    self._verdict_of_run(deadline)
                    return
                if _refusal(e):
                    # The gateway refused this commit itself: sending it again cannot help.
                    logger.warning("metrics-consumer: commit of run %s refused: %s", self.uuid, e)
                    self._problem("commit", f"the gateway refused the commit: {e}")
                    return
                logger.warning(
                    "metrics-consumer: commit of run %s failed (try %d of %d): %s",
                    self.uuid,
                    attempt + 1,
                    COMMIT_TRIES,
                    e,
                )
                last = str(e)
                continue
            # The gateway says what it wrote (how many endpoint rows it kept, say).
            said = (answer.get("data") or {}).get("description") or "committed"
            self._ignored("commit", answer)
            refused = self._dead_letter("commit", answer)
            if refused:
                logger.warning(
                    "metrics-consumer: %s, but InfluxDB refused points of it: %s "
                    "(the gateway keeps them in its dead letters)",
                    said,
                    refused,
                )
            else:
                logger.info(
                    "metrics-consumer: %s%s",
                    said,
                    " (in InfluxDB)"
                    if answer.get("delivered")
                    else " (recorded by the gateway, which delivers it to InfluxDB)",
                )
            self._take_verdict(answer.get("verdict"))
            report = answer.get("report")
            if isinstance(report, str) and report.startswith("/"):
                logger.info("metrics-consumer: report of run %s: %s%s", self.uuid, self.client.base, report)
            return
        logger.warning("metrics-consumer: gave up committing the run; its result is not recorded")
        reason = last or "no time left"
        self._problem("commit", f"the commit did not get through ({reason}), so the run's result is not recorded")


def _figure(metric, value):
    """A figure of the verdict as a person reads it: response times in ms, fail_ratio in %."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "none"
    if metric in TIME_METRICS:
        return f"{value:.6g} ms"
    if metric == "fail_ratio":
        return f"{value * 100:.4g}%"
    return f"{value:.6g}"


def verdict_lines(uuid, verdict):
    """The log lines, (level, text), of a verdict (the commit answer's `verdict`): a first line
    saying whether the checks passed, with the baseline run, then one line per failed check
    (endpoint, check, value and limit, the gateway's reason) and one per skipped check. No lines
    for a verdict without checks."""
    checks = [c for c in verdict.get("checks") or [] if isinstance(c, dict)]
    if not checks:
        return []
    failed = [c for c in checks if c.get("passed") is False]
    skipped = [c for c in checks if c.get("passed") is None]
    baseline = verdict.get("baseline")
    against = f"baseline: run {baseline}" if baseline else "no baseline run"
    if verdict.get("passed") is False:
        head = f"FAILED its checks: {len(failed)} of {len(checks)} failed"
        lines = [(logging.ERROR, f"metrics-consumer: run {uuid} {head} ({against})")]
    else:
        head = f"passed its checks: {len(checks) - len(skipped)} of {len(checks)} passed"
        lines = [(logging.INFO, f"metrics-consumer: run {uuid} {head} ({against})")]
    for level, word, group in ((logging.ERROR, "failed", failed), (logging.INFO, "skipped", skipped)):
        for c in group:
            endpoint = " ".join(str(p) for p in (c.get("method"), c.get("endpoint")) if p)
            check = str(c.get("check"))
            shape = CHECK_SHAPE.match(check)
            metric = shape["metric"] if shape else ""
            # A skipped check has no limit to hold its value against; its reason says why.
            said = ""
            if word == "failed":
                said = f"{_figure(metric, c.get('value'))}, limit {_figure(metric, c.get('limit'))}"
            reason = c.get("reason")
            details = "; ".join(str(p) for p in (said, reason) if p)
            source = " (from the gateway's configuration)" if c.get("source") == "config" else ""
            details = details or "no reason given"
            lines.append((level, f"metrics-consumer:   {word}: {endpoint}: {check}{source}: {details}"))
    return lines


def _stop_test(environment):
    """Ends the test at once: a headless Locust quits (and exits with the code the plugin left),
    one with a web UI stops the test and stays up."""
    try:
        logger.info("metrics-consumer: stopping the test")
        if getattr(environment.parsed_options, "headless", False):
            environment.runner.quit()
        else:
            environment.runner.stop()
    except Exception:
        logger.warning("metrics-consumer: cannot stop the test", exc_info=True)


def _refusal(error):
    """Whether the gateway answered `error` itself, refusing the call (a 4xx other than a timeout
    or a rate limit), so that sending it again cannot help."""
    return error.status is not None and 400 <= error.status < 500 and error.status not in (408, 429)


# ---------------------------------------------------------------------------
# Locust event listeners
# ---------------------------------------------------------------------------

# The run in progress on this process, if any.
_current = None
# A run whose commit waits for the workers' last statistics (master, see on_test_stop).
_deferred = None
# Why runs of this process were not recorded whole ("run UUID: reason"), for --consumer-strict.
_problems = []
# Why runs of this process did not pass their checks ("run UUID: reason"): Locust's exit code.
_failures = []


def parse_tags(text):
    """ "k=v,k2=v2" → {"k": "v", "k2": "v2"}; pairs without "=" are skipped with a warning."""
    tags = {}
    for pair in (text or "").split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            logger.warning("metrics-consumer: --consumer-tags: %r is not key=value; skipped", pair)
            continue
        tags[key.strip()] = value.strip()
    return tags


def split_checks(values):
    """The checks of --consumer-check, each given alone or several in one value separated by
    ';' (as METRICS_CONSUMER_CHECKS holds them). A piece that is no check, such as the first
    half of an endpoint name with a ';' in it, is joined to the next one again."""
    checks = []
    for value in values or ():
        pending = None
        for piece in str(value).split(";"):
            text = piece if pending is None else f"{pending};{piece}"
            if CHECK_SHAPE.search(text) or not text.strip():
                if text.strip():
                    checks.append(text.strip())
                pending = None
            else:
                pending = text
        if pending is not None and pending.strip():
            checks.append(pending.strip())
    return checks


def parse_check(text):
    """ "p95 < 500ms" → ("Aggregated", "p95 < 500ms"); "/checkout: p95 < 500ms" →
    ("/checkout", "p95 < 500ms"). The endpoint ends at the last ": " that is followed by a
    metric and an operator, since endpoint names may hold ": " themselves.

    Checks the shape only (a known metric, an operator, a value) and raises ValueError with a
    message naming what is wrong; the value and its unit are the gateway's to read."""
    text = text.strip()
    ends = list(ENDPOINT_END.finditer(text))
    endpoint, check = AGGREGATED, text
    if ends:
        endpoint, check = text[: ends[-1].start()].strip(), text[ends[-1].end() :].strip()
        if not endpoint:
            raise ValueError(f"{text!r} has an empty endpoint before ': '")
    shape = CHECK_SHAPE.fullmatch(check)
    if shape is None:
        raise ValueError(
            f"{text!r} is not a check: write [ENDPOINT: ]METRIC OP VALUE, e.g. 'p95 < 500ms' or "
            f"'/checkout: fail_ratio < 1%', OP one of <, <=, >, >="
        )
    if shape["metric"] not in CHECK_METRICS:
        metrics = ", ".join(CHECK_METRICS)
        raise ValueError(f"{text!r} reads the unknown metric {shape['metric']!r}; the metrics are {metrics}")
    return endpoint, check


def thresholds_of(values):
    """The register's `thresholds` from the values of --consumer-check: {endpoint: [check, …]},
    endpoints and checks in the order given. Raises ValueError naming the first malformed
    check."""
    thresholds = {}
    for text in split_checks(values):
        endpoint, check = parse_check(text)
        thresholds.setdefault(endpoint, []).append(check)
    return thresholds


def locustfile_name(environment):
    """The locustfile's name, the default of the `test` tag: the base name without .py of what
    -f names (a file, a directory or package, a URL); several (-f a.py,b.py) joined by ','. Cut to
    the gateway's 256 bytes of a tag value; None when Locust does not say."""
    given = getattr(environment.parsed_options, "locustfile", None)
    if not given or given == "-":
        given = getattr(environment, "locustfile", None)
    if not given or not isinstance(given, str):
        return None
    names = []
    for part in given.split(","):
        part = part.strip()
        if "://" in part:
            part = urllib.parse.urlsplit(part).path
        name = re.split(r"[/\\]", part.rstrip("/\\"))[-1].removesuffix(".py")
        if name and name not in names:
            names.append(name)
    if not names:
        return None
    name = ",".join(names).encode()[:MAX_TAG_VALUE_BYTES].decode(errors="ignore")
    return name or None


def run_tags(environment):
    """The run's tags from the options: those of --consumer-tags, and `test`, the locustfile's
    name, unless --consumer-tags sets it (a name the gateway would refuse is left out, with a
    warning)."""
    tags = parse_tags(getattr(environment.parsed_options, "consumer_tags", ""))
    if "test" not in tags:
        name = locustfile_name(environment)
        if name is not None:
            problems = tag_problems({"test": name})
            if problems:
                logger.warning("metrics-consumer: no test tag: %s", "; ".join(problems))
            else:
                tags["test"] = name
    return tags


def field_names(percentiles=None):
    """Every field name the plugin sends: register and progress fields, the commit's own fields,
    the result's totals and the members of each endpoint row. A run tag of one of these names
    would shadow the field in InfluxQL, so the gateway refuses it (register) or leaves it off
    (result, rows)."""
    percentiles = _percentiles() if percentiles is None else percentiles
    per_percentile = {f"response_time_percentile_{p}" for p in percentiles}
    fields = {"clients", "spawnRate", "duration", "requestStats"}
    fields |= set(PROGRESS_FIELDS)
    fields |= {
        "total_rps",
        "total_fail_per_sec",
        "fail_ratio",
        "num_requests",
        "num_failures",
        "avg_response_time",
        "user_count",
    }
    fields |= set(ROW_MEMBERS) | per_percentile
    return fields


# Names the gateway writes itself (uuid, host; event on events; name, method, full_name and
# full_method on endpoint rows; token_name when it tags runs with their token's name): a run tag
# of one of them is dropped or shadowed.
GATEWAY_NAMES = {"uuid", "host", "event", "name", "method", "full_name", "full_method", "token_name"}


def tag_clashes(tags, percentiles=None):
    """The keys of `tags` that name a field the plugin sends or a tag the gateway writes."""
    taken = field_names(percentiles) | GATEWAY_NAMES
    return sorted(k for k in tags if k in taken)


def _text_problem(text, max_bytes):
    """Why the gateway refuses `text` as a tag name or value (its line protocol rules), or None."""
    if not text:
        return "is empty"
    if len(text.encode()) > max_bytes:
        return f"is longer than {max_bytes} bytes"
    if "\\" in text:
        return "contains a backslash"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):
        return "contains a control character"
    return None


def tag_problems(tags):
    """What the gateway would refuse in `tags` at the register, one message per tag: names of
    1 to 128 bytes, not "time" and not starting with "_", values of 1 to 256 bytes; neither
    with a backslash or a control character."""
    problems = []
    for key, value in tags.items():
        why = _text_problem(key, 128)
        if why is None and key == "time":
            why = "is a name InfluxDB keeps for itself"
        if why is None and key.startswith("_"):
            why = "starts with '_', which InfluxDB keeps for itself"
        if why is not None:
            problems.append(f"the tag name {key!r} {why}")
            continue
        why = _text_problem(value, 256)
        if why is not None:
            problems.append(f"the value of tag {key!r} {why}")
    return problems


def _add_option(group, *names, **kwargs):
    """add_argument with Locust's web-UI keywords, which Locust before 2.16 does not know."""
    try:
        group.add_argument(*names, **kwargs)
    except TypeError:
        for key in ("include_in_web_ui", "is_secret"):
            kwargs.pop(key, None)
        group.add_argument(*names, **kwargs)


@events.init_command_line_parser.add_listener
def on_init_command_line_parser(parser, **_kwargs):
    group = parser.add_argument_group("metrics-consumer", "record the run through a metrics-consumer gateway")
    _add_option(
        group,
        "--consumer-url",
        env_var="METRICS_CONSUMER_URL",
        default="",
        help="base URL of the gateway, e.g. http://gw:3000, or with the token in it: "
        "http://locust:TOKEN@gw:3000; unset: nothing is recorded",
        include_in_web_ui=False,
    )
    _add_option(
        group,
        "--consumer-token",
        env_var="METRICS_CONSUMER_TOKEN",
        default="",
        help="token sent as 'Authorization: Bearer TOKEN'",
        include_in_web_ui=False,
        is_secret=True,
    )
    _add_option(
        group,
        "--consumer-interval",
        env_var="METRICS_CONSUMER_INTERVAL",
        type=float,
        default=15.0,
        help="seconds between two progress posts (default 15)",
        include_in_web_ui=False,
    )
    _add_option(
        group,
        "--consumer-tags",
        env_var="METRICS_CONSUMER_TAGS",
        default="",
        help="extra tags of the run's points: k=v,k2=v2",
        include_in_web_ui=False,
    )
    _add_option(
        group,
        "--consumer-strict",
        env_var="METRICS_CONSUMER_STRICT",
        action="store_true",
        default=False,
        help=f"exit with code {STRICT_EXIT_CODE} when a run is not recorded whole: the gateway refused a call "
        "or could not be reached for the commit, or InfluxDB refused points (for CI)",
        include_in_web_ui=False,
    )
    # Repeatable. In the environment and in Locust's config file, several checks are a list in
    # Locust's syntax (["p95 < 500ms", "/checkout: fail_ratio < 1%"]) or separated by ';'.
    _add_option(
        group,
        "--consumer-check",
        env_var="METRICS_CONSUMER_CHECKS",
        action="append",
        default=[],
        metavar="[ENDPOINT: ]CHECK",
        help="a check of the run, decided by the gateway when the run ends, e.g. 'p95 < 500ms' (of all "
        "requests), '/checkout: fail_ratio < 1%%' or 'p95 <= 1.2x baseline'; repeat it for more checks "
        f"(METRICS_CONSUMER_CHECKS: separated by ';'). A failed check makes Locust exit with code {VERDICT_EXIT_CODE}",
        include_in_web_ui=False,
    )


@events.init.add_listener
def on_init(environment, **_kwargs):
    """Checks --consumer-tags when Locust starts, before any test runs: a key that names a field
    the plugin sends would get the run refused (or a field lost) only at its end, and a long
    test would record nothing. Locust exits with an error, as it does for its own bad options,
    so a CI job fails at once rather than after the test."""
    if isinstance(environment.runner, WorkerRunner):
        return
    opts = environment.parsed_options
    if opts is None:
        return
    if not getattr(opts, "consumer_url", ""):
        if getattr(opts, "consumer_strict", False):
            logger.error(
                "metrics-consumer: --consumer-strict without --consumer-url (or METRICS_CONSUMER_URL): "
                "nothing would be recorded"
            )
            sys.exit(1)
        if getattr(opts, "consumer_check", None):
            logger.error(
                "metrics-consumer: --consumer-check without --consumer-url (or METRICS_CONSUMER_URL): "
                "nothing would check the run"
            )
            sys.exit(1)
        return
    try:
        thresholds_of(getattr(opts, "consumer_check", None))
    except ValueError as e:
        logger.error("metrics-consumer: --consumer-check: %s", e)
        sys.exit(1)
    tags = run_tags(environment)
    problems = tag_problems(tags)
    if problems:
        logger.error(
            "metrics-consumer: --consumer-tags: %s; the gateway would refuse the run, so nothing would be recorded",
            "; ".join(problems),
        )
        sys.exit(1)
    clashes = tag_clashes(tags)
    if clashes:
        logger.error(
            "metrics-consumer: --consumer-tags: %s %s also the name of a field the plugin sends or a tag "
            "the gateway writes; give the tag another name (e.g. tag_%s)",
            ", ".join(clashes),
            "is" if len(clashes) == 1 else "are",
            clashes[0],
        )
        sys.exit(1)


def _recording(environment):
    """Whether this process records runs: a local runner or a master with --consumer-url."""
    if isinstance(environment.runner, WorkerRunner):
        return False
    opts = environment.parsed_options
    if opts is None or not getattr(opts, "consumer_url", ""):
        logger.info("metrics-consumer: no --consumer-url (or METRICS_CONSUMER_URL); this run is not recorded")
        return False
    return True


@events.test_start.add_listener
def on_test_start(environment, **_kwargs):
    global _current, _deferred
    try:
        if not _recording(environment):
            return
        opts = environment.parsed_options
        for earlier in (_deferred, _current):
            # Started again before an earlier run was committed: commit that one first.
            if earlier is not None:
                _finish(earlier)
        _current = _deferred = None
        client = GatewayClient(opts.consumer_url, opts.consumer_token or None)
        interval = max(float(opts.consumer_interval or 15.0), 0.1)
        thresholds = thresholds_of(getattr(opts, "consumer_check", None))
        _current = ConsumerRun(environment, client, interval, run_tags(environment), thresholds)
    except Exception as e:
        logger.warning("metrics-consumer: not recording this run: %s", e)
        _current = None


@events.test_stop.add_listener
def on_test_stop(environment, **_kwargs):
    global _current, _deferred
    run, _current = _current, None
    if run is None:
        return
    try:
        runner = environment.runner
        if isinstance(runner, MasterRunner) and runner.user_count > 0:
            # A master that is quitting (headless --run-time, Ctrl-C) stops before its workers
            # have stopped and sent their last statistics; they arrive while the runner quits,
            # so the commit waits for Locust's "quitting" event (on_quitting).
            run.stop_progress()
            _deferred = run
            return
        _finish(run)
    except Exception:
        logger.warning("metrics-consumer: commit failed", exc_info=True)


def _finish(run):
    """Commits `run` and keeps what kept it from being recorded whole."""
    run.finish()
    name = f"run {run.uuid or '(not registered)'}"
    _problems.extend(f"{name}: {why}" for why in run.problems.values())
    run.problems.clear()
    if run.failed is not None:
        _failures.append(f"{name}: {run.failed}")
        run.failed = None


def _finish_open_runs():
    global _current, _deferred
    runs, _current, _deferred = (_deferred, _current), None, None
    for run in runs:
        if run is not None:
            try:
                _finish(run)
            except Exception:
                logger.warning("metrics-consumer: commit failed", exc_info=True)


@events.quitting.add_listener
def on_quitting(environment, **_kwargs):
    """Locust is shutting down: commits what is open, then sets Locust's exit code when a run did
    not pass its checks (VERDICT_EXIT_CODE) or, with --consumer-strict, when a run was not
    recorded whole (STRICT_EXIT_CODE); the first wins when both are so.

    This is the last moment both are possible: Locust reads its exit code right after this
    event, and then writes --json-file or --json, which empties every endpoint row of the
    master's statistics as it writes them. A runner still running (Ctrl-C, SIGTERM) is made to
    quit first, as Locust would right after: its users stop, a master's workers send their last
    statistics, and the commit holds them."""
    try:
        runner = environment.runner
        if (_current is not None or _deferred is not None) and getattr(runner, "state", None) in (
            STATE_SPAWNING,
            STATE_RUNNING,
        ):
            runner.quit()
        _finish_open_runs()
    except Exception:
        logger.warning("metrics-consumer: commit failed", exc_info=True)
    opts = environment.parsed_options
    if _failures:
        logger.error(
            "metrics-consumer: checks not passed: %s; Locust exits with code %d",
            "; ".join(_failures),
            VERDICT_EXIT_CODE,
        )
        if not getattr(environment, "process_exit_code", None):
            environment.process_exit_code = VERDICT_EXIT_CODE
    if _problems and getattr(opts, "consumer_strict", False):
        logger.error(
            "metrics-consumer: --consumer-strict: not recorded whole: %s; Locust exits with code %d",
            "; ".join(_problems),
            STRICT_EXIT_CODE,
        )
        # Locust before 2.13 has no process_exit_code; then the error line is all there is.
        if not getattr(environment, "process_exit_code", None):
            environment.process_exit_code = STRICT_EXIT_CODE


def _on_quit(**_kwargs):
    """Last chance before the process exits: commits whatever is still open (normally nothing:
    on_quitting committed it)."""
    _finish_open_runs()


# "quit" (Locust 2.x) fires after the runner has quit, as the process exits.
if hasattr(events, "quit"):
    events.quit.add_listener(_on_quit)
