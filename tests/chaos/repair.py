"""After the storm, what an operator does: move the foreign manifests away, replay the dead letters
(as `tally replay` does), wait past the claim lease and the revision quiet window, reconcile (the
open-run index, then one pass over every run folder), and wait until nothing moves. Only the chaos
run's own dead letters are touched; anyone else's are released untouched."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.plan import FOREIGN_MANIFEST, MANIFEST_NAME, MOVED_MANIFEST, Plan
from tests.chaos.storm import Ledger, wait_idle

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
    moved_manifests: list[str] = field(default_factory=list)  # foreign output.json moved away
    foreign_overwritten: list[str] = field(default_factory=list)  # tally wrote over one
    waited_quiet: float = 0.0


def is_ours(plan: Plan, attributes: dict[str, str]) -> bool:
    return (
        attributes.get("objectId", "").startswith(plan.root)
        or attributes.get("chaos-malformed", "").startswith(plan.token)
        or attributes.get("prefix", "").startswith(plan.root)
    )


def reconcile(
    stack: Any,
    plan: Plan,
    stats: RepairStats,
    deadline: float,
    ledger: Ledger,
    whole_bucket: bool,
) -> None:
    """The open-run index first (a plain request, as the scheduler sends), then one pass over
    every run folder (`tally reconcile --all`; on a shared platform, over this run's workflows
    only). Each request answers within the push deadline and queues its next page itself."""
    started = time.monotonic()
    requests: list[tuple[str, dict[str, str]]] = [("open-run index", {})]
    if whole_bucket:
        requests.append(("every run", {"all": "true"}))
    else:
        requests += [
            (f"every run of {w}/", {"all": "true", "prefix": f"{w}/"}) for w in plan.workflows()
        ]
    for batch in (requests[:1], requests[1:]):  # the index first; the every-run pass together
        sent = []
        for label, attributes in batch:
            message_id = stack.publish_object_event(
                b"{}", {"tally-request": "reconcile", **attributes}
            )
            ledger.published(message_id)
            stats.reconcile_requests[message_id] = label
            sent.append((label, message_id))
        for label, message_id in sent:
            row = _wait_row(stack, message_id, deadline)
            stats.reconcile_summaries.append(f"{label}: {row or 'no row logged'}")
        wait_idle(stack, deadline)
    stats.reconcile_seconds = time.monotonic() - started


def _wait_row(stack: Any, message_id: str, deadline: float) -> str | None:
    sql = (
        "SELECT detail FROM `${dataset}.events` WHERE outcome = 'reconciled'"
        f" AND workflow IS NULL AND delivery_id = '{message_id}'"
    )
    acked_at: float | None = None
    while time.monotonic() < deadline:
        if message_id in stack.bridge.stats.acked:
            acked_at = acked_at or time.monotonic()
            rows = stack.query(sql)
            if rows:
                return str(rows[0]["detail"])
            if time.monotonic() - acked_at > 15:
                return None
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


def replay(stack: Any, plan: Plan, stats: RepairStats, deadline: float, ledger: Ledger) -> None:
    def republish(message: Any) -> str | None:
        if message.attributes.get(REPLAYED) == "true":
            return None  # a replay that failed again stays a dead letter: replay once only
        attributes = {
            k: v for k, v in message.attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)
        }
        stats.dead_letters.append(dict(message.attributes))
        new_id = stack.publish_object_event(message.data, {**attributes, REPLAYED: "true"})
        ledger.published(new_id)
        stats.replayed[new_id] = message.message_id
        return new_id

    drain_dead_letters(stack, plan, republish, deadline)
    wait_idle(stack, deadline)


def move_foreign_manifests(stack: Any, plan: Plan, stats: RepairStats) -> None:
    """What the blocked runs' ERROR lines ask of an operator: move the workflow's own output.json
    away (here: to `moved-away/output.json` in the same folder, an object the spec does not
    expect). One that tally overwrote is a finding."""
    bucket = stack.storage_client().bucket(stack.outputs_bucket)
    for run in plan.runs:
        if not run.foreign_manifest:
            continue
        name = run.prefix() + MANIFEST_NAME
        blob = bucket.get_blob(name)
        if blob is None:
            stats.foreign_overwritten.append(f"{run.prefix()}: the foreign output.json is gone")
            continue
        data = blob.download_as_bytes()
        if data != FOREIGN_MANIFEST:
            stats.foreign_overwritten.append(f"{run.prefix()}: output.json is now {data[:120]!r}")
            continue
        moved = bucket.blob(run.prefix() + MOVED_MANIFEST)
        moved.upload_from_string(data, content_type="application/json")
        blob.delete(if_generation_match=blob.generation)
        stats.moved_manifests.append(run.prefix())


def repair(
    stack: Any,
    plan: Plan,
    lease_seconds: int,
    quiet_seconds: float,
    last_change: float,
    storm_end: float,
    deadline: float,
    ledger: Ledger,
    handler_env: dict[str, str],
    whole_bucket: bool,
) -> RepairStats:
    """Faults off; move foreign manifests away; replay the dead letters; wait out the lease and
    the quiet window; reconcile the open-run index, then every run; wait until idle."""
    started = time.monotonic()
    stats = RepairStats()
    stack.bridge.suppress = ledger.recorder  # records, never suppresses
    stack.restart_handler(handler_env)
    move_foreign_manifests(stack, plan, stats)
    replay(stack, plan, stats, deadline, ledger)
    quiet_until = max(
        storm_end + lease_seconds + 1.0,
        time.monotonic() + max(0.0, last_change + quiet_seconds + 1.0 - time.time()),
    )
    stats.waited_quiet = max(0.0, quiet_until - time.monotonic())
    time.sleep(stats.waited_quiet)
    reconcile(stack, plan, stats, deadline, ledger, whole_bucket)
    wait_idle(stack, deadline, streak_seconds=2.0)
    stats.left_after_replay = len(drain_dead_letters(stack, plan, lambda _m: None, deadline))
    stats.seconds = time.monotonic() - started
    return stats
