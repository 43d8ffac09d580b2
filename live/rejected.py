"""Streams a live scheduler rejected when they opened: their queries are never sent, yet the simulator counts
each as a rejected query of its window, so the scheduler counts them too, window by window, from the stream's
opening at its frame rate until its source closes it.

Times are the scheduler's clock's `now_s` (virtual under time dilation); the counts go into the window under
way (`WindowMeasurement`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.core import StreamRequest
from scheduler.window import WindowMeasurement, stream_class

REJECTED_STREAM_MAX_S = 600.0
"""A stream rejected when it opened and never closed is forgotten after this long (its source died)."""


@dataclass
class RejectedStream:
    """A stream rejected when it opened, still open: its queries, never sent, are rejected queries."""

    request: StreamRequest
    opened_s: float
    """When it opened (the clock's `now_s`)."""
    counted: int = 0
    """Its queries counted so far."""


class RejectedStreams:
    """The open streams rejected at binding, by stream id, and the counting of their queries."""

    def __init__(self) -> None:
        self.open: dict[int, RejectedStream] = {}

    def __len__(self) -> int:
        return len(self.open)

    def opened(self, stream_id: int, request: StreamRequest, now_s: float) -> None:
        """Keeps a stream rejected at binding: its queries (not sent) are rejected queries of their windows."""
        self.open[stream_id] = RejectedStream(request, now_s)

    def closed(self, stream_id: int, now_s: float, window: WindowMeasurement) -> None:
        """Counts a closing stream's queries up to `now_s`, the last one included, and forgets it (nothing
        where the stream was not rejected)."""
        entry = self.open.pop(stream_id, None)
        if entry is not None:
            _count(entry, now_s, window, closing=True)

    def window_ends(self, end_s: float, window: WindowMeasurement) -> None:
        """Counts into the window ending at `end_s` the queries of every open rejected stream due before it;
        forgets those open longer than REJECTED_STREAM_MAX_S."""
        for sid, entry in list(self.open.items()):
            _count(entry, end_s, window, closing=False)
            if end_s - entry.opened_s > REJECTED_STREAM_MAX_S:
                del self.open[sid]


def _count(entry: RejectedStream, upto_s: float, window: WindowMeasurement, closing: bool) -> None:
    """Counts a rejected stream's queries not counted yet: k = 0, 1, ... go out at opened + k/fps, those before
    `upto_s`, or up to and at `upto_s` when the stream closes then."""
    x = max(0.0, upto_s - entry.opened_s) * entry.request.fps
    n = math.floor(x + 1e-6) + 1 if closing else math.ceil(x - 1e-9)
    add = max(0, n - entry.counted)
    if add:
        entry.counted += add
        window.rejected += add
        window.sent_per_class[stream_class(entry.request.max_delay_ms, entry.request.fps)] += add
