"""Thread-safe in-instance caches: an LRU without expiry (immutable versions) and a TTL cache."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["MISS", "LruCache", "TtlCache"]

MISS: Any = object()


class LruCache:
    """Bounded, no expiry: for immutable documents, which never go stale."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key, MISS)
            if value is not MISS:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class TtlCache:
    """Bounded, entries expire `ttl` seconds after they were stored (ttl <= 0 disables it)."""

    def __init__(
        self, ttl: float, maxsize: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.maxsize = maxsize
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return MISS
            if hit[0] <= self._clock():
                del self._data[key]
                return MISS
            return hit[1]

    def put(self, key: Hashable, value: Any) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def invalidate(self, key: Hashable = MISS) -> None:
        with self._lock:
            if key is MISS:
                self._data.clear()
            else:
                self._data.pop(key, None)
