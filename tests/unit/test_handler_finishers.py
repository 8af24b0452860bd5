"""Finishing a run on an instance: one delivery at a time lists a complete-looking run and
announces it (handler.Finishers), the others of the same run wait for it and are done if it
announced their object; an instance that listed a run complete reads its record rather than
listing again. Real threads, in-memory ports."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tally_handler.handler import Finishers
from tally_handler.manifest import RECORD_NAME
from tally_handler.outcomes import Outcome
from tally_handler.rows import StorageOps
from tally_handler.spec import Spec

from tests.conftest import poll as shared_poll
from tests.unit.world import BUCKET, REQUIRED, VERSION, WORKFLOW, World, outcome

DEADLINE_S = 30.0
EXACT = ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt")
EXACT_SPEC = Spec.from_json(
    {"workflow": WORKFLOW, "version": VERSION, "expected_outputs": [{"path": p} for p in EXACT]}
)


def poll(condition: Callable[[], bool], what: str) -> None:
    shared_poll(condition, timeout=DEADLINE_S, interval=0.001, message=what)


def test_a_turn_is_held_by_one_delivery_and_awaited_by_the_others() -> None:
    finishers = Finishers(wait_s=DEADLINE_S)
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with finishers.turn("r") as waited:
            order.append(f"first waited={waited}")
            release.wait(DEADLINE_S)

    def second() -> None:
        with finishers.turn("r") as waited:
            order.append(f"second waited={waited}")

    def arriving() -> None:
        order.append(f"arriving waited={finishers.await_turn('r')}")

    holder = threading.Thread(target=first)
    holder.start()
    poll(lambda: order == ["first waited=False"], "the first delivery holds the turn")
    others = [threading.Thread(target=second), threading.Thread(target=arriving)]
    for thread in others:
        thread.start()
    poll(lambda: finishers.waiting("r") == 2, "both others wait")
    assert len(order) == 1, "nobody goes on while the turn is held"
    release.set()
    for thread in [holder, *others]:
        thread.join(DEADLINE_S)
    assert sorted(order[1:]) == ["arriving waited=True", "second waited=True"]
    assert finishers.waiting("r") == 0 and not finishers.await_turn("r"), "nothing left behind"


def test_a_waiter_goes_on_alone_after_the_bound() -> None:
    finishers = Finishers(wait_s=0.01)
    with finishers.turn("r"):
        done: list[bool] = []
        thread = threading.Thread(target=lambda: done.append(finishers.await_turn("r")))
        thread.start()
        thread.join(DEADLINE_S)
        assert done == [True], "the waiter returned while the turn was still held"


def test_deliveries_of_a_complete_run_on_one_instance_claim_once() -> None:
    """Every output of a run without patterns lands, then all deliveries arrive together on one
    instance: one lists and claims; the others wait for it and answer from what it announced
    (no refused claim)."""
    world = World(instances=1, spec=EXACT_SPEC)
    deliveries = [world.write("r1", path) for path in EXACT]
    handler = world.handlers[0]
    run_key = handler.layout.run(BUCKET, handler.layout.match(deliveries[0].notification.name)).key  # type: ignore[union-attr, arg-type]
    publish = world.publisher.publish

    def publish_when_all_wait(data: bytes, attributes: dict[str, str]) -> str:
        poll(lambda: handler.finishers.waiting(run_key) == len(deliveries) - 1, "all wait")
        return publish(data, attributes)

    world.publisher.publish = publish_when_all_wait  # type: ignore[method-assign]
    record_writes: list[str] = []
    write = world.storage.write

    def counting_write(bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        if name.endswith(RECORD_NAME):
            record_writes.append(name)
        return write(bucket, name, *args, **kwargs)

    world.storage.write = counting_write  # type: ignore[method-assign]
    results: list[object] = [None] * len(deliveries)

    def deliver(index: int) -> None:
        results[index] = world.deliver(deliveries[index])

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(len(deliveries))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    outcomes = sorted(str(outcome(result)) for result in results)  # type: ignore[arg-type]
    assert outcomes == sorted(
        [str(Outcome.COMPLETED)] + [str(Outcome.AFTER_COMPLETION)] * (len(deliveries) - 1)
    )
    assert len(world.messages("r1")) == 1
    assert len(record_writes) == 2, "one claim and its mark: nobody tried a claim held already"


def test_an_instance_that_listed_a_run_complete_reads_the_record_not_the_folder() -> None:
    """A run with a pattern: instance 1 listed it complete but lost the claim to instance 0
    (which died after publishing); the run's next delivery on instance 1 reads the record once
    instead of listing the whole folder again."""
    world = World()
    deliveries = [world.write("r1", path) for path in REQUIRED]
    assert world.deliver(deliveries[0], instance=0, crash_after_publish=True) is None
    first = world.deliver(deliveries[1], instance=1)
    assert outcome(first) is Outcome.AFTER_COMPLETION, first  # the claim is instance 0's
    assert world.handlers[1].coalescer.gate.counted_complete(first.run.key)  # type: ignore[union-attr]
    ops = StorageOps()
    again = world.handlers[1].notification(deliveries[2], ops)
    assert outcome(again) is Outcome.AFTER_COMPLETION, again
    assert "claimed revision 1" in again.detail
    assert (ops.lists, ops.reads, ops.writes) == (0, 1, 0), ops


def test_a_delivery_while_its_instance_announces_a_counted_run_waits_rather_than_lists() -> None:
    """A run with a pattern: a listing here counted it complete and its delivery is building the
    announcement (no record yet); another delivery of the run on the instance waits for it and
    is done by what it announced, instead of listing the whole folder again."""
    world = World(instances=1)
    deliveries = [world.write("r1", path) for path in REQUIRED]
    handler = world.handlers[0]
    run_key = handler.layout.run(BUCKET, handler.layout.match(deliveries[0].notification.name)).key  # type: ignore[union-attr, arg-type]
    write = world.storage.write

    def claim_when_the_other_waits(bucket: str, name: str, *args: Any, **kwargs: Any) -> int:
        if name.endswith(RECORD_NAME):
            poll(lambda: handler.finishers.waiting(run_key) == 1, "the other delivery waits")
        return write(bucket, name, *args, **kwargs)

    world.storage.write = claim_when_the_other_waits  # type: ignore[method-assign]
    results: list[object] = []
    announcing = threading.Thread(target=lambda: results.append(world.deliver(deliveries[-1])))
    announcing.start()
    assert handler.coalescer is not None
    poll(lambda: handler.coalescer.counted_complete(run_key), "the listing counted it complete")  # type: ignore[union-attr]
    ops = StorageOps()
    again = handler.notification(deliveries[0], ops)  # its object is in that listing
    announcing.join(DEADLINE_S)
    assert [outcome(r) for r in results] == [Outcome.COMPLETED]  # type: ignore[arg-type]
    assert outcome(again) is Outcome.AFTER_COMPLETION, again
    assert (ops.lists, ops.reads, ops.writes) == (0, 1, 0), ops  # the absent record, no listing
    assert len(world.messages("r1")) == 1


def test_the_gate_hears_of_outputs_delivered_before_the_exact_paths_existed() -> None:
    """The shards came first: their deliveries found an exact path missing and never reached
    the coalescing gate. The delivery that does (the last exact path) tells it the 4 outputs
    delivered on the instance, so the share of its first listing is counted over them all."""
    world = World(instances=1)
    deliveries = [world.write("r1", path) for path in ("shards/0.bin", "shards/1.bin", "a.txt")]
    handler = world.handlers[0]
    assert handler.coalescer is not None
    for delivery in deliveries:
        ops = StorageOps()
        assert handler.notification(delivery, ops).outcome is Outcome.RECORDED
        assert ops.listing_reason is None  # no listing: its row's listing_reason is null
    assert handler.coalescer.gate.listings == 0  # an exact path was missing each time
    ops = StorageOps()
    completing = handler.notification(world.write("r1", "b.txt"), ops)
    assert completing.outcome is Outcome.COMPLETED
    state = next(iter(handler.coalescer.gate._runs.values()))
    assert (handler.coalescer.gate.listings, state.delivered) == (1, 4)
    assert ops.listing_reason == "first"  # its events row says why it listed the folder
