"""Prometheus text exposition (format 0.0.4) for the worker, written by hand to keep the worker free of a
client library: families of counters, gauges and histograms with their HELP and TYPE lines, base units in
the names (`_seconds`, `_bytes`) and counters ending in `_total`. tests/test_workers_metrics.py parses the
page with prometheus_client's own parser."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds for request, queue and batch durations: half a millisecond to ten seconds."""


def batch_size_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Returns upper bounds for batch sizes: every size up to 16, then powers of two."""
    if max_batch_size <= 16:
        return tuple(float(n) for n in range(1, max_batch_size + 1))
    bounds, n = [], 1
    while n < max_batch_size:
        bounds.append(float(n))
        n *= 2
    return (*bounds, float(max_batch_size))


class Histogram:
    """Cumulative counts of observations at or under each bound, their sum and their count."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must increase: {bounds}")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Returns (le, observations at or under it), "+Inf" last."""
        out, running = [], 0
        for bound, n in zip((*map(_number, self.bounds), "+Inf"), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels_text(labels: dict[str, str]) -> str:
    """Returns `k="v",...` with the exposition format's escapes."""
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())


class Page:
    """One exposition page: families added in order, each with its samples under common labels."""

    def __init__(self, labels: dict[str, str]) -> None:
        self._labels = labels_text(labels)
        self._lines: list[str] = []

    def _family(self, name: str, kind: str, help_: str) -> None:
        self._lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]

    def _sample(self, name: str, value: float, extra: str = "") -> None:
        labels = ",".join(x for x in (self._labels, extra) if x)
        self._lines.append(f"{name}{{{labels}}} {_number(value)}")

    def counter(self, name: str, help_: str, value: float | Iterable[tuple[dict[str, str], float]]) -> None:
        """A counter (`name` ends in `_total`), one value or one per extra label set."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        self._family(name, "counter", help_)
        self._values(name, value)

    def gauge(self, name: str, help_: str, value: float | Iterable[tuple[dict[str, str], float]]) -> None:
        self._family(name, "gauge", help_)
        self._values(name, value)

    def _values(self, name: str, value: float | Iterable[tuple[dict[str, str], float]]) -> None:
        if isinstance(value, int | float):
            self._sample(name, value)
            return
        for extra, v in value:
            self._sample(name, v, labels_text(extra))

    def histogram(self, name: str, help_: str, hist: Histogram) -> None:
        self._family(name, "histogram", help_)
        for le, n in hist.cumulative():
            self._sample(f"{name}_bucket", n, f'le="{le}"')
        self._sample(f"{name}_sum", float(hist.sum))
        self._sample(f"{name}_count", hist.count)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
