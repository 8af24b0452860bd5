"""The Storage calls each delivery counts (the events row's storage_* columns), pinned over a
run's life: the deliveries that complete it, a duplicate, a change announced as revision 2, a
failed run, and a reconciliation of the open-run index."""

from __future__ import annotations

import threading
from typing import Any

from tally_handler.delivery import Delivery, EventType, Reconcile, Source, rfc3339
from tally_handler.handler import PresenceCache
from tally_handler.reconcile import RECONCILE_THREADS, reconcile_runs
from tally_handler.rows import StorageOps

from tests.unit.world import BUCKET, QUIET, REQUIRED, World

Counts = tuple[int, int, int, int, int]  # reads, lists, list entries, writes, refused writes


def counts(ops: StorageOps) -> Counts:
    return (ops.reads, ops.lists, ops.list_entries, ops.writes, ops.precondition_failures)


def delivered(world: World, delivery: Delivery, instance: int = 0) -> Counts:
    ops = StorageOps()
    world.handlers[instance].notification(delivery, ops)
    return counts(ops)


def reconciled(world: World) -> Counts:
    ops = StorageOps()
    request = Reconcile()
    now = world.clock()
    delivery = Delivery(Source.PUBSUB_PUSH, "r", publish_time=rfc3339(now), reconcile=request)
    reconcile_runs(world.handlers[1], delivery, BUCKET, request, 100, ops, now=now)
    return counts(ops)


def test_each_delivery_counts_every_storage_call_it_makes() -> None:
    world = World()
    completing = [delivered(world, world.write("r1", path)) for path in REQUIRED]
    assert completing == [(2, 0, 0, 1, 0), (1, 1, 2, 0, 0), (1, 1, 3, 0, 0), (0, 1, 4, 5, 1)]
    first = world.storage.get(BUCKET, f"wf/1/r1/{REQUIRED[0]}")
    assert first is not None
    duplicate = world.message(f"wf/1/r1/{REQUIRED[0]}", first.generation, EventType.OBJECT_FINALIZE)
    assert delivered(world, duplicate) == (0, 0, 0, 0, 0)  # a warm instance knows the run
    assert delivered(world, world.write("r1", "a.txt", b"new"), instance=1) == (3, 2, 12, 2, 1)
    world.clock.advance(QUIET + 1)
    assert delivered(world, world.write("r1", "notes.txt"), instance=1) == (1, 1, 7, 1, 1)
    assert delivered(world, world.write("r3", "_FAILED", b"boom")) == (1, 1, 1, 5, 0)
    assert reconciled(world) == (1, 2, 8, 1, 1)


def test_one_delivery_per_instance_adds_a_run_to_the_open_run_index() -> None:
    """Concurrent deliveries of a new run on one instance used to race to the same index write
    (all but one refused with 412); the first one writes it, the others skip, and a failed write
    hands the job to the next delivery."""
    cache = PresenceCache(max_runs=10)
    assert cache.first_to_open("b/w/1/r")
    assert not cache.first_to_open("b/w/1/r")  # a concurrent delivery skips the write
    cache.forget_opened("b/w/1/r")  # the write failed: its delivery is retried
    assert cache.first_to_open("b/w/1/r")
    off = PresenceCache(max_runs=0)  # the cache turned off: every delivery writes
    assert off.first_to_open("b/w/1/r") and off.first_to_open("b/w/1/r")


def test_a_reconcile_page_reconciles_its_runs_at_once_and_counts_every_call() -> None:
    """A page is bound by Storage's latency, so its runs are reconciled on several threads: the
    first record read of each of RECONCILE_THREADS runs meets the others at a barrier (it times
    out, and the test fails, if the runs go one by one). The page's report and Storage counts
    are the same as one thread's."""

    def page(concurrent: bool, barrier: threading.Barrier | None) -> tuple[list[str], Counts]:
        world = World()
        runs = [f"r{i}" for i in range(RECONCILE_THREADS)]
        for run_id in runs:
            for path in REQUIRED:
                world.write(run_id, path)
        first_reads: set[str] = set()
        download = world.storage.download

        def meeting(bucket: str, name: str, *args: Any, **kwargs: Any) -> Any:
            run = name.rsplit("/", 2)[0]
            if barrier is not None and run not in first_reads:
                first_reads.add(run)
                barrier.wait()
            return download(bucket, name, *args, **kwargs)

        world.storage.download = meeting  # type: ignore[method-assign]
        ops, request, now = StorageOps(), Reconcile(every_run=True), world.clock()
        delivery = Delivery(Source.PUBSUB_PUSH, "r", publish_time=rfc3339(now), reconcile=request)
        report = reconcile_runs(
            world.handlers[0], delivery, BUCKET, request, 100, ops, now=now, concurrent=concurrent
        )
        assert report.examined == RECONCILE_THREADS
        assert all(len(world.messages(run_id)) == 1 for run_id in runs)
        return report.announced, counts(ops)

    together = page(True, threading.Barrier(RECONCILE_THREADS, timeout=30))
    assert together == page(False, None)
    assert len(together[0]) == RECONCILE_THREADS
