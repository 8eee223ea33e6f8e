"""Sliding-window rate limits per key (a customer session, a client address), in memory.

One process serves the app, so the counts live here; several processes behind a load balancer
would each count separately and need a shared store instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most ``limit`` hits per key within any ``window_s`` seconds."""

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = clock() + window_s

    def hit(self, key: str) -> float:
        """Count one hit; 0 if it is allowed, else the seconds until the next one would be.

        A refused hit is not counted, so a client that keeps retrying is not locked out longer.
        """
        now = self._clock()
        with self._lock:
            self._sweep(now)
            hits = self._hits.setdefault(key, deque())
            wait = self._wait(hits, now)
            if not wait:
                hits.append(now)
            return wait

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may hit again (0 if it may now), without counting a hit."""
        now = self._clock()
        with self._lock:
            return self._wait(self._hits.get(key, deque()), now)

    def _wait(self, hits: deque[float], now: float) -> float:
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) < self.limit:
            return 0.0
        return max(hits[0] + self.window_s - now, 0.001)

    def _sweep(self, now: float) -> None:
        # Forget keys with no recent hits, so memory stays bounded by the active clients.
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window_s
        stale = [
            key for key, hits in self._hits.items() if not hits or hits[-1] <= now - self.window_s
        ]
        for key in stale:
            del self._hits[key]


def whole_seconds(seconds: float) -> int:
    """A wait in whole seconds, rounded up and never 0 while still limited: the number a
    message tells the customer and the Retry-After header are the same."""
    return max(1, math.ceil(seconds))


def retry_after_header(seconds: float) -> str:
    """Whole seconds for a Retry-After header."""
    return str(whole_seconds(seconds))
