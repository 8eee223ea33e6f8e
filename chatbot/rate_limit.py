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


class SprayLimiter:
    """At most ``limit`` different names failing from one address within any ``window_s``
    seconds: one password tried on every name (password spraying) stays under a per-name limit.

    Past the limit the address is refused, except for a name that has succeeded from it
    within ``remember_s``: staff behind one shared address (a proxy not configured as such)
    keep signing in while someone there guesses.
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        remember_s: float = 30 * 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit = limit
        self.window_s = window_s
        self.remember_s = remember_s
        self._clock = clock
        # address -> name -> time of its last failure / success
        self._failed: dict[str, dict[str, float]] = {}
        self._succeeded: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = clock() + window_s

    def blocked(self, address: str, name: str) -> float:
        """Seconds until ``name`` may be tried from ``address`` (0 if it may now)."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            if self._succeeded.get(address, {}).get(name, -math.inf) > now - self.remember_s:
                return 0.0
            recent = sorted(
                t for t in self._failed.get(address, {}).values() if t > now - self.window_s
            )
            if len(recent) < self.limit:
                return 0.0
            return max(recent[len(recent) - self.limit] + self.window_s - now, 0.001)

    def failed(self, address: str, name: str) -> int:
        """Count a failure; the number of names that have failed from ``address`` lately."""
        now = self._clock()
        with self._lock:
            self._sweep(now)
            names = self._failed.setdefault(address, {})
            names[name] = now
            return sum(1 for t in names.values() if t > now - self.window_s)

    def succeeded(self, address: str, name: str) -> None:
        now = self._clock()
        with self._lock:
            self._sweep(now)
            self._succeeded.setdefault(address, {})[name] = now

    def _sweep(self, now: float) -> None:
        # Forget what no longer counts, so memory stays bounded by recent sign-ins.
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window_s
        for times, keep in ((self._failed, self.window_s), (self._succeeded, self.remember_s)):
            for address in list(times):
                names = {n: t for n, t in times[address].items() if t > now - keep}
                if names:
                    times[address] = names
                else:
                    del times[address]


def whole_seconds(seconds: float) -> int:
    """A wait in whole seconds, rounded up and never 0 while still limited: the number a
    message tells the customer and the Retry-After header are the same."""
    return max(1, math.ceil(seconds))


def retry_after_header(seconds: float) -> str:
    """Whole seconds for a Retry-After header."""
    return str(whole_seconds(seconds))
