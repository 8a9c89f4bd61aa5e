"""The server's Prometheus metrics (``prometheus-client``), and their exposition.

Every process counts what it serves; :func:`exposition` renders them. With
several workers (``--workers N``) the launcher gives the workers one directory
in ``PROMETHEUS_MULTIPROC_DIR`` (see :mod:`keel.server.supervision`): each
worker writes its values there and any process reading the directory renders
the sum over the workers, so a scrape of ``/metrics`` through any worker, or of
``--metrics-port`` (served by the launcher), sees the whole server.

Labels are bounded: ``route`` is the route template (``/api/v1/runs/{run_id}``,
``unmatched`` for paths no route serves), never the raw path.

- ``keel_http_requests_total{route,method,status}``: answered requests.
- ``keel_http_request_duration_seconds{route,method}``: time to the end of the
  response (a histogram).
- ``keel_http_requests_in_progress``: requests being answered now.
- ``keel_http_received_bytes_total{route}``, ``keel_http_sent_bytes_total{route}``:
  request and response body bytes (artifact and object routes: uploads and downloads).
- ``keel_db_pool_size``, ``keel_db_pool_max``, ``keel_db_pool_checked_out``: the
  database connection pools, summed over live workers (``max`` is size + overflow:
  ``checked_out`` near ``max`` means requests queue for a connection).
- ``keel_ingest_rows_total{kind}``: metric, param and tag rows the server wrote
  for clients (REST batches, the service API, the MLflow API).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from keel.fileio import pid_alive

__all__ = [
    "CONTENT_TYPE",
    "ENV_MULTIPROC_DIR",
    "count_ingest",
    "exposition",
    "observe_pool",
    "observe_request",
    "registry",
]

ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED = "unmatched"
# Seconds: API calls take milliseconds; uploads and downloads of large artifacts take minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

REQUESTS = Counter(
    "keel_http_requests", "HTTP requests answered, by route template, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "keel_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
IN_PROGRESS = Gauge("keel_http_requests_in_progress", "HTTP requests being answered", multiprocess_mode="livesum")
RECEIVED = Counter("keel_http_received_bytes", "Request body bytes received, by route template", ["route"])
SENT = Counter("keel_http_sent_bytes", "Response body bytes sent, by route template", ["route"])
POOL_SIZE = Gauge("keel_db_pool_size", "Database connections the pools keep", multiprocess_mode="livesum")
POOL_MAX = Gauge(
    "keel_db_pool_max", "Database connections the pools may open (size + overflow)", multiprocess_mode="livesum"
)
POOL_CHECKED_OUT = Gauge(
    "keel_db_pool_checked_out", "Database connections in use (checked out of the pools)", multiprocess_mode="livesum"
)
INGEST = Counter("keel_ingest_rows", "Rows written for clients, by kind (metric, param, tag)", ["kind"])
_METRIC_ROWS = INGEST.labels(kind="metric")
_PARAM_ROWS = INGEST.labels(kind="param")
_TAG_ROWS = INGEST.labels(kind="tag")


# The labelled children of one (route, method, status), looked up once: labels() locks and checks.
_children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}


def observe_request(route: str, method: str, status: int, seconds: float, received: int, sent: int) -> None:
    """Count one answered request."""
    key = (route, method, status)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (
            REQUESTS.labels(route, method, str(status)),
            LATENCY.labels(route, method),
            RECEIVED.labels(route),
            SENT.labels(route),
        )
    requests, latency, received_bytes, sent_bytes = children
    requests.inc()
    latency.observe(seconds)
    if received:
        received_bytes.inc(received)
    if sent:
        sent_bytes.inc(sent)


def observe_pool(pool: Any) -> None:
    """Record a database's connection pool (:class:`keel.meta.dbapi.Pool`) in this process's gauges."""
    if pool is None:
        return
    POOL_SIZE.set(int(pool.size))
    POOL_MAX.set(int(pool.size) + max(int(pool.overflow), 0))
    POOL_CHECKED_OUT.set(int(pool.checked_out))


def count_ingest(batch: Any) -> None:
    """Count the metric, param and tag rows of a written :class:`~keel.core.batch.WriteBatch`."""
    if batch.metrics:
        _METRIC_ROWS.inc(len(batch.metrics))
    if batch.params:
        _PARAM_ROWS.inc(len(batch.params))
    if batch.tags:
        _TAG_ROWS.inc(len(batch.tags))


class _Workers:
    """The values every worker wrote to the multiprocess directory (live gauges of dead ones dropped)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._inner = _multiprocess.MultiProcessCollector(None, path=directory)

    def collect(self) -> Iterable[Any]:
        _forget_dead_workers(self.directory)
        return self._inner.collect()  # type: ignore[no-any-return]


def _forget_dead_workers(directory: str) -> None:
    """Remove the live-gauge files of processes that are gone (a worker killed, then replaced)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    pids: set[int] = set()
    for name in names:
        if name.startswith("gauge_live") and name.endswith(".db"):
            digits = name[:-3].rsplit("_", 1)[-1]
            if digits.isdigit():
                pids.add(int(digits))
    for pid in pids:
        if not pid_alive(pid):
            _multiprocess.mark_process_dead(pid, directory)


def registry() -> Any:
    """What to render: every worker's values in multiprocess mode, else this process's."""
    directory = os.environ.get(ENV_MULTIPROC_DIR)
    if not directory:
        return REGISTRY
    combined = CollectorRegistry()
    combined.register(_Workers(directory))  # type: ignore[arg-type]
    return combined


def exposition() -> bytes:
    """The metrics in Prometheus' text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(registry())  # type: ignore[no-any-return]
