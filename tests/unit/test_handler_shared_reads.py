"""ports.SharedReads: concurrent reads of one object share a request that starts after each asked.

Real threads, no sleeps: the Storage below holds each read until the test lets it go, and the
test polls the wrapper's state with a deadline before it does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tally_handler.errors import TransientError
from tally_handler.memory import MemoryStorage
from tally_handler.ports import SharedReads
from tally_handler.rows import StorageOps

BUCKET, NAME = "b", "wf/1/run/a.txt"


class HeldStorage(MemoryStorage):
    """MemoryStorage whose reads answer as of their start, then wait at a gate (one per read, in
    the order they start) before they return."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[threading.Event] = []  # set by the test: that read may answer
        self.fail_next = False
        self._guard = threading.Lock()

    def exists(self, bucket: str, name: str, ops: StorageOps) -> bool:
        with self._guard:
            gate = threading.Event()
            self.started.append(gate)
            fail, self.fail_next = self.fail_next, False
        answer = super().exists(bucket, name, ops)
        assert gate.wait(10), "the test never released this read"
        if fail:
            raise TransientError("Storage is unavailable; retry")
        return answer


def _until(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


class Caller(threading.Thread):
    def __init__(self, shared: SharedReads) -> None:
        super().__init__(daemon=True)
        self.shared, self.ops = shared, StorageOps()
        self.answer: Any = None

    def run(self) -> None:
        try:
            self.answer = self.shared.exists(BUCKET, NAME, self.ops)
        except TransientError as exc:
            self.answer = exc

    def result(self) -> Any:
        self.join(10)
        assert not self.is_alive()
        return self.answer


def _flight(shared: SharedReads) -> Any:
    return shared._flights.get(("exists", BUCKET, NAME))


def _burst(storage: HeldStorage, later: int) -> tuple[SharedReads, Caller, list[Caller]]:
    """One caller whose read is held, then ``later`` callers: one leads the next read, the
    others join it."""
    shared = SharedReads(storage)
    first = Caller(shared)
    first.start()
    _until("the first read started", lambda: len(storage.started) == 1)
    callers = [Caller(shared) for _ in range(later)]
    for caller in callers:
        caller.start()
    _until("the next read is led and joined", lambda: _flight(shared).joined == later - 1)
    return shared, first, callers


def test_callers_during_a_read_share_the_next_read_which_starts_after_them() -> None:
    storage = HeldStorage()
    shared, first, later = _burst(storage, 4)

    storage.put(BUCKET, NAME)  # written after the first read started: only the next one sees it
    storage.started[0].set()
    assert first.result() is False
    _until("the next read started", lambda: len(storage.started) == 2)
    storage.started[1].set()
    assert [c.result() for c in later] == [True] * 4
    assert len(storage.started) == 2  # five callers, two requests
    assert [c.ops.reads for c in [first, *later]].count(1) == 2  # each counted by its leader
    assert shared._flights == {}


def test_a_failed_read_fails_every_caller_sharing_it_and_the_next_caller_reads_again() -> None:
    storage = HeldStorage()
    storage.put(BUCKET, NAME)
    shared, first, later = _burst(storage, 3)
    storage.fail_next = True
    storage.started[0].set()
    assert first.result() is True
    _until("the next read started", lambda: len(storage.started) == 2)
    storage.started[1].set()
    assert all(isinstance(c.result(), TransientError) for c in later)
    assert shared._flights == {}

    again = Caller(shared)
    again.start()
    _until("a new read started", lambda: len(storage.started) == 3)
    storage.started[2].set()
    assert again.result() is True


def test_calls_one_after_another_each_read() -> None:
    storage = MemoryStorage()
    shared = SharedReads(storage)
    ops = StorageOps()
    assert shared.download(BUCKET, NAME, ops) is None
    storage.put(BUCKET, NAME, b"record")
    assert shared.download(BUCKET, NAME, ops) == (b"record", storage.get(BUCKET, NAME).generation)
    assert shared.exists(BUCKET, NAME, ops) is True
    assert ops.reads == 3
    assert shared._flights == {}
