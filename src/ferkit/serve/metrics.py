"""Prometheus metrics of one server: requests, errors, latency, faces, batch sizes and requests in flight."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ROUTES = ("/v1/faces", "/v1/videos", "/v1/jobs/{id}", "/v1/models", "/healthz", "/readyz", "/metrics")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()  # one per server, so several can live in one process (tests)
        r = self.registry
        self.requests = Counter("ferkit_requests", "HTTP requests by route, method and status code",
                                ["route", "method", "code"], registry=r)
        self.errors = Counter("ferkit_errors", "HTTP requests answered with a 4xx or 5xx code", ["route", "code"],
                              registry=r)
        self.latency = Histogram("ferkit_request_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.faces = Counter("ferkit_faces", "Faces found and classified", registry=r)
        self.batch_size = Histogram("ferkit_batch_faces", "Faces per classifier forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("ferkit_requests_in_flight", "Requests being served now", registry=r)

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        known = route if route in ROUTES else "other"  # label values stay few, whatever paths clients send
        self.requests.labels(known, method, str(code)).inc()
        self.latency.labels(known).observe(seconds)
        if code >= 400:
            self.errors.labels(known, str(code)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
