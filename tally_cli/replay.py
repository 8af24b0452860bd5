"""Dead-letter replay: move messages from the dead-letter subscription back to object-events.

Each matching message is republished with its data and original attributes, minus the
CloudPubSubDeadLetter* attributes Pub/Sub added, plus `tally-replayed=true` (the event log's
`replayed` column); the dead letter is acknowledged only after the republish succeeded.

Messages that do not match (and every message in a dry run) are held until the end of the pass,
so one pass sees each message once, then released with an ack deadline of 0: they stay in the
dead-letter subscription for the next replay or for other readers.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tally_cli.clients import Clients, dependency
from tally_cli.errors import ConfigError

__all__ = [
    "DEAD_LETTER_PREFIX",
    "EMPTY_PULLS",
    "HOLD_SECONDS",
    "PULL_BATCH",
    "REPLAYED_ATTRIBUTE",
    "ReplayReport",
    "Replayer",
    "matches",
    "parse_filters",
    "replay_attributes",
]

REPLAYED_ATTRIBUTE = "tally-replayed"
DEAD_LETTER_PREFIX = "CloudPubSubDeadLetter"
PULL_BATCH = 100
EMPTY_PULLS = 3  # a pull may come back empty while messages remain: stop after this many in a row
HOLD_SECONDS = 600  # keep held messages leased for the rest of the pass


def parse_filters(items: list[str]) -> dict[str, str]:
    """`ATTR=GLOB` items -> {attr: glob}; every filter must match (glob: * ? [...])."""
    filters: dict[str, str] = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--filter expects ATTRIBUTE=VALUE (a glob), got {item!r}")
        filters[name] = pattern
    return filters


def matches(attributes: dict[str, str], filters: dict[str, str]) -> bool:
    return all(
        name in attributes and fnmatch.fnmatchcase(attributes[name], pattern)
        for name, pattern in filters.items()
    )


def replay_attributes(attributes: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in attributes.items() if not k.startswith(DEAD_LETTER_PREFIX)}
    kept[REPLAYED_ATTRIBUTE] = "true"
    return kept


@dataclass
class ReplayReport:
    dry_run: bool
    subscription: str
    topic: str
    examined: int = 0
    # The messages that match the filters; in a real run each has its new message id.
    matched: list[dict[str, Any]] = field(default_factory=list)
    replayed: int = 0
    skipped: int = 0
    released: int = 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Replayer:
    def __init__(self, clients: Clients, subscription: str, topic: str) -> None:
        self.clients = clients
        self.settings = clients.settings
        self.subscription = self.settings.subscription_path(subscription)
        self.topic = self.settings.topic_path(topic)

    def run(
        self,
        filters: dict[str, str],
        max_messages: int,
        dry_run: bool,
        progress: Callable[[ReplayReport], None] = lambda _r: None,
    ) -> ReplayReport:
        report = ReplayReport(dry_run, self.subscription, self.topic)
        held: list[str] = []  # ack ids to release at the end
        seen: set[str] = set()
        try:
            with dependency(self.settings, "Pub/Sub"):
                self._pass(filters, max_messages, dry_run, report, held, seen, progress)
        finally:
            with dependency(self.settings, "Pub/Sub"):
                self._release(held)
            report.released = len(held)
        return report

    def _pass(
        self,
        filters: dict[str, str],
        max_messages: int,
        dry_run: bool,
        report: ReplayReport,
        held: list[str],
        seen: set[str],
        progress: Callable[[ReplayReport], None],
    ) -> None:
        empty = 0
        while len(report.matched) < max_messages and empty < EMPTY_PULLS:
            response = self._call("pull", max_messages=PULL_BATCH, return_immediately=True)
            received = list(response.received_messages)
            fresh = [r for r in received if r.message.message_id not in seen]
            # Redelivered duplicates of messages this pass already handled: release them too.
            held.extend(r.ack_id for r in received if r.message.message_id in seen)
            if not fresh:
                empty += 1
                time.sleep(0.2 * empty)
                continue
            empty = 0
            hold_now: list[str] = []
            for item in fresh:
                message = item.message
                seen.add(message.message_id)
                report.examined += 1
                attributes = dict(message.attributes)
                if not matches(attributes, filters) or len(report.matched) >= max_messages:
                    report.skipped += 1
                    hold_now.append(item.ack_id)
                    continue
                entry = {
                    "message_id": message.message_id,
                    "attributes": replay_attributes(attributes),
                    "size": len(message.data),
                }
                report.matched.append(entry)
                if dry_run:
                    hold_now.append(item.ack_id)
                    continue
                try:
                    entry["new_message_id"] = self._republish(message.data, entry["attributes"])
                except Exception:
                    held.extend([*hold_now, item.ack_id])  # not republished: stays a dead letter
                    raise
                self._call("acknowledge", ack_ids=[item.ack_id])
                report.replayed += 1
            if hold_now:
                self._call(
                    "modify_ack_deadline", ack_ids=hold_now, ack_deadline_seconds=HOLD_SECONDS
                )
                held.extend(hold_now)
            progress(report)

    def _republish(self, data: bytes, attributes: dict[str, str]) -> str:
        future = self.clients.publisher().publish(
            self.topic,
            data,
            retry=self.clients.retry(),
            timeout=self.settings.timeout,
            **attributes,
        )
        return str(future.result(timeout=self.settings.timeout))

    def _release(self, ack_ids: list[str]) -> None:
        if not ack_ids:
            return
        for start in range(0, len(ack_ids), 1000):
            self._call(
                "modify_ack_deadline", ack_ids=ack_ids[start : start + 1000], ack_deadline_seconds=0
            )

    def _call(self, method: str, **request: Any) -> Any:
        """One Subscriber call (pull, acknowledge, modify_ack_deadline) on the dead-letter
        subscription, with the CLI's retry and timeout."""
        return getattr(self.clients.subscriber(), method)(
            request={"subscription": self.subscription, **request},
            retry=self.clients.retry(),
            timeout=self.settings.timeout,
        )
