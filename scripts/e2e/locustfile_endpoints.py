"""5 000 endpoints in Locust's statistics, quickly and without load: one user reports one request
for each of 5 000 names through Locust's own request event, as its HTTP client does after each
request, then waits out the run. The commit of such a run is about 4 MB of JSON, too large for
the gateway's default body limit unless the plugin gzips it."""

import locust_consumer  # noqa: F401  (records the run through metrics-consumer)
from locust import User, constant, task

ENDPOINTS = 5000


class Catalog(User):
    wait_time = constant(3600)

    @task
    def name_every_endpoint(self):
        for i in range(ENDPOINTS):
            self.environment.events.request.fire(
                request_type="GET",
                name=f"/api/v2/catalog/products/{i}?fields=id,name,price&locale=de-DE",
                response_time=5 + i % 50,
                response_length=2048,
                exception=None,
                context={},
            )
