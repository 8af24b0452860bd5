"""One delivery at a time finishes a run on an instance (handler.Finishers): the others of the
same run wait for it and are done if it announced their object. Real threads, in-memory ports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tally_handler.handler import Finishers
from tally_handler.manifest import RECORD_NAME
from tally_handler.outcomes import Outcome

from tests.unit.world import BUCKET, REQUIRED, World, outcome

DEADLINE_S = 30.0


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S} s: {what}"
        time.sleep(0.001)


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
    """Every output lands, then all deliveries arrive together on one instance: one lists and
    claims; the others wait for it and answer from what it announced (no refused claim)."""
    world = World(instances=1)
    deliveries = [world.write("r1", path) for path in REQUIRED]
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
