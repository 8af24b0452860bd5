"""After the storm, what an operator does: reconcile once (after the claim lease), then replay the
dead letters (as `tally replay` does). Only the chaos run's own dead letters are touched; anyone
else's are released untouched."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.plan import Plan
from tests.chaos.storm import wait_idle

DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
REPLAYED = "tally-replayed"


@dataclass
class RepairStats:
    reconcile_requests: dict[str, str] = field(default_factory=dict)  # message id -> prefix
    reconcile_summaries: list[str] = field(default_factory=list)
    reconcile_seconds: float = 0.0
    dead_letters: list[dict[str, str]] = field(default_factory=list)  # attributes, before replay
    replayed: dict[str, str] = field(default_factory=dict)  # new message id -> old message id
    left_after_replay: int = 0
    seconds: float = 0.0


def is_ours(plan: Plan, attributes: dict[str, str]) -> bool:
    return (
        attributes.get("objectId", "").startswith(plan.root)
        or attributes.get("chaos-malformed", "").startswith(plan.token)
        or attributes.get("prefix", "").startswith(plan.root)
    )


def reconcile(stack: Any, plan: Plan, stats: RepairStats, deadline: float) -> None:
    """One reconcile request per workflow (each answers within the push deadline), in turn."""
    started = time.monotonic()
    for workflow in sorted({v.workflow for v in plan.versions}):
        prefix = f"{workflow}/"
        message_id = stack.publish_object_event(
            b"{}", {"tally-request": "reconcile", "prefix": prefix}
        )
        stats.reconcile_requests[message_id] = prefix
        row = _wait_row(stack, message_id, deadline)
        stats.reconcile_summaries.append(f"{prefix}: {row or 'no row logged'}")
    wait_idle(stack, deadline)
    stats.reconcile_seconds = time.monotonic() - started


def _wait_row(stack: Any, message_id: str, deadline: float) -> str | None:
    sql = (
        "SELECT detail FROM `${dataset}.events` WHERE outcome = 'reconciled'"
        f" AND workflow IS NULL AND delivery_id = '{message_id}'"
    )
    while time.monotonic() < deadline:
        if message_id in stack.bridge.stats.acked:
            rows = stack.query(sql)
            if rows:
                return str(rows[0]["detail"])
        if message_id in stack.bridge.stats.dead_lettered:
            return None
        time.sleep(0.2)
    return None


def _pull(stack: Any) -> list[Any]:
    subscription = stack.names.subscription(stack.names.dead_letter_subscription)
    response = stack.subscriber().pull(
        request={"subscription": subscription, "max_messages": 100, "return_immediately": True},
        timeout=30,
    )
    return list(response.received_messages)


def _settle(stack: Any, ack: list[str], release: list[str]) -> None:
    subscription = stack.names.subscription(stack.names.dead_letter_subscription)
    subscriber = stack.subscriber()
    if ack:
        subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack})
    if release:
        subscriber.modify_ack_deadline(
            request={"subscription": subscription, "ack_ids": release, "ack_deadline_seconds": 0}
        )


def drain_dead_letters(
    stack: Any,
    plan: Plan,
    act: Callable[[Any], str | None],
    deadline: float,
    empty_pulls: int = 5,
) -> list[Any]:
    """Pull every dead letter once: `act` on ours (acknowledged when it returns a value, else
    released), release everyone else's. Returns our messages."""
    seen: set[str] = set()
    ours: list[Any] = []
    release: list[str] = []
    empty = 0
    while empty < empty_pulls and time.monotonic() < deadline:
        fresh = [r for r in _pull(stack) if r.message.message_id not in seen]
        if not fresh:
            empty += 1
            time.sleep(0.1 * empty)
            continue
        empty = 0
        ack: list[str] = []
        for received in fresh:
            seen.add(received.message.message_id)
            if is_ours(plan, dict(received.message.attributes)):
                ours.append(received.message)
                if act(received.message) is not None:
                    ack.append(received.ack_id)
                    continue
            release.append(received.ack_id)
        _settle(stack, ack, [])
    _settle(stack, [], release)
    return ours


def replay(stack: Any, plan: Plan, stats: RepairStats, deadline: float) -> None:
    def republish(message: Any) -> str | None:
        if message.attributes.get(REPLAYED) == "true":
            return None  # a replay that failed again stays a dead letter: replay once only
        attributes = {
            k: v for k, v in message.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)
        }
        stats.dead_letters.append(dict(message.attributes))
        new_id = stack.publish_object_event(message.data, {**attributes, REPLAYED: "true"})
        stats.replayed[new_id] = message.message_id
        return new_id

    drain_dead_letters(stack, plan, republish, deadline)
    wait_idle(stack, deadline)
    stats.left_after_replay = len(drain_dead_letters(stack, plan, lambda _m: None, deadline))


def repair(
    stack: Any, plan: Plan, lease_seconds: int, storm_end: float, deadline: float
) -> RepairStats:
    """Faults off, wait out the lease, reconcile once, replay the dead letters."""
    started = time.monotonic()
    stats = RepairStats()
    stack.bridge.suppress = None
    stack.restart_handler(
        {
            "TALLY_CLAIM_LEASE_SECONDS": str(lease_seconds),
            "TALLY_RECONCILE_MAX_RUNS": str(len(plan.runs) + 100),
        }
    )
    time.sleep(max(0.0, storm_end + lease_seconds + 1.0 - time.monotonic()))
    reconcile(stack, plan, stats, deadline)
    replay(stack, plan, stats, deadline)
    stats.seconds = time.monotonic() - started
    return stats
