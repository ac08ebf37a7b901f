"""A small, dependency-free Prometheus text exposition (format 0.0.4) of server metrics.

Metrics:
    ``embedstack_requests_total{route,method,status}`` counter.
    ``embedstack_request_duration_seconds{route}`` histogram.
    ``embedstack_batch_texts{model}`` histogram of texts per model call.
    ``embedstack_batch_requests{model}`` histogram of requests merged per model call.
    ``embedstack_queue_depth{model}`` gauge of requests waiting for the model.
    ``embedstack_index_write_requests{index}`` histogram of write requests per index write
    (group commit; its ``_count`` is the number of index writes, its ``_sum`` the requests).
    ``embedstack_index_write_documents{index}`` histogram of documents and ids per index write.

Routes are labelled by their template (``/v1/indexes/{name}/search``), unmatched paths as
``"unmatched"``, so label cardinality stays bounded.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{k}="{esc(v)}"' for k, v in labels.items())


class Metrics:
    """Thread-safe counters and histograms rendered by :meth:`render`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[str, _Histogram] = {}
        self._batch_texts: dict[str, _Histogram] = {}
        self._batch_requests: dict[str, _Histogram] = {}
        self._queue_depth: dict[str, Callable[[], int]] = {}
        self._write_requests: dict[str, _Histogram] = {}
        self._write_documents: dict[str, _Histogram] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        with self._lock:
            self._requests[(route, method, str(status))] += 1
            hist = self._latency.setdefault(route, _Histogram(LATENCY_BUCKETS))
            hist.observe(seconds)

    def batch(self, model: str, n_texts: int, n_requests: int) -> None:
        """Record one model call that served ``n_requests`` requests with ``n_texts`` texts."""
        with self._lock:
            self._batch_texts.setdefault(model, _Histogram(SIZE_BUCKETS)).observe(n_texts)
            self._batch_requests.setdefault(model, _Histogram(SIZE_BUCKETS)).observe(n_requests)

    def index_write(self, index: str, n_requests: int, n_documents: int) -> None:
        """Record one committed index write that served ``n_requests`` write requests with
        ``n_documents`` documents (upserts) or ids (deletes)."""
        with self._lock:
            self._write_requests.setdefault(index, _Histogram(SIZE_BUCKETS)).observe(n_requests)
            hist = self._write_documents.setdefault(index, _Histogram(SIZE_BUCKETS))
            hist.observe(n_documents)

    def queue_gauge(self, model: str, depth: Callable[[], int]) -> None:
        """Register a callable read at scrape time as ``embedstack_queue_depth{model}``."""
        with self._lock:
            self._queue_depth[model] = depth

    def render(self) -> str:
        """The metrics in Prometheus text format."""
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP embedstack_requests_total HTTP requests by route, method and status.",
                "# TYPE embedstack_requests_total counter",
            ]
            for (route, method, status), n in sorted(self._requests.items()):
                labels = _labels(route=route, method=method, status=status)
                lines.append(f"embedstack_requests_total{{{labels}}} {n}")
            self._histograms(
                lines, "embedstack_request_duration_seconds", "Request latency.", "route",
                self._latency,
            )  # fmt: skip
            self._histograms(
                lines, "embedstack_batch_texts", "Texts per model call.", "model",
                self._batch_texts,
            )  # fmt: skip
            self._histograms(
                lines, "embedstack_batch_requests", "Requests merged per model call.", "model",
                self._batch_requests,
            )  # fmt: skip
            self._histograms(
                lines, "embedstack_index_write_requests", "Write requests per index write.",
                "index", self._write_requests,
            )  # fmt: skip
            self._histograms(
                lines, "embedstack_index_write_documents",
                "Documents and ids per index write.", "index", self._write_documents,
            )  # fmt: skip
            lines += [
                "# HELP embedstack_queue_depth Requests waiting for a model.",
                "# TYPE embedstack_queue_depth gauge",
            ]
            for model, depth in sorted(self._queue_depth.items()):
                lines.append(f"embedstack_queue_depth{{{_labels(model=model)}}} {depth()}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _histograms(
        lines: list[str], name: str, help_: str, key: str, hists: dict[str, _Histogram]
    ) -> None:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        for value, hist in sorted(hists.items()):
            cumulative = 0
            for bound, count in zip(hist.buckets, hist.counts, strict=False):
                cumulative += count
                labels = _labels(**{key: value, "le": _fmt(bound)})
                lines.append(f"{name}_bucket{{{labels}}} {cumulative}")
            labels = _labels(**{key: value, "le": "+Inf"})
            lines.append(f"{name}_bucket{{{labels}}} {hist.n}")
            lines.append(f"{name}_sum{{{_labels(**{key: value})}}} {hist.total}")
            lines.append(f"{name}_count{{{_labels(**{key: value})}}} {hist.n}")


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)
