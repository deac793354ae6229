"""``/metrics``: Prometheus text format through ``prometheus_client``, one registry per app.

Metrics (all prefixed ``klaviyo_sync_``):

- ``http_requests_total{operation,method,status}`` -- requests to this service by route;
- ``klaviyo_requests_total{operation}`` -- HTTP attempts to Klaviyo by client operation;
- ``klaviyo_retries_total{reason}`` -- retried attempts by cause (``429``, ``5xx``, ``timeout``...);
- ``klaviyo_throttled_total`` -- 429 answers from Klaviyo;
- ``records_total{flow,outcome}`` -- records per flow (collection title) and outcome;
- ``queue_length`` -- outbound changes waiting;
- ``poll_lag_seconds`` -- seconds since the last poll that ended without a Klaviyo error
  (since the service started when none has yet);
- ``last_poll_timestamp_seconds`` -- when the last poll ended.

The Klaviyo, record and queue figures are read when scraped (a custom collector), so they
cannot drift from what the service counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from engine.service._runtime import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ServiceCollector(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service
        self.queue_length = 0
        self._ok_at = service.started

    def collect(self) -> Iterator[Any]:
        svc = self.service
        stats = svc.client.stats
        req = CounterMetricFamily("klaviyo_sync_klaviyo_requests", "HTTP attempts to Klaviyo", labels=["operation"])
        for op, n in sorted(stats.requests.items()):
            req.add_metric([op], n)
        yield req
        retries = CounterMetricFamily("klaviyo_sync_klaviyo_retries", "Retried Klaviyo attempts", labels=["reason"])
        for reason, n in sorted(stats.retry_reasons.items()):
            retries.add_metric([reason], n)
        yield retries
        yield CounterMetricFamily("klaviyo_sync_klaviyo_throttled", "429 answers from Klaviyo",
                                  value=stats.retry_reasons.get("429", 0))
        records = CounterMetricFamily("klaviyo_sync_records", "Records per flow and outcome",
                                      labels=["flow", "outcome"])
        for (flow, outcome), n in sorted(svc.records.items()):
            records.add_metric([flow, outcome], n)
        yield records
        yield GaugeMetricFamily("klaviyo_sync_queue_length", "Outbound changes waiting", value=self.queue_length)
        last = svc.last_poll
        if last.get("ok"):
            self._ok_at = last["finished"]
        yield GaugeMetricFamily("klaviyo_sync_poll_lag_seconds", "Seconds since the last successful poll",
                                value=time.time() - self._ok_at)
        yield GaugeMetricFamily("klaviyo_sync_last_poll_timestamp_seconds", "When the last poll ended",
                                value=last.get("finished", 0.0))


class Metrics:
    """The registry of one app and its request counter."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry()
        self.http = Counter("klaviyo_sync_http_requests", "Requests to the service",
                            ["operation", "method", "status"], registry=self.registry)
        self._collector = _ServiceCollector(service)
        self.registry.register(self._collector)

    def render(self, queue_length: int) -> bytes:
        """The text exposition, with the queue length the caller read from the hub."""
        self._collector.queue_length = queue_length
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "Metrics"]
