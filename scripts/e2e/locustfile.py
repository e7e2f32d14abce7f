"""The load of the end-to-end test: one user class hitting the three endpoints of target.py.
The task on /flaky is tagged, so a run can leave it out with --exclude-tags flaky."""

import locust_consumer  # noqa: F401  (records the run through metrics-consumer)
from locust import HttpUser, between, tag, task


class Shopper(HttpUser):
    wait_time = between(0.05, 0.2)

    @task(3)
    def items(self):
        self.client.get("/items")

    @task(1)
    def order(self):
        self.client.post("/orders", json={"item": 1, "quantity": 2})

    @tag("flaky")
    @task(1)
    def flaky(self):
        self.client.get("/flaky")
