"""A Locust 2.x run recorded by locust-influxdb-listener through the gateway: its users call the
gateway's own GET /ping (no token needed), the listener writes each request and Locust's events
with InfluxDB's v1 client (user name, the token as password). Run by clients_locust.py, which
sets INFLUX_CHECK_GATEWAY (http://HOST:PORT), INFLUX_CHECK_TOKEN and INFLUX_CHECK_DATABASE."""

import os
import urllib.parse

from locust import HttpUser, constant, events, task
from locust_influxdb_listener import InfluxDBListener, InfluxDBSettings


@events.init.add_listener
def record_through_the_gateway(environment, **_kwargs):
    gateway = urllib.parse.urlsplit(os.environ["INFLUX_CHECK_GATEWAY"])
    # influx_host and influx_port, not host and port: the listener ignores those two for its own
    # defaults (localhost:8086) unless these are given.
    settings = InfluxDBSettings(
        influx_host=gateway.hostname,
        influx_port=gateway.port,
        user="locust",
        pwd=os.environ["INFLUX_CHECK_TOKEN"],
        database=os.environ["INFLUX_CHECK_DATABASE"],
        interval_ms=250,
        additional_tags={"suite": "clients"},
    )
    InfluxDBListener(env=environment, influxDbSettings=settings)


class Pinger(HttpUser):
    wait_time = constant(0.05)

    @task
    def ping(self):
        self.client.get("/ping")
